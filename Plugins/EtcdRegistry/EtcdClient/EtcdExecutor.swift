import Dispatch
import Synchronization

/// The executor every task of the etcd client (and of the registry plugin) prefers: Dispatch threads of its
/// own rather than Swift's shared cooperative pool, so that the plugin's work goes on when the process that
/// loaded it blocks cooperative threads (a kernel or a test waiting synchronously for a completion).
public final class EtcdExecutor: TaskExecutor {
    public static let shared = EtcdExecutor()

    private let queue = DispatchQueue(label: "plexus.etcd", attributes: .concurrent)

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let executor = asUnownedTaskExecutor()
        queue.async { job.runSynchronously(on: executor) }
    }
}

/// Set when a streaming call's responses ended, so that its request producer stops too.
final class StreamEnd: Sendable {
    private let flag = Atomic<Bool>(false)

    func set() { flag.store(true, ordering: .releasing) }
    var isSet: Bool { flag.load(ordering: .acquiring) }
}
