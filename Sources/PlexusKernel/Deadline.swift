import Foundation
import Synchronization

/// Runs plugin code on a thread of its own and stops waiting for it at a deadline.
///
/// A plugin hook that never returns cannot be cancelled (it is foreign code in our address space), so the
/// kernel abandons the thread, marks the plugin failed, and carries on with the others.
enum Deadline {
    /// The result of a call made under a deadline.
    enum Outcome<T> {
        case finished(T)
        case timedOut
    }

    /// Calls `body` on a new thread and waits at most `timeout` for it.
    ///
    /// - Important: `body` may go on running after `.timedOut` is returned; it must not capture anything
    ///   that is freed when the caller returns.
    static func run<T: Sendable>(_ timeout: Duration, name: String, _ body: @escaping @Sendable () -> T) -> Outcome<T> {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let value = body()
            result.withLock { $0 = value }
            done.signal()
        }
        thread.name = name
        thread.stackSize = 1 << 20
        thread.start()
        let (seconds, attoseconds) = timeout.components
        let nanos = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
        guard done.wait(timeout: .now() + .nanoseconds(Int(min(nanos, UInt64(Int.max))))) == .success else {
            return .timedOut
        }
        guard let value = result.withLock({ $0 }) else { return .timedOut }
        return .finished(value)
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1000 + UInt64(max(0, attoseconds) / 1_000_000_000_000_000)
    }
}
