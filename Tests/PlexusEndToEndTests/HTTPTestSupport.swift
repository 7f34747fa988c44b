import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// One HTTP response as a test sees it.
struct TestResponse: Sendable, CustomStringConvertible {
    var status: Int
    var headers: [(name: String, value: String)]
    var body: [UInt8]

    func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
    var text: String { String(decoding: body, as: UTF8.self) }
    /// The body as a JSON object, when it is one.
    var json: [String: Any]? { (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any] }
    var description: String { "\(status) \(text)" }
}

/// A bare TCP connection to an HTTP server, for requests no well-behaved client would send (trickled
/// bytes, bare line feeds, huge headers) and for reading a response byte by byte.
final class RawHTTP: Sendable {
    let channel: any Channel
    private let inbox: Inbox

    final class Inbox: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])
        let closed = Atomic<Bool>(false)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.withLock { $0 += buffer.readableBytesView }
        }

        func channelInactive(context: ChannelHandlerContext) { closed.store(true, ordering: .relaxed) }

        func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }
    }

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    static func connect(port: Int) async throws -> RawHTTP {
        let inbox = Inbox()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(inbox) }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawHTTP(channel: channel, inbox: inbox)
    }

    func send(_ text: String) async throws { try await send(bytes: Array(text.utf8)) }

    /// Connects and sends `bytes` as the connection's first. A server may close a connection that stays idle
    /// past its idle timeout before a byte came (a stalled test process on a loaded machine can take that
    /// long between connect and write); then, as an HTTP client does with a stale connection, it connects again,
    /// up to three times.
    static func connect(port: Int, sending bytes: [UInt8]) async throws -> RawHTTP {
        var attempt = 1
        while true {
            let connection = try await connect(port: port)
            do {
                try await connection.send(bytes: bytes)
                return connection
            } catch
                where attempt < 3 && connection.inbox.closed.load(ordering: .relaxed) && connection.received.isEmpty
            {
                attempt += 1
            }
        }
    }

    static func connect(port: Int, sending text: String) async throws -> RawHTTP {
        try await connect(port: port, sending: Array(text.utf8))
    }

    /// Writes `bytes`; a failure names how much was being sent and what the server had said by then, so a
    /// connection the server closed early is told apart from one that never worked.
    func send(bytes: [UInt8]) async throws {
        do {
            try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
        } catch {
            throw SetupError(
                description: "sending \(bytes.count) bytes failed (\(error)); closed by the server: "
                    + "\(inbox.closed.load(ordering: .relaxed)); received so far: '\(received)'")
        }
    }

    /// Everything received so far, as text.
    var received: String { String(decoding: inbox.bytes.withLock { $0 }, as: UTF8.self) }

    /// The next complete response (1xx skipped), consumed from what arrived; `nil` if none is complete
    /// within `timeout` (or the connection closed first).
    func response(timeout: Duration = .seconds(10)) async throws -> TestResponse? {
        // Answered: a final response, or none because the connection closed.
        let answer: TestResponse?? = try await poll(upTo: timeout, every: .milliseconds(5)) {
            let closed = inbox.closed.load(ordering: .relaxed)
            while let response = inbox.bytes.withLock({ Self.parse(&$0, closed: closed) }) {
                if response.status >= 200 { return .some(response) }
            }
            return closed ? .some(nil) : nil
        }
        return answer ?? nil
    }

    /// Takes one response with a `Content-Length` (or ending at the close) off the front of `bytes`.
    static func parse(_ bytes: inout [UInt8], closed: Bool) -> TestResponse? {
        let separator: [UInt8] = [13, 10, 13, 10]
        guard let end = bytes.indices.dropLast(3).first(where: { Array(bytes[$0..<($0 + 4)]) == separator }) else {
            return nil
        }
        let head = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let parts = head[0].split(separator: " ", maxSplits: 2)
        guard parts.count >= 2, let status = Int(parts[1]) else { return nil }
        let headers = head.dropFirst().compactMap { line -> (name: String, value: String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        let bodyStart = end + 4
        let length: Int
        if status < 200 || status == 204 {
            length = 0
        } else if let value = headers.first(where: { $0.name.lowercased() == "content-length" }),
            let n = Int(value.value)
        {
            length = n
        } else {
            guard closed else { return nil }
            length = bytes.count - bodyStart
        }
        guard bytes.count >= bodyStart + length else { return nil }
        let body = Array(bytes[bodyStart..<(bodyStart + length)])
        bytes.removeFirst(bodyStart + length)
        return TestResponse(status: status, headers: headers, body: body)
    }

    /// Whether the server closed the connection within `timeout`.
    func closedByServer(within timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if inbox.closed.load(ordering: .relaxed) { return true }
            try await Task.sleep(for: .milliseconds(10))
        }
        return inbox.closed.load(ordering: .relaxed)
    }

    func close() async { try? await channel.close() }
}

enum HTTPTest {
    /// One request on a connection of its own (`Connection: close`); the response.
    static func request(
        port: Int, _ method: String, _ path: String, headers: [(String, String)] = [], body: [UInt8] = [],
        timeout: Duration = .seconds(10)
    ) async throws -> TestResponse {
        var text = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        if !body.isEmpty || method == "POST" { text += "Content-Length: \(body.count)\r\n" }
        let connection = try await RawHTTP.connect(port: port, sending: Array((text + "\r\n").utf8) + body)
        defer { Task { await connection.close() } }
        guard let response = try await connection.response(timeout: timeout) else {
            throw SetupError(
                description: "no response to \(method) \(path) within \(timeout): '\(connection.received)'")
        }
        return response
    }

