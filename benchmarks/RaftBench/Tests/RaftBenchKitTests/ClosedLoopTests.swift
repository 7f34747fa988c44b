import Synchronization
import Testing

@testable import RaftBenchKit

/// A target that acknowledges after a fixed delay and records how many writes were in flight at most.
final class FakeTarget: WriteTarget {
    let name = "fake"
    let delay: Duration
    let failEvery: UInt64
    let inFlight = Atomic<Int>(0)
    let peak = Atomic<Int>(0)

    init(delay: Duration, failEvery: UInt64 = 0) {
        self.delay = delay
        self.failEvery = failEvery
    }

    func write(sequence: UInt64) async throws {
        let now = inFlight.add(1, ordering: .relaxed).newValue
        peak.max(now, ordering: .relaxed)
        defer { inFlight.subtract(1, ordering: .relaxed) }
        try await Task.sleep(for: delay)
        if failEvery > 0 && sequence % failEvery == 0 { throw HarnessError("planted failure \(sequence)") }
    }
}

@Suite("closed loop")
struct ClosedLoopTests {
    @Test("C writes in flight, never more; latency about the target's delay; window hooks run")
    func concurrency() async {
        let target = FakeTarget(delay: .milliseconds(5))
        let hooks = Atomic<Int>(0)
        let result = await ClosedLoop(concurrency: 8, warmup: .milliseconds(100), duration: .milliseconds(500)).run(
            target, atWindowStart: { hooks.add(1, ordering: .relaxed) },
            atWindowEnd: { hooks.add(10, ordering: .relaxed) })
        #expect(target.peak.load(ordering: .relaxed) == 8)
        #expect(hooks.load(ordering: .relaxed) == 11)
        #expect(result.errors == 0)
        // 8 in flight, 5 ms each: at most 1600/s, and no fewer than a quarter of that on a busy machine.
        #expect(result.opsPerSecond <= 1700 && result.opsPerSecond > 400, "\(result.opsPerSecond)")
        #expect(result.latency.p50 >= 5000, "\(result.latency)")
        #expect(result.latency.count == result.completed)
    }

    @Test("failures are counted and sampled, not measured")
    func failures() async {
        let result = await ClosedLoop(concurrency: 2, warmup: .zero, duration: .milliseconds(200)).run(
            FakeTarget(delay: .milliseconds(2), failEvery: 3))
        #expect(result.errors > 0)
        #expect(result.errorSamples.first?.contains("planted failure") == true)
        #expect(result.latency.count == result.completed)
    }
}
