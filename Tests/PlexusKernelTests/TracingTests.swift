import Foundation
import PlexusABI
import PlexusCore
import Testing
import Tracing

@testable import PlexusKernel

/// Spans of traced events (docs/operations.md, "Tracing"), recorded by a W3C-speaking test tracer.
@Suite("Tracing", .serialized)
struct TracingTests {
    static let traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
    static let producerSpan = "00f067aa0ba902b7"
    static let traceparent = "00-\(traceID)-\(producerSpan)-01"

    static func traced(_ id: String, traceparent: String = traceparent, state: String? = nil) -> CloudEvent {
        var event = DeliveryHarness.event(id)
        event.extensions.append(("traceparent", traceparent))
        if let state { event.extensions.append(("tracestate", state)) }
        return event
    }

    @Test("traceparent: the W3C rules (length, lowercase hex, version ff, all-zero ids, later versions)")
    func traceparentRules() {
        #expect(TraceParent(Self.traceparent)?.traceID == Self.traceID)
        #expect(TraceParent(Self.traceparent)?.parentID == Self.producerSpan)
        #expect(TraceParent(Self.traceparent)?.sampled == true)
        #expect(TraceParent("00-\(Self.traceID)-\(Self.producerSpan)-00")?.sampled == false)
        #expect(TraceParent("01-\(Self.traceID)-\(Self.producerSpan)-01-what-follows") != nil, "a later version")
        #expect(TraceParent("01-\(Self.traceID)-\(Self.producerSpan)-01x") == nil)
        #expect(TraceParent("00-\(Self.traceID)-\(Self.producerSpan)-01-extra") == nil, "version 00 is 55 long")
        #expect(TraceParent("ff-\(Self.traceID)-\(Self.producerSpan)-01") == nil)
        #expect(TraceParent("00-\(Self.traceID.uppercased())-\(Self.producerSpan)-01") == nil)
        #expect(TraceParent("00-\(String(repeating: "0", count: 32))-\(Self.producerSpan)-01") == nil)
        #expect(TraceParent("00-\(Self.traceID)-0000000000000000-01") == nil)
        #expect(TraceParent("00-abc-def-01") == nil)
        #expect(TraceParent.problem("00-\(Self.traceID)-0000000000000000-01")?.contains("parent id") == true)
        #expect(TraceParent(Self.traceparent)?.description == Self.traceparent)
    }

    @Test(
        "publish, store and deliver spans: publish under the producer's span, store under publish, deliver under the creation context; the delivered traceparent is the producer's"
    )
    func spansAndParents() throws {
        let tracer = RecordingTracer()
        let h = try DeliveryHarness(tracing: KernelTracing(tracer: tracer))
        defer { h.shutDown() }
        let sub = try h.subscribe("orders", group: "g")
        try h.publish("orders", [DeliveryHarness.event("plain"), Self.traced("traced", state: "vendor=1")])
        let got = sub.wait(for: 2)
        #expect(got.count == 2)
        for item in got { sub.ack(item) }
        let spans = tracer.wait(for: 1, named: "deliver")
        let tracedDelivery = try #require(got.first { $0.event.id == "traced" })
        #expect(tracedDelivery.event.attribute("traceparent") == Self.traceparent, "not rewritten")
        #expect(tracedDelivery.event.attribute("tracestate") == "vendor=1")
        #expect(spans.filter { $0.name == "publish" }.count == 1, "only the traced event gets spans: \(spans)")
        let publish = try #require(spans.first { $0.name == "publish" })
        let store = try #require(spans.first { $0.name == "store" })
        let deliver = try #require(spans.first { $0.name == "deliver" })
        for span in [publish, store, deliver] { #expect(span.traceID == Self.traceID) }
        #expect(publish.parentSpanID == Self.producerSpan)
        #expect(store.parentSpanID == publish.spanID)
        #expect(deliver.parentSpanID == Self.producerSpan)
        #expect(publish.kind == .server && deliver.kind == .producer)
        #expect(publish.string("messaging.destination.name") == "orders")
        #expect(publish.string("plexus.producer.plugin") == "test-client")
        #expect(publish.int("plexus.offset") == Int64(tracedDelivery.offset))
        #expect(store.string("plexus.storage.plugin") == "memory-storage")
        #expect(store.int("plexus.offset") == Int64(tracedDelivery.offset))
        #expect(deliver.string("messaging.consumer.group.name") == "g")
        #expect(deliver.int("plexus.offset") == Int64(tracedDelivery.offset))
        #expect(deliver.int("plexus.delivery.attempt") == 1)
        #expect(deliver.string("plexus.consumer.plugin") == "test-client")
        #expect(deliver.string("plexus.delivery.outcome") == "ack")
        #expect(deliver.status?.code == .ok)
    }

    @Test("a nack ends the deliver span with an error; each retry and the dead letter get their own")
    func nackAndDeadLetter() throws {
        let tracer = RecordingTracer()
        let h = try DeliveryHarness(tracing: KernelTracing(tracer: tracer))
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g") { spec in
            spec.retry = 1
            spec.backoffDelayMs = 1
            spec.deadLetterTopic = "t.dlq"
        }
        try h.publish("t", [Self.traced("poison")])
        var got = sub.wait(for: 1)
        sub.nack(got[0], reason: "cannot parse")
        h.clock.advance(byNanoseconds: 10_000_000)
        got = sub.wait(for: 2)
        try #require(got.count == 2)
        sub.nack(got[1], reason: "still cannot parse")
        let spans = tracer.wait(for: 2, named: "deliver").filter { $0.name == "deliver" }
        #expect(spans.count == 2)
        let first = try #require(spans.first { $0.int("plexus.delivery.attempt") == 1 })
        let second = try #require(spans.first { $0.int("plexus.delivery.attempt") == 2 })
        #expect(first.status?.code == .error && first.string("plexus.delivery.outcome") == "nack")
        #expect(first.string("plexus.error") == "cannot parse")
        #expect(second.status?.code == .error && second.string("plexus.delivery.outcome") == "dead-letter")
        #expect(second.string("plexus.dead_letter.topic") == "t.dlq")
        #expect(spans.allSatisfy { $0.traceID == Self.traceID && $0.parentSpanID == Self.producerSpan })
    }

    @Test("an invalid traceparent is carried unchanged and starts no span; an event without one neither")
    func invalidPassesThrough() throws {
        let tracer = RecordingTracer()
        let h = try DeliveryHarness(tracing: KernelTracing(tracer: tracer))
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g")
        let bad = "00-\(String(repeating: "0", count: 32))-\(Self.producerSpan)-01"
        try h.publish("t", [Self.traced("bad", traceparent: bad), DeliveryHarness.event("none")])
        let got = sub.wait(for: 2)
        for item in got { sub.ack(item) }
        #expect(got.first { $0.event.id == "bad" }?.event.attribute("traceparent") == bad)
        #expect(sub.settle() == 2)
        #expect(tracer.finished.isEmpty, "\(tracer.finished)")
        #expect(tracer.extractionCount == 0)
    }

    @Test("tracing off: the same traced event goes through and no tracer is asked anything")
    func off() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        #expect(h.kernel.services.router.tracing.tracer == nil)
        let sub = try h.subscribe("t", group: "g")
        try h.publish("t", [Self.traced("x")])
        let got = sub.wait(for: 1)
        #expect(got.first?.event.attribute("traceparent") == Self.traceparent)
    }
}
