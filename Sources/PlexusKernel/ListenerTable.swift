import Foundation
import PlexusABI
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Listening sockets the kernel owns for protocol plugins (`px_host_api.listen`, ABI 1.2).
///
/// A plugin instance gets a descriptor of its own (a dup) and accepts on it; the kernel keeps the original
/// open while the plugin is replaced on a running node, so the next instance accepts from the same socket
/// before the old one stops, and connections waiting in the backlog are never refused. Sockets are keyed
/// by plugin name and address; the kernel closes them when the plugin stops for good, or when a replacing
/// instance no longer asks for them.
final class ListenerTable: Sendable {
    struct Entry: Sendable {
        var fd: Int32
        var host: String
        /// The port asked for (0: any) and the port bound.
        var requestedPort: Int
        var boundPort: Int
        /// The plugin instances (contexts) that asked for it.
        var requesters: Set<ObjectIdentifier>
    }

    /// Why a socket cannot be made; `status` is what the host function returns.
    struct Refusal: Error, CustomStringConvertible {
        var status: px_status
        var description: String
    }

    private let entries = Mutex<[String: [Entry]]>([:])

    /// A new descriptor of the plugin's listening socket for `host:port`, binding it on first use.
    func listen(plugin: String, requester: ObjectIdentifier, host: String, port: Int, backlog: Int) throws(Refusal)
        -> Int32
    {
        guard (0...65535).contains(port) else {
            throw Refusal(status: PX_ERR_INVALID_ARGUMENT.status, description: "port \(port) is not 0 to 65535")
        }
        return try entries.withLock { all throws(Refusal) -> Int32 in
            var mine = all[plugin] ?? []
            let index: Int
            if let found = mine.firstIndex(where: {
                $0.host == host && ($0.requestedPort == port || $0.boundPort == port)
            }) {
                index = found
            } else {
                let (fd, bound) = try Self.bind(host: host, port: port, backlog: max(1, backlog))
                mine.append(Entry(fd: fd, host: host, requestedPort: port, boundPort: bound, requesters: []))
                index = mine.count - 1
            }
            let copy = fcntl(mine[index].fd, F_DUPFD_CLOEXEC, 0)
            guard copy >= 0 else {
                all[plugin] = mine
                throw Refusal(
                    status: PX_ERR_UNAVAILABLE.status,
                    description: "cannot duplicate the listening socket: \(String(cString: strerror(errno)))")
            }
            mine[index].requesters.insert(requester)
            all[plugin] = mine
            return copy
        }
    }

    /// Closes the plugin's sockets, except those `keeping` (a replacing instance) asked for.
    func release(plugin: String, keeping: ObjectIdentifier? = nil) {
        let closing = entries.withLock { all -> [Entry] in
            let mine = all[plugin] ?? []
            let kept = mine.filter { entry in keeping.map { entry.requesters.contains($0) } ?? false }
            all[plugin] =
                kept.isEmpty
                ? nil
                : kept.map {
                    var e = $0; e.requesters = [keeping!]; return e
                }
            return mine.filter { entry in !kept.contains { $0.fd == entry.fd } }
        }
        for entry in closing { close(entry.fd) }
    }

    /// Closes every socket (the node is stopping).
    func releaseAll() {
        let all = entries.withLock { all -> [Entry] in
            defer { all.removeAll() }
            return all.values.flatMap { $0 }
        }
        for entry in all { close(entry.fd) }
    }

    /// The addresses a plugin's sockets are bound to, for messages and tests.
    func addresses(of plugin: String) -> [String] {
        entries.withLock { ($0[plugin] ?? []).map { "\($0.host):\($0.boundPort)" } }
    }

    private static func bind(host: String, port: Int, backlog: Int) throws(Refusal) -> (Int32, Int) {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var info: UnsafeMutablePointer<addrinfo>?
        let lookup = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &info)
        guard lookup == 0, let first = info else {
            throw Refusal(
                status: PX_ERR_INVALID_ARGUMENT.status,
                description: "cannot resolve '\(host)': \(String(cString: gai_strerror(lookup)))")
        }
        defer { freeaddrinfo(info) }
        let fd = socket(first.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw Refusal(
                status: PX_ERR_UNAVAILABLE.status, description: "socket(): \(String(cString: strerror(errno)))")
        }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        guard Glibc.bind(fd, first.pointee.ai_addr, first.pointee.ai_addrlen) == 0,
            Glibc.listen(fd, Int32(backlog)) == 0
        else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw Refusal(status: PX_ERR_UNAVAILABLE.status, description: "cannot listen on \(host):\(port): \(reason)")
        }
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let bound = withUnsafeMutablePointer(to: &storage) { pointer -> Int in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
            return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                Int(UInt16(bigEndian: $0.pointee.sin_port))  // sin_port and sin6_port share their offset
            }
        }
        return (fd, bound)
    }
}
