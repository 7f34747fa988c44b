import Foundation
import Synchronization

/// A blocking producer loop on a thread of its own, which async code can wait for.
///
/// A load generator on the shared cooperative pool stalls when anything else blocks that pool's few threads
/// (two on a two-core machine); a thread of its own, started at once, keeps the pacing honest.
final class ProducerThread: Sendable {
    private struct State {
        var finished = false
        var waiter: CheckedContinuation<Void, Never>?
    }

    private let state = Mutex(State())

    /// Starts `body` on a new thread called `name`, now.
    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let thread = Thread {
            body()
            self.finish()
        }
        thread.name = name
        thread.start()
    }

    private func finish() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    /// Returns once the loop has finished.
    func wait() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let finished = state.withLock { state -> Bool in
                if state.finished { return true }
                state.waiter = continuation
                return false
            }
            if finished { continuation.resume() }
        }
    }
}
