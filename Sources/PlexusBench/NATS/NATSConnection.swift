import NIOCore
import NIOPosix
import Synchronization

/// What a NATS publish waits for before its completion runs.
enum NATSPublishAck: Sendable {
    /// Nothing: the completion is not wanted (acknowledgements of JetStream deliveries).
    case none
    /// The bytes were written to the socket.
    case written(BenchCompletion)
    /// The server read the message: the `PONG` to a `PING` sent after it arrived. Core NATS keeps messages
    /// in memory only; this is the strongest acknowledgement it gives.
    case received(BenchCompletion)
}

/// The `PING`s in flight, in wire order, and the publishes waiting for the next one.
struct NATSPongQueue: Sendable {
    /// Completions for the next `PING`, appended by publishes since the last flush.
    var nextPing: [BenchCompletion] = []
    /// One entry per `PING` sent and not yet answered, oldest first.
    var waiting = CircularBuffer<[BenchCompletion]>()
}

/// Subscriptions and requests, by the ids the server echoes back.
private struct NATSRoutes: Sendable {
    var handlers: [Int: @Sendable (NATSMessage) -> Void] = [:]
    var nextSid = 1
    var requests: [Int: @Sendable (Result<NATSMessage, BenchError>) -> Void] = [:]
    var nextRequest = 1
}

/// One client connection to a NATS server, speaking the text protocol over SwiftNIO.
///
/// Connects with `verbose: false` (no `+OK`), `headers: true` and `no_responders: true` (a request to a
/// subject nobody serves is answered with status 503 instead of silence). Requests share one wildcard
/// inbox subscription, `_INBOX.<random>.*`, and are matched by their last token.
///
/// - Important: Any thread. Subscription handlers and completions run on the connection's event loop and
///   must not block.
final class NATSConnection: Sendable {
    /// `nats HOST:PORT`, the subject of this connection's errors.
    let label: String
    private let channel: any Channel
    private let outbound: OutboundQueue<NATSPongQueue>
    private let routes = Mutex(NATSRoutes())
    private let inbox: String
    private let inboxSid: Int
    private let closing = Mutex(false)
    private let recordedErrors = Mutex<[String]>([])

    private init(channel: any Channel, label: String) {
        self.channel = channel
        self.label = label
        self.outbound = OutboundQueue(channel: channel, pending: NATSPongQueue()) { state in
            // One PING covers every publish that asked to wait for the server since the last flush.
            guard !state.pending.nextPing.isEmpty else { return }
            state.buffer.writeStaticString("PING\r\n")
            state.pending.waiting.append(state.pending.nextPing)
            state.pending.nextPing = []
        }
        var random = SystemRandomNumberGenerator()
        self.inbox = "_INBOX." + String(random.next() as UInt64, radix: 36)
        self.inboxSid = 0
    }

