import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Why a server could not be started, or stopped answering.
public struct HarnessError: Error, CustomStringConvertible, Sendable {
    /// What failed, with the server's name and where its log is.
    public var description: String

    public init(_ description: String) { self.description = description }
}

/// A server process the benchmark started (an etcd member, a `plexus serve` node), with its output in a log file.
///
/// Every one is recorded in ``ServerProcess/all`` and, when a pid file is set, in that file, so that the
/// benchmark, its signal handlers and the script that ran it can kill whatever is left, however it ends.
public final class ServerProcess: Sendable {
    /// The pids of servers still running, and the file that lists every pid started (for the calling script).
    private struct Registry {
        var running: [pid_t: String] = [:]
        var pidFile: String?
    }

    private static let registry = Mutex(Registry())
    /// Held while a child is spawned, and while ``Command`` makes its pipes: a pipe made close-on-exec in two
    /// steps must not leak into a child spawned in between.
    static let spawnLock = Mutex(())

    /// A name for messages: "etcd-1", "plexus-b".
    public let name: String
    public let pid: pid_t
    /// Where its stdout and stderr go (appended: a restarted server adds to the same file).
    public let logPath: String
    private let exitStatus = Mutex<Int32?>(nil)

    /// Appends every pid started from now on to `path`, one per line.
    public static func recordPIDs(in path: String) {
        registry.withLock { $0.pidFile = path }
    }

    /// Starts `executable` (a path, or a name looked up on `PATH`) with `arguments`, its stdin from /dev/null and
    /// its output appended to `logPath`.
    ///
    /// - Throws: ``HarnessError`` when it cannot be started.
    public init(name: String, executable: String, arguments: [String], logPath: String) throws {
        self.name = name
        self.logPath = logPath
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for arg in argv { free(arg) } }
        var pid: pid_t = 0
        let status = Self.spawnLock.withLock { _ in posix_spawnp(&pid, executable, &actions, nil, argv, environ) }
        guard status == 0 else {
            throw HarnessError("cannot start \(name) (\(executable)): \(String(cString: strerror(status)))")
        }
        self.pid = pid
        Self.registry.withLock { registry in
            registry.running[pid] = name
            if let file = registry.pidFile {
                let fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
                if fd >= 0 {
                    let line = Array("\(pid)\n".utf8)
                    _ = line.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
                    close(fd)
                }
            }
        }
    }

    /// Whether it has exited; reaps it if so.
    public var hasExited: Bool {
        exitStatus.withLock { stored -> Bool in
            if stored != nil { return true }
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            guard reaped == pid || (reaped < 0 && errno == ECHILD) else { return false }
            stored = status
            Self.registry.withLock { _ = $0.running.removeValue(forKey: pid) }
            return true
        }
    }

    /// Sends `signal` and waits up to `timeout` for it to exit; then SIGKILL and wait.
    public func stop(signal: Int32 = SIGTERM, timeout: Duration = .seconds(10)) {
        guard !hasExited else { return }
        kill(pid, signal)
        let deadline = ContinuousClock.now + timeout
        while !hasExited && ContinuousClock.now < deadline { usleep(10_000) }
        if !hasExited {
            kill(pid, SIGKILL)
            while !hasExited { usleep(1_000) }
        }
    }

    /// `kill -9`, then reaps it.
    public func kill9() { stop(signal: SIGKILL) }

    /// The last `lines` lines of its log, for error messages.
    public func logTail(_ lines: Int = 15) -> String {
        guard let text = try? String(contentsOfFile: logPath, encoding: .utf8) else { return "(no log)" }
        return text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }

    /// SIGKILLs every server still running and reaps them. Safe to call more than once, from any thread.
    public static func killAll() {
        let running = registry.withLock { registry -> [pid_t] in
            defer { registry.running = [:] }
            return Array(registry.running.keys)
        }
        for pid in running { kill(pid, SIGKILL) }
        for pid in running {
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        }
    }
}
