import NIOCore
import NIOPosix
import Synchronization

/// A bookie on another node, reached over TCP (`BookieServer`, `BookieWire` frames).
///
/// One connection, opened at the first request and again at the first request after it dropped; requests are
/// pipelined on it (written as they come, coalesced per event-loop turn, answered in any order). A request
/// fails with `.bookieUnavailable` (naming the bookie and why) when the connection cannot be opened, when it
/// drops before the answer, or when no answer came within `timeout` (the connection is then closed: a bookie
/// that does not answer one request is treated as gone, and every request pending on it fails). For
/// `reconnectDelay` after a failed connection, new requests fail at once instead of waiting for another
/// attempt. Every completion is called exactly once, on an event-loop thread or the caller's.
public final class RemoteBookie: Bookie {
    public struct Options: Sendable {
        /// A request without an answer after this long fails (and closes the connection).
        public var timeout: Duration = .seconds(5)
        /// After a failed or dropped connection, requests fail at once for this long.
        public var reconnectDelay: Duration = .milliseconds(200)
        /// The largest frame accepted from the bookie (a read's response).
        public var maxFrameBytes = BookieWire.maxFrameBytes(maxPayloadBytes: 4 << 20)

        public init() {}
    }

    private enum Connection {
        case idle
        case connecting(generation: Int, queued: [ByteBuffer])
        case connected(generation: Int, Outbox)
        /// Failed; requests fail with `reason` until `until`.
        case down(until: ContinuousClock.Instant, reason: String)
    }

    private struct Pending {
        var op: BookieWire.Op
        var deadline: ContinuousClock.Instant
        var complete: @Sendable (Result<ByteBuffer, LedgerError>) -> Void
    }

    private struct State {
        var connection = Connection.idle
        var generation = 0
        var pending: [UInt64: Pending] = [:]
        var stopped = false
        var timer: RepeatedTask?
        /// When `expire` last ran (at first: when the bookie was made).
        var lastTick = ContinuousClock.now
    }

    public let id: String
    public let address: String
    public let options: Options
    /// How often pending requests are checked against their deadlines.
    private let tick: Duration
    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let nextRequest = Atomic<UInt64>(1)
    private let state = Mutex(State())

    /// A bookie `id` at `address` (`host:port`), connected through `group`'s event loops.
    /// - Throws: `.invalidArgument` when `address` is not `host:port`.
    public init(id: String, address: String, group: any EventLoopGroup, options: Options = Options())
        throws(LedgerError)
    {
        self.id = id
        self.address = address
        self.options = options
        self.group = group
        (host, port) = try BookieServer.hostPort(address, role: "the address of bookie '\(id)'")
        let tick = max(Duration.milliseconds(10), min(options.timeout / 4, .milliseconds(250)))
        self.tick = tick
        let task = group.next().scheduleRepeatedTask(
            initialDelay: .nanoseconds(Int64(Self.nanoseconds(tick))),
            delay: .nanoseconds(Int64(Self.nanoseconds(tick)))
        ) { [weak self] _ in self?.expire() }
        state.withLock { $0.timer = task }
    }

    /// Whether the bookie is thought reachable: not within `reconnectDelay` of a failed connection.
    public var isAvailable: Bool {
        state.withLock { s in
            if s.stopped { return false }
            if case .down(let until, _) = s.connection { return ContinuousClock.now >= until }
            return true
        }
    }

    /// Requests sent and not answered.
    public var pendingCount: Int { state.withLock { $0.pending.count } }

    /// Closes the connection and fails every pending request; later requests fail with `.stopped`.
    public func shutdown() {
        let (failed, outbox, timer) = state.withLock { s in
            s.stopped = true
            let failed = s.pending.values.map(\.complete)
            s.pending = [:]
            var outbox: Outbox?
            if case .connected(_, let connected) = s.connection { outbox = connected }
            s.connection = .idle
            return (failed, outbox, s.timer)
        }
        timer?.cancel()
        outbox?.channel.close(promise: nil)
        for complete in failed { complete(.failure(.bookieUnavailable(id, "the client was shut down"))) }
    }

    // MARK: Bookie

    public func addEntry(
        ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: [UInt8], recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        let request = nextRequest.add(1, ordering: .relaxed).oldValue
        var buffer = ByteBufferAllocator().buffer(
            capacity: BookieWire.headerBytes + BookieWire.addHeaderBytes + payload.count)
        BookieWire.add(
            &buffer, request: request, ledger: ledger, entry: entry, lastAddConfirmed: lastAddConfirmed,
            payload: payload, recovery: recovery)
        send(request, .add, buffer) { result in completion(result.map { _ in () }) }
    }

