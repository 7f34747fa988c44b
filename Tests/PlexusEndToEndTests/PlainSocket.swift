import Foundation
import NIOCore
import PlexusWire

#if canImport(Glibc)
    import Glibc
#endif

/// A blocking POSIX socket to 127.0.0.1, for tests that must see exactly what the kernel reports at the end
/// of a connection (an orderly end of stream or a reset), which an event-loop client blurs.
final class PlainSocket {
    /// How reading ended.
    enum End: Equatable, CustomStringConvertible {
        /// The peer closed its side after its last byte (FIN).
        case endOfStream
        /// The peer reset the connection (RST): bytes it wrote may never have arrived.
        case reset
        /// Nothing more arrived within the time allowed, and the connection is still open.
        case timeout
        case error(Int32)

        var description: String {
            switch self {
            case .endOfStream: "end of stream"
            case .reset: "connection reset"
            case .timeout: "timeout"
            case .error(let code): "errno \(code)"
            }
        }
    }

    let fd: Int32

    /// Connects to `port` on 127.0.0.1.
    /// - Throws: `SetupError` with errno when the socket cannot be made or connected.
    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SetupError(description: "socket(): errno \(errno)") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let code = errno
            close(fd)
            throw SetupError(description: "connect to 127.0.0.1:\(port): errno \(code)")
        }
        // Every send goes out as it is: a request trickled a byte at a time must arrive that way.
        var one: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    }

    deinit { close(fd) }

    /// Reads until `done` holds for everything read so far (`end` is then `nil`), the peer ends or resets
    /// the stream, or nothing more arrives before `timeout` runs out.
    func read(until done: ([UInt8]) -> Bool, timeout: Duration = .seconds(5)) -> (bytes: [UInt8], end: End?) {
        let deadline = ContinuousClock.now + timeout
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while !done(out) {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return (out, .timeout) }
            let millis = max(
                1, Int(left.components.seconds * 1000 + left.components.attoseconds / 1_000_000_000_000_000))
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(millis))
            if ready == 0 { continue }
            if ready < 0 { return (out, .error(errno)) }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                out += chunk[0..<n]
            } else if n == 0 {
                return (out, done(out) ? nil : .endOfStream)
            } else {
                let code = errno
                return (out, code == ECONNRESET ? .reset : .error(code))
            }
        }
        return (out, nil)
    }

    /// Writes every byte (blocking).
    /// - Throws: `SetupError` with errno when the connection refuses them.
    func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SetupError(description: "send: errno \(errno)") }
            offset += n
        }
    }

    func send(_ text: String) throws { try send(Array(text.utf8)) }

    /// Shuts the write side (the peer reads an end of stream); reading goes on.
    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until the peer ends the stream, resets it, or nothing arrives for `timeout`.
    func readToEnd(timeout: Duration = .seconds(5)) -> (bytes: [UInt8], end: End) {
        let millis = Int(timeout.components.seconds * 1000 + timeout.components.attoseconds / 1_000_000_000_000_000)
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&poller, 1, Int32(millis))
            if ready == 0 { return (out, .timeout) }
            if ready < 0 { return (out, .error(errno)) }
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n > 0 {
                out += chunk[0..<n]
            } else if n == 0 {
                return (out, .endOfStream)
            } else {
                let code = errno
                return (out, code == ECONNRESET ? .reset : .error(code))
            }
        }
    }

    /// The frames in `bytes`, in order (a trailing partial frame is ignored).
    static func frames(in bytes: [UInt8]) -> [Frame] {
        var buffer = ByteBuffer(bytes: bytes)
        var frames: [Frame] = []
        let decoder = FrameDecoder(maxFrameSize: 8 << 20)
        while let inbound = try? decoder.next(from: &buffer) {
            if case .frame(let frame) = inbound { frames.append(frame) }
        }
        return frames
    }

    /// A `HELLO` frame's bytes.
    static func hello(heartbeatMs: UInt32 = 0) throws -> [UInt8] {
        var buffer = ByteBuffer()
        try FrameCodec.encode(
            Frame(id: 1, .hello(Hello(client: "plain-socket", heartbeatMs: heartbeatMs))), into: &buffer)
        return Array(buffer.readableBytesView)
    }
}
