import Histogram
import Synchronization

/// Counts and latencies of one kind of event (publish completions, or consumed messages) over a run.
///
/// Each event carries the time its message was sent and the time it happened. It is counted in its second
/// of the run (the time series); it counts towards the rate when it happened in the measured window; its
/// latency is recorded when its message was *sent* in the measured window, so that warmup traffic is left
/// out and messages sent late in the window still count when they arrive during the drain.
///
/// - Important: Any thread; one `Mutex` guards everything, one lock per event.
final class EventRecorder: Sendable {
    /// The largest latency the histogram tracks: one hour, in microseconds; larger values count as one hour.
    static let highestMicroseconds: UInt64 = 3_600_000_000
    /// The last second of the time series; later events land in it.
    static let maxSeconds = 7200
    /// How many error messages are kept as samples.
    static let maxErrorSamples = 5

    private struct State {
        var histogram = Histogram<UInt64>(
            lowestDiscernibleValue: 1, highestTrackableValue: EventRecorder.highestMicroseconds,
            numberOfSignificantValueDigits: .three)
        var total = 0
        var inWindow = 0
        var failures = 0
        var errorSamples: [String] = []
        var perSecond: [Int] = []
    }

    private let start: UInt64
    private let window: Range<UInt64>
    private let state = Mutex(State())

    /// - Parameters:
    ///   - start: The run's start, in ``MonotonicClock`` nanoseconds.
    ///   - window: The measured window (after the warmup), in ``MonotonicClock`` nanoseconds.
    init(start: UInt64, window: Range<UInt64>) {
        self.start = start
        self.window = window
    }

    /// Records an event at `now` for a message sent at `sentAt` (both ``MonotonicClock`` nanoseconds).
    func record(sentAt: UInt64, now: UInt64) {
        let second = min(Int((now &- start) / 1_000_000_000), Self.maxSeconds)
        let latency = window.contains(sentAt) ? min(max((now &- sentAt) / 1000, 1), Self.highestMicroseconds) : nil
        let counted = window.contains(now)
        state.withLock { state in
            state.total += 1
            if counted { state.inWindow += 1 }
            if state.perSecond.count <= second {
                state.perSecond.append(contentsOf: repeatElement(0, count: second + 1 - state.perSecond.count))
            }
            state.perSecond[second] += 1
            if let latency { _ = state.histogram.record(latency) }
        }
    }

    /// Counts a failure and keeps its message if fewer than ``maxErrorSamples`` are kept.
    func recordFailure(_ message: String) {
        state.withLock { state in
            state.failures += 1
            if state.errorSamples.count < Self.maxErrorSamples { state.errorSamples.append(message) }
        }
    }

    /// Events over the whole run.
    var total: Int { state.withLock { $0.total } }
    /// Events that happened in the measured window.
    var inWindow: Int { state.withLock { $0.inWindow } }
    var failures: Int { state.withLock { $0.failures } }
    var errorSamples: [String] { state.withLock { $0.errorSamples } }
    /// Events per second of the run, from its start.
    var perSecond: [Int] { state.withLock { $0.perSecond } }
    /// The latency percentiles of messages sent in the window.
    var latency: LatencySummary { state.withLock { LatencySummary($0.histogram) } }
}
