import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An in-process TCP proxy on 127.0.0.1 for one directed link of a cluster: it listens on its own port and
/// forwards every connection it accepts to `target` (a node's real node-to-node port), byte for byte in both
/// directions, until told otherwise.
///
/// - `cut()` severs every open connection (both sockets shut down, so both ends see the connection end) and
///   closes every new one as soon as it is accepted, until `heal()`. Bytes in flight when the cut happens
///   are dropped.
/// - `delay` holds every chunk read in either direction that long before forwarding it.
///
/// A link is directed by who connects: the proxy between node a and node b's port carries the connections a
/// opens to b (a's requests and b's answers on them); b's connections to a go through another proxy.
///
/// One thread accepts; two threads pump each connection (`poll` with a 100 ms tick so that they notice a
/// cut or `stop()`). Sockets are closed only by the last pump of their connection, after it has been removed
/// from the table under the lock, so a cut never shuts down a descriptor that was closed and reused.
///
/// - Important: Thread-safe: every mutable field lives in the `Mutex`; the listener descriptor is immutable
///   and closed only by the accept thread on its way out. Call `stop()` (or let go of the proxy) at the end.
final class FaultProxy: Sendable {
    enum Mode: Sendable, Equatable {
        case pass
        case cut
    }

    /// Counters for tests: connections forwarded, connections closed on arrival (cut, or the target refused),
    /// connections severed by a cut, and how many forwarded ones are neither severed nor ended.
    struct Counters: Sendable, Equatable {
        var forwarded = 0
        var refused = 0
        var severed = 0
        var open = 0
    }

    private struct Connection {
        var client: Int32
        var upstream: Int32
        var pumps = 2
        var severed = false
    }

    private struct State {
        var mode = Mode.pass
        var delay = Duration.zero
        var stopped = false
        var connections: [Int: Connection] = [:]
        var nextConnection = 0
        var counters = Counters()
        var threads = 0
    }

    /// Names the link in messages, e.g. `a→b`.
    let name: String
    /// The port the proxy listens on.
    let port: Int
    /// The port it forwards to.
    let target: Int
    private let listener: Int32
    private let state = Mutex(State())

    /// Listens on 127.0.0.1:`port` (0: a free one) and starts forwarding to 127.0.0.1:`target`.
    /// - Throws: `SetupError` when the listening socket cannot be made.
    init(name: String, target: Int, port: Int = 0) throws {
        self.name = name
        self.target = target
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SetupError(description: "proxy \(name): socket: errno \(errno)") }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = Self.loopback(port: port)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound, listen(fd, 128) == 0 else {
            let code = errno
            close(fd)
            throw SetupError(description: "proxy \(name): cannot listen on 127.0.0.1:\(port): errno \(code)")
        }
        listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        spawn { [self] in acceptLoop() }
    }

    deinit { stop() }

    var mode: Mode { state.withLock { $0.mode } }
    var counters: Counters { state.withLock { $0.counters } }

    /// How long each chunk is held before it is forwarded (zero: at once).
    var delay: Duration {
        get { state.withLock { $0.delay } }
        set { state.withLock { $0.delay = newValue } }
    }

    /// Severs every open connection and closes new ones on arrival until `heal()`.
    func cut() {
        state.withLock { state in
            state.mode = .cut
            Self.severAll(&state)
        }
    }

    /// Forwards new connections again.
    func heal() { state.withLock { $0.mode = .pass } }

    /// Severs everything, stops accepting and waits (up to two seconds) for the proxy's threads to end.
    func stop() {
        state.withLock { state in
            state.stopped = true
            Self.severAll(&state)
        }
        let deadline = ContinuousClock.now + .seconds(2)
        while state.withLock({ $0.threads }) > 0 && ContinuousClock.now < deadline { usleep(5_000) }
    }

    // MARK: Threads

    private func spawn(_ body: @escaping @Sendable () -> Void) {
        state.withLock { $0.threads += 1 }
        let thread = Thread { [self] in
            body()
            state.withLock { $0.threads -= 1 }
        }
        thread.name = "fault-proxy \(name)"
        thread.start()
    }

    private func acceptLoop() {
        defer { close(listener) }
        while !state.withLock({ $0.stopped }) {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 100) > 0 else { continue }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { continue }
            guard state.withLock({ $0.mode == .pass && !$0.stopped }), let upstream = Self.connect(to: target) else {
                state.withLock { $0.counters.refused += 1 }
                Self.reset(client)
                continue
            }
            Self.noDelay(client)
            let id: Int? = state.withLock { state in
                // A cut between the check above and now closes this one too.
                guard state.mode == .pass && !state.stopped else { return nil }
                let id = state.nextConnection
                state.nextConnection += 1
                state.connections[id] = Connection(client: client, upstream: upstream)
                state.counters.forwarded += 1
                state.counters.open += 1
                return id
            }
            guard let id else {
                state.withLock { $0.counters.refused += 1 }
                Self.reset(client)
                Self.reset(upstream)
                continue
            }
            spawn { [self] in pump(id, from: client, to: upstream) }
            spawn { [self] in pump(id, from: upstream, to: client) }
        }
    }

    private func pump(_ id: Int, from source: Int32, to destination: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        func severed() -> Bool { state.withLock { $0.connections[id]?.severed ?? true } }
        while !severed() {
            var poller = pollfd(fd: source, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, 100)
            if ready == 0 { continue }
            if ready < 0 && errno == EINTR { continue }
            let count = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if count <= 0 { break }
            let delay = state.withLock { $0.delay }
            if delay > .zero {
                Thread.sleep(
                    forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18)
            }
            if severed() { break }
            var sent = 0
            while sent < count {
                let n = buffer.withUnsafeBytes {
                    send(destination, $0.baseAddress! + sent, count - sent, Int32(MSG_NOSIGNAL))
                }
                if n <= 0 { break }
                sent += n
            }
            if sent < count { break }
        }
        finish(id)
    }

    /// One pump of a connection is done: both directions end; the last pump closes the sockets.
    private func finish(_ id: Int) {
        let closing: Connection? = state.withLock { state in
            guard var connection = state.connections[id] else { return nil }
            if !connection.severed {
                connection.severed = true
                state.counters.open -= 1
                shutdown(connection.client, Int32(SHUT_RDWR))
                shutdown(connection.upstream, Int32(SHUT_RDWR))
            }
            connection.pumps -= 1
            if connection.pumps > 0 {
                state.connections[id] = connection
                return nil
            }
            state.connections[id] = nil
            return connection
        }
        if let closing {
            close(closing.client)
            close(closing.upstream)
        }
    }

    private static func severAll(_ state: inout State) {
        for (id, var connection) in state.connections where !connection.severed {
            connection.severed = true
            shutdown(connection.client, Int32(SHUT_RDWR))
            shutdown(connection.upstream, Int32(SHUT_RDWR))
            state.connections[id] = connection
            state.counters.severed += 1
            state.counters.open -= 1
        }
    }

    // MARK: Sockets

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return address
    }

    /// A connected socket to 127.0.0.1:`port`, or nil when nothing listens there.
    private static func connect(to port: Int) -> Int32? {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return nil }
        var address = loopback(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            close(fd)
            return nil
        }
        noDelay(fd)
        return fd
    }

    private static func noDelay(_ fd: Int32) {
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Closes a socket with a reset rather than an orderly end: the peer's next read or write fails at once.
    private static func reset(_ fd: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }
}
