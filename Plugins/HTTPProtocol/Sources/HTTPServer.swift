import Dispatch
import NIOCore
import NIOHTTP1
import NIOPosix
import PlexusNIOServer
import PlexusPluginSDK
import Synchronization

/// The listening socket, its connections, and what they share: the bound on pending publishes, the push
/// subscriptions with their webhook client, and the pull streams.
final class HTTPServer: Sendable {
    let host: Host
    let settings: HTTPProtocol.Settings
    let group: MultiThreadedEventLoopGroup
    let push: PushSubscriptions
    let pull: PullStreams
    /// Events handed to the kernel and not yet durable, over every connection (the 429 bound).
    let pendingEvents = Atomic<Int>(0)
    /// `false` until started and again once stopping: `GET /ready` answers 503.
    let ready = Atomic<Bool>(false)
    private let state = Mutex<State>(State())

    private struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
    }

    /// - Throws: `PluginError` when the data directory cannot hold the subscriptions file.
    init(host: Host, settings: HTTPProtocol.Settings, dataDirectory: String) throws {
        self.host = host
        self.settings = settings
        group = MultiThreadedEventLoopGroup(numberOfThreads: settings.threads)
        let client = WebhookClient(
            group: group, maxConnectionsPerOrigin: settings.maxConnectionsPerSink,
            maxResponseBytes: settings.maxBodyBytes)
        push = PushSubscriptions(
            host: host, client: client, store: SubscriptionStore(directory: dataDirectory), settings: settings)
        pull = PullStreams(host: host)
    }

    var connectionCount: Int { state.withLock { $0.connections.count } }

    /// The address the server listens on, once bound.
    var localAddress: SocketAddress? { state.withLock { $0.listener?.localAddress } }
    /// The listening socket's accept queue (a flood of connections waits here, not in SYN retries).
    static let backlog: Int32 = 1024

    /// Whether the listening socket is open and accepting.
    var isListening: Bool { state.withLock { $0.listener?.isActive ?? false } }

    /// Restores the push subscriptions, then binds and starts accepting.
    /// - Throws: `PluginError` naming the address when it cannot be bound, or the file when the stored
    ///   subscriptions cannot be read.
    func start() throws {
        try push.restore()
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderFieldSize = settings.maxHeaderBytes
        limits.maxHeaderListSize = settings.maxHeaderBytes
        limits.maxHeaderFieldCount = 1000
        let decoderLimits = limits
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Self.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A client that shuts its write side after a request still gets the answer (RequestHandler).
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    guard register(channel) <= maxConnections else {
                        // One over the bound: answered 503 and closed, nothing it sends is read as a request.
                        host.count("connections_refused")
                        try channel.pipeline.syncOperations.addHandler(Linger())
                        try channel.pipeline.syncOperations.addHandler(
                            Refusal(
                                .problem(
                                    .serviceUnavailable,
                                    "the server serves \(maxConnections) connections at most (maxConnections); "
                                        + "retry later",
                                    headers: [("Retry-After", String(settings.overloadRetryAfterSeconds))],
                                    close: true)))
                        return
                    }
                    let watch = ByteWatch()
                    try channel.pipeline.syncOperations.addHandler(Linger())
                    try channel.pipeline.syncOperations.addHandler(watch)
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withPipeliningAssistance: true, withErrorHandling: false, withOutboundHeaderValidation: true,
                        withEncoderConfiguration: .init(), withDecoderLimitConfiguration: decoderLimits)
                    try channel.pipeline.syncOperations.addHandler(RequestHandler(server: self, watch: watch))
                }
            }
        do {
            let listener = try bindListener(
                bootstrap, host: host, address: settings.host, port: settings.port, backlog: Self.backlog)
            state.withLock { $0.listener = listener }
            ready.store(true, ordering: .relaxed)
            host.log(
                .info, "listening on \(listener.localAddress.map { "\($0)" } ?? "\(settings.host):\(settings.port)")")
        } catch {
            push.stopAll()
            try? group.syncShutdownGracefully()
            throw PluginError(
                PX_ERR_UNAVAILABLE, "http-protocol: cannot listen on \(settings.host):\(settings.port): \(error)")
        }
    }

    /// Client connections served at once (`maxConnections`).
    var maxConnections: Int { settings.maxConnections ?? 4096 }

    /// Records a new connection until it closes; returns how many are open with it.
    @discardableResult
    private func register(_ channel: any Channel) -> Int {
        let key = ObjectIdentifier(channel)
        let count = state.withLock { s -> Int in
            s.connections[key] = channel
            return s.connections.count
        }
        host.count("connections_accepted")
        host.gauge("connections", Double(count))
        channel.closeFuture.whenComplete { [self] _ in
            let count = state.withLock { s -> Int in
                s.connections.removeValue(forKey: key)
                return s.connections.count
            }
            host.gauge("connections", Double(count))
        }
        return count
    }

    /// Stops accepting, ends the pull streams and push subscriptions (their unacknowledged events are
    /// redelivered later), closes every connection and stops the event loops.
    func stop(timeout: Duration) {
        ready.store(false, ordering: .relaxed)
        let listener = state.withLock { $0.listener }
        try? listener?.close().wait()
        push.stopAll()
        pull.endAll()
        let connections = state.withLock { Array($0.connections.values) }
        for channel in connections { channel.close(promise: nil) }
        // Publish completions still owed hop to an event loop: let them land before the loops stop.
        let deadline = ContinuousClock.now + timeout
        while connectionCount > 0 || pendingEvents.load(ordering: .relaxed) > 0, ContinuousClock.now < deadline {
            usleep(10_000)
        }
        push.client.shutdown()
        try? group.syncShutdownGracefully()
    }

    /// Monotonic nanoseconds.
    static func now() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds) }
}

