import PlexusABI
import PlexusCore

/// The kernel's metric handles for one topic, made when the topic's stream opens and then only updated.
struct TopicMetrics: Sendable {
    let published: MetricsRegistry.Counter
    let publishedBytes: MetricsRegistry.Counter
    let publishFailures: MetricsRegistry.Counter
    /// From the publish reaching the router to the storage reporting it durable.
    let publishSeconds: MetricsRegistry.Histogram

    /// Seconds, from 100 µs to 10 s.
    static let latencyBuckets: [Double] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    ]

    init(_ registry: MetricsRegistry, topic: String) {
        let labels = [("topic", topic)]
        published = registry.counter(
            "plexus_events_published_total", help: "Events stored and acknowledged to their publisher.",
            labels: labels)
        publishedBytes = registry.counter(
            "plexus_event_bytes_published_total",
            help: "Bytes of the events stored and acknowledged (data, attributes and extensions).", labels: labels)
        publishFailures = registry.counter(
            "plexus_publish_failures_total", help: "Publishes the storage refused or failed (none acknowledged).",
            labels: labels)
        publishSeconds = registry.histogram(
            "plexus_publish_duration_seconds", help: "Seconds from a publish reaching the router to its durable ack.",
            labels: labels, buckets: Self.latencyBuckets)
    }

    /// The bytes of a batch's attributes, extensions and data, read where the events lie (what
    /// `plexus_event_bytes_published_total` counts).
    static func bytes(of events: UnsafeBufferPointer<UnsafePointer<px_event>?>) -> UInt64 {
        UInt64(events.reduce(0) { total, pointer in total + (pointer.map { EventCheck.byteCount($0.pointee) } ?? 0) })
    }
}

/// The kernel's metric handles for one consumer group on one topic (labels `topic` and `group`), made when
/// the group is and then only updated.
struct GroupMetrics: Sendable {
    let delivered: MetricsRegistry.Counter
    let acked: MetricsRegistry.Counter
    let nacked: MetricsRegistry.Counter
    let rejected: MetricsRegistry.Counter
    let redeliveries: MetricsRegistry.Counter
    let timeouts: MetricsRegistry.Counter
    let deadLettered: MetricsRegistry.Counter
    let droppedAfterRetries: MetricsRegistry.Counter
    let deadLetterFailures: MetricsRegistry.Counter
    let offsetCommitFailures: MetricsRegistry.Counter
    let skippedTrimmed: MetricsRegistry.Counter
    let readFailures: MetricsRegistry.Counter
    /// The stream's next offset minus the group's committed offset.
    let lag: MetricsRegistry.Gauge
    /// From a delivery to its acknowledgement.
    let ackSeconds: MetricsRegistry.Histogram

    init(_ registry: MetricsRegistry, topic: String, group: String) {
        let labels = [("topic", topic), ("group", group)]
        func counter(_ name: String, _ help: String) -> MetricsRegistry.Counter {
            registry.counter(name, help: help, labels: labels)
        }
        delivered = counter("plexus_events_delivered_total", "Deliveries made to subscribers, redeliveries included.")
        acked = counter("plexus_deliveries_acked_total", "Deliveries acknowledged by their subscriber.")
        nacked = counter("plexus_deliveries_nacked_total", "Deliveries negatively acknowledged or timed out (retried).")
        rejected = counter(
            "plexus_deliveries_rejected_total", "Deliveries the subscriber sent straight to the dead-letter topic.")
        redeliveries = counter("plexus_redeliveries_total", "Events delivered again after a backoff.")
        timeouts = counter("plexus_delivery_timeouts_total", "Deliveries not acknowledged within their timeout.")
        deadLettered = counter("plexus_events_dead_lettered_total", "Events written to the dead-letter topic.")
        droppedAfterRetries = counter(
            "plexus_events_dropped_after_retries_total",
            "Events given up after their retries, with no dead-letter topic.")
        deadLetterFailures = counter(
            "plexus_dead_letter_failures_total", "Failed writes to the dead-letter topic (retried; the event is kept).")
        offsetCommitFailures = counter(
            "plexus_offset_commit_failures_total", "Failed commits of the group's offset to the storage (retried).")
        skippedTrimmed = counter(
            "plexus_events_skipped_trimmed_total", "Events trimmed by retention before the group could read them.")
        readFailures = counter("plexus_storage_read_failures_total", "Failed reads from the storage (retried).")
        lag = registry.gauge(
            "plexus_group_lag",
            help: "Events of the topic not yet done by the group: next offset minus committed offset.",
            labels: labels)
        ackSeconds = registry.histogram(
            "plexus_delivery_ack_duration_seconds", help: "Seconds from a delivery to its acknowledgement.",
            labels: labels, buckets: TopicMetrics.latencyBuckets)
    }
}
