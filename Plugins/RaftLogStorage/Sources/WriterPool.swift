import Dispatch
import Foundation
import Synchronization

/// The writer threads of one raft-log instance: a fixed set shared by every stream, instead of a thread per
/// stream.
///
/// A stream with work is submitted once (`StreamLog` keeps it from being queued or run twice at a time); a
/// thread takes it and runs one writer cycle (`StreamLog.cycle`: everything queued, written, synced once),
/// after which the stream submits itself again if more work came meanwhile. Cycles of one stream never overlap,
/// so each stream's files still have one writer at a time; cycles of different streams run in parallel, up to
/// the pool's size, so a slow `fdatasync` of one stream delays another only when every thread is syncing. A
/// stream that owes an interval sync and has nothing else to do asks to be woken at its deadline (`wake`).
final class WriterPool: Sendable {
    /// The number of threads: one per core, at least two (a cycle mostly waits for the disk).
    let size: Int
    private struct State {
        var ready: [StreamLog] = []
        var head = 0
        var running = false
        var stopping = false
    }
    private let state = Mutex(State())
    /// One signal per submitted stream, and one per thread to stop it.
    private let available = DispatchSemaphore(value: 0)
    private let exited = DispatchSemaphore(value: 0)
    /// Where deferred wakes (interval syncs) wait for their time.
    private let timers = DispatchQueue(label: "raft-log.writer-timers")

    init(size: Int = max(2, ProcessInfo.processInfo.activeProcessorCount)) {
        self.size = size
    }

    /// Starts the threads (at the storage's start; a second call does nothing).
    func start() {
        let start = state.withLock { s -> Bool in
            guard !s.running else { return false }
            s.running = true
            s.stopping = false
            return true
        }
        guard start else { return }
        for number in 0..<size {
            let thread = Thread { [self] in run() }
            thread.name = "raft-log writer \(number)"
            // Room for the nested buffer lending of a gather write (`LogWriter.withVectors`).
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    /// Runs one writer cycle of `log` on a pool thread soon.
    func submit(_ log: StreamLog) {
        state.withLock { $0.ready.append(log) }
        available.signal()
    }

    /// Asks `log` to run a cycle at `deadline` (an interval sync it owes), unless it runs before.
    func wake(_ log: StreamLog, at deadline: DispatchTime) {
        timers.asyncAfter(deadline: deadline) { [weak log] in log?.wakeForSync() }
    }

    /// Stops the threads once the cycles already submitted ran; waits for them. Every stream is stopped first.
    func stop() {
        let running = state.withLock { s -> Bool in
            defer { s.stopping = true }
            return s.running && !s.stopping
        }
        guard running else { return }
        for _ in 0..<size { available.signal() }
        for _ in 0..<size { exited.wait() }
        state.withLock { $0.running = false }
    }

    private func run() {
        while true {
            available.wait()
            let next = state.withLock { s -> StreamLog?? in
                guard s.head < s.ready.count else { return s.stopping ? .some(nil) : nil }
                let log = s.ready[s.head]
                s.head += 1
                // Reclaim the taken prefix once it is most of the array.
                if s.head >= 64 && s.head * 2 >= s.ready.count {
                    s.ready.removeFirst(s.head)
                    s.head = 0
                }
                return .some(log)
            }
            switch next {
            case .some(.some(let log)): log.cycle()
            case .some(.none):
                exited.signal()
                return
            case .none: continue
            }
        }
    }
}
