import NIOCore
import NIOHTTP1
import NIOPosix
import PlexusPluginSDK
import Synchronization

/// An `http://` URL a webhook is delivered to.
struct SinkURL: Sendable, Hashable, CustomStringConvertible {
    /// Host and port: the unit of connection pooling.
    struct Origin: Sendable, Hashable {
        var host: String
        var port: Int
    }

    var origin: Origin
    /// The path and query, as sent in the request line.
    var target: String
    var description: String

    /// Parses `http://host[:port][/path][?query]`; `nil` for anything else (other schemes, user info, a
    /// fragment, spaces or control characters).
    init?(_ text: String) {
        guard text.lowercased().hasPrefix("http://"),
            !text.unicodeScalars.contains(where: { $0.value <= 0x20 || $0.value >= 0x7F })
        else { return nil }
        let rest = text.dropFirst("http://".count)
        let authorityEnd = rest.firstIndex { $0 == "/" || $0 == "?" || $0 == "#" } ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var target = String(rest[authorityEnd...])
        guard !authority.isEmpty, !authority.contains("@"), !target.contains("#") else { return nil }
        if target.isEmpty || target.hasPrefix("?") { target = "/" + target }
        var host = Substring(authority)
        var port = 80
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { return nil }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":"), let p = Int(after.dropFirst()) else { return nil }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            guard let p = Int(authority[authority.index(after: colon)...]) else { return nil }
            port = p
        }
        guard !host.isEmpty, (1...65535).contains(port) else { return nil }
        origin = Origin(host: String(host), port: port)
        self.target = target
        description = text
    }

    /// The `Host` header.
    var hostHeader: String {
        let name = origin.host.contains(":") ? "[\(origin.host)]" : origin.host
        return origin.port == 80 ? name : "\(name):\(origin.port)"
    }
}

/// One request to a sink: always a POST.
struct WebhookRequest: Sendable {
    var url: SinkURL
    var headers: [(String, String)]
    var body: [UInt8]
}

/// What a sink answered.
struct WebhookResponse: Sendable {
    var status: Int
    var headers: HTTPHeaders
    var body: [UInt8]
    /// The body was over the client's limit and was not kept.
    var truncated: Bool
}

/// Why a request got no answer.
enum WebhookFailure: Error, CustomStringConvertible {
    case connect(String)
    case timeout
    /// The connection ended before a complete response; `started` if some of the response had arrived.
    case closed(started: Bool)
    case io(String)

    var description: String {
        switch self {
        case .connect(let reason): return "cannot connect: \(reason)"
        case .timeout: return "no response within the timeout"
        case .closed(let started): return started ? "the connection closed mid-response" : "the connection closed"
        case .io(let reason): return reason
        }
    }
}

/// A small HTTP/1.1 client for webhooks: keep-alive connections pooled per origin, at most
/// `maxConnectionsPerOrigin` open to one origin (further requests wait for one), a deadline per request
/// that covers the wait, the connect and the exchange.
final class WebhookClient: Sendable {
    typealias Completion = @Sendable (Result<WebhookResponse, WebhookFailure>) -> Void

    let group: any EventLoopGroup
    let maxConnectionsPerOrigin: Int
    let maxResponseBytes: Int
    /// How long a pooled connection may stay unused before it is closed.
    let idleTimeout = TimeAmount.seconds(30)
    private let pools = Mutex<Pools>(Pools())

    private struct Pools {
        var origins: [SinkURL.Origin: OriginPool] = [:]
        var shutDown = false
    }

    private struct OriginPool {
        var idle: [PooledConnection] = []
        var open = 0
        var waiters: [Waiter] = []
    }

    private struct Waiter {
        var request: WebhookRequest
        var deadline: NIODeadline
        var completion: Completion
    }

    init(group: any EventLoopGroup, maxConnectionsPerOrigin: Int, maxResponseBytes: Int) {
        self.group = group
        self.maxConnectionsPerOrigin = maxConnectionsPerOrigin
        self.maxResponseBytes = maxResponseBytes
    }

    /// Sends `request`; `completion` runs once, on an event loop, with the response or why there is none.
    func execute(_ request: WebhookRequest, timeout: TimeAmount, completion: @escaping Completion) {
        execute(request, deadline: .now() + timeout, staleRetry: true, completion: completion)
    }

    private enum Next {
        case reuse(PooledConnection)
        case connect
        case wait
        case refuse
    }

