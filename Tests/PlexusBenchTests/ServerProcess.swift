import Foundation
import PlexusBench

#if canImport(Glibc)
    import Glibc
#endif

/// Why a test could not start its server.
struct ServerSetupError: Error, CustomStringConvertible {
    var description: String
}

/// A baseline server (`nats-server`, `redis-server`) started on a free loopback port for one test.
///
/// ``stop()`` sends SIGTERM, waits for the process (SIGKILL after 5 s) and removes its data directory; call
/// it in a `defer`. The server is spawned with `posix_spawn` and an empty signal mask: a child of
/// Foundation's `Process` inherits the test runner's blocked signals, and `redis-server` would then
/// ignore SIGTERM.
final class ServerProcess {
    let name: String
    let port: Int
    let directory: URL
    private let pid: pid_t

    /// The executable's path if it is installed in a usual place, else `nil`.
    static func find(_ executable: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        let directories = path.split(separator: ":").map(String.init) + ["/usr/bin", "/usr/sbin", "/usr/local/bin"]
        return directories.map { "\($0)/\(executable)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    /// A TCP port on 127.0.0.1 that was free a moment ago, outside the ephemeral range (``LoopbackPorts``).
    static func freePort() throws -> Int { try LoopbackPorts.one() }

    /// Starts `executable` with the arguments `arguments(port, directory)` and waits until the port accepts.
    ///
    /// - Throws: ``ServerSetupError`` when it is not installed, exits early or does not listen within 10 s.
    init(_ executable: String, arguments: (Int, String) -> [String]) throws {
        guard let path = Self.find(executable) else {
            throw ServerSetupError(description: "\(executable) is not installed (scripts/bench-deps --servers)")
        }
        name = executable
        port = try Self.freePort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let log = directory.appendingPathComponent("server.log").path
        pid = try Self.spawn(path: path, arguments: arguments(port, directory.path), log: log)
        let deadline = Date().addingTimeInterval(10)
        while !Self.accepts(port: port) {
            var status: Int32 = 0
            let exited = waitpid(pid, &status, WNOHANG) == pid
            guard !exited, Date() < deadline else {
                let output = (try? String(contentsOfFile: log, encoding: .utf8)) ?? ""
                stop()
                throw ServerSetupError(
                    description: "\(executable) did not listen on 127.0.0.1:\(port) within 10 s: \(output.suffix(500))")
            }
            usleep(20_000)
        }
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s) and removes its directory.
    func stop() {
        if kill(pid, SIGTERM) == 0 {
            var status: Int32 = 0
            let deadline = Date().addingTimeInterval(5)
            while waitpid(pid, &status, WNOHANG) == 0 {
                if Date() > deadline {
                    kill(pid, SIGKILL)
                    waitpid(pid, &status, 0)
                    break
                }
                usleep(10_000)
            }
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// `127.0.0.1:port`.
    var address: String { "127.0.0.1:\(port)" }

    /// Spawns `path` with default signal handling and an empty signal mask, stdout and stderr to `log`.
    private static func spawn(path: String, arguments: [String], log: String) throws -> pid_t {
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attributes, &empty)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signal in [SIGTERM, SIGINT, SIGHUP, SIGPIPE] { sigaddset(&defaults, signal) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, log, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let argv = ([path] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let result = posix_spawn(&pid, path, &actions, &attributes, argv, environ)
        guard result == 0 else {
            throw ServerSetupError(description: "posix_spawn \(path) failed: errno \(result)")
        }
        return pid
    }

    private static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return withUnsafePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}
