import Foundation
import Synchronization

/// Admits calls into a plugin callback (one timer's `fn`, one subscription's deliveries) until it is closed,
/// and lets whoever closes it wait for the call in progress to return.
///
/// This is how "after cancel/unsubscribe returns, the callback is not running and will not run" holds without
/// a queue per timer or subscription: the callback's work items run on a pool loop and pass the gate first;
/// the closer shuts the gate, then waits for `running` to drop to zero. It never waits on an event loop future
/// (NIO traps on that), and the wait is skipped when the closer runs on the callback's own loop: a loop runs
/// one task at a time, so the callback is then either not running or is the closer itself.
///
/// - Important: the wait is a short backing-off poll, meant for callbacks that return quickly (which the ABI
///   requires of timers and deliveries).
final class CallGate: Sendable {
    private struct State {
        var closed = false
        var running = 0
    }

    private let state = Mutex(State())

    init() {}

    /// Marks a call as running; false (and nothing marked) when the gate is closed.
    func enter() -> Bool {
        state.withLock { s in
            guard !s.closed else { return false }
            s.running += 1
            return true
        }
    }

    /// Ends a call admitted by `enter`.
    func exit() { state.withLock { $0.running -= 1 } }

    /// Admits no further call; true for the first caller.
    @discardableResult
    func close() -> Bool {
        state.withLock { s in
            defer { s.closed = true }
            return !s.closed
        }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// Waits until no admitted call runs. Call after `close`, never from the callback itself.
    func waitUntilIdle() {
        var pause: UInt32 = 20
        while state.withLock({ $0.running }) > 0 {
            usleep(pause)
            pause = min(pause * 2, 1000)
        }
    }
}
