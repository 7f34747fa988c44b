import Synchronization

/// Bounds the sends a producer has outstanding: ``acquire()`` waits while `limit` are in flight, each
/// completion calls ``release()``.
///
/// - Important: One task calls ``acquire()``; ``release()`` may run on any thread.
final class SendWindow: Sendable {
    private struct State {
        var inFlight = 0
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = limit
    }

    /// Takes a slot, waiting for a completion when all `limit` are taken.
    func acquire() async {
        let taken = state.withLock { state -> Bool in
            guard state.inFlight < limit else { return false }
            state.inFlight += 1
            return true
        }
        if taken { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = state.withLock { state -> Bool in
                if state.inFlight < limit {
                    state.inFlight += 1
                    return true
                }
                state.waiter = continuation
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }

    /// Returns a slot; hands it straight to a waiting ``acquire()`` if there is one.
    func release() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.inFlight -= 1
            return nil
        }
        waiter?.resume()
    }

    /// The sends outstanding now.
    var inFlight: Int { state.withLock { $0.inFlight } }
}
