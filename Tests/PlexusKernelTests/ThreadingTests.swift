import Foundation
import NIOCore
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// The threading model of docs/abi.md ("Threading"): kernel work runs on the fixed pool, so threads do not grow
/// with topics, subscriptions, timers or deadlines; and the cancel/unsubscribe contracts hold on it.
@Suite("Kernel threads", .serialized)
struct ThreadingTests {
    /// Threads of this process now.
    static func threadCount() throws -> Int {
        try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count
    }

    /// What a test may add to the process's threads: the pool, the lifecycle threads, and a fixed allowance
    /// for the toolchain's own (Dispatch, the test runner) — never one per topic, subscription or timer.
    static var allowance: Int { 4 * System.coreCount + 16 }

    /// Polls `done` until it holds or `seconds` pass (real time, bounded); returns whether it held.
    static func eventually(seconds: Double = 30, _ done: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !done() {
            if Date() >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.002)
        }
        return true
    }

    @Test("2,000 topics with a subscriber each: every event delivered and acknowledged; threads stay bounded")
    func manySubscriptionsBoundedThreads() throws {
        let before = try Self.threadCount()
        var peak = before
        let h = try DeliveryHarness()
        defer { h.kernel.stop() }
        let topics = (0..<2000).map { "threads.\($0)" }
        let received = Mutex<[String: Int]>([:])
        let acked = Atomic<Int>(0)
        var options = LocalClient.Options()
        options.start = .earliest
        var ids: [UInt64] = []
        for topic in topics {
            let client = h.client
            ids.append(
                try h.client.subscribe(topic: topic, group: "g", options: options) { delivery in
                    received.withLock { $0[delivery.topic, default: 0] += 1 }
                    if client.ack(delivery) == PX_OK.status { acked.add(1, ordering: .relaxed) }
                })
        }
        peak = max(peak, try Self.threadCount())
        for (index, topic) in topics.enumerated() {
            try h.publish(topic, [DeliveryHarness.event("e\(index)")])
        }
        peak = max(peak, try Self.threadCount())
        let allAcked = Self.eventually { acked.load(ordering: .relaxed) >= topics.count }
        peak = max(peak, try Self.threadCount())
        #expect(allAcked, "acknowledged \(acked.load(ordering: .relaxed)) of \(topics.count)")
        let counts = received.withLock { $0 }
        #expect(counts.count == topics.count, "every topic's subscriber got its event")
        #expect(counts.values.allSatisfy { $0 == 1 }, "each exactly once")
        for id in ids { #expect(h.client.unsubscribe(id) == PX_OK.status) }
        peak = max(peak, try Self.threadCount())
        print("threads: \(before) before, \(peak) at most with \(topics.count) subscriptions")
        #expect(peak - before <= Self.allowance, "threads grew from \(before) to \(peak)")
    }

    @Test("1,000 one-shot timers and 1,000 delivery deadlines all fire, none early, on a bounded set of threads")
    func manyTimersBoundedThreads() throws {
        let before = try Self.threadCount()
        let timers = TimerService()
        let owner = ObjectIdentifier(TimerService.self)
        let fired = Atomic<Int>(0)
        let early = Atomic<Int>(0)
        let clock = SystemDeliveryClock()
        for index in 0..<1000 {
            let delay = UInt64(1 + index % 20) * 1_000_000
            let due = clock.now() + delay
            _ = try #require(
                timers.start(owner: owner, delay: delay, interval: 0) { _ in
                    if clock.now() < due { early.add(1, ordering: .relaxed) }
                    fired.add(1, ordering: .relaxed)
                })
            clock.schedule(at: due) {
                if clock.now() < due { early.add(1, ordering: .relaxed) }
                fired.add(1, ordering: .relaxed)
            }
        }
        let during = try Self.threadCount()
        #expect(Self.eventually { fired.load(ordering: .relaxed) == 2000 })
        let after = try Self.threadCount()
        print("threads: \(before) before, \(max(during, after)) at most with 1,000 timers and 1,000 deadlines")
        #expect(early.load(ordering: .relaxed) == 0, "nothing runs before its deadline")
        #expect(Self.eventually { timers.count == 0 }, "a one-shot timer is gone once it fired")
        #expect(max(during, after) - before <= Self.allowance, "threads grew from \(before) to \(max(during, after))")
    }

    @Test("a repeating timer never overlaps itself, and nothing of it runs once cancel returned")
    func repeatingTimerCancel() throws {
        let timers = TimerService()
        let owner = ObjectIdentifier(TimerService.self)
        let inside = Atomic<Int>(0)
        let overlaps = Atomic<Int>(0)
        let firings = Atomic<Int>(0)
        let id = try #require(
            timers.start(owner: owner, delay: 1_000_000, interval: 1_000_000) { _ in
                if inside.add(1, ordering: .relaxed).newValue > 1 { overlaps.add(1, ordering: .relaxed) }
                Thread.sleep(forTimeInterval: 0.003)  // longer than the period
                firings.add(1, ordering: .relaxed)
                inside.subtract(1, ordering: .relaxed)
            })
        #expect(Self.eventually { firings.load(ordering: .relaxed) >= 5 })
        #expect(timers.cancel(id, owner: owner))
        #expect(inside.load(ordering: .relaxed) == 0, "cancel returned while the callback ran")
        let atCancel = firings.load(ordering: .relaxed)
        Thread.sleep(forTimeInterval: 0.02)
        #expect(firings.load(ordering: .relaxed) == atCancel, "fired after cancel returned")
        #expect(overlaps.load(ordering: .relaxed) == 0)
        #expect(!timers.cancel(id, owner: owner), "a cancelled timer is not found again")
    }

    @Test("cancel waits for a running callback; from the callback itself it returns at once")
    func cancelWaitsUnlessInside() throws {
        let timers = TimerService()
        let owner = ObjectIdentifier(TimerService.self)
        let started = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        // Periodic (once a minute), so that it is still there to cancel when this thread is slow to get to it;
        // a one-shot timer is gone once its callback returns.
        let slow = try #require(
            timers.start(owner: owner, delay: 0, interval: 60_000_000_000) { _ in
                started.store(true, ordering: .relaxed)
                Thread.sleep(forTimeInterval: 0.05)
                finished.store(true, ordering: .relaxed)
            })
        #expect(Self.eventually { started.load(ordering: .relaxed) })
        #expect(timers.cancel(slow, owner: owner))
        #expect(finished.load(ordering: .relaxed) == true, "cancel returned before the running callback did")

        let selfCancelled = Atomic<Int>(0)
        let firings = Atomic<Int>(0)
        _ = try #require(
            timers.start(owner: owner, delay: 1_000_000, interval: 1_000_000) { id in
                firings.add(1, ordering: .relaxed)
                if timers.cancel(id, owner: owner) { selfCancelled.add(1, ordering: .relaxed) }
            })
        #expect(Self.eventually { selfCancelled.load(ordering: .relaxed) == 1 })
        Thread.sleep(forTimeInterval: 0.01)
        #expect(firings.load(ordering: .relaxed) == 1, "a timer that cancelled itself does not fire again")
    }

    @Test("timers on one loop cancel each other without waiting; across loops a cancel waits, without deadlock")
    func cancelAcrossTimers() throws {
        let timers = TimerService()
        let owner = ObjectIdentifier(TimerService.self)
        let loops = Array(KernelPool.group.makeIterator())
        let (loop, other) = (loops[0], loops[1])
        let ids = Mutex<[UInt64]>([0, 0])
        let fired = Mutex<[Int]>([])
        // Both due at once on the same loop: whichever runs first cancels the other, which then never runs.
        ids.withLock { slots in
            for index in 0..<2 {
                slots[index] =
                    timers.start(owner: owner, delay: 2_000_000, interval: 0, on: loop) { _ in
                        fired.withLock { $0.append(index) }
                        let sibling = ids.withLock { $0[1 - index] }
                        _ = timers.cancel(sibling, owner: owner)
                    } ?? 0
            }
        }
        #expect(Self.eventually { !fired.withLock { $0.isEmpty } })
        Thread.sleep(forTimeInterval: 0.01)
        #expect(fired.withLock { $0.count } == 1, "the cancelled sibling did not run")

        // A timer on one loop cancels a slow timer running on another: it waits for it to finish.
        let slowStarted = Atomic<Bool>(false)
        let slowFinished = Atomic<Bool>(false)
        let sawFinished = Atomic<Int>(0)
        let slow = try #require(
            timers.start(owner: owner, delay: 0, interval: 0, on: other) { _ in
                slowStarted.store(true, ordering: .relaxed)
                Thread.sleep(forTimeInterval: 0.03)
                slowFinished.store(true, ordering: .relaxed)
            })
        #expect(Self.eventually { slowStarted.load(ordering: .relaxed) })
        _ = try #require(
            timers.start(owner: owner, delay: 0, interval: 0, on: loop) { _ in
                _ = timers.cancel(slow, owner: owner)
                sawFinished.store(slowFinished.load(ordering: .relaxed) ? 1 : 2, ordering: .relaxed)
            })
        #expect(Self.eventually { sawFinished.load(ordering: .relaxed) != 0 })
        #expect(sawFinished.load(ordering: .relaxed) == 1, "the cancel returned before the slow callback did")
    }

    @Test("a stopping owner's timers are cancelled and it may start no more")
    func cancelAll() throws {
        let timers = TimerService()
        let owner = ObjectIdentifier(TimerService.self)
        for _ in 0..<10 {
            _ = try #require(timers.start(owner: owner, delay: 1_000_000, interval: 1_000_000) { _ in })
        }
        timers.cancelAll(owner: owner, wait: true)
        #expect(timers.count == 0)
        #expect(timers.start(owner: owner, delay: 0, interval: 0) { _ in } == nil)
    }

    @Test("hooks that hang past their deadline do not hold up other hooks; their threads end once they return")
    func hungHooks() throws {
        let threads = HookThreads()  // its own set: other suites' hooks (some hang for good) use the shared one
        let release = DispatchSemaphore(value: 0)
        let hung = HookThreads.size + 1
        var released = false
        defer { if !released { for _ in 0..<hung { release.signal() } } }
        for index in 0..<hung {
            let outcome = Deadline.run(.milliseconds(200), name: "plexus.test.hang.\(index)", on: threads) {
                () -> Bool in
                release.wait()
                return true
            }
            guard case .timedOut = outcome else {
                Issue.record("a hook blocked until released finished before its deadline")
                return
            }
        }
        let quick = Deadline.run(.seconds(10), name: "plexus.test.quick", on: threads) { 42 }
        guard case .finished(let answer) = quick else {
            Issue.record("a quick hook did not run while \(hung) others hung")
            return
        }
        #expect(answer == 42)
        #expect(Self.eventually { threads.standIns == hung }, "a thread stands in for each hung hook")
        for _ in 0..<hung { release.signal() }
        released = true
        #expect(Self.eventually { threads.standIns == 0 }, "the overrun threads end once released")
    }

    @Test("unsubscribe waits for a delivery in progress; from inside the delivery it returns at once")
    func unsubscribeContract() throws {
        let h = try DeliveryHarness()
        defer { h.kernel.stop() }
        var options = LocalClient.Options()
        options.start = .earliest
        let started = Atomic<Bool>(false)
        let finished = Atomic<Bool>(false)
        let slow = try h.client.subscribe(topic: "slow", group: "g", options: options) { _ in
            started.store(true, ordering: .relaxed)
            Thread.sleep(forTimeInterval: 0.05)
            finished.store(true, ordering: .relaxed)
        }
        try h.publish("slow", [DeliveryHarness.event("a")])
        #expect(Self.eventually { started.load(ordering: .relaxed) })
        #expect(h.client.unsubscribe(slow) == PX_OK.status)
        #expect(finished.load(ordering: .relaxed) == true, "unsubscribe returned while the delivery ran")

        let statuses = Mutex<[px_status]>([])
        let client = h.client
        _ = try h.client.subscribe(topic: "inner", group: "g", options: options) { delivery in
            let status = HostServices.api.pointee.unsubscribe(client.context.handle, delivery.subscriptionID)
            statuses.withLock { $0.append(status) }
        }
        try h.publish("inner", [DeliveryHarness.event("a")])
        #expect(Self.eventually { !statuses.withLock { $0.isEmpty } })
        try h.publish("inner", [DeliveryHarness.event("b")])
        Thread.sleep(forTimeInterval: 0.02)
        #expect(statuses.withLock { $0 } == [PX_OK.status], "one delivery, which ended its own subscription")
    }
}
