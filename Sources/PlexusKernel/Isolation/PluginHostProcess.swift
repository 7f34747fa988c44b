import Foundation
import PlexusABI
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// One `plexus plugin-host` child and the kernel's end of its socket pair.
///
/// What the child asked the kernel for on its own behalf (subscriptions, timers, registry watches) is recorded
/// here, so that a child that dies takes exactly its own with it.
final class PluginHostProcess: @unchecked Sendable {
    // Safe: `pid` and `channel` are set in `spawn` before the object is shared; the rest is in Mutexes.

    let pid: pid_t
    let channel: IsolationChannel
    /// Why the kernel killed it, when it did (a hook overran its deadline, the instance was destroyed).
    private let killReason = Mutex<String?>(nil)
    /// The exit, once reaped.
    private let exitText = Mutex<String?>(nil)
    private let exited = DispatchSemaphore(value: 0)

    /// Kernel-side ids of what this child holds: subscription ids, timer ids, registry watch ids.
    let subscriptions = Mutex<[UInt64]>([])
    let timers = Mutex<[UInt64]>([])
    let watches = Mutex<[UInt64]>([])
    /// Kernel-side ids of its metadata watches (`kv_watch`, ABI 1.4).
    let kvWatches = Mutex<[UInt64]>([])

    /// Who handles the child's frames and its exit: nobody until an instance adopts it (`adopt`).
    private let handlers = Mutex<
        (
            frame: (@Sendable (PluginHostProcess, IsolationFrame) -> Void)?,
            exit: (@Sendable (PluginHostProcess, String) -> Void)?, exited: String?
        )
    >((nil, nil, nil))

    private init(pid: pid_t, fd: Int32, name: String) {
        self.pid = pid
        channel = IsolationChannel(fd: fd, name: "plexus.isolation.\(name)")
    }

    /// Hands the child's frames and its exit to `onFrame` and `onExit` (called on the channel's reader thread;
    /// `onExit` at once when the child is already gone).
    func adopt(
        onFrame: @escaping @Sendable (PluginHostProcess, IsolationFrame) -> Void,
        onExit: @escaping @Sendable (PluginHostProcess, String) -> Void
    ) {
        let exited = handlers.withLock { state -> String? in
            state.frame = onFrame
            state.exit = onExit
            return state.exited
        }
        if let exited { onExit(self, exited) }
    }

    private func route(_ frame: IsolationFrame) {
        handlers.withLock { $0.frame }?(self, frame)
    }

    private func routeExit(_ reason: String) {
        let handler = handlers.withLock { state -> (@Sendable (PluginHostProcess, String) -> Void)? in
            state.exited = reason
            return state.exit
        }
        handler?(self, reason)
    }

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34 and later), which Swift's Glibc module does not
    /// import. Without it (an older glibc) the child inherits the node's descriptors that lack close-on-exec.
    private static let addCloseFrom:
        (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32)? = {
            guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np")
            else { return nil }
            return unsafeBitCast(
                symbol, to: (@convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32).self)
        }()

    /// Starts `executable plugin-host --serve 3` with its end of a new socket pair as descriptor 3.
    static func spawn(executable: String, name: String) throws -> PluginHostProcess {
        var fds: [Int32] = [0, 0]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw KernelError(
                .loadFailed, subject: name,
                "cannot make a socket pair for the plugin-host: \(String(cString: strerror(errno)))")
        }
        let kernelEnd = fds[0]
        var childEnd = fds[1]
        if childEnd == 3 {
            // dup2(3, 3) would leave close-on-exec set.
            childEnd = fcntl(3, F_DUPFD_CLOEXEC, 4)
            Glibc.close(3)
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, childEnd, 3)
        // Nothing else of the node's: a descriptor the child inherited (the admin connection whose request
        // started this plugin, a client's socket) would stay open as long as the child runs, and the peer would
        // never see it close.
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 4) }
        let arguments = [executable, "plugin-host", "--serve", "3", "--name", name]
        var environment = ProcessInfo.processInfo.environment
        // Swift's backtracer would catch a crash and exit normally; the signal itself must end the child.
        environment["SWIFT_BACKTRACE"] = "enable=no"
        let argv = arguments.map { strdup($0) } + [nil]
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer {
            argv.forEach { free($0) }
            envp.forEach { free($0) }
        }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, nil, argv, envp)
        Glibc.close(childEnd)
        guard status == 0 else {
            Glibc.close(kernelEnd)
            throw KernelError(
                .loadFailed, subject: name,
                "cannot start the plugin-host \(executable): \(String(cString: strerror(status)))")
        }
        let process = PluginHostProcess(pid: pid, fd: kernelEnd, name: name)
        process.channel.start(
            closeReason: { [process] raw in process.reap(raw) }, onFrame: { [process] frame in process.route(frame) },
            onClose: { [process] reason in process.routeExit(reason) })
        return process
    }

    /// A kernel end with no process behind it: `fd` is one end of a socket pair whose other end the caller
    /// serves itself (the proxy tested in one process). `kill` shuts the socket down; nothing is reaped.
    static func unspawned(fd: Int32, name: String) -> PluginHostProcess {
        let process = PluginHostProcess(pid: 0, fd: fd, name: name)
        process.channel.start(
            closeReason: { [process] raw in process.reap(raw) }, onFrame: { [process] frame in process.route(frame) },
            onClose: { [process] reason in process.routeExit(reason) })
        return process
    }

    /// Kills the child (it is reaped by the channel's reader once the socket closes); `reason` is what in-flight
    /// calls and the restart policy are told.
    func kill(because reason: String) {
        killReason.withLock { if $0 == nil { $0 = reason } }
        // pid 0 would signal the node's whole process group.
        guard pid > 0 else { return channel.shutDown() }
        _ = Glibc.kill(pid, SIGKILL)
    }

    /// Waits up to `timeout` for the child to have been reaped; kills it when it has not.
    func waitForExit(timeout: Duration) {
        let milliseconds = Int(
            timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        if exited.wait(timeout: .now() + .milliseconds(milliseconds)) == .timedOut {
            kill(because: "plugin-host killed: it did not exit after on_destroy")
            exited.wait()
        }
        exited.signal()
    }

    /// The exit status in words, once reaped.
    var exitDescription: String? { exitText.withLock { $0 } }

    /// Reaps the child after its socket closed (killing it if it still runs: the socket was lost) and words
    /// why it is gone.
    private func reap(_ socketReason: String) -> String {
        guard pid > 0 else {
            let text = killReason.withLock { $0 } ?? "plugin-host gone: \(socketReason)"
            exitText.withLock { $0 = text }
            exited.signal()
            return text
        }
        var status: Int32 = 0
        var waited: pid_t = 0
        for _ in 0..<100 {
            waited = waitpid(pid, &status, WNOHANG)
            if waited != 0 { break }
            usleep(5_000)
        }
        if waited == 0 {
            kill(because: "plugin-host killed: its socket was lost (\(socketReason))")
            repeat { waited = waitpid(pid, &status, 0) } while waited < 0 && errno == EINTR
        }
        var text: String
        if waited < 0 {
            text = "plugin-host exited (status unknown: \(String(cString: strerror(errno))))"
        } else if status & 0x7f == 0 {
            text = "plugin-host exited with status \((status >> 8) & 0xff)"
        } else {
            text = "plugin-host exited: signal \(status & 0x7f)"
        }
        if let killed = killReason.withLock({ $0 }) { text = "\(killed) (\(text))" }
        exitText.withLock { $0 = text }
        exited.signal()
        return text
    }
}
