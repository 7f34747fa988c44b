import Synchronization

/// Redis Streams: one stream per topic (the key is the topic name). Producers `XADD topic * p <payload>`,
/// pipelined, and complete on the reply (the entry id); consumers of a group read with
/// `XREADGROUP GROUP <group> <consumer> COUNT 500 BLOCK 200 STREAMS topic >` and acknowledge each batch with
/// one `XACK` pipelined before the next read.
///
/// The reply to `XADD` means the entry is in memory and, with `appendonly yes`, in the AOF buffer; how soon it
/// reaches the disk is the server's `appendfsync` setting (`everysec` by default), read at set-up and shown in
/// the report. With `fireAndForget` an `XADD` completes when written (its reply is still read). Keys are ignored.
public final class RedisStreamsDriver: BenchDriver {
    public let name = "redis"
    private let options: DriverOptions
    private let admin = Mutex<RedisConnection?>(nil)
    private let topics = Mutex<[String]>([])
    private let persistence = Mutex("persistence not read")

    public init(options: DriverOptions) {
        self.options = options
    }

    public var semantics: String {
        let publish =
            options.fireAndForget ? "XADD completes when written (fire-and-forget)" : "XADD completes on its reply"
        return "Redis Streams, \(publish), \(persistence.withLock { $0 }), XREADGROUP + XACK per batch"
    }

    public func setUp(topics: [String]) async throws {
        let connection = try await RedisConnection.connect(options: options)
        admin.withLock { $0 = connection }
        self.topics.withLock { $0 = topics }
        var settings: [String] = []
        for key in ["appendonly", "appendfsync"] {
            let reply = try await connection.command(
                ["CONFIG", "GET", .text(key)], timeoutSeconds: options.timeoutSeconds)
            if let value = reply.elements?.last?.bytes {
                settings.append("\(key) \(String(decoding: value, as: UTF8.self))")
            }
        }
        persistence.withLock { $0 = settings.joined(separator: ", ") }
    }

    public func makeProducer(topic: String) async throws -> any BenchProducer {
        RedisProducer(
            connection: try await RedisConnection.connect(options: options), topic: topic,
            fireAndForget: options.fireAndForget)
    }

    public func makeConsumer(
        topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) async throws -> any BenchConsumer {
        let connection = try await RedisConnection.connect(options: options)
        do {
            _ = try await connection.command(
                ["XGROUP", "CREATE", .text(topic), .text(group), "0", "MKSTREAM"],
                timeoutSeconds: options.timeoutSeconds)
        } catch let error as BenchError where error.message.contains("BUSYGROUP") {
            // Another member created the group first.
        } catch {
            await connection.close()
            throw error
        }
        return RedisConsumer(connection: connection, topic: topic, group: group, onMessage: onMessage)
    }

    /// Deletes the streams, then closes the admin connection.
    public func tearDown() async {
        guard let connection = admin.withLock({ $0 }) else { return }
        let keys = topics.withLock { $0 }
        if !keys.isEmpty {
            _ = try? await connection.command(["DEL"] + keys.map { .text($0) }, timeoutSeconds: options.timeoutSeconds)
        }
        await connection.close()
    }
}

/// Appends to one stream over its own connection.
struct RedisProducer: BenchProducer {
    let connection: RedisConnection
    let topic: String
    let fireAndForget: Bool

    func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        let arguments: [RESPArgument] = ["XADD", .text(topic), "*", "p", .bytes(payload)]
        if fireAndForget {
            connection.send(arguments, written: completion) { _ in }
            return
        }
        let label = connection.label
        connection.send(arguments) { result in
            switch result {
            case .success(.error(let message)):
                completion(BenchError(.serverError, subject: label, "XADD \(topic): \(message)"))
            case .success: completion(nil)
            case .failure(let error): completion(error)
            }
        }
    }

    func close() async { await connection.close() }
}

/// One member of a consumer group, reading and acknowledging in a loop over its own connection.
final class RedisConsumer: BenchConsumer {
    /// Entries per `XREADGROUP`.
    static let batch = 500
    /// How long one `XREADGROUP` blocks when the stream has nothing new, in milliseconds; bounds `close()`.
    static let blockMilliseconds = 200

    private let connection: RedisConnection
    private let stopped = Mutex(false)
    private let loop = Mutex<Task<Void, Never>?>(nil)

    init(connection: RedisConnection, topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void) {
        self.connection = connection
        var random = SystemRandomNumberGenerator()
        let name = "plexus-bench-" + String(random.next() as UInt32, radix: 36)
        let read: [RESPArgument] = [
            "XREADGROUP", "GROUP", .text(group), .text(name), "COUNT", .text("\(Self.batch)"), "BLOCK",
            .text("\(Self.blockMilliseconds)"), "STREAMS", .text(topic), ">",
        ]
        let task = Task { await self.run(read: read, topic: topic, group: group, onMessage: onMessage) }
        loop.withLock { $0 = task }
    }

    /// Reads, delivers and acknowledges until ``close()`` or until the connection fails.
    private func run(
        read: [RESPArgument], topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) async {
        let label = connection.label
        while !stopped.withLock({ $0 }) {
            let reply: RESPValue
            do {
                reply = try await connection.command(read)
            } catch {
                if !stopped.withLock({ $0 }) { connection.record("\(error)") }
                return
            }
            let ids = Self.deliver(reply, to: onMessage)
            guard !ids.isEmpty else { continue }
            connection.send(["XACK", .text(topic), .text(group)] + ids.map { .bytes($0) }) { [connection] result in
                if case .success(.error(let message)) = result {
                    connection.record(BenchError(.serverError, subject: label, "XACK \(topic): \(message)").description)
                }
            }
        }
    }

    /// Hands each entry's `p` field to `onMessage` and returns the entry ids, in order.
    ///
    /// The reply is `[[stream, [[id, [field, value, …]], …]]]`, or a null array when the read timed out.
    static func deliver(_ reply: RESPValue, to onMessage: @Sendable ([UInt8]) -> Void) -> [[UInt8]] {
        var ids: [[UInt8]] = []
        for stream in reply.elements ?? [] {
            guard let entries = stream.elements?.last?.elements else { continue }
            for entry in entries {
                guard let parts = entry.elements, let id = parts.first?.bytes else { continue }
                ids.append(id)
                guard let fields = parts.last?.elements else { continue }
                var index = 0
                while index + 1 < fields.count {
                    if fields[index].bytes == [UInt8(ascii: "p")], let payload = fields[index + 1].bytes {
                        onMessage(payload)
                    }
                    index += 2
                }
            }
        }
        return ids
    }

    func close() async {
        stopped.withLock { $0 = true }
        await loop.withLock({ $0 })?.value
        await connection.close()
    }

    var errors: [String] { connection.errors }
}
