import Foundation
import PlexusBench

#if canImport(Glibc)
    import Glibc
#endif

/// TCP ports on 127.0.0.1, where every server of the benchmark listens.
public enum Loopback {
    public static let host = "127.0.0.1"

    /// `count` distinct ports, free a moment ago and outside the ephemeral range (``LoopbackPorts``).
    ///
    /// - Throws: ``HarnessError`` when that many free ports are not found.
    public static func freePorts(_ count: Int) throws -> [Int] {
        do { return try LoopbackPorts.free(count) } catch { throw HarnessError("\(error)") }
    }

    /// Whether something accepts connections on 127.0.0.1:`port` now.
    public static func accepts(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    /// Waits until `server` accepts connections on `port`.
    ///
    /// - Throws: ``HarnessError`` with the server's log tail when it exits first or `timeout` passes.
    public static func waitUntilListening(_ server: ServerProcess, port: Int, timeout: Duration = .seconds(30))
        async throws
    {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if server.hasExited {
                throw HarnessError("\(server.name) exited while starting; \(server.logPath):\n\(server.logTail())")
            }
            if accepts(port: port) { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw HarnessError(
            "\(server.name) did not listen on 127.0.0.1:\(port) within \(timeout); \(server.logPath):\n"
                + server.logTail())
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr(host)
        return address
    }
}