    private func execute(
        _ request: WebhookRequest, deadline: NIODeadline, staleRetry: Bool, completion: @escaping Completion
    ) {
        let origin = request.url.origin
        let next = pools.withLock { p -> Next in
            guard !p.shutDown else { return .refuse }
            var pool = p.origins[origin] ?? OriginPool()
            defer { p.origins[origin] = pool }
            // A closed connection leaves the pool (and frees its slot) when its close future runs.
            while let connection = pool.idle.popLast() {
                if connection.channel.isActive { return .reuse(connection) }
            }
            if pool.open < maxConnectionsPerOrigin {
                pool.open += 1
                return .connect
            }
            pool.waiters.append(Waiter(request: request, deadline: deadline, completion: completion))
            return .wait
        }
        switch next {
        case .reuse(let connection):
            run(request, on: connection, reused: staleRetry, deadline: deadline, completion: completion)
        case .connect:
            connect(request, deadline: deadline, completion: completion)
        case .wait:
            break
        case .refuse:
            completion(.failure(.io("the client is shut down")))
        }
    }

    private func connect(_ request: WebhookRequest, deadline: NIODeadline, completion: @escaping Completion) {
        let origin = request.url.origin
        let maxResponseBytes = self.maxResponseBytes
        let idleTimeout = self.idleTimeout
        let remaining = deadline - .now()
        guard remaining > .zero else {
            release(origin)
            return completion(.failure(.timeout))
        }
        ClientBootstrap(group: group)
            .connectTimeout(min(remaining, .seconds(10)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        WebhookConnectionHandler(maxResponseBytes: maxResponseBytes, idleTimeout: idleTimeout))
                }
            }
            .connect(host: origin.host, port: origin.port)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel):
                    let connection = PooledConnection(channel: channel)
                    channel.closeFuture.whenComplete { _ in self.closed(connection, origin) }
                    run(request, on: connection, reused: false, deadline: deadline, completion: completion)
                case .failure(let error):
                    release(origin)
                    completion(.failure(.connect("\(origin.host):\(origin.port): \(error)")))
                }
            }
    }

    private func run(
        _ request: WebhookRequest, on connection: PooledConnection, reused: Bool, deadline: NIODeadline,
        completion: @escaping Completion
    ) {
        connection.send(request, deadline: deadline) { [self] result in
            switch result {
            case .success(let (response, reusable)):
                if reusable {
                    checkIn(connection, origin: request.url.origin)
                } else {
                    discard(connection, request.url.origin)
                }
                completion(.success(response))
            case .failure(.closed(started: false)) where reused:
                // A pooled connection the server had closed while it sat idle: try once more on a new one.
                discard(connection, request.url.origin)
                execute(request, deadline: deadline, staleRetry: false, completion: completion)
            case .failure(let failure):
                discard(connection, request.url.origin)
                completion(.failure(failure))
            }
        }
    }

    /// Hands a connection that finished an exchange to the next waiter, or back to the pool.
    private func checkIn(_ connection: PooledConnection, origin: SinkURL.Origin) {
        let (waiter, expired) = pools.withLock { p -> (Waiter?, [Waiter]) in
            let (waiter, expired) = Self.takeWaiter(&p, origin)
            if waiter == nil, !p.shutDown { p.origins[origin]?.idle.append(connection) }
            return (waiter, expired)
        }
        for late in expired { late.completion(.failure(.timeout)) }
        if let waiter {
            run(waiter.request, on: connection, reused: true, deadline: waiter.deadline, completion: waiter.completion)
        } else if pools.withLock({ $0.shutDown }) {
            connection.channel.close(promise: nil)
        }
    }

    /// Takes the first waiter of `origin` whose deadline has not passed, and the expired ones before it; under
    /// the pool lock.
    private static func takeWaiter(_ p: inout Pools, _ origin: SinkURL.Origin) -> (Waiter?, [Waiter]) {
        var expired: [Waiter] = []
        let now = NIODeadline.now()
        while let first = p.origins[origin]?.waiters.first {
            p.origins[origin]?.waiters.removeFirst()
            if first.deadline > now { return (first, expired) }
            expired.append(first)
        }
        return (nil, expired)
    }

    /// Closes a connection that cannot be reused; its close future frees its slot.
    private func discard(_ connection: PooledConnection, _ origin: SinkURL.Origin) {
        connection.channel.close(promise: nil)
    }

    /// A connection closed (by either side): it leaves the pool and frees its slot.
    private func closed(_ connection: PooledConnection, _ origin: SinkURL.Origin) {
        pools.withLock { p in p.origins[origin]?.idle.removeAll { $0 === connection } }
        release(origin)
    }

    /// Frees one connection slot of `origin`; a waiter, if any, gets a new connection.
    private func release(_ origin: SinkURL.Origin) {
        let (waiter, expired) = pools.withLock { p -> (Waiter?, [Waiter]) in
            let (waiter, expired) = Self.takeWaiter(&p, origin)
            if waiter == nil { p.origins[origin]?.open -= 1 }
            return (waiter, expired)
        }
        for late in expired { late.completion(.failure(.timeout)) }
        if let waiter { connect(waiter.request, deadline: waiter.deadline, completion: waiter.completion) }
    }

    /// Closes every pooled connection and refuses new requests; waiting requests fail.
    func shutdown() {
        let (idle, waiters) = pools.withLock { p -> ([PooledConnection], [Waiter]) in
            p.shutDown = true
            let idle = p.origins.values.flatMap(\.idle)
            let waiters = p.origins.values.flatMap(\.waiters)
            for key in p.origins.keys {
                p.origins[key]?.idle = []
                p.origins[key]?.waiters = []
            }
            return (idle, waiters)
        }
        for connection in idle { connection.channel.close(promise: nil) }
        for waiter in waiters { waiter.completion(.failure(.io("the client is shut down"))) }
    }
}

