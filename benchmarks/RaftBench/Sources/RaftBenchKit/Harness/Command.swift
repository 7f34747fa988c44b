import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a short command (`plexus plugin call …`) and collects its output.
///
/// Spawned with `posix_spawn` and reaped by its own pid, not through Foundation's `Process`, whose child reaping
/// must not meet the servers this benchmark reaps itself.
public enum Command {
    /// What a command printed and how it ended.
    public struct Output: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    /// Runs `executable` with `arguments` on a thread of Dispatch's pool (never blocking the caller's) and returns
    /// when it has exited.
    ///
    /// - Throws: ``HarnessError`` when it cannot be started.
    public static func run(_ executable: String, _ arguments: [String]) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async {
                continuation.resume(with: Result { try runBlocking(executable, arguments) })
            }
        }
    }

    /// Runs `executable` with `arguments` and waits for it on the calling thread.
    ///
    /// - Throws: ``HarnessError`` when it cannot be started.
    public static func runBlocking(_ executable: String, _ arguments: [String]) throws -> Output {
        var out: [Int32] = [0, 0]
        var err: [Int32] = [0, 0]
        var pid: pid_t = 0
        // The pipes are made close-on-exec under the spawn lock, so that no server spawned meanwhile inherits a
        // write end (which would keep the read below from ever seeing the end).
        let spawned = try ServerProcess.spawnLock.withLock { _ throws(HarnessError) -> Int32 in
            guard pipe(&out) == 0 else { throw HarnessError("pipe: \(String(cString: strerror(errno)))") }
            guard pipe(&err) == 0 else {
                close(out[0])
                close(out[1])
                throw HarnessError("pipe: \(String(cString: strerror(errno)))")
            }
            for fd in out + err { _ = fcntl(fd, F_SETFD, FD_CLOEXEC) }
            var actions = posix_spawn_file_actions_t()
            posix_spawn_file_actions_init(&actions)
            defer { posix_spawn_file_actions_destroy(&actions) }
            posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
            posix_spawn_file_actions_adddup2(&actions, out[1], 1)
            posix_spawn_file_actions_adddup2(&actions, err[1], 2)
            let argv = ([executable] + arguments).map { strdup($0) } + [nil]
            defer { for arg in argv { free(arg) } }
            let status = posix_spawnp(&pid, executable, &actions, nil, argv, environ)
            close(out[1])
            close(err[1])
            return status
        }
        defer {
            close(out[0])
            close(err[0])
        }
        guard spawned == 0 else {
            throw HarnessError("cannot run \(executable): \(String(cString: strerror(spawned)))")
        }
        // Both pipes are drained together so that neither fills while the other is read.
        var collected: [[UInt8]] = [[], []]
        var open = [true, true]
        var buffer = [UInt8](repeating: 0, count: 65536)
        while open[0] || open[1] {
            var fds = [
                pollfd(fd: open[0] ? out[0] : -1, events: Int16(POLLIN), revents: 0),
                pollfd(fd: open[1] ? err[0] : -1, events: Int16(POLLIN), revents: 0),
            ]
            guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { break }
            for index in 0..<2 where open[index] && fds[index].revents != 0 {
                let n = buffer.withUnsafeMutableBytes { read(fds[index].fd, $0.baseAddress, $0.count) }
                if n > 0 {
                    collected[index].append(contentsOf: buffer[0..<n])
                } else if n == 0 || errno != EINTR {
                    open[index] = false
                }
            }
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let exit = (status & 0x7F) == 0 ? (status >> 8) & 0xFF : 128 + (status & 0x7F)
        return Output(
            status: exit, stdout: String(decoding: collected[0], as: UTF8.self),
            stderr: String(decoding: collected[1], as: UTF8.self))
    }
}
