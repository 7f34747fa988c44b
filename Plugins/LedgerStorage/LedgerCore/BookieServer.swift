import NIOCore
import NIOPosix
import Synchronization

/// Serves a bookie (normally this node's `LocalBookie`) to ledger clients on other nodes, over TCP with the
/// frames of `BookieWire`.
///
/// Requests are pipelined: each is handed to the bookie as it arrives and answered when the bookie completes it
/// (an add once its journal record is durable), so responses may leave in another order than the requests came;
/// the request id pairs them. Responses to one connection are coalesced (`Outbox`). A frame that is not the
/// protocol (a length beyond `maxFrameBytes`, a CRC that does not match, an unknown op, a malformed body) closes
/// that connection with a log line naming the peer; the server goes on serving the others.
public final class BookieServer: Sendable {
    public let bookie: any Bookie
    public let maxFrameBytes: Int
    let log: @Sendable (LogLevel, String) -> Void
    private let group: any EventLoopGroup
    private let ownsGroup: Bool
    private let state = Mutex<(listener: (any Channel)?, connections: [ObjectIdentifier: any Channel])>((nil, [:]))

    /// - Parameters:
    ///   - maxFrameBytes: the largest frame accepted (`BookieWire.maxFrameBytes(maxPayloadBytes:)`).
    ///   - group: the event loops to serve on; nil: one thread of the server's own.
    ///   - log: receives a line per refused connection (warnings) and the listening address.
    public init(
        bookie: any Bookie, maxFrameBytes: Int, group: (any EventLoopGroup)? = nil,
        log: @escaping @Sendable (LogLevel, String) -> Void
    ) {
        self.bookie = bookie
        self.maxFrameBytes = maxFrameBytes
        self.log = log
        self.group = group ?? MultiThreadedEventLoopGroup(numberOfThreads: 1)
        ownsGroup = group == nil
    }

    /// The bound port once started (the system's choice when asked for port 0).
    public var port: Int? { state.withLock { $0.listener?.localAddress?.port } }

    /// Binds `address` (`host:port`, port 0 for any) and starts serving.
    /// - Throws: `LedgerError.invalidArgument` for an address that is not `host:port`, `.io` naming the address
    ///   when it cannot be bound.
    @discardableResult
    public func start(listen address: String) throws(LedgerError) -> Int {
        let (host, port) = try Self.hostPort(address, role: "bookieListen")
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let handler = BookieServerHandler(server: self, outbox: Outbox(channel: channel))
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(BookieFrameDecoder(maxFrameBytes: maxFrameBytes)))
                    try channel.pipeline.syncOperations.addHandler(handler)
                    state.withLock { $0.connections[ObjectIdentifier(channel)] = channel }
                    channel.closeFuture.whenComplete { [self] _ in
                        state.withLock { _ = $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
                    }
                }
            }
        let listener: any Channel
        do {
            listener = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            throw LedgerError(.io, "bookie \(bookie.id): cannot listen on \(address): \(error)")
        }
        state.withLock { $0.listener = listener }
        let bound = listener.localAddress?.port ?? port
        log(.info, "ledger-storage: bookie \(bookie.id) listening on \(host):\(bound)")
        return bound
    }

    /// Stops accepting, closes every connection (their pending requests are not answered) and, when the
    /// server owns its event loop, stops it.
    public func stop() {
        let (listener, connections) = state.withLock { s in
            defer { s = (nil, [:]) }
            return (s.listener, Array(s.connections.values))
        }
        try? listener?.close().wait()
        for connection in connections { try? connection.close().wait() }
        if ownsGroup { try? group.syncShutdownGracefully() }
    }

    /// Splits `host:port` (`[v6]:port` too).
    static func hostPort(_ text: String, role: String) throws(LedgerError) -> (String, Int) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port), colon != text.startIndex
        else {
            throw LedgerError(.invalidArgument, "\(role) '\(text)' is not host:port with a port in 0...65535")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return (host, port)
    }
}

/// One served connection: decodes requests, runs them on the bookie, sends the responses.
final class BookieServerHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = BookieWire.Frame

    let server: BookieServer
    let outbox: Outbox

    init(server: BookieServer, outbox: Outbox) {
        self.server = server
        self.outbox = outbox
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        let request: BookieWire.Request
        do {
            request = try BookieWire.decodeRequest(frame)
        } catch {
            refuse(context: context, error.message)
            return
        }
        let op = frame.op
        let id = frame.request
        let outbox = self.outbox
        let allocator = context.channel.allocator
        let bookie = server.bookie
        switch request {
        case .add(let ledger, let entry, let lac, let recovery, let payload):
            bookie.addEntry(ledger: ledger, entry: entry, lastAddConfirmed: lac, payload: payload, recovery: recovery) {
                result in
                var buffer = allocator.buffer(capacity: 64)
                BookieWire.response(&buffer, op: op, request: id, error: result.failure)
                outbox.send(buffer)
            }
        case .read(let ledger, let entry):
            bookie.readEntry(ledger: ledger, entry: entry) { result in
                var buffer = allocator.buffer(capacity: 64 + ((try? result.get())?.payload.count ?? 0))
                BookieWire.response(&buffer, op: op, request: id, error: result.failure) { body in
                    guard case .success(let stored) = result else { return }
                    body.writeInteger(stored.entry)
                    body.writeInteger(stored.lastAddConfirmed)
                    body.writeBytes(stored.payload)
                }
                outbox.send(buffer)
            }
        case .readTail(let ledger), .fence(let ledger):
            let reply: @Sendable (Result<LedgerTail, LedgerError>) -> Void = { result in
                var buffer = allocator.buffer(capacity: 64)
                BookieWire.response(&buffer, op: op, request: id, error: result.failure) { body in
                    guard case .success(let tail) = result else { return }
                    body.writeInteger(tail.lastEntry)
                    body.writeInteger(tail.lastAddConfirmed)
                }
                outbox.send(buffer)
            }
            if case .fence = request {
                bookie.fence(ledger: ledger, completion: reply)
            } else {
                bookie.readTail(ledger: ledger, completion: reply)
            }
        case .delete(let ledger):
            bookie.deleteLedger(ledger: ledger) { result in
                var buffer = allocator.buffer(capacity: 64)
                BookieWire.response(&buffer, op: op, request: id, error: result.failure)
                outbox.send(buffer)
            }
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        refuse(context: context, "\(error)")
    }

    /// Logs why the connection is closed, naming the peer, and closes it.
    private func refuse(context: ChannelHandlerContext, _ reason: String) {
        let peer = context.channel.remoteAddress.map { "\($0)" } ?? "an unknown peer"
        server.log(
            .warning, "ledger-storage: bookie \(server.bookie.id): closing the connection from \(peer): \(reason)")
        context.close(promise: nil)
    }
}

extension Result {
    /// The error of a failure, nil for a success.
    var failure: Failure? {
        if case .failure(let error) = self { return error }
        return nil
    }
}