    public func readEntry(
        ledger: UInt64, entry: Int64, completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void
    ) {
        let request = nextRequest.add(1, ordering: .relaxed).oldValue
        var buffer = ByteBufferAllocator().buffer(capacity: BookieWire.headerBytes + 16)
        BookieWire.read(&buffer, request: request, ledger: ledger, entry: entry)
        send(request, .read, buffer) { [id] result in
            completion(
                result.flatMap { body in
                    var body = body
                    guard let entry = body.readInteger(as: Int64.self), let lac = body.readInteger(as: Int64.self)
                    else { return .failure(LedgerError(.corrupt, "bookie \(id) sent a malformed read response")) }
                    return .success(
                        StoredEntry(
                            entry: entry, lastAddConfirmed: lac, payload: body.readBytes(length: body.readableBytes)!))
                })
        }
    }

    public func readTail(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
        tailRequest(.readTail, ledger: ledger, completion: completion)
    }

    public func fence(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
        tailRequest(.fence, ledger: ledger, completion: completion)
    }

    public func deleteLedger(ledger: UInt64, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void) {
        let request = nextRequest.add(1, ordering: .relaxed).oldValue
        var buffer = ByteBufferAllocator().buffer(capacity: BookieWire.headerBytes + 8)
        BookieWire.ledgerOnly(&buffer, op: .delete, request: request, ledger: ledger)
        send(request, .delete, buffer) { result in completion(result.map { _ in () }) }
    }

    private func tailRequest(
        _ op: BookieWire.Op, ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void
    ) {
        let request = nextRequest.add(1, ordering: .relaxed).oldValue
        var buffer = ByteBufferAllocator().buffer(capacity: BookieWire.headerBytes + 8)
        BookieWire.ledgerOnly(&buffer, op: op, request: request, ledger: ledger)
        send(request, op, buffer) { [id] result in
            completion(
                result.flatMap { body in
                    var body = body
                    guard let last = body.readInteger(as: Int64.self), let lac = body.readInteger(as: Int64.self)
                    else { return .failure(LedgerError(.corrupt, "bookie \(id) sent a malformed \(op) response")) }
                    return .success(LedgerTail(lastEntry: last, lastAddConfirmed: lac))
                })
        }
    }

    // MARK: Connection

    private enum Action {
        case none
        case write(Outbox)
        case connect(generation: Int)
        case fail(LedgerError)
    }

    /// Registers request `request` and writes `frame` (connecting first when needed).
    private func send(
        _ request: UInt64, _ op: BookieWire.Op, _ frame: ByteBuffer,
        complete: @escaping @Sendable (Result<ByteBuffer, LedgerError>) -> Void
    ) {
        let action: Action = state.withLock { s in
            if s.stopped { return .fail(LedgerError(.stopped, "the client of bookie \(id) is shut down")) }
            let pending = Pending(op: op, deadline: ContinuousClock.now + options.timeout, complete: complete)
            switch s.connection {
            case .connected(_, let outbox):
                s.pending[request] = pending
                return .write(outbox)
            case .connecting(let generation, var queued):
                s.pending[request] = pending
                queued.append(frame)
                s.connection = .connecting(generation: generation, queued: queued)
                return .none
            case .down(let until, let reason) where ContinuousClock.now < until:
                return .fail(.bookieUnavailable(id, reason))
            case .idle, .down:
                s.pending[request] = pending
                s.generation += 1
                s.connection = .connecting(generation: s.generation, queued: [frame])
                return .connect(generation: s.generation)
            }
        }
        switch action {
        case .none: break
        case .write(let outbox): outbox.send(frame)
        case .fail(let error): complete(.failure(error))
        case .connect(let generation): connect(generation: generation)
        }
    }

