import Foundation

/// Bounds the sends a producer has outstanding: ``acquire(until:)`` blocks its thread while `limit` are in
/// flight, each completion calls ``release()``.
///
/// Producers run on threads of their own (``ProducerThread``), so blocking here keeps them off the shared
/// cooperative pool, which tests and other work may keep busy.
///
/// - Important: ``acquire(until:)`` on the producer's thread; ``release()`` on any thread.
final class SendWindow: @unchecked Sendable {
    // Safe: `inFlight` is only read and written with `condition` locked.
    private let condition = NSCondition()
    private var inFlight = 0
    private let limit: Int

    init(limit: Int) {
        self.limit = limit
    }

    /// Takes a slot, blocking while all `limit` are taken.
    ///
    /// - Parameter deadline: When to give up waiting (``MonotonicClock`` nanoseconds).
    /// - Returns: `false` when the deadline passed first.
    func acquire(until deadline: UInt64) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        while inFlight >= limit {
            let now = MonotonicClock.nanoseconds()
            guard now < deadline else { return false }
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(Double(deadline - now) / 1e9, 0.05)))
        }
        inFlight += 1
        return true
    }

    /// Returns a slot and wakes a blocked ``acquire(until:)``.
    func release() {
        condition.lock()
        inFlight -= 1
        condition.signal()
        condition.unlock()
    }

    /// The sends outstanding now.
    var outstanding: Int {
        condition.lock()
        defer { condition.unlock() }
        return inFlight
    }
}
