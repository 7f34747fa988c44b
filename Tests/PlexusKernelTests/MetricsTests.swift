import Foundation
import PlexusABI
import PlexusCore
import Testing

@testable import PlexusKernel

/// The node's metrics as `/metrics` shows them: Prometheus text with `# HELP` and `# TYPE`, real histogram
/// buckets, and labels that say what they are (`plugin`, `topic`, `group`).
@Suite("metrics")
struct MetricsTests {
    /// The lines of the exposition.
    static func lines(_ metrics: MetricsRegistry) -> [String] {
        metrics.prometheusText().split(separator: "\n").map(String.init)
    }

    @Test("a registry's exposition has HELP and TYPE lines, and histograms have cumulative buckets")
    func exposition() {
        let metrics = MetricsRegistry()
        let counter = metrics.counter("plexus_test_total", help: "A test counter.", labels: [("topic", "a")])
        counter.increment(by: 3)
        #expect(metrics.counter("plexus_test_total", help: "ignored", labels: [("topic", "a")]) === counter)
        metrics.gauge("plexus_test_level", help: "A test gauge.", labels: [("topic", "a")]).set(2.5)
        let histogram = metrics.histogram(
            "plexus_test_seconds", help: "A test histogram.", labels: [("topic", "a")], buckets: [0.1, 1, 10])
        histogram.record(0.05)
        histogram.record(5)
        let lines = Self.lines(metrics)
        #expect(lines.contains("# HELP plexus_test_total A test counter."))
        #expect(lines.contains("# TYPE plexus_test_total counter"))
        #expect(lines.contains(#"plexus_test_total{topic="a"} 3"#))
        #expect(lines.contains("# TYPE plexus_test_level gauge"))
        #expect(lines.contains(#"plexus_test_level{topic="a"} 2.5"#))
        #expect(lines.contains("# TYPE plexus_test_seconds histogram"))
        #expect(lines.contains(#"plexus_test_seconds_bucket{topic="a",le="0.1"} 1"#), "\(lines)")
        #expect(lines.contains(#"plexus_test_seconds_bucket{topic="a",le="1.0"} 1"#), "\(lines)")
        #expect(lines.contains(#"plexus_test_seconds_bucket{topic="a",le="10.0"} 2"#), "\(lines)")
        #expect(lines.contains(#"plexus_test_seconds_bucket{topic="a",le="+Inf"} 2"#), "\(lines)")
        #expect(lines.contains(#"plexus_test_seconds_count{topic="a"} 2"#), "\(lines)")
    }

    @Test("a name reused for another kind of metric gets a handle that works but is not exported; nothing traps")
    func conflicts() {
        let metrics = MetricsRegistry()
        metrics.counter("plexus_shared", help: "The first kind wins.", labels: [("topic", "a")]).increment()
        let gauge = metrics.gauge("plexus_shared", help: "A gauge of the same name.", labels: [("topic", "a")])
        gauge.set(7)
        #expect(gauge.value == 7)
        metrics.set("shared", plugin: "p", 1)
        metrics.add("conflicting", plugin: "p", 1)
        metrics.record("conflicting", plugin: "p", 1)
        let lines = Self.lines(metrics)
        #expect(lines.contains("# TYPE plexus_shared counter"))
        #expect(!lines.contains { $0.hasPrefix("plexus_shared") && $0.contains("7") }, "\(lines)")
        #expect(lines.contains(#"plexus_metric_conflicts_total{plugin="p"} 2"#), "\(lines)")
        #expect(!lines.contains { $0.contains("detached") }, "\(lines)")
    }

    @Test("publishing and delivering count per topic and per group; a group's name is in `group`, never in `plugin`")
    func topicAndGroupLabels() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("orders", group: "billing")
        try h.publish("orders", [DeliveryHarness.event("a"), DeliveryHarness.event("b")])
        let got = sub.wait(for: 2)
        try #require(got.count == 2)
        sub.nack(got[0], reason: "later")
        sub.ack(got[1])
        let metrics = h.kernel.services.metrics
        let group = [("topic", "orders"), ("group", "billing")]
        #expect(metrics.counterValue("plexus_events_published_total", labels: [("topic", "orders")]) == 2)
        #expect(metrics.counterValue("plexus_deliveries_acked_total", labels: group) == 1)
        #expect(metrics.counterValue("plexus_deliveries_nacked_total", labels: group) == 1)

        // Offset 0 waits for its retry (the harness's clock stands still), so the group has committed
        // nothing: both events count in its lag.
        let deadline = ContinuousClock.now + .seconds(5)
        while metrics.gaugeValue("plexus_group_lag", labels: group) != 2, ContinuousClock.now < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        #expect(metrics.gaugeValue("plexus_group_lag", labels: group) == 2)
        let lines = Self.lines(metrics)
        #expect(lines.contains(#"plexus_events_published_total{topic="orders"} 2"#), "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"plexus_event_bytes_published_total{topic="orders"} "#) })
        #expect(lines.contains(#"plexus_events_delivered_total{topic="orders",group="billing"} 2"#), "\(lines)")
        #expect(lines.contains(#"plexus_deliveries_acked_total{topic="orders",group="billing"} 1"#), "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"plexus_group_lag{topic="orders",group="billing"} "#) }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix(#"plexus_publish_duration_seconds_bucket{topic="orders",le="#) })
        #expect(lines.contains("# TYPE plexus_group_lag gauge"))
        #expect(!lines.contains { $0.contains(#"plugin="billing""#) }, "a group's name is not a plugin: \(lines)")
    }

    @Test("what a plugin reports through counter_add, gauge_set and histogram_record carries its name in `plugin`")
    func pluginLabel() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let api = HostServices.api.pointee
        let host = h.client.context.handle
        for _ in 0..<3 { withPXStr("widgets_made") { api.counter_add(host, $0, 2) } }
        withPXStr("queue_depth") { api.gauge_set(host, $0, 4) }
        withPXStr("batch_bytes") { api.histogram_record(host, $0, 300) }
        let metrics = h.kernel.services.metrics
        #expect(metrics.counter("widgets_made", plugin: "test-client") == 6)
        let lines = Self.lines(metrics)
        #expect(lines.contains("# TYPE plexus_widgets_made counter"))
        #expect(lines.contains(#"plexus_widgets_made{plugin="test-client"} 6"#), "\(lines)")
        #expect(lines.contains(#"plexus_queue_depth{plugin="test-client"} 4.0"#), "\(lines)")
        #expect(lines.contains(#"plexus_batch_bytes_bucket{plugin="test-client",le="500.0"} 1"#), "\(lines)")
        #expect(lines.contains(#"plexus_batch_bytes_bucket{plugin="test-client",le="250.0"} 0"#), "\(lines)")
    }
}
