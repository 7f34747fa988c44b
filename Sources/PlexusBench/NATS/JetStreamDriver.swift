import Synchronization

/// NATS JetStream: one file-storage stream per topic (stream and subject named for the topic), producers
/// publish with a reply inbox and complete on the server's PubAck (`{"stream":…,"seq":N}`), consumers share a
/// durable push consumer per group with a queue-group delivery subject and acknowledge each message
/// (explicit ack policy) by publishing an empty message to its `$JS.ACK…` reply subject.
///
/// A PubAck means the message is in the stream's file store, written but not fsynced per message: the
/// server syncs its blocks lazily in the background, every 2 minutes by default (`defaultSyncInterval` in
/// its filestore.go; Debian's 2.9 has no `sync_interval` option to change it). With `fireAndForget` a
/// publish goes without a reply subject and completes when written. Keys are ignored.
public final class JetStreamDriver: BenchDriver {
    public let name = "jetstream"
    private let options: DriverOptions
    private let admin = Mutex<NATSConnection?>(nil)
    private let streams = Mutex<[String]>([])

    public init(options: DriverOptions) {
        self.options = options
    }

    public var semantics: String {
        options.fireAndForget
            ? "JetStream file storage, publish completes when written (fire-and-forget), explicit consumer acks"
            : "JetStream file storage, publish completes on the PubAck, explicit consumer acks (push, queue group)"
    }

    public func setUp(topics: [String]) async throws {
        let connection = try await NATSConnection.connect(options: options, name: "plexus-bench-admin")
        admin.withLock { $0 = connection }
        for topic in topics {
            let (subject, body) = JetStreamAPI.createStream(topic)
            let answer = try await connection.request(
                subject: subject, payload: body, timeoutSeconds: options.timeoutSeconds)
            if let error = JetStreamAPI.error(in: answer, label: label("creating stream \(topic)")) { throw error }
            streams.withLock { $0.append(topic) }
        }
    }

    public func makeProducer(topic: String) async throws -> any BenchProducer {
        let connection = try await NATSConnection.connect(options: options, name: "plexus-bench-producer")
        return JetStreamProducer(
            connection: connection, subject: topic, fireAndForget: options.fireAndForget,
            label: label("publishing to \(topic)"))
    }

    public func makeConsumer(
        topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) async throws -> any BenchConsumer {
        let connection = try await NATSConnection.connect(options: options, name: "plexus-bench-consumer")
        let deliverSubject = "plexus-bench.deliver.\(topic).\(group)"
        connection.subscribe(subject: deliverSubject, queue: group) { [weak connection] message in
            onMessage(message.payload)
            if let replyTo = message.replyTo {
                connection?.publish(subject: replyTo, payload: [], ack: .none)
            }
        }
        try await connection.ping(timeoutSeconds: options.timeoutSeconds)
        // Every member sends the same configuration; the server answers an identical create with the consumer.
        let (subject, body) = JetStreamAPI.createConsumer(
            stream: topic, durable: group, deliverSubject: deliverSubject, group: group)
        do {
            let answer = try await connection.request(
                subject: subject, payload: body, timeoutSeconds: options.timeoutSeconds)
            if let error = JetStreamAPI.error(in: answer, label: label("creating consumer \(group) on \(topic)")) {
                throw error
            }
        } catch {
            await connection.close()
            throw error
        }
        return NATSConsumer(connection: connection)
    }

    /// Deletes the streams (and with them their consumers and files), then closes the admin connection.
    public func tearDown() async {
        guard let connection = admin.withLock({ $0 }) else { return }
        for stream in streams.withLock({ $0 }) {
            let (subject, body) = JetStreamAPI.deleteStream(stream)
            _ = try? await connection.request(subject: subject, payload: body, timeoutSeconds: options.timeoutSeconds)
        }
        await connection.close()
    }

    private func label(_ what: String) -> String { "jetstream \(options.address) \(what)" }
}

/// Publishes to one stream's subject over its own connection and completes on the PubAck.
struct JetStreamProducer: BenchProducer {
    let connection: NATSConnection
    let subject: String
    let fireAndForget: Bool
    let label: String

    func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        if fireAndForget {
            connection.publish(subject: subject, payload: payload, ack: .written(completion))
            return
        }
        let label = label
        connection.request(subject: subject, payload: payload) { result in
            switch result {
            case .success(let answer): completion(JetStreamAPI.error(in: answer, label: label))
            case .failure(let error): completion(error)
            }
        }
    }

    func close() async { await connection.close() }
}
