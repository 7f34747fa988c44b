#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Why the transport cannot do what was asked, naming the address and the system's error.
public struct PeerTransportError: Error, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// An address that is not `host:port` with a port in 0...65535, or a host that does not resolve.
        case invalidAddress
        /// The listen address is taken (by another node, or another program).
        case addressInUse
        /// Any other failure to create, bind or listen on the socket.
        case listenFailed
        /// A setting out of range, such as `maxFrameBytes`.
        case invalidArgument
        /// `start()` of a transport that was started or stopped already.
        case invalidState
        /// The system refused a thread or a pipe.
        case resources
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "raft-log node-to-node transport: \(message)" }
}

/// A `host:port` from a manifest: `127.0.0.1:7000`, `node-b:7000`, `[::1]:7000`; an empty host (`:7000`) or
/// `*` listens on every interface.
struct HostPort: Sendable, Equatable, CustomStringConvertible {
    var host: String
    var port: Int

    /// - Parameter role: what the address is for, for the error ("listen address", "address of peer 'b'").
    init(parsing text: String, role: String) throws(PeerTransportError) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else {
            throw PeerTransportError(
                .invalidAddress, "the \(role) '\(text)' is not host:port with a port in 0...65535")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "*" { host = "" }
        self.host = host
        self.port = port
    }

    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// Thin wrappers over the socket calls the transport makes; every failure comes back as text for a log line.
enum Socket {
    #if os(Linux)
        static let streamType = Int32(SOCK_STREAM.rawValue)
        static let noSignal = Int32(MSG_NOSIGNAL)
    #else
        static let streamType = SOCK_STREAM
        static let noSignal: Int32 = 0
    #endif

    /// `strerror(code)` with the number.
    static func errorText(_ code: Int32 = errno) -> String { "\(String(cString: strerror(code))) (errno \(code))" }

    struct Resolved {
        var storage = sockaddr_storage()
        var length: socklen_t = 0
        var family: Int32 = 0
    }

    /// The socket addresses `address` names (numeric port; `passive` for a listener).
    static func resolve(_ address: HostPort, passive: Bool) -> Result<[Resolved], PeerTransportError> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = streamType
        hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(address.host.isEmpty ? nil : address.host, String(address.port), &hints, &list)
        guard status == 0 else {
            return .failure(
                PeerTransportError(
                    .invalidAddress, "cannot resolve \(address): \(String(cString: gai_strerror(status)))"))
        }
        defer { freeaddrinfo(list) }
        var found: [Resolved] = []
        var next = list
        while let info = next?.pointee {
            next = info.ai_next
            guard let source = info.ai_addr, Int(info.ai_addrlen) <= MemoryLayout<sockaddr_storage>.size else {
                continue
            }
            var resolved = Resolved(length: info.ai_addrlen, family: info.ai_family)
            withUnsafeMutableBytes(of: &resolved.storage) { target in
                target.baseAddress?.copyMemory(from: source, byteCount: Int(info.ai_addrlen))
            }
            found.append(resolved)
        }
        guard !found.isEmpty else {
            return .failure(PeerTransportError(.invalidAddress, "\(address) resolves to no address"))
        }
        return .success(found)
    }

    /// A new non-blocking, close-on-exec TCP socket.
    static func open(family: Int32) -> Int32 {
        #if os(Linux)
            let fd = socket(family, streamType | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #else
            let fd = socket(family, streamType, 0)
            if fd >= 0 {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                setNonBlocking(fd)
                var on: Int32 = 1
                _ = setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &on, socklen_t(MemoryLayout<Int32>.size))
            }
        #endif
        return fd
    }

    static func closeDescriptor(_ fd: Int32) { _ = close(fd) }

