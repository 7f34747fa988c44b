import Foundation
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// The delivery contract of docs/delivery.md, against the memory storage, with an injected clock.
@Suite("Delivery contract", .serialized)
struct DeliveryContractTests {
    static let ms: UInt64 = 1_000_000

    @Test("the backoff policies compute linear and exponential delays, capped")
    func backoffArithmetic() {
        var policy = DeliveryPolicy()
        policy.backoffDelay = 100 * Self.ms
        policy.backoffMax = 0
        policy.backoff = .linear
        #expect((1...4).map { policy.delay(afterAttempt: $0) / Self.ms } == [100, 200, 300, 400])
        policy.backoff = .exponential
        #expect((1...4).map { policy.delay(afterAttempt: $0) / Self.ms } == [100, 200, 400, 800])
        policy.backoffMax = 300 * Self.ms
        #expect(policy.delay(afterAttempt: 4) == 300 * Self.ms)
        #expect(policy.delay(afterAttempt: 200) == 300 * Self.ms, "no overflow for huge attempts")
    }

    @Test("ISO-8601 durations, as Knative writes backoffDelay and timeout")
    func isoDurations() {
        #expect(DeliveryPolicy.parseISO8601Duration("PT0.5S") == 500 * Self.ms)
        #expect(DeliveryPolicy.parseISO8601Duration("PT2M") == 120_000 * Self.ms)
        #expect(DeliveryPolicy.parseISO8601Duration("P1DT1H") == 90_000_000 * Self.ms)
        #expect(DeliveryPolicy.parseISO8601Duration("PT") == nil)
        #expect(DeliveryPolicy.parseISO8601Duration("5S") == nil)
        #expect(DeliveryPolicy.parseISO8601Duration("PT5X") == nil)
    }

    @Test("every event is delivered in order and counts as delivered only when acknowledged")
    func atLeastOnceInOrder() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("orders", group: "g")
        let first = try h.publish("orders", (0..<20).map { DeliveryHarness.event("e\($0)") })
        #expect(first == 0)
        let got = sub.wait(for: 20)
        #expect(got.map(\.event.id) == (0..<20).map { "e\($0)" })
        #expect(got.map(\.offset) == Array(0..<20))
        #expect(got.allSatisfy { $0.attempt == 1 })
        for item in got { #expect(sub.ack(item) == PX_OK.status) }
        #expect(sub.ack(got[0]) == PX_ERR_NOT_FOUND.status, "a settled delivery cannot be acknowledged twice")
        #expect(sub.settle() == 20, "nothing is redelivered after acknowledgement")
    }

