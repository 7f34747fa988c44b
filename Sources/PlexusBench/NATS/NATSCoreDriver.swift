/// Core NATS: producers `PUB` to a subject named for the topic, consumers `SUB` to it in a queue group named
/// for the group, so that each message goes to one member.
///
/// Core NATS keeps nothing and has no acknowledgements. With `fireAndForget` a publish completes when it is
/// written to the socket; otherwise when the server answers the `PING` sent after it (it has read the
/// message). Consumers have nothing to acknowledge. Keys are ignored: a subject has no per-key ordering.
public struct NATSCoreDriver: BenchDriver {
    public let name = "nats"
    private let options: DriverOptions

    public init(options: DriverOptions) {
        self.options = options
    }

    public var semantics: String {
        options.fireAndForget
            ? "core NATS, publish completes when written (fire-and-forget), in memory, no consumer acks"
            : "core NATS, publish completes on the PONG after it (server read it), in memory, no consumer acks"
    }

    public func setUp(topics: [String]) async throws {
        // Nothing to create; check that the server answers.
        let connection = try await NATSConnection.connect(options: options, name: "plexus-bench-setup")
        await connection.close()
    }

    public func makeProducer(topic: String) async throws -> any BenchProducer {
        let connection = try await NATSConnection.connect(options: options, name: "plexus-bench-producer")
        return NATSCoreProducer(connection: connection, subject: topic, fireAndForget: options.fireAndForget)
    }

    public func makeConsumer(
        topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) async throws -> any BenchConsumer {
        let connection = try await NATSConnection.connect(options: options, name: "plexus-bench-consumer")
        connection.subscribe(subject: topic, queue: group) { message in onMessage(message.payload) }
        // The SUB is registered once the server answers a PING sent after it.
        try await connection.ping(timeoutSeconds: options.timeoutSeconds)
        return NATSConsumer(connection: connection)
    }

    public func tearDown() async {}
}

/// Publishes to one subject over its own connection.
struct NATSCoreProducer: BenchProducer {
    let connection: NATSConnection
    let subject: String
    let fireAndForget: Bool

    func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        connection.publish(
            subject: subject, payload: payload, ack: fireAndForget ? .written(completion) : .received(completion))
    }

    func close() async { await connection.close() }
}

/// A subscription over its own connection (core NATS and JetStream consumers alike).
struct NATSConsumer: BenchConsumer {
    let connection: NATSConnection

    func close() async { await connection.close() }

    var errors: [String] { connection.errors }
}
