import Histogram
import Testing

@testable import PlexusBench

/// Percentiles computed on known data, and what the recorder leaves out of them.
@Suite("Latency percentiles")
struct LatencySummaryTests {
    /// `value` within the histogram's precision (three significant digits: 0.1 %) of `expected`.
    static func near(_ value: UInt64, _ expected: Double) -> Bool {
        abs(Double(value) - expected) <= expected * 0.001 + 1
    }

    @Test("1...10000 µs, once each: p50 5000, p75 7500, p95 9500, p99 9900, p99.9 9990, p99.99 9999, max 10000")
    func uniform() {
        var histogram = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        for value in 1...10_000 as ClosedRange<UInt64> { _ = histogram.record(value) }
        let summary = LatencySummary(histogram)
        #expect(summary.count == 10_000)
        #expect(Self.near(summary.p50, 5000), "\(summary)")
        #expect(Self.near(summary.p75, 7500), "\(summary)")
        #expect(Self.near(summary.p95, 9500), "\(summary)")
        #expect(Self.near(summary.p99, 9900), "\(summary)")
        #expect(Self.near(summary.p99_9, 9990), "\(summary)")
        #expect(Self.near(summary.p99_99, 9999), "\(summary)")
        #expect(Self.near(summary.max, 10_000), "\(summary)")
        #expect(abs(summary.mean - 5000.5) < 5, "\(summary)")
        #expect(
            summary.values == [
                summary.p50, summary.p75, summary.p95, summary.p99, summary.p99_9, summary.p99_99, summary.max,
            ])
    }

    @Test("990 samples of 100 µs and 10 of 50 ms: p99 is 100 µs, p99.9 and max are 50 ms")
    func tail() {
        var histogram = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)
        _ = histogram.record(100, count: 990)
        _ = histogram.record(50_000, count: 10)
        let summary = LatencySummary(histogram)
        #expect(Self.near(summary.p50, 100) && Self.near(summary.p99, 100), "\(summary)")
        #expect(Self.near(summary.p99_9, 50_000) && Self.near(summary.max, 50_000), "\(summary)")
    }

    @Test("An empty histogram reports zeros")
    func empty() {
        let summary = LatencySummary(Histogram<UInt64>(highestTrackableValue: 1000))
        #expect(summary.count == 0 && summary.max == 0 && summary.p50 == 0)
    }

    @Test("The recorder counts every event, rates only those in the window, latencies only those sent in it")
    func window() {
        let second: UInt64 = 1_000_000_000
        let start: UInt64 = 10 * second
        let recorder = EventRecorder(start: start, window: (start + second)..<(start + 3 * second))
        recorder.record(sentAt: start, now: start + 500_000)  // warmup: counted, no latency
        recorder.record(sentAt: start + second, now: start + second + 2_000_000)  // 2 ms, in the window
        recorder.record(sentAt: start + 2 * second, now: start + 2 * second + 4_000_000)  // 4 ms
        recorder.record(sentAt: start + 3 * second - 1, now: start + 4 * second)  // sent in it, drained after: 1 s
        recorder.record(sentAt: start + 3 * second, now: start + 3 * second + 10)  // sent after the window
        recorder.recordFailure("boom")
        #expect(recorder.total == 5)
        #expect(recorder.inWindow == 2)
        #expect(recorder.failures == 1 && recorder.errorSamples == ["boom"])
        #expect(recorder.perSecond == [1, 1, 1, 1, 1])
        let latency = recorder.latency
        #expect(latency.count == 3)
        #expect(Self.near(latency.p50, 4000) && Self.near(latency.max, 1_000_000), "\(latency)")
    }

    @Test("A payload carries its send stamp in its first 8 bytes and has the workload's size")
    func stamp() {
        let payload = PayloadStamp.make(nanoseconds: 0x0102_0304_0506_0708, size: 1024)
        #expect(payload.count == 1024)
        #expect(PayloadStamp.read(payload) == 0x0102_0304_0506_0708)
        #expect(PayloadStamp.read([1, 2, 3]) == nil)
    }
}