    @Test("with autoCreate off, a publish to an unbound topic is refused with PX_ERR_NOT_FOUND, naming the topic")
    func unknownTopicRejected() throws {
        let h = try DeliveryHarness {
            $0.autoCreate = false
            $0.bindings = [.init(topic: "known", storage: "memory-storage")]
        }
        defer { h.shutDown() }
        #expect(try h.publish("known", [DeliveryHarness.event("1")]) == 0)
        #expect {
            try h.publish("unknown", [DeliveryHarness.event("2")])
        } throws: { error in
            guard let failure = error as? LocalClient.Failure else { return false }
            return failure.status == PX_ERR_NOT_FOUND.status && failure.message.contains("'unknown'")
                && failure.message.contains("autoCreate")
        }
    }

    @Test("a publish is acknowledged only once stored: the offset it carries reads back the same event")
    func acknowledgedMeansStored() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let first = try h.publish("t", [DeliveryHarness.event("a"), DeliveryHarness.event("b")])
        let target = try h.kernel.services.router.stream(for: "t", create: false)
        let read = Mutex<[String]?>(nil)
        let done = DispatchSemaphore(value: 0)
        target.binding.read(target.stream, from: first, maxRecords: 10, maxBytes: 1 << 20) { result in
            read.withLock { ids in
                ids = (try? result.get()).map { batch in
                    (0..<batch.count).map { batch.record(at: $0).pointee.event!.pointee.id.string }
                }
            }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 5) == .success)
        #expect(read.withLock { $0 } == ["a", "b"])
    }

    @Test("a nack redelivers after the linear backoff, not before")
    func nackLinearBackoff() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g") {
            $0.retry = 5
            $0.linearBackoff = true
            $0.backoffDelayMs = 100
        }
        try h.publish("t", [DeliveryHarness.event("x")])
        var got = sub.wait(for: 1)
        for attempt in 1...3 {
            #expect(sub.nack(got[attempt - 1]) == PX_OK.status)
            h.clock.advance(byNanoseconds: UInt64(attempt) * 100 * Self.ms - 1)
            #expect(sub.settle() == attempt, "attempt \(attempt + 1) must wait the full linear delay")
            h.clock.advance(byNanoseconds: 1)
            got = sub.wait(for: attempt + 1)
            #expect(got.count == attempt + 1)
            #expect(got.last?.attempt == UInt32(attempt + 1))
            #expect(got.last?.event.id == "x")
        }
    }

    @Test("a nack redelivers after the exponential backoff, capped by the maximum")
    func nackExponentialBackoff() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g") {
            $0.retry = 6
            $0.backoffDelayMs = 10
            $0.backoffMaxMs = 50
        }
        try h.publish("t", [DeliveryHarness.event("x")])
        var got = sub.wait(for: 1)
        for (attempt, delay) in [10, 20, 40, 50, 50].enumerated() {
            sub.nack(got[attempt])
            h.clock.advance(byNanoseconds: UInt64(delay) * Self.ms - 1)
            #expect(sub.settle() == attempt + 1, "delay \(delay) ms must pass first")
            h.clock.advance(byNanoseconds: 1)
            got = sub.wait(for: attempt + 2)
            #expect(got.count == attempt + 2)
        }
    }

    @Test("an attempt that is not acknowledged within the timeout is redelivered")
    func timeoutRedelivers() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g") {
            $0.timeoutMs = 1000
            $0.backoffDelayMs = 10
            $0.linearBackoff = true
        }
        try h.publish("t", [DeliveryHarness.event("slow")])
        let first = sub.wait(for: 1)
        h.clock.advance(byNanoseconds: 999 * Self.ms)
        #expect(sub.settle() == 1)
        h.clock.advance(byNanoseconds: 1 * Self.ms)  // timed out: the retry is scheduled 10 ms later
        h.clock.advance(byNanoseconds: 10 * Self.ms)
        let got = sub.wait(for: 2)
        #expect(got.count == 2 && got[1].attempt == 2)
        #expect(sub.ack(first[0]) == PX_ERR_NOT_FOUND.status, "a timed-out delivery can no longer be acknowledged")
        #expect(
            h.kernel.services.metrics.counterValue(
                "plexus_delivery_timeouts_total", labels: [("topic", "t"), ("group", "g")]) == 1)
    }

    @Test("after the last attempt the event goes to the dead-letter topic, saying why and how often")
    func deadLetter() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let dlq = try h.subscribe("t.dlq", group: "dl")
        let sub = try h.subscribe("t", group: "g") { spec in
            spec.retry = 2
            spec.backoffDelayMs = 1
            spec.linearBackoff = true
            spec.deadLetterTopic = "t.dlq"
        }
        try h.publish("t", [DeliveryHarness.event("poison")])
        var got = sub.wait(for: 1)
        for attempt in 1...3 {
            sub.nack(got[attempt - 1], reason: "cannot parse")
            h.clock.advance(byNanoseconds: 10 * Self.ms)
            if attempt < 3 { got = sub.wait(for: attempt + 1) }
        }
        #expect(sub.settle() == 3, "three attempts: the first and two retries")
        let dead = dlq.wait(for: 1)
        #expect(dead.count == 1)
        let event = try #require(dead.first?.event)
        #expect(event.id == "poison" && event.data == Array("poison".utf8))
        #expect(event.attribute("deadletterattempts") == "3")
        #expect(event.attribute("deadlettertopic") == "t")
        #expect(event.attribute("deadletterreason")?.contains("cannot parse") == true)
        #expect(
            h.kernel.services.metrics.counterValue(
                "plexus_events_dead_lettered_total", labels: [("topic", "t"), ("group", "g")]) == 1)
    }

    @Test(
        "a nack asking for dead-lettering skips the remaining retries; without a dead-letter topic it is dropped and counted"
    )
    func deadLetterNowAndDrop() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g") { $0.retry = 5 }
        try h.publish("t", [DeliveryHarness.event("bad"), DeliveryHarness.event("good")])
        let got = sub.wait(for: 2)
        sub.nack(got[0], deadLetter: true, reason: "malformed")
        sub.ack(got[1])
        h.clock.advance(byNanoseconds: 120_000 * Self.ms)
        #expect(sub.settle() == 2, "no retry after a dead-letter nack")
        #expect(
            h.kernel.services.metrics.counterValue(
                "plexus_events_dropped_after_retries_total", labels: [("topic", "t"), ("group", "g")]) == 1)
    }

    @Test("ordered keys: one event in flight per key, in publish order; other keys go on")
    func orderedKeys() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g") {
            $0.ordered = true
            $0.backoffDelayMs = 5
            $0.linearBackoff = true
        }
        try h.publish(
            "t",
            [
                DeliveryHarness.event("a1", key: "a"), DeliveryHarness.event("b1", key: "b"),
                DeliveryHarness.event("a2", key: "a"), DeliveryHarness.event("b2", key: "b"),
                DeliveryHarness.event("c1"),
            ])
        var got = sub.wait(for: 3)
        #expect(Set(got.map(\.event.id)) == ["a1", "b1", "c1"], "one per key in flight; unkeyed events are free")
        #expect(sub.settle() == 3)
        sub.ack(got.first { $0.event.id == "b1" }!)
        got = sub.wait(for: 4)
        #expect(got.last?.event.id == "b2")
        // a1 fails: a2 must wait until a1 is redelivered and acknowledged.
        sub.nack(got.first { $0.event.id == "a1" }!)
        #expect(sub.settle() == 4)
        h.clock.advance(byNanoseconds: 5 * Self.ms)
        got = sub.wait(for: 5)
        #expect(got.last?.event.id == "a1" && got.last?.attempt == 2)
        sub.ack(got.last!)
        got = sub.wait(for: 6)
        #expect(got.last?.event.id == "a2")
    }

    @Test("clustering delivers each event to one member; broadcast to every member")
    func clusteringAndBroadcast() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let one = try h.subscribe("t", group: "workers")
        let two = try h.subscribe("t", group: "workers")
        one.autoAck.store(true, ordering: .relaxed)
        two.autoAck.store(true, ordering: .relaxed)
        try h.publish("t", (0..<100).map { DeliveryHarness.event("e\($0)") })
        let deadline = Date().addingTimeInterval(5)
        while one.count + two.count < 100 && Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        let ids = one.all.map(\.event.id) + two.all.map(\.event.id)
        #expect(ids.count == 100 && Set(ids).count == 100, "each event to exactly one member")
        #expect(one.count > 0 && two.count > 0, "both members share the work")
    }

    @Test("broadcast subscriptions each receive every event")
    func broadcast() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let a = try h.subscribe("t", group: "audit", broadcast: true)
        let b = try h.subscribe("t", group: "audit", broadcast: true)
        try h.publish("t", (0..<10).map { DeliveryHarness.event("e\($0)") })
        #expect(a.wait(for: 10).count == 10)
        #expect(b.wait(for: 10).count == 10)
    }

    @Test("a member that leaves has its unacknowledged events redelivered to the others")
    func leavingMember() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let leaver = try h.subscribe("t", group: "g") { $0.maxInFlight = 5 }
        try h.publish("t", (0..<5).map { DeliveryHarness.event("e\($0)") })
        #expect(leaver.wait(for: 5).count == 5)
        let stayer = try h.subscribe("t", group: "g")
        leaver.unsubscribe()
        let got = stayer.wait(for: 5)
        #expect(Set(got.map(\.event.id)) == Set((0..<5).map { "e\($0)" }))
        #expect(got.allSatisfy { $0.attempt == 2 })
        #expect(leaver.settle() == 5, "nothing more reaches a member after it left")
    }

    @Test("flow control: no more than max_in_flight unacknowledged events per member")
    func flowControl() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g") { $0.maxInFlight = 5 }
        try h.publish("t", (0..<50).map { DeliveryHarness.event("e\($0)") })
        var got = sub.wait(for: 5)
        #expect(sub.settle() == 5, "a subscriber that does not acknowledge gets no more than 5")
        sub.ack(got[0])
        sub.ack(got[1])
        got = sub.wait(for: 7)
        #expect(sub.settle() == 7)
        #expect(got.map(\.event.id) == (0..<7).map { "e\($0)" })
    }

    @Test("filters on attributes deliver only matching events")
    func filters() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let sub = try h.subscribe("t", group: "g", filters: [("type", "order.created")])
        try h.publish(
            "t",
            [
                DeliveryHarness.event("1", type: "order.created"), DeliveryHarness.event("2", type: "order.deleted"),
                DeliveryHarness.event("3", type: "order.created"),
            ])
        #expect(sub.wait(for: 2).map(\.event.id) == ["1", "3"])
        #expect(sub.settle() == 2)
    }

    @Test("a group resumes from its committed offset when it comes back")
    func resumesFromCommittedOffset() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let first = try h.subscribe("t", group: "g")
        first.autoAck.store(true, ordering: .relaxed)
        try h.publish("t", (0..<10).map { DeliveryHarness.event("e\($0)") })
        #expect(first.wait(for: 10).count == 10)
        Thread.sleep(forTimeInterval: 0.1)  // let the offset commit complete
        first.unsubscribe()
        try h.publish("t", (10..<15).map { DeliveryHarness.event("e\($0)") })
        let again = try h.subscribe("t", group: "g")
        let got = again.wait(for: 5)
        #expect(got.map(\.event.id) == (10..<15).map { "e\($0)" }, "starts after what was acknowledged")
        #expect(again.settle() == 5)
    }

    @Test("100,000 events with injected failures: none lost, duplicates only where a failure was injected")
    func noLossNoDuplicates() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let total = 100_000
        let acks = Mutex<[UInt64: Int]>([:])
        let injected = Mutex<Set<UInt64>>([])
        var options = LocalClient.Options()
        options.maxInFlight = 1000
        options.retry = 3
        options.timeoutMs = 3_600_000  // the test drives the clock forward; only injected failures should count
        for _ in 0..<2 {
            _ = try h.client.subscribe(topic: "bulk", group: "g", options: options) { [client = h.client] delivery in
                if delivery.offset % 97 == 0 && delivery.attempt == 1 {
                    injected.withLock { _ = $0.insert(delivery.offset) }
                    client.nack(delivery, reason: "injected failure")
                } else {
                    acks.withLock { $0[delivery.offset, default: 0] += 1 }
                    client.ack(delivery)
                }
            }
        }
        for start in stride(from: 0, to: total, by: 1000) {
            try h.publish("bulk", (start..<start + 1000).map { DeliveryHarness.event("e\($0)") })
        }
        let deadline = Date().addingTimeInterval(60)
        while acks.withLock({ $0.count }) < total && Date() < deadline {
            // Lets the injected failures' retries come due (200 ms backoff), far from the one-hour timeout.
            h.clock.advance(byNanoseconds: 250_000_000)
            Thread.sleep(forTimeInterval: 0.01)
        }
        let counts = acks.withLock { $0 }
        #expect(counts.count == total, "every event acknowledged")
        #expect(counts.values.allSatisfy { $0 == 1 }, "each event acknowledged once")
        #expect(injected.withLock { $0.count } == (total + 96) / 97, "a failure was injected into every 97th event")
    }

    @Test("ordered keys under concurrent publishers: per key, publish order and one in flight")
    func orderedKeysConcurrentPublishers() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        struct Seen: Sendable {
            var inFlight: Set<String> = []
            var overlaps = 0
            var order: [String: [UInt64]] = [:]
            var count = 0
        }
        let seen = Mutex(Seen())
        var options = LocalClient.Options()
        options.ordered = true
        options.maxInFlight = 64
        let ackQueue = DispatchQueue(label: "acks", attributes: .concurrent)
        _ = try h.client.subscribe(topic: "keys", group: "g", options: options) { [client = h.client] delivery in
            let key = delivery.event.attribute("partitionkey") ?? ""
            seen.withLock { s in
                if !s.inFlight.insert(key).inserted { s.overlaps += 1 }
                s.order[key, default: []].append(delivery.offset)
                s.count += 1
            }
            ackQueue.asyncAfter(deadline: .now() + .microseconds(Int.random(in: 0...300))) {
                seen.withLock { _ = $0.inFlight.remove(key) }
                client.ack(delivery)
            }
        }
        let publishers = 4
        let perPublisher = 500
        DispatchQueue.concurrentPerform(iterations: publishers) { p in
            for i in stride(from: 0, to: perPublisher, by: 10) {
                let events = (i..<i + 10).map { DeliveryHarness.event("p\(p)-\($0)", key: "k\($0 % 5)") }
                _ = try? h.publish("keys", events)
            }
        }
        let deadline = Date().addingTimeInterval(30)
        while seen.withLock({ $0.count }) < publishers * perPublisher && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.01)
        }
        let result = seen.withLock { $0 }
        #expect(result.count == publishers * perPublisher)
        #expect(result.overlaps == 0, "never two events of one key in flight")
        for (key, offsets) in result.order {
            #expect(offsets == offsets.sorted(), "key \(key) delivered in publish (offset) order")
        }
    }

}