/// Notes when bytes arrive on a connection, so that a request trickling in (slowloris) can be timed from
/// its first byte, before its head is complete.
final class ByteWatch: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// When the first byte of the request being received arrived; `nil` between requests.
    var firstByteAt: Int64?
    /// When anything last happened on the connection (bytes in, a response finished).
    var lastActivityAt = HTTPServer.now()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let now = HTTPServer.now()
        if firstByteAt == nil { firstByteAt = now }
        lastActivityAt = now
        context.fireChannelRead(data)
    }

    private var context: ChannelHandlerContext?

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    /// A response was sent and no request is partly received.
    func idle() {
        firstByteAt = nil
        lastActivityAt = HTTPServer.now()
    }

    /// Writes `response` as raw bytes below the HTTP handlers, then closes the connection: for a request
    /// that never became one (its head is incomplete or unparsable), which the HTTP handlers know nothing of.
    func fail(with response: Response) {
        guard let context else { return }
        let buffer = response.closingBytes(allocator: context.channel.allocator)
        let channel = context.channel
        context.writeAndFlush(NIOAny(buffer)).whenComplete { result in
            guard case .success = result else { return channel.close(promise: nil) }
            Linger.start(on: channel)
        }
    }
}

/// Answers a connection over `maxConnections` with its response as soon as it is active, then ends it
/// (`Linger`); what the client sends is never parsed, so no request on it is acted on.
final class Refusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer

    let response: Response

    init(_ response: Response) { self.response = response }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(NIOAny(response.closingBytes(allocator: channel.allocator))).whenComplete { result in
            guard case .success = result else { return channel.close(promise: nil) }
            Linger.start(on: channel)
        }
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
}

extension Response {
    /// The response as raw HTTP/1.1 bytes with `Connection: close`, for writing below the HTTP handlers.
    func closingBytes(allocator: ByteBufferAllocator) -> ByteBuffer {
        var text = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\n"
        for (name, value) in headers { text += "\(name): \(value)\r\n" }
        text += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        var buffer = allocator.buffer(capacity: text.utf8.count + body.count)
        buffer.writeString(text)
        buffer.writeBytes(body)
        return buffer
    }
}
