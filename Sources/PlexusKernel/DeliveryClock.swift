import Dispatch
import Synchronization

/// Time for the delivery engine: real in a node, manual in tests (retries and timeouts without sleeps).
public protocol DeliveryClock: Sendable {
    /// Monotonic nanoseconds.
    func now() -> UInt64
    /// Runs `action` at `deadline` (monotonic ns) or soon after, on any thread.
    func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void)
}

/// The system's monotonic clock, with Dispatch timers.
public struct SystemDeliveryClock: DeliveryClock {
    public init() {}

    public func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    public func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void) {
        DispatchQueue.global().asyncAfter(deadline: DispatchTime(uptimeNanoseconds: deadline), execute: action)
    }
}

/// A clock that moves only when told: `advance(by:)` runs every action that has come due, in deadline order.
public final class ManualDeliveryClock: DeliveryClock {
    private struct State {
        var now: UInt64 = 1_000_000_000
        var pending: [(deadline: UInt64, sequence: UInt64, action: @Sendable () -> Void)] = []
        var sequence: UInt64 = 0
    }

    private let state = Mutex(State())

    public init() {}

    public func now() -> UInt64 { state.withLock { $0.now } }

    public func schedule(at deadline: UInt64, _ action: @escaping @Sendable () -> Void) {
        state.withLock {
            $0.sequence += 1
            $0.pending.append((deadline, $0.sequence, action))
        }
    }

    /// Moves time forward, running due actions one at a time (an action may schedule more).
    public func advance(byNanoseconds delta: UInt64) {
        let target = state.withLock { $0.now + delta }
        while true {
            let due = state.withLock { s -> (@Sendable () -> Void)? in
                guard
                    let index = s.pending.indices.filter({ s.pending[$0].deadline <= target })
                        .min(by: {
                            (s.pending[$0].deadline, s.pending[$0].sequence) < (
                                s.pending[$1].deadline, s.pending[$1].sequence
                            )
                        })
                else { return nil }
                let item = s.pending.remove(at: index)
                s.now = max(s.now, item.deadline)
                return item.action
            }
            guard let due else { break }
            due()
        }
        state.withLock { $0.now = target }
    }

    /// How many actions wait.
    public var scheduledCount: Int { state.withLock { $0.pending.count } }
}
