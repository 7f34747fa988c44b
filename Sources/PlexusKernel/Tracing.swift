import PlexusABI
import PlexusCore
import Synchronization
import Tracing

/// The node's tracing (docs/operations.md, "Tracing"): spans for `publish`, `store` and `deliver` of every event
/// that carries a valid W3C `traceparent` (the CloudEvents Distributed Tracing extension), made with the
/// swift-distributed-tracing `Tracer` the node was given. Without one (the default) tracing is off and the data
/// path checks one optional per batch, nothing per event.
///
/// The event's `traceparent` is the context of its creation: the kernel never rewrites it. `publish` is a child
/// of it, `store` a child of `publish`, and each `deliver` a child of the creation context again (a delivery
/// may happen long after, and many times, for many groups).
public struct KernelTracing: Sendable {
    /// The tracer spans go to; `nil`: tracing is off.
    public let tracer: (any Tracer)?

    public init(tracer: (any Tracer)?) { self.tracer = tracer }

    /// Tracing off.
    public static let off = KernelTracing(tracer: nil)

    /// Span attribute names (OpenTelemetry messaging conventions where one fits, else `plexus.*`).
    enum Attribute {
        static let system = "messaging.system"
        static let topic = "messaging.destination.name"
        static let operation = "messaging.operation.type"
        static let group = "messaging.consumer.group.name"
        static let messageID = "messaging.message.id"
        static let offset = "plexus.offset"
        static let attempt = "plexus.delivery.attempt"
        static let producer = "plexus.producer.plugin"
        static let consumer = "plexus.consumer.plugin"
        static let storage = "plexus.storage.plugin"
        static let outcome = "plexus.delivery.outcome"
        static let deadLetterTopic = "plexus.dead_letter.topic"
        static let error = "plexus.error"
    }

    /// The creation context an event carries: its `traceparent` when valid (and its `tracestate`); `nil` for
    /// an event without one or with one the W3C rules reject (such an event is passed on unchanged and gets
    /// no spans).
    static func creationContext(of event: UnsafePointer<px_event>) -> EventTraceContext? {
        guard let parent = EventCheck.attribute(event, traceparentKey),
            let text = String(validating: parent.bindMemory(to: UInt8.self), as: UTF8.self),
            TraceParent.problem(text) == nil
        else { return nil }
        let state = EventCheck.attribute(event, tracestateKey).flatMap {
            String(validating: $0.bindMemory(to: UInt8.self), as: UTF8.self)
        }
        return EventTraceContext(traceparent: text, tracestate: state)
    }

    static let traceparentKey = AttributeKey("traceparent")
    static let tracestateKey = AttributeKey("tracestate")

    /// The instrumentation context a span whose parent is the event's creation goes under: extracted by the
    /// tracer (its own propagator reads the W3C fields through `EventTraceExtractor`).
    func parent(_ carried: EventTraceContext, tracer: any Tracer) -> InstrumentationContext {
        var context = InstrumentationContext.topLevel
        tracer.extract(carried, into: &context, using: EventTraceExtractor())
        return context
    }

    // MARK: Publish and store

    /// The spans of one publish call: for each traced event of the batch its `publish` span, and its `store`
    /// span once the router hands the batch to the storage.
    final class PublishSpans: Sendable {
        struct Traced: Sendable {
            let index: Int
            let publish: any Span
        }
        let tracer: any Tracer
        let traced: [Traced]
        let topic: String
        private let stores = Mutex<[any Span]>([])

        init(tracer: any Tracer, traced: [Traced], topic: String) {
            self.tracer = tracer
            self.traced = traced
            self.topic = topic
        }

        /// Starts the `store` spans: the batch goes to storage `storage` now.
        func storing(in storage: String) {
            let spans = traced.map { item -> any Span in
                let span = tracer.startSpan("store", context: item.publish.context, ofKind: .internal)
                span.attributes[Attribute.system] = "plexus"
                span.attributes[Attribute.topic] = topic
                span.attributes[Attribute.storage] = storage
                return span
            }
            stores.withLock { $0 = spans }
        }

        /// Ends every span: the batch is durable from offset `first` on, or it was refused.
        func finish(_ result: Result<UInt64, Router.Refusal>) {
            let storeSpans = stores.withLock { $0 }
            for (position, item) in traced.enumerated() {
                var spans = [item.publish]
                if position < storeSpans.count { spans.insert(storeSpans[position], at: 0) }
                for span in spans {
                    switch result {
                    case .success(let first):
                        span.attributes[Attribute.offset] = Int64(truncatingIfNeeded: first &+ UInt64(item.index))
                        span.setStatus(SpanStatus(code: .ok))
                    case .failure(let refusal):
                        span.attributes[Attribute.error] = refusal.message
                        span.setStatus(SpanStatus(code: .error, message: refusal.message))
                    }
                    span.end()
                }
            }
        }
    }

    /// Starts a `publish` span for each event of the batch that carries a valid `traceparent`; `nil` when tracing
    /// is off or no event is traced.
    func publishing(
        topic: String, producer: String, events: UnsafeBufferPointer<UnsafePointer<px_event>?>
    ) -> PublishSpans? {
        guard let tracer else { return nil }
        var traced: [PublishSpans.Traced] = []
        for (index, event) in events.enumerated() {
            guard let event, let carried = Self.creationContext(of: event) else { continue }
            let span = tracer.startSpan("publish", context: parent(carried, tracer: tracer), ofKind: .server)
            span.attributes[Attribute.system] = "plexus"
            span.attributes[Attribute.operation] = "send"
            span.attributes[Attribute.topic] = topic
            span.attributes[Attribute.producer] = producer
            span.attributes[Attribute.messageID] = event.pointee.id.string
            traced.append(.init(index: index, publish: span))
        }
        return traced.isEmpty ? nil : PublishSpans(tracer: tracer, traced: traced, topic: topic)
    }

    // MARK: Deliver

    /// Starts the `deliver` span of one delivery; `nil` when tracing is off or the event carries no valid
    /// `traceparent`.
    func delivering(
        _ record: UnsafePointer<px_record>, topic: String, group: String, attempt: UInt32, consumer: String,
        storage: String
    ) -> (any Span)? {
        guard let tracer, let event = record.pointee.event, let carried = Self.creationContext(of: event) else {
            return nil
        }
        let span = tracer.startSpan("deliver", context: parent(carried, tracer: tracer), ofKind: .producer)
        span.attributes[Attribute.system] = "plexus"
        span.attributes[Attribute.operation] = "deliver"
        span.attributes[Attribute.topic] = topic
        span.attributes[Attribute.group] = group
        span.attributes[Attribute.offset] = Int64(truncatingIfNeeded: record.pointee.offset)
        span.attributes[Attribute.attempt] = Int64(attempt)
        span.attributes[Attribute.consumer] = consumer
        span.attributes[Attribute.storage] = storage
        span.attributes[Attribute.messageID] = event.pointee.id.string
        return span
    }
}

/// An event's W3C trace fields, as the tracer's propagator reads them.
struct EventTraceContext: Sendable {
    let traceparent: String
    let tracestate: String?
}

/// Reads `traceparent` and `tracestate` (the W3C header names, which the extension's attributes share).
struct EventTraceExtractor: Extractor {
    func extract(key: String, from carrier: EventTraceContext) -> String? {
        switch key.lowercased() {
        case "traceparent": return carrier.traceparent
        case "tracestate": return carrier.tracestate
        default: return nil
        }
    }
}