    private func connect(generation: Int) {
        let timeout = TimeAmount.nanoseconds(Int64(Self.nanoseconds(options.timeout)))
        let maxFrameBytes = options.maxFrameBytes
        ClientBootstrap(group: group)
            .connectTimeout(timeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(BookieFrameDecoder(maxFrameBytes: maxFrameBytes)))
                    try channel.pipeline.syncOperations.addHandler(
                        RemoteBookieHandler(bookie: self, generation: generation))
                }
            }
            .connect(host: host, port: port)
            .whenComplete { [self] result in
                switch result {
                case .success(let channel): connected(channel, generation: generation)
                case .failure(let error):
                    dropped(generation: generation, reason: "cannot connect to \(address): \(error)")
                }
            }
    }

    private func connected(_ channel: any Channel, generation: Int) {
        let outbox = Outbox(channel: channel)
        let queued: [ByteBuffer]? = state.withLock { s in
            guard case .connecting(generation, let queued) = s.connection, !s.stopped else { return nil }
            s.connection = .connected(generation: generation, outbox)
            return queued
        }
        guard let queued else {
            channel.close(promise: nil)
            return
        }
        for frame in queued { outbox.send(frame) }
    }

    /// The connection of `generation` failed or closed: every pending request fails with `reason`.
    func dropped(generation: Int, reason: String) {
        let failed: [@Sendable (Result<ByteBuffer, LedgerError>) -> Void] = state.withLock { s in
            switch s.connection {
            case .connecting(generation, _), .connected(generation, _): break
            default: return []
            }
            s.connection = .down(until: ContinuousClock.now + options.reconnectDelay, reason: reason)
            defer { s.pending = [:] }
            return s.pending.values.map(\.complete)
        }
        let error = LedgerError.bookieUnavailable(id, reason)
        for complete in failed { complete(.failure(error)) }
    }

    /// A response frame of the connection of `generation`.
    /// - Throws: `FrameError` when it is not a response.
    func received(_ frame: BookieWire.Frame) throws(BookieWire.FrameError) {
        guard frame.op & BookieWire.responseFlag != 0,
            BookieWire.Op(rawValue: frame.op & ~BookieWire.responseFlag) != nil
        else { throw BookieWire.FrameError(message: "op \(frame.op) is not a response") }
        var body = frame.body
        let status = try BookieWire.decodeStatus(&body, request: frame.request)
        guard let pending = state.withLock({ $0.pending.removeValue(forKey: frame.request) }) else { return }
        guard pending.op.rawValue == frame.op & ~BookieWire.responseFlag else {
            pending.complete(
                .failure(LedgerError(.corrupt, "bookie \(id) answered request \(frame.request) with op \(frame.op)")))
            return
        }
        pending.complete(status.map { .failure($0) } ?? .success(body))
    }

    /// Fails the requests whose deadline passed and closes their connection.
    ///
    /// A check that comes much later than its tick means this process did not run meanwhile (SIGSTOP, a long
    /// pause, a starved machine): the requests pending then had no chance to be sent or to have their answers
    /// read, so their deadlines move on by the time lost instead of failing every one of them at once (which
    /// made a writer resumed after a pause past the timeout drop every bookie of its ensemble and, short of
    /// spares, fail its ledger).
    private func expire() {
        let now = ContinuousClock.now
        let (expired, outbox) = state.withLock { s -> ([(UInt64, Pending)], Outbox?) in
            let previous = s.lastTick
            s.lastTick = now
            if now - previous > tick * 2 {
                let lost = now - previous - tick
                for request in s.pending.keys { s.pending[request]!.deadline += lost }
                return ([], nil)
            }
            let expired = s.pending.filter { $0.value.deadline <= now }
            guard !expired.isEmpty else { return ([], nil) }
            for (request, _) in expired { s.pending[request] = nil }
            var outbox: Outbox?
            if case .connected(_, let connected) = s.connection { outbox = connected }
            return (expired.map { ($0.key, $0.value) }, outbox)
        }
        guard !expired.isEmpty else { return }
        let reason = "no answer to \(expired.count) request(s) within \(options.timeout)"
        for (_, pending) in expired { pending.complete(.failure(.bookieUnavailable(id, reason))) }
        // A bookie that does not answer is treated as gone: the other requests on its connection fail too.
        outbox?.channel.close(promise: nil)
    }

    static func nanoseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
    }
}

/// The client side of one connection to a bookie.
final class RemoteBookieHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = BookieWire.Frame
    let bookie: RemoteBookie
    let generation: Int

    init(bookie: RemoteBookie, generation: Int) {
        self.bookie = bookie
        self.generation = generation
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        do {
            try bookie.received(unwrapInboundIn(data))
        } catch {
            bookie.dropped(generation: generation, reason: "it sent a malformed frame: \(error.message)")
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        bookie.dropped(generation: generation, reason: "the connection to \(bookie.address) closed")
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        bookie.dropped(generation: generation, reason: "the connection to \(bookie.address) failed: \(error)")
        context.close(promise: nil)
    }
}
