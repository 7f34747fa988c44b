import Foundation
import Synchronization

/// Runs plugin code on a lifecycle thread and stops waiting for it at a deadline.
///
/// A plugin hook that never returns cannot be cancelled (it is foreign code in our address space), so the
/// kernel abandons the call, marks the plugin failed, and carries on with the others.
enum Deadline {
    /// The result of a call made under a deadline.
    enum Outcome<T> {
        case finished(T)
        case timedOut
    }

    /// Calls `body` on one of the lifecycle threads (`HookThreads`) and waits at most `timeout` for it.
    /// - Parameters:
    ///   - threads: the node's lifecycle threads unless given (tests use a set of their own).
    ///
    /// - Important: `body` may go on running, or even start, after `.timedOut` is returned; it must not capture
    ///   anything that is freed when the caller returns.
    static func run<T: Sendable>(
        _ timeout: Duration, name: String, on threads: HookThreads = .shared, _ body: @escaping @Sendable () -> T
    ) -> Outcome<T> {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        let call = HookThreads.Call(name: name) {
            let value = body()
            result.withLock { $0 = value }
            done.signal()
        }
        threads.submit(call)
        let (seconds, attoseconds) = timeout.components
        let nanos = UInt64(max(0, seconds)) * 1_000_000_000 + UInt64(max(0, attoseconds) / 1_000_000_000)
        guard done.wait(timeout: .now() + .nanoseconds(Int(min(nanos, UInt64(Int.max))))) == .success else {
            threads.overran(call)
            return .timedOut
        }
        guard let value = result.withLock({ $0 }) else { return .timedOut }
        return .finished(value)
    }
}

/// The lifecycle threads: a small fixed set that runs plugin hooks under deadlines (create, start, stop,
/// destroy, health, operations, the entry symbol). Hooks may block (they are foreign code and run under
/// deadlines), so they stay off the kernel pool, whose loops must never block.
///
/// There are `size` threads, started on first use and kept for the process's life. A hook that overruns its
/// deadline keeps its thread (nothing can stop it); the set then starts one thread in its place, so that a
/// hung plugin does not leave the others waiting, and the overrun thread ends if its hook ever returns. At
/// most `maxReplaced` threads stand in for hung hooks at once; past that, hooks wait for a free thread. The
/// thread count is therefore `size` plus the hooks hung right now (at most `maxReplaced`), never one per call.
final class HookThreads: Sendable {
    /// Threads that run hooks at once.
    static let size = 4
    /// Threads started in place of ones held by hooks that overran, at most, at once.
    static let maxReplaced = 32

    /// The process's lifecycle threads.
    static let shared = HookThreads()

    /// A set of its own; the kernel uses `shared`.
    init() {}

    /// One hook call waiting for, or running on, a lifecycle thread.
    final class Call: Sendable {
        /// Where a call is; moved by compare-and-exchange, so the caller giving up and the thread finishing
        /// agree on who replaces the thread.
        enum Phase: UInt8, AtomicRepresentable {
            case queued, running, done
            /// Its caller gave up before a thread took it: the thread that takes it replaces itself.
            case late
            /// Its caller gave up while it ran: a thread was started in its thread's place, or none (`kept`)
            /// because `maxReplaced` was reached.
            case overrunReplaced, overrunKept
        }

        let name: String
        let body: @Sendable () -> Void
        let phase = Atomic<Phase>(.queued)

        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    private struct State {
        var waiting: [Call] = []
        var head = 0
        var started = 0
        var replaced = 0
    }

    private let state = Mutex(State())
    private let available = DispatchSemaphore(value: 0)

    /// Queues a call; a free lifecycle thread takes it.
    func submit(_ call: Call) {
        let start = state.withLock { s -> Int in
            s.waiting.append(call)
            defer { s.started = max(s.started, Self.size) }
            return Self.size - s.started
        }
        for _ in 0..<max(0, start) { startThread() }
        available.signal()
    }

    /// A call did not return within its deadline: if it is running, its thread may be lost to it; start another.
    func overran(_ call: Call) {
        if call.phase.compareExchange(expected: .queued, desired: .late, ordering: .acquiringAndReleasing).exchanged {
            return
        }
        let allowed = reserveReplacement()
        let exchanged = call.phase.compareExchange(
            expected: .running, desired: allowed ? .overrunReplaced : .overrunKept, ordering: .acquiringAndReleasing
        ).exchanged
        if exchanged && allowed {
            startThread()
        } else if allowed {
            state.withLock { $0.replaced -= 1 }  // it finished meanwhile
        }
    }

    /// Threads standing in for ones held by hooks that overran (for tests).
    var standIns: Int { state.withLock { $0.replaced } }

    /// Counts a replacement thread against `maxReplaced`; false when none is left.
    private func reserveReplacement() -> Bool {
        state.withLock { s in
            guard s.replaced < Self.maxReplaced else { return false }
            s.replaced += 1
            return true
        }
    }

    private func take() -> Call? {
        state.withLock { s -> Call? in
            guard s.head < s.waiting.count else { return nil }
            let call = s.waiting[s.head]
            s.head += 1
            if s.head > 64 && s.head * 2 > s.waiting.count {
                s.waiting.removeFirst(s.head)
                s.head = 0
            }
            return call
        }
    }

    private func startThread() {
        let thread = Thread { [self] in
            while true {
                available.wait()
                guard let call = take() else { continue }
                var replacedSelf = false
                if !call.phase.compareExchange(expected: .queued, desired: .running, ordering: .acquiringAndReleasing)
                    .exchanged
                {
                    // Its caller gave up already, so nobody will replace this thread if the hook hangs: do it now.
                    replacedSelf = reserveReplacement()
                    if replacedSelf { startThread() }
                }
                Thread.current.name = call.name
                call.body()
                Thread.current.name = "plexus.lifecycle"
                let replaced =
                    replacedSelf
                    || (!call.phase.compareExchange(
                        expected: .running, desired: .done, ordering: .acquiringAndReleasing
                    ).exchanged && call.phase.load(ordering: .acquiring) == .overrunReplaced)
                if replaced {
                    // Another thread took this one's place while the hook overran: this one ends.
                    state.withLock { $0.replaced -= 1 }
                    return
                }
            }
        }
        thread.name = "plexus.lifecycle"
        thread.stackSize = 1 << 20
        thread.start()
    }
}

extension Duration {
    /// Whole milliseconds, rounded down.
    var milliseconds: UInt64 {
        let (seconds, attoseconds) = components
        return UInt64(max(0, seconds)) * 1000 + UInt64(max(0, attoseconds) / 1_000_000_000_000_000)
    }
}