    /// Connects, sends `CONNECT` and waits for the `PONG` to a first `PING`.
    ///
    /// - Parameters:
    ///   - options: The server's address, the event loops, the timeout.
    ///   - name: The client name the server shows in its monitoring.
    /// - Throws: ``BenchError`` when the connection is refused, the server answers `-ERR`, or nothing answers in time.
    static func connect(options: DriverOptions, name: String) async throws -> NATSConnection {
        let label = "nats \(options.address)"
        let made = options.eventLoopGroup.next().makePromise(of: NATSConnection.self)
        do {
            _ = try await ClientBootstrap(group: options.eventLoopGroup)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.milliseconds(Int64(options.timeoutSeconds * 1000)))
                .channelInitializer { channel in
                    let connection = NATSConnection(channel: channel, label: label)
                    made.succeed(connection)
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers(
                            ByteToMessageHandler(NATSFrameDecoder()), NATSClientHandler(connection: connection))
                    }
                }
                .connect(host: options.host, port: options.port).get()
        } catch {
            made.fail(error)
            throw BenchError(.connectFailed, subject: label, "cannot connect: \(error)")
        }
        let connection = try await made.futureResult.get()
        let connect = """
            CONNECT {"verbose":false,"pedantic":false,"name":"\(name)","lang":"swift","version":"1.0",\
            "protocol":1,"echo":true,"headers":true,"no_responders":true}\r\n
            """
        connection.outbound.enqueue { buffer, _ in buffer.writeString(connect) }
        connection.outbound.enqueue { buffer, _ in buffer.writeString("SUB \(connection.inbox).* 0\r\n") }
        do {
            try await connection.ping(timeoutSeconds: options.timeoutSeconds)
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Publishes `payload` on `subject`.
    ///
    /// - Parameters:
    ///   - replyTo: The reply subject the receiver sees, if any.
    ///   - ack: What to wait for before the completion runs.
    func publish(subject: String, replyTo: String? = nil, payload: [UInt8], ack: NATSPublishAck) {
        var written: BenchCompletion? = nil
        if case .written(let completion) = ack { written = completion }
        let closed = outbound.enqueue(written: written) { buffer, pongs in
            buffer.writeStaticString("PUB ")
            buffer.writeString(subject)
            if let replyTo {
                buffer.writeStaticString(" ")
                buffer.writeString(replyTo)
            }
            buffer.writeString(" \(payload.count)\r\n")
            buffer.writeBytes(payload)
            buffer.writeStaticString("\r\n")
            if case .received(let completion) = ack { pongs.nextPing.append(completion) }
        }
        guard let closed else { return }
        switch ack {
        case .none: break
        case .written(let completion), .received(let completion): completion(closed)
        }
    }

    /// Subscribes to `subject`, as a member of the queue group `queue` if given.
    ///
    /// - Parameter handler: Runs on the event loop for every message; must not block.
    func subscribe(subject: String, queue: String? = nil, handler: @escaping @Sendable (NATSMessage) -> Void) {
        let sid = routes.withLock { routes in
            let sid = routes.nextSid
            routes.nextSid += 1
            routes.handlers[sid] = handler
            return sid
        }
        outbound.enqueue { buffer, _ in
            buffer.writeString("SUB \(subject)\(queue.map { " " + $0 } ?? "") \(sid)\r\n")
        }
    }

    /// Publishes a request with a reply inbox of its own; `onReply` runs with the first answer.
    ///
    /// - Parameter onReply: Runs once, on the event loop, with the answer or the error that closed the connection.
    func request(
        subject: String, payload: [UInt8], onReply: @escaping @Sendable (Result<NATSMessage, BenchError>) -> Void
    ) {
        let token = routes.withLock { routes in
            let token = routes.nextRequest
            routes.nextRequest += 1
            routes.requests[token] = onReply
            return token
        }
        publish(subject: subject, replyTo: "\(inbox).\(token)", payload: payload, ack: .none)
        if let closed = outbound.closedError, let waiting = routes.withLock({ $0.requests.removeValue(forKey: token) })
        {
            waiting(.failure(closed))
        }
    }

    /// Sends a request and waits for its answer.
    ///
    /// - Throws: ``BenchError`` with code `timeout` when nothing answers in `timeoutSeconds`, or the connection's error.
    func request(subject: String, payload: [UInt8], timeoutSeconds: Double) async throws -> NATSMessage {
        let once = OneShot()
        return try await withCheckedThrowingContinuation { continuation in
            request(subject: subject, payload: payload) { result in
                if once.claim() { continuation.resume(with: result) }
            }
            channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeoutSeconds * 1000))) {
                if once.claim() {
                    continuation.resume(
                        throwing: BenchError(
                            .timeout, subject: self.label, "no answer to a request on \(subject) in \(timeoutSeconds) s"
                        ))
                }
            }
        }
    }

    /// Sends a `PING` and waits for its `PONG`: everything sent before has been read by the server.
    ///
    /// - Throws: ``BenchError`` with code `timeout`, or the connection's error.
    func ping(timeoutSeconds: Double) async throws {
        let once = OneShot()
        let label = label
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            publishPing { error in
                guard once.claim() else { return }
                if let error { continuation.resume(throwing: error) } else { continuation.resume() }
            }
            channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeoutSeconds * 1000))) {
                if once.claim() {
                    continuation.resume(
                        throwing: BenchError(
                            .timeout, subject: label, "no PONG in \(timeoutSeconds) s; is this a NATS server?"))
                }
            }
        }
    }

    private func publishPing(_ completion: @escaping BenchCompletion) {
        if let closed = outbound.enqueue({ _, pongs in pongs.nextPing.append(completion) }) {
            completion(closed)
        }
    }

    /// Closes the connection; what is still outstanding fails with `connectionClosed`.
    func close() async {
        closing.withLock { $0 = true }
        try? await channel.close()
        fail(BenchError(.connectionClosed, subject: label, "closed by the benchmark"))
    }

    /// Errors met while open (a `-ERR`, a lost connection), not counting the benchmark's own close.
    var errors: [String] { recordedErrors.withLock { $0 } }

    // MARK: Called by the channel handler, on the event loop.

    func receivedPong() {
        let completions = outbound.withPending { $0.waiting.popFirst() } ?? []
        for completion in completions { completion(nil) }
    }

    func received(_ message: NATSMessage) {
        if message.sid == inboxSid {
            guard let dot = message.subject.lastIndex(of: "."),
                let token = Int(message.subject[message.subject.index(after: dot)...]),
                let waiting = routes.withLock({ $0.requests.removeValue(forKey: token) })
            else { return }
            waiting(.success(message))
            return
        }
        routes.withLock { $0.handlers[message.sid] }?(message)
    }

    /// Fails everything outstanding with `error` and remembers it unless the benchmark closed the connection.
    func fail(_ error: BenchError) {
        guard let (written, pongs) = outbound.close(error) else { return }
        if !closing.withLock({ $0 }) { recordedErrors.withLock { $0.append(error.description) } }
        let requests = routes.withLock { routes in
            let requests = routes.requests
            routes.requests = [:]
            return requests
        }
        for completion in written { completion(error) }
        for completion in pongs.nextPing { completion(error) }
        for batch in pongs.waiting { for completion in batch { completion(error) } }
        for waiting in requests.values { waiting(.failure(error)) }
    }
}