    static func post(port: Int, _ path: String, json: String) async throws -> TestResponse {
        try await request(
            port: port, "POST", path, headers: [("Content-Type", "application/json")], body: Array(json.utf8))
    }
}

/// A webhook sink in the test process: an HTTP/1.1 server on loopback that records every request and
/// answers as the test's script says (status, headers, body, after a delay), keeping connections alive.
final class TestSink: Sendable {
    struct Received: Sendable {
        var path: String
        var headers: [(name: String, value: String)]
        var body: [UInt8]
        var at: ContinuousClock.Instant
        /// Which connection it came on (connections are numbered from 1 as they are accepted).
        var connection: Int

        func header(_ name: String) -> String? { headers.first { $0.name.lowercased() == name.lowercased() }?.value }
    }

    struct Answer: Sendable {
        var status: Int = 202
        var headers: [(String, String)] = []
        var body: [UInt8] = []
        var delay: Duration = .zero
    }

    /// What to answer to a request: given it and how many requests its path had before it.
    typealias Script = @Sendable (Received, Int) -> Answer

    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let script: Script
    let received = Mutex<[Received]>([])
    let connections = Atomic<Int>(0)
    let inFlight = Atomic<Int>(0)
    let maxInFlight = Atomic<Int>(0)
    private let channel = Mutex<(any Channel)?>(nil)

    init(script: @escaping Script) { self.script = script }

    var port: Int { channel.withLock { $0?.localAddress?.port ?? 0 } }
    var url: String { "http://127.0.0.1:\(port)" }

    static func start(script: @escaping Script = { _, _ in Answer() }) async throws -> TestSink {
        let sink = TestSink(script: script)
        let listener = try await ServerBootstrap(group: sink.group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                let number = sink.connections.add(1, ordering: .relaxed).newValue
                return channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(Handler(sink: sink, connection: number))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        sink.channel.withLock { $0 = listener }
        return sink
    }

    func requests(_ path: String? = nil) -> [Received] {
        received.withLock { all in path.map { p in all.filter { $0.path == p } } ?? all }
    }

    /// Waits until `path` has had `count` requests (or `timeout` passes); returns them.
    func wait(for path: String, count: Int, timeout: Duration = .seconds(15)) async throws -> [Received] {
        let deadline = ContinuousClock.now + timeout
        while requests(path).count < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        return requests(path)
    }

    func stop() {
        let listener = channel.withLock { $0 }
        try? listener?.close().wait()
        try? group.syncShutdownGracefully()
    }

    private final class Handler: ChannelInboundHandler, @unchecked Sendable {
        // Safe: touched only on the channel's event loop.
        typealias InboundIn = HTTPServerRequestPart
        typealias OutboundOut = HTTPServerResponsePart

        let sink: TestSink
        let connection: Int
        var head: HTTPRequestHead?
        var body: [UInt8] = []

        init(sink: TestSink, connection: Int) {
            self.sink = sink
            self.connection = connection
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let h):
                head = h
                body = []
            case .body(let chunk):
                body += chunk.readableBytesView
            case .end:
                guard let head else { return }
                let request = Received(
                    path: head.uri, headers: head.headers.map { ($0.name, $0.value) }, body: body,
                    at: .now, connection: connection)
                let before = sink.received.withLock { all -> Int in
                    defer { all.append(request) }
                    return all.filter { $0.path == request.path }.count
                }
                let now = sink.inFlight.add(1, ordering: .relaxed).newValue
                sink.maxInFlight.max(now, ordering: .relaxed)
                let answer = sink.script(request, before)
                let keepAlive = head.isKeepAlive
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                let respond: @Sendable () -> Void = {
                    let (handler, context) = bound.value
                    handler.sink.inFlight.subtract(1, ordering: .relaxed)
                    var headers = HTTPHeaders(answer.headers)
                    headers.add(name: "Content-Length", value: String(answer.body.count))
                    let responseHead = HTTPResponseHead(
                        version: .http1_1, status: HTTPResponseStatus(statusCode: answer.status), headers: headers)
                    context.write(handler.wrapOutboundOut(.head(responseHead)), promise: nil)
                    if !answer.body.isEmpty {
                        context.write(
                            handler.wrapOutboundOut(
                                .body(.byteBuffer(context.channel.allocator.buffer(bytes: answer.body)))),
                            promise: nil)
                    }
                    let done = context.writeAndFlush(handler.wrapOutboundOut(.end(nil)))
                    if !keepAlive {
                        let channel = context.channel
                        done.whenComplete { _ in channel.close(promise: nil) }
                    }
                }
                if answer.delay > .zero {
                    let ns =
                        answer.delay.components.seconds * 1_000_000_000 + answer.delay.components.attoseconds
                        / 1_000_000_000
                    context.eventLoop.scheduleTask(in: .nanoseconds(ns)) { respond() }
                } else {
                    respond()
                }
            }
        }
    }
}