    static func setNonBlocking(_ fd: Int32) {
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags | O_NONBLOCK)
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) {
        var value = value
        _ = setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size))
    }

    /// Sends small frames at once: no Nagle delay.
    static func setNoDelay(_ fd: Int32) { setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1) }

    /// Binds and listens on `address`.
    /// - Returns: the socket and the bound port (the system's choice when `address.port` is 0).
    /// - Throws: `PeerTransportError` naming the address: `.addressInUse` when it is taken.
    static func makeListener(on address: HostPort, backlog: Int32 = 128) throws(PeerTransportError) -> (
        fd: Int32, port: Int
    ) {
        var firstError: PeerTransportError?
        for candidate in try resolve(address, passive: true).get() {
            let fd = open(family: candidate.family)
            guard fd >= 0 else {
                firstError = firstError ?? PeerTransportError(.listenFailed, "socket for \(address): \(errorText())")
                continue
            }
            setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1)
            var storage = candidate.storage
            let bound = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, candidate.length) }
            }
            guard bound == 0 else {
                let code = errno
                close(fd)
                firstError =
                    firstError
                    ?? (code == EADDRINUSE
                        ? PeerTransportError(
                            .addressInUse,
                            "cannot listen on \(address): the address is already in use (another node or program "
                                + "listens there; check the `listen` and `peers` settings)")
                        : PeerTransportError(.listenFailed, "cannot bind \(address): \(errorText(code))"))
                continue
            }
            guard listen(fd, backlog) == 0 else {
                firstError =
                    firstError ?? PeerTransportError(.listenFailed, "cannot listen on \(address): \(errorText())")
                close(fd)
                continue
            }
            return (fd, localPort(fd))
        }
        throw firstError ?? PeerTransportError(.listenFailed, "cannot listen on \(address)")
    }

    /// The local port of a bound socket.
    static func localPort(_ fd: Int32) -> Int {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard status == 0 else { return 0 }
        return port(of: storage)
    }

    /// `host:port` of the remote end of a connected socket, for log lines.
    static func remoteName(_ fd: Int32) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &length) }
        }
        guard status == 0 else { return "an unknown address" }
        var host = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let named = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                getnameinfo($0, length, &host, socklen_t(host.count), nil, 0, NI_NUMERICHOST)
            }
        }
        let text =
            named == 0 ? String(decoding: host.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self) : "?"
        return HostPort(host: text, port: port(of: storage)).description
    }

    private static func port(of storage: sockaddr_storage) -> Int {
        var storage = storage
        let family = Int32(storage.ss_family)
        return withUnsafePointer(to: &storage) { pointer -> Int in
            switch family {
            case AF_INET:
                return pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    Int(UInt16(bigEndian: $0.pointee.sin_port))
                }
            case AF_INET6:
                return pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    Int(UInt16(bigEndian: $0.pointee.sin6_port))
                }
            default: return 0
            }
        }
    }

    /// Accepts one pending connection as a non-blocking, close-on-exec socket; -1 with `errno` when none.
    static func acceptConnection(_ listener: Int32) -> Int32 {
        let fd = accept(listener, nil, nil)
        if fd >= 0 {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            setNonBlocking(fd)
        }
        return fd
    }

    enum Connected {
        case connected(Int32)
        case failed(String)
        case cancelled
    }

    /// Connects to `address`, trying each address it resolves to, each for at most `timeoutMs`.
    /// - Parameters:
    ///   - wake: a pipe that interrupts the wait; `cancelled` then says whether to give up.
    static func dial(
        _ address: HostPort, timeoutMs: Int, wake: WakePipe, cancelled: () -> Bool
    ) -> Connected {
        let candidates: [Resolved]
        switch resolve(address, passive: false) {
        case .success(let found): candidates = found
        case .failure(let error): return .failed(error.message)
        }
        var lastError = "no address"
        for candidate in candidates {
            let fd = open(family: candidate.family)
            guard fd >= 0 else {
                lastError = "socket: \(errorText())"
                continue
            }
            var storage = candidate.storage
            let status = withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, candidate.length) }
            }
            if status == 0 { return .connected(fd) }
            guard errno == EINPROGRESS || errno == EINTR else {
                lastError = errorText()
                close(fd)
                continue
            }
            let deadline = ContinuousClock.now + .milliseconds(timeoutMs)
            var outcome: Connected?
            while outcome == nil {
                if cancelled() {
                    close(fd)
                    return .cancelled
                }
                let left = ContinuousClock.now.duration(to: deadline)
                guard left > .zero else {
                    lastError = "no answer within \(timeoutMs) ms"
                    break
                }
                var fds = [
                    pollfd(fd: fd, events: Int16(POLLOUT), revents: 0),
                    pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0),
                ]
                let ready = poll(&fds, 2, Int32(milliseconds(left)))
                if ready < 0 && errno != EINTR {
                    lastError = "poll: \(errorText())"
                    break
                }
                if fds[1].revents != 0 { wake.drain() }
                if fds[0].revents != 0 {
                    var code: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
                    if code == 0 {
                        outcome = .connected(fd)
                    } else {
                        lastError = errorText(code)
                        break
                    }
                }
            }
            if let outcome { return outcome }
            close(fd)
        }
        return .failed(lastError)
    }

    /// Whole milliseconds in `duration`, rounded up, for `poll`.
    static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1000 + Int((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
    }
}

extension HostPort {
    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }
}

/// A non-blocking pipe that wakes a thread out of `poll`: `signal` makes `readFD` readable until `drain`.
final class WakePipe: Sendable {
    let readFD: Int32
    let writeFD: Int32

    init() throws(PeerTransportError) {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else {
            throw PeerTransportError(.resources, "cannot create a pipe: \(Socket.errorText())")
        }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            Socket.setNonBlocking(fd)
        }
        readFD = fds[0]
        writeFD = fds[1]
    }

    deinit {
        close(readFD)
        close(writeFD)
    }

    /// Makes `readFD` readable (a full pipe is already readable, so a failed write is fine).
    func signal() {
        var byte: UInt8 = 1
        _ = write(writeFD, &byte, 1)
    }

    func drain() {
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        while withUnsafeMutableBytes(of: &scratch, { read(readFD, $0.baseAddress, $0.count) }) > 0 {}
    }
}