/// One connection of the pool and the handler that runs its exchanges.
final class PooledConnection: Sendable {
    let channel: any Channel

    init(channel: any Channel) { self.channel = channel }

    /// Runs one exchange on the connection's event loop.
    func send(
        _ request: WebhookRequest, deadline: NIODeadline,
        completion: @escaping @Sendable (Result<(WebhookResponse, Bool), WebhookFailure>) -> Void
    ) {
        let channel = self.channel
        channel.eventLoop.execute {
            guard let handler = try? channel.pipeline.syncOperations.handler(type: WebhookConnectionHandler.self)
            else { return completion(.failure(.closed(started: false))) }
            handler.send(request, deadline: deadline, completion: completion)
        }
    }
}

/// Runs one request/response exchange at a time on a client connection.
final class WebhookConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    typealias Completion = @Sendable (Result<(WebhookResponse, Bool), WebhookFailure>) -> Void

    private let maxResponseBytes: Int
    private let idleTimeout: TimeAmount
    private var context: ChannelHandlerContext?
    private var completion: Completion?
    private var timer: Scheduled<Void>?
    private var idleTimer: Scheduled<Void>?
    private var head: HTTPResponseHead?
    private var body = ByteBuffer()
    private var truncated = false

    init(maxResponseBytes: Int, idleTimeout: TimeAmount) {
        self.maxResponseBytes = maxResponseBytes
        self.idleTimeout = idleTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        finish(.failure(.closed(started: head != nil)))
        self.context = nil
    }

    /// Writes the request and arms its deadline; on the event loop.
    func send(_ request: WebhookRequest, deadline: NIODeadline, completion: @escaping Completion) {
        guard let context, context.channel.isActive, self.completion == nil else {
            return completion(.failure(.closed(started: false)))
        }
        idleTimer?.cancel()
        idleTimer = nil
        self.completion = completion
        head = nil
        body.clear()
        truncated = false
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(deadline: deadline) {
            bound.value.finish(.failure(.timeout))
            bound.value.context?.close(promise: nil)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: request.url.hostHeader)
        headers.add(name: "User-Agent", value: "plexus-http-protocol/\(HTTPProtocol.version)")
        for (name, value) in request.headers { headers.add(name: name, value: value) }
        headers.add(name: "Content-Length", value: String(request.body.count))
        let requestHead = HTTPRequestHead(version: .http1_1, method: .POST, uri: request.url.target, headers: headers)
        context.write(wrapOutboundOut(.head(requestHead)), promise: nil)
        if !request.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: request.body.count)
            buffer.writeBytes(request.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenFailure { error in
            bound.value.finish(.failure(.io("cannot send the request: \(error)")))
            bound.value.context?.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
        case .body(var chunk):
            if body.readableBytes + chunk.readableBytes <= maxResponseBytes {
                body.writeBuffer(&chunk)
            } else {
                truncated = true
            }
        case .end:
            guard let head else { return }
            let response = WebhookResponse(
                status: Int(head.status.code), headers: head.headers, body: Array(body.readableBytesView),
                truncated: truncated)
            let reusable = head.isKeepAlive
            if reusable {
                // Armed before the completion, which may start the next exchange at once (and disarm it).
                let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
                idleTimer = context.eventLoop.scheduleTask(in: idleTimeout) { bound.value.context?.close(promise: nil) }
            }
            finish(.success((response, reusable)))
            if !reusable { context.close(promise: nil) }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(.failure(.closed(started: head != nil)))
        idleTimer?.cancel()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        finish(.failure(.io("\(error)")))
        context.close(promise: nil)
    }

    private func finish(_ result: Result<(WebhookResponse, Bool), WebhookFailure>) {
        guard let completion else { return }
        self.completion = nil
        timer?.cancel()
        timer = nil
        completion(result)
    }
}
