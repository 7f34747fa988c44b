import Foundation

/// Bounds the sends a producer has outstanding: ``acquire(until:)`` blocks its thread while `limit` are in
/// flight, each completion calls ``release()``.
///
/// Producers run on threads of their own (``ProducerThread``), so blocking here keeps them off the shared
/// cooperative pool, which tests and other work may keep busy.
///
/// - Important: ``acquire(until:)`` on the producer's thread; ``release()`` on any thread.
final class SendWindow: @unchecked Sendable {
    // Safe: `inFlight` and `waiting` are only read and written with `condition` locked.
    private let condition = NSCondition()
    private var inFlight = 0
    private var waiting = false
    private let limit: Int
    /// A blocked producer is woken once this many slots are free, not for every one: at saturation that
    /// is one wake-up per batch of completions instead of one per message.
    private let wakeBatch: Int

    init(limit: Int) {
        self.limit = limit
        self.wakeBatch = max(1, limit / 16)
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
            waiting = true
            _ = condition.wait(until: Date(timeIntervalSinceNow: min(Double(deadline - now) / 1e9, 0.05)))
            waiting = false
        }
        inFlight += 1
        return true
    }

    /// Returns a slot; wakes a blocked ``acquire(until:)`` once enough are free.
    func release() {
        condition.lock()
        inFlight -= 1
        if waiting && (inFlight <= limit - wakeBatch || inFlight == 0) { condition.signal() }
        condition.unlock()
    }

    /// The sends outstanding now.
    var outstanding: Int {
        condition.lock()
        defer { condition.unlock() }
        return inFlight
    }
}
