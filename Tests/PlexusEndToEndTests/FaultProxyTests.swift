import Foundation
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The fault proxy the cluster tests put on every node-to-node link, against a plain echo server.
@Suite("fault proxy", .serialized, .timeLimit(.minutes(1)))
struct FaultProxyTests {
    @Test("forwards bytes both ways, one upstream connection per client connection")
    func forwards() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let proxy = try FaultProxy(name: "x→echo", target: echo.port)
        defer { proxy.stop() }
        let client = try BlockingSocket(port: proxy.port)
        defer { client.close() }
        #expect(try client.roundTrip("ping") == "ping")
        #expect(try client.roundTrip(String(repeating: "z", count: 100_000)).count == 100_000)
        #expect(proxy.counters == FaultProxy.Counters(forwarded: 1, refused: 0, severed: 0, open: 1))
        #expect(echo.accepted == 1)
    }

    @Test("cut severs open connections and closes new ones on arrival; heal forwards again")
    func cutAndHeal() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let proxy = try FaultProxy(name: "x→echo", target: echo.port)
        defer { proxy.stop() }
        let first = try BlockingSocket(port: proxy.port)
        defer { first.close() }
        #expect(try first.roundTrip("before") == "before")

        proxy.cut()
        #expect(proxy.mode == .cut)
        #expect(first.readsEnd(within: .seconds(2)), "the open connection is severed")
        let refused = try BlockingSocket(port: proxy.port)
        defer { refused.close() }
        #expect(refused.readsEnd(within: .seconds(2)), "a new connection is closed on arrival")
        #expect(echo.accepted == 1, "nothing reached the target during the cut")
        let during = proxy.counters
        #expect(during.severed == 1 && during.refused >= 1 && during.open == 0, "\(during)")

        proxy.heal()
        let after = try BlockingSocket(port: proxy.port)
        defer { after.close() }
        #expect(try after.roundTrip("after") == "after")
        #expect(echo.accepted == 2)
    }

    @Test("links are independent: cutting one leaves another to the same target passing")
    func independentLinks() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let ab = try FaultProxy(name: "a→b", target: echo.port)
        let cb = try FaultProxy(name: "c→b", target: echo.port)
        defer {
            ab.stop()
            cb.stop()
        }
        let viaAB = try BlockingSocket(port: ab.port)
        let viaCB = try BlockingSocket(port: cb.port)
        defer {
            viaAB.close()
            viaCB.close()
        }
        ab.cut()
        #expect(viaAB.readsEnd(within: .seconds(2)))
        #expect(try viaCB.roundTrip("still") == "still")
    }

    @Test("delay holds every chunk in both directions")
    func delay() throws {
        let echo = try EchoServer()
        defer { echo.stop() }
        let proxy = try FaultProxy(name: "slow", target: echo.port)
        defer { proxy.stop() }
        let client = try BlockingSocket(port: proxy.port)
        defer { client.close() }
        #expect(try client.roundTrip("warm") == "warm")
        proxy.delay = .milliseconds(300)
        let start = ContinuousClock.now
        #expect(try client.roundTrip("slow") == "slow")
        let took = ContinuousClock.now - start
        #expect(took >= .milliseconds(580) && took < .seconds(5), "a round trip took \(took)")
        proxy.delay = .zero
        let fast = ContinuousClock.now
        #expect(try client.roundTrip("fast") == "fast")
        #expect(ContinuousClock.now - fast < .milliseconds(450), "no delay once it is reset")
    }

    @Test("a target that is down: the connection is closed at once, and forwarded once the target is back")
    func targetDown() throws {
        let port = try TCPReconnectionTests.freePort()
        let proxy = try FaultProxy(name: "x→down", target: port)
        defer { proxy.stop() }
        let early = try BlockingSocket(port: proxy.port)
        defer { early.close() }
        #expect(early.readsEnd(within: .seconds(2)))
        #expect(proxy.counters.refused == 1)
        let echo = try EchoServer(port: port)
        defer { echo.stop() }
        let late = try BlockingSocket(port: proxy.port)
        defer { late.close() }
        #expect(try late.roundTrip("up") == "up")
    }
}

/// A blocking loopback TCP client socket with a receive timeout.
struct BlockingSocket {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            let code = errno
            Glibc.close(fd)
            throw SetupError(description: "connect to 127.0.0.1:\(port): errno \(code)")
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    func close() { Glibc.close(fd) }

    /// Sends `text` and reads until as many bytes came back.
    func roundTrip(_ text: String) throws -> String {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SetupError(description: "send: errno \(errno)") }
            sent += n
        }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        while received.count < bytes.count {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else {
                throw SetupError(
                    description: "recv after \(received.count) of \(bytes.count) bytes: \(n), errno \(errno)")
            }
            received += buffer[0..<n]
        }
        return String(decoding: received, as: UTF8.self)
    }

    /// Whether the connection ends (end of stream or reset) within `timeout`, without data arriving.
    func readsEnd(within timeout: Duration) -> Bool {
        var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        guard poll(&poller, 1, Int32(timeout.components.seconds * 1000)) > 0 else { return false }
        var byte: UInt8 = 0
        return recv(fd, &byte, 1, 0) <= 0
    }
}

/// A loopback echo server on threads, counting the connections it accepted.
final class EchoServer: Sendable {
    let port: Int
    private let listener: Int32
    private let state = Mutex((stopped: false, accepted: 0, threads: 0))

    init(port: Int = 0) throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let listening = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard listening, listen(fd, 16) == 0 else {
            let code = errno
            Glibc.close(fd)
            throw SetupError(description: "echo server: cannot listen on 127.0.0.1:\(port): errno \(code)")
        }
        listener = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
        run { [self] in acceptLoop() }
    }

    var accepted: Int { state.withLock { $0.accepted } }

    func stop() {
        state.withLock { $0.stopped = true }
        let deadline = ContinuousClock.now + .seconds(2)
        while state.withLock({ $0.threads }) > 0 && ContinuousClock.now < deadline { usleep(5_000) }
    }

    private func run(_ body: @escaping @Sendable () -> Void) {
        state.withLock { $0.threads += 1 }
        Thread { [self] in
            body()
            state.withLock { $0.threads -= 1 }
        }.start()
    }

    private func acceptLoop() {
        defer { Glibc.close(listener) }
        while !state.withLock({ $0.stopped }) {
            var poller = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let fd = accept(listener, nil, nil)
            guard fd >= 0 else { continue }
            state.withLock { $0.accepted += 1 }
            run { [self] in echo(fd) }
        }
    }

    private func echo(_ fd: Int32) {
        defer { Glibc.close(fd) }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !state.withLock({ $0.stopped }) {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&poller, 1, 50) > 0 else { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { return }
            var sent = 0
            while sent < n {
                let m = buffer.withUnsafeBytes { send(fd, $0.baseAddress! + sent, n - sent, Int32(MSG_NOSIGNAL)) }
                guard m > 0 else { return }
                sent += m
            }
        }
    }
}
