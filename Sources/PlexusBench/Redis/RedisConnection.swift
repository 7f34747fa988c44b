import NIOCore
import NIOPosix
import Synchronization

/// One client connection to a Redis server, speaking RESP2 over SwiftNIO with pipelining.
///
/// Commands are queued from any thread and written in batches; replies come back in command order, so each
/// command's reply handler waits in a FIFO kept under the same lock as the queued bytes.
///
/// - Important: Any thread. Reply handlers run on the connection's event loop and must not block.
final class RedisConnection: Sendable {
    /// Runs once with the command's reply (a RESP error reply included) or the error that closed the connection.
    typealias ReplyHandler = @Sendable (Result<RESPValue, BenchError>) -> Void

    /// `redis HOST:PORT`, the subject of this connection's errors.
    let label: String
    private let channel: any Channel
    private let outbound: OutboundQueue<CircularBuffer<ReplyHandler>>
    private let closing = Mutex(false)
    private let recordedErrors = Mutex<[String]>([])

    private init(channel: any Channel, label: String) {
        self.channel = channel
        self.label = label
        self.outbound = OutboundQueue(channel: channel, pending: CircularBuffer<ReplyHandler>())
    }

    /// Connects and checks the server with `PING`.
    ///
    /// - Throws: ``BenchError`` when the connection is refused or the server does not answer `PONG` in time.
    static func connect(options: DriverOptions) async throws -> RedisConnection {
        let label = "redis \(options.address)"
        let made = options.eventLoopGroup.next().makePromise(of: RedisConnection.self)
        do {
            _ = try await ClientBootstrap(group: options.eventLoopGroup)
                .channelOption(.socketOption(.tcp_nodelay), value: 1)
                .connectTimeout(.milliseconds(Int64(options.timeoutSeconds * 1000)))
                .channelInitializer { channel in
                    let connection = RedisConnection(channel: channel, label: label)
                    made.succeed(connection)
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandlers(
                            ByteToMessageHandler(RESPDecoder()), RedisClientHandler(connection: connection))
                    }
                }
                .connect(host: options.host, port: options.port).get()
        } catch {
            made.fail(error)
            throw BenchError(.connectFailed, subject: label, "cannot connect: \(error)")
        }
        let connection = try await made.futureResult.get()
        do {
            let pong = try await connection.command(["PING"], timeoutSeconds: options.timeoutSeconds)
            guard pong == .simpleString("PONG") else {
                throw BenchError(.protocolViolation, subject: label, "PING answered \(pong); is this a Redis server?")
            }
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    /// Queues a command.
    ///
    /// - Parameters:
    ///   - arguments: The command and its arguments.
    ///   - written: Runs once the command is written to the socket, if given.
    ///   - reply: Runs with the reply.
    func send(_ arguments: [RESPArgument], written: BenchCompletion? = nil, reply: @escaping ReplyHandler) {
        let closed = outbound.enqueue(written: written) { buffer, replies in
            buffer.writeString("*\(arguments.count)\r\n")
            for argument in arguments {
                switch argument {
                case .text(let text):
                    buffer.writeString("$\(text.utf8.count)\r\n")
                    buffer.writeString(text)
                case .bytes(let bytes):
                    buffer.writeString("$\(bytes.count)\r\n")
                    buffer.writeBytes(bytes)
                }
                buffer.writeStaticString("\r\n")
            }
            replies.append(reply)
        }
        guard let closed else { return }
        written?(closed)
        reply(.failure(closed))
    }

    /// Sends a command and waits for its reply.
    ///
    /// - Throws: ``BenchError`` with code `serverError` for an error reply, `timeout` when no reply comes in
    ///   `timeoutSeconds` (nil: wait as long as the connection lives), or the connection's error.
    func command(_ arguments: [RESPArgument], timeoutSeconds: Double? = nil) async throws -> RESPValue {
        let once = OneShot()
        let label = label
        let name = arguments.first.map { if case .text(let text) = $0 { text } else { "command" } } ?? "command"
        return try await withCheckedThrowingContinuation { continuation in
            send(arguments) { result in
                guard once.claim() else { return }
                switch result {
                case .success(.error(let message)):
                    continuation.resume(throwing: BenchError(.serverError, subject: label, "\(name): \(message)"))
                case .success(let value): continuation.resume(returning: value)
                case .failure(let error): continuation.resume(throwing: error)
                }
            }
            if let timeoutSeconds {
                channel.eventLoop.scheduleTask(in: .milliseconds(Int64(timeoutSeconds * 1000))) {
                    if once.claim() {
                        continuation.resume(
                            throwing: BenchError(.timeout, subject: label, "no reply to \(name) in \(timeoutSeconds) s")
                        )
                    }
                }
            }
        }
    }

    /// Closes the connection; commands still waiting for replies fail with `connectionClosed`.
    func close() async {
        closing.withLock { $0 = true }
        try? await channel.close()
        fail(BenchError(.connectionClosed, subject: label, "closed by the benchmark"))
    }

    /// Errors met while open (a lost connection, a protocol error), not counting the benchmark's own close.
    var errors: [String] { recordedErrors.withLock { $0 } }

    /// Records an error met by a user of the connection (a failed `XACK`).
    func record(_ error: String) {
        recordedErrors.withLock { $0.append(error) }
    }

    // MARK: Called by the channel handler, on the event loop.

    func received(_ value: RESPValue) {
        guard let reply = outbound.withPending({ $0.popFirst() }) else {
            fail(BenchError(.protocolViolation, subject: label, "a reply to no command: \(value)"))
            return
        }
        reply(.success(value))
    }

    /// Fails every command waiting for a reply and remembers `error` unless the benchmark closed the connection.
    func fail(_ error: BenchError) {
        guard let (written, replies) = outbound.close(error) else { return }
        if !closing.withLock({ $0 }) { record(error.description) }
        for completion in written { completion(error) }
        for reply in replies { reply(.failure(error)) }
    }
}
