import Foundation
import Synchronization
import Tracing

/// A swift-distributed-tracing `Tracer` for tests that speaks W3C Trace Context as a real tracer's propagator
/// does: `extract` reads `traceparent` into the context, each span gets a random span id under its parent's
/// trace (a new trace when there is no parent), and ended spans are kept for the test to inspect.
final class RecordingTracer: Tracer, Sendable {
    struct IDs: Sendable, Equatable {
        var traceID: String
        var spanID: String
    }

    enum IDsKey: InstrumentationContextKey {
        typealias Value = IDs
    }

    struct Finished: Sendable {
        var name: String
        var kind: SpanKind
        var traceID: String
        var spanID: String
        var parentSpanID: String?
        var attributes: SpanAttributes
        var status: SpanStatus?

        func string(_ key: String) -> String? {
            if case .string(let value)? = attributes.get(key) { return value }
            return nil
        }

        func int(_ key: String) -> Int64? {
            if case .int64(let value)? = attributes.get(key) { return value }
            return nil
        }
    }

    private let finishedSpans = Mutex<[Finished]>([])
    private let extractions = Atomic<Int>(0)

    var finished: [Finished] { finishedSpans.withLock { $0 } }
    var extractionCount: Int { extractions.load(ordering: .relaxed) }

    /// Waits (real time, bounded) until `count` spans named `name` ended; returns every ended span.
    func wait(for count: Int, named name: String, seconds: Double = 5) -> [Finished] {
        let deadline = Date().addingTimeInterval(seconds)
        while finished.filter({ $0.name == name }).count < count && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.002)
        }
        return finished
    }

    static func randomHex(bytes: Int) -> String {
        (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 1...255)) }.joined()
    }

    func startSpan<Instant: TracerInstant>(
        _ operationName: String, context: @autoclosure () -> InstrumentationContext, ofKind kind: SpanKind,
        at instant: @autoclosure () -> Instant, function: String, file fileID: String, line: UInt
    ) -> RecordedSpan {
        let parent = context()[IDsKey.self]
        var own = context()
        let ids = IDs(traceID: parent?.traceID ?? Self.randomHex(bytes: 16), spanID: Self.randomHex(bytes: 8))
        own[IDsKey.self] = ids
        return RecordedSpan(
            tracer: self, name: operationName, kind: kind, context: own, parentSpanID: parent?.spanID)
    }

    func forceFlush() {}

    func extract<Carrier, Extract: Extractor>(
        _ carrier: Carrier, into context: inout InstrumentationContext, using extractor: Extract
    ) where Extract.Carrier == Carrier {
        extractions.add(1, ordering: .relaxed)
        guard let value = extractor.extract(key: "traceparent", from: carrier) else { return }
        let parts = value.split(separator: "-")
        guard parts.count == 4 else { return }
        context[IDsKey.self] = IDs(traceID: String(parts[1]), spanID: String(parts[2]))
    }

    func inject<Carrier, Inject: Injector>(
        _ context: InstrumentationContext, into carrier: inout Carrier, using injector: Inject
    ) where Inject.Carrier == Carrier {
        guard let ids = context[IDsKey.self] else { return }
        injector.inject("00-\(ids.traceID)-\(ids.spanID)-01", forKey: "traceparent", into: &carrier)
    }

    fileprivate func ended(_ span: Finished) { finishedSpans.withLock { $0.append(span) } }
}

/// A span of `RecordingTracer`.
final class RecordedSpan: Span, Sendable {
    let context: InstrumentationContext
    private let tracer: RecordingTracer
    private let kind: SpanKind
    private let parentSpanID: String?
    private let state: Mutex<(name: String, attributes: SpanAttributes, status: SpanStatus?, ended: Bool)>

    init(tracer: RecordingTracer, name: String, kind: SpanKind, context: InstrumentationContext, parentSpanID: String?)
    {
        self.tracer = tracer
        self.kind = kind
        self.context = context
        self.parentSpanID = parentSpanID
        self.state = Mutex((name, [:], nil, false))
    }

    var operationName: String {
        get { state.withLock { $0.name } }
        set { state.withLock { $0.name = newValue } }
    }

    var attributes: SpanAttributes {
        get { state.withLock { $0.attributes } }
        set { state.withLock { $0.attributes = newValue } }
    }

    var isRecording: Bool { state.withLock { !$0.ended } }

    func setStatus(_ status: SpanStatus) { state.withLock { $0.status = status } }
    func addEvent(_ event: SpanEvent) {}
    func recordError<Instant: TracerInstant>(
        _ error: Error, attributes: SpanAttributes, at instant: @autoclosure () -> Instant
    ) {}
    func addLink(_ link: SpanLink) {}

    func end<Instant: TracerInstant>(at instant: @autoclosure () -> Instant) {
        let snapshot = state.withLock { s -> RecordingTracer.Finished? in
            guard !s.ended else { return nil }
            s.ended = true
            let ids = context[RecordingTracer.IDsKey.self]!
            return .init(
                name: s.name, kind: kind, traceID: ids.traceID, spanID: ids.spanID, parentSpanID: parentSpanID,
                attributes: s.attributes, status: s.status)
        }
        if let snapshot { tracer.ended(snapshot) }
    }
}
