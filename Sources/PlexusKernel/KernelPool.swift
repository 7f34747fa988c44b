import NIOCore
import NIOPosix

/// The kernel's shared execution: one fixed set of threads, sized to the cores, for every piece of kernel
/// work (deliveries, timers, deadlines, completions that must leave the caller's thread) and for plugins'
/// work items (`px_host_api.run`). Nothing in the kernel makes a thread or queue per topic, subscription,
/// timer or hook call (docs/abi.md, "Threading").
///
/// The threads are SwiftNIO event loops: each runs its work items in order and keeps its own timer heap, so
/// work that must stay in order (one subscriber's deliveries, one timer's firings) is pinned to one loop,
/// and everything else is spread over them.
///
/// - Important: work on the pool must not block: a blocked loop holds up everything pinned to it.
public enum KernelPool {
    /// The pool's threads: one per core, at least two.
    public static let group = MultiThreadedEventLoopGroup(numberOfThreads: max(2, System.coreCount))

    /// The loop that the next unit of unordered work runs on.
    static func next() -> any EventLoop { group.next() }

    /// Runs `work` once on a pool thread.
    static func run(_ work: @escaping @Sendable () -> Void) { group.next().execute(work) }
}
