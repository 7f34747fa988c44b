import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Watches the node's manifest directories (and the directories libraries are found in) with inotify, and
/// asks the kernel to apply what changed (`Kernel.reconcile()`); a periodic rescan catches what inotify
/// cannot see (a directory created later, a network file system, an overflowed event queue).
///
/// One thread of its own, blocked in `poll` between changes. A burst of events (a copy writes many times)
/// leads to one scan; a file that is still changing is left for the next scan (`Kernel.settleTime`).
final class ManifestWatcher: Sendable {
    private let stopping = Atomic<Bool>(false)
    /// Written to by `stop()` to wake the thread, which closes every descriptor itself.
    private let wake: Int32

    /// Starts watching.
    /// - Parameters:
    ///   - directories: the directories to watch (missing ones are rescanned, not watched).
    ///   - rescan: how often to scan without an event.
    ///   - scan: applies the directories' contents; returns true when some file is still settling.
    init(directories: [String], rescan: Duration, scan: @escaping @Sendable () -> Bool) {
        let fd = inotify_init1(Int32(IN_NONBLOCK | IN_CLOEXEC))
        if fd >= 0 {
            let mask = UInt32(IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_CREATE | IN_ATTRIB)
            for directory in Set(directories) { _ = inotify_add_watch(fd, directory, mask) }
        }
        var pipeEnds: [Int32] = [-1, -1]
        if pipe(&pipeEnds) != 0 { pipeEnds = [-1, -1] }
        for end in pipeEnds where end >= 0 { _ = fcntl(end, F_SETFD, FD_CLOEXEC) }
        wake = pipeEnds[1]
        let wakeRead = pipeEnds[0]
        let rescanMs = Int32(
            clamping: rescan.components.seconds * 1000 + rescan.components.attoseconds / 1_000_000_000_000_000)
        // The thread keeps the watcher (and its flag) alive until it ends.
        let worker = Thread { [self] in
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var settling = false
            while !self.stopping.load(ordering: .acquiring) {
                // While a file settles, look again soon; otherwise sleep until an event or the rescan.
                let wait: Int32 = settling ? Int32(Kernel.settleTime * 1000) : rescanMs
                var event = false
                var pollers = [
                    pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0),
                ]
                if poll(&pollers, 2, wait) > 0, pollers[0].revents != 0 {
                    event = true
                    // Drain; which file changed does not matter, the scan looks at them all.
                    while buffer.withUnsafeMutableBytes({ read(fd, $0.baseAddress, $0.count) }) > 0 {}
                }
                if self.stopping.load(ordering: .acquiring) { break }
                // A short pause after an event lets a burst of writes finish before the scan.
                if event { usleep(50_000) }
                settling = scan()
            }
            for end in [fd, wakeRead] where end >= 0 { close(end) }
        }
        worker.name = "plexus.deploy-watch"
        worker.start()
    }

    /// Stops the thread: it wakes at once (or after the scan it is running) and closes its descriptors.
    func stop() {
        guard !stopping.exchange(true, ordering: .acquiringAndReleasing), wake >= 0 else { return }
        var byte: UInt8 = 1
        _ = write(wake, &byte, 1)
        close(wake)
    }
}
