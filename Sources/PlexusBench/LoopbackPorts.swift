import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Ports on 127.0.0.1 for servers that a test or benchmark starts a moment later (a node, a cluster member,
/// a baseline server), chosen so that nothing else takes them in between.
///
/// The kernel's choice for port 0 comes from the ephemeral range, which is also where every outgoing
/// connection gets its local port: under a busy test run, a client connecting anywhere can take the port
/// between the moment it was found free and the moment the server binds it (a cluster then fails with
/// "address already in use"). So the ports come from the range just below the ephemeral one, which the
/// kernel never hands out by itself, walked from a random start by a cursor shared by the whole process (two
/// callers never get the same port), and each one is checked by binding it without `SO_REUSEADDR`, which
/// also skips a port with connections in `TIME_WAIT`.
public enum LoopbackPorts {
    /// How many ports below the ephemeral range are used.
    static let span = 8192

    private static let lock = NSLock()
    nonisolated(unsafe) private static var cursor = Int.random(in: 0..<span)

    /// The lowest port of the ephemeral range (`net.ipv4.ip_local_port_range`), 32768 when unreadable.
    static var ephemeralLow: Int {
        guard let text = try? String(contentsOfFile: "/proc/sys/net/ipv4/ip_local_port_range", encoding: .utf8),
            let first = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).first,
            let low = Int(first)
        else { return 32768 }
        return low
    }

    /// `count` distinct ports, each free when chosen, with every socket held until all are chosen.
    ///
    /// - Throws: ``BenchError`` (`invalidOption`) when `count` free ports are not found in the whole range.
    public static func free(_ count: Int) throws -> [Int] {
        let high = ephemeralLow - 1
        let low = max(1024, high - span + 1)
        let size = high - low + 1
        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        var ports: [Int] = []
        lock.lock()
        defer { lock.unlock() }
        var tried = 0
        while ports.count < count {
            guard tried < size else {
                throw BenchError(
                    .invalidOption, subject: "127.0.0.1:\(low)-\(high)",
                    "no \(count) free ports below the ephemeral range")
            }
            tried += 1
            let port = low + cursor % size
            cursor = (cursor + 1) % size
            if let fd = bind(port) {
                held.append(fd)
                ports.append(port)
            }
        }
        return ports
    }

    /// One port, as ``free(_:)``.
    public static func one() throws -> Int { try free(1)[0] }

    /// A socket bound to 127.0.0.1:`port`, or nil when the port is taken.
    private static func bind(_ port: Int) -> Int32? {
        #if canImport(Glibc)
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
            let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { return nil }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                #if canImport(Glibc)
                    Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                #else
                    Darwin.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                #endif
            }
        }
        guard bound else {
            close(fd)
            return nil
        }
        return fd
    }
}
