import Foundation
import GRPCCore
import Histogram
import PlexusBench
import Synchronization

/// One acknowledged write to the system under test: a Plexus publish, an etcd put.
public protocol WriteTarget: Sendable {
    /// The system's name in reports.
    var name: String { get }
    /// Writes one 1 KiB record and returns once the system acknowledged it as durable; `sequence` makes each
    /// record's key or id unique.
    ///
    /// - Throws: What the client throws when the write fails.
    func write(sequence: UInt64) async throws
}

/// What one system reached at one concurrency.
public struct LevelResult: Codable, Sendable, Equatable {
    /// Writes in flight: the number of workers.
    public var concurrency: Int
    /// Writes acknowledged in the measured window.
    public var completed: UInt64
    public var errors: UInt64
    public var seconds: Double
    public var opsPerSecond: Double
    /// Latency (send → acknowledgement) of the writes acknowledged in the window, in microseconds.
    public var latency: LatencySummary
    public var errorSamples: [String]
}

/// A closed loop: `concurrency` workers, each sending its next write as soon as its last one is acknowledged,
/// for a warm-up and then a measured window.
///
/// A write counts when its acknowledgement arrives inside the window (its latency too, even if it was sent
/// during the warm-up); failed writes are counted and sampled, and their worker goes on after a millisecond.
/// Every system gets the same loop, so the same number of writes in flight.
public struct ClosedLoop: Sendable {
    public var concurrency: Int
    public var warmup: Duration
    public var duration: Duration

    public init(concurrency: Int, warmup: Duration, duration: Duration) {
        self.concurrency = max(1, concurrency)
        self.warmup = warmup
        self.duration = duration
    }

    private struct Worker: Sendable {
        var histogram = Histogram<UInt64>(highestTrackableValue: 120_000_000, numberOfSignificantValueDigits: .three)
        var completed: UInt64 = 0
        var errors: UInt64 = 0
        /// Each distinct failure: when it first happened (``MonotonicClock``) and how often.
        var failures: [String: (first: UInt64, count: UInt64)] = [:]
    }

    /// Runs the loop against `target`.
    ///
    /// - Parameters:
    ///   - atWindowStart: Runs when the measured window opens (e.g. reads counters), beside the load.
    ///   - atWindowEnd: Runs when it closes, before the writes in flight are waited for.
    public func run(
        _ target: some WriteTarget, atWindowStart: (@Sendable () async -> Void)? = nil,
        atWindowEnd: (@Sendable () async -> Void)? = nil
    ) async -> LevelResult {
        let start = MonotonicClock.nanoseconds()
        let windowStart = start + UInt64(warmup.nanoseconds)
        let windowEnd = windowStart + UInt64(duration.nanoseconds)
        let sequence = SequenceCounter()
        let total = await withTaskGroup(of: Worker.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    var worker = Worker()
                    while MonotonicClock.nanoseconds() < windowEnd {
                        let sent = MonotonicClock.nanoseconds()
                        do {
                            try await target.write(sequence: sequence.next())
                            let acknowledged = MonotonicClock.nanoseconds()
                            if acknowledged >= windowStart && acknowledged < windowEnd {
                                worker.completed += 1
                                _ = worker.histogram.record(max(1, (acknowledged - sent) / 1000))
                            }
                        } catch {
                            worker.errors += 1
                            let text = Self.describe(error)
                            let first = worker.failures[text]?.first ?? MonotonicClock.nanoseconds()
                            worker.failures[text] = (first, (worker.failures[text]?.count ?? 0) + 1)
                            try? await Task.sleep(for: .milliseconds(1))
                        }
                    }
                    return worker
                }
            }
            if let atWindowStart {
                group.addTask {
                    await Self.sleep(until: windowStart)
                    await atWindowStart()
                    return Worker()
                }
            }
            if let atWindowEnd {
                group.addTask {
                    await Self.sleep(until: windowEnd)
                    await atWindowEnd()
                    return Worker()
                }
            }
            var total = Worker()
            for await worker in group {
                total.histogram.add(worker.histogram)
                total.completed += worker.completed
                total.errors += worker.errors
                total.failures.merge(worker.failures) { a, b in (min(a.first, b.first), a.count + b.count) }
            }
            return total
        }
        let seconds = Double(duration.nanoseconds) / 1e9
        return LevelResult(
            concurrency: concurrency, completed: total.completed, errors: total.errors, seconds: seconds,
            opsPerSecond: Double(total.completed) / seconds, latency: LatencySummary(total.histogram),
            errorSamples: total.failures.sorted { $0.value.first < $1.value.first }.prefix(5).map {
                String(format: "%dx, first at %.3f s: ", $0.value.count, Double($0.value.first - start) / 1e9) + $0.key
            })
    }

    /// An error with its cause, when it has one (gRPC's errors keep the transport's reason there).
    static func describe(_ error: any Error) -> String {
        if let error = error as? RPCError, let cause = error.cause { return "\(error) (cause: \(cause))" }
        return "\(error)"
    }

    private static func sleep(until instant: UInt64) async {
        let now = MonotonicClock.nanoseconds()
        if instant > now { try? await Task.sleep(nanoseconds: instant - now) }
    }
}

/// Numbers the writes of all workers, 1, 2, 3, …
final class SequenceCounter: Sendable {
    private let value = Atomic<UInt64>(0)

    func next() -> UInt64 { value.add(1, ordering: .relaxed).newValue }
}

extension Duration {
    /// The duration in whole nanoseconds.
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
