import PlexusPluginSDK

/// Writes each batch of deliveries as objects of CloudEvents JSON lines, one `PUT` per object, and returns
/// (so the connector acknowledges the batch) only after every `PUT` answered 200.
///
/// An object's key is `<prefix><topic>/<first offset>-<last offset>.jsonl`, offsets zero-padded to 20 digits
/// (so keys sort in offset order): a batch written again after a failure (the same deliveries) overwrites its
/// object instead of adding a second copy. Within an object events are in offset order, each once. A batch
/// larger than `maxObjectBytes` is split into several objects.
final class S3Sink: SinkDriver, @unchecked Sendable {
    // Safe: `SinkConnector` calls a driver for worker `w` from that worker's thread only, and each worker has
    // its own slot of `clients`, allocated before the workers start and never resized.
    let options: S3Options
    private let clients: UnsafeMutableBufferPointer<S3Client?>

    init(options: S3Options, workers: Int) {
        self.options = options
        clients = .allocate(capacity: workers)
        clients.initialize(repeating: nil)
    }

    deinit {
        _ = clients.deinitialize()
        clients.deallocate()
    }

    func connect(worker: Int) throws {
        let client = try S3Client(
            endpoint: options.endpoint, region: options.region, bucket: options.bucket,
            credentials: try options.credentials(), timeoutMs: options.timeoutMs)
        try client.headBucket()
        clients[worker] = client
    }

    func write(worker: Int, _ batch: [Delivery]) throws {
        guard let client = clients[worker] else { throw S3Error(request: "write", reason: "not connected") }
        for object in Self.objects(batch, maxBytes: options.maxObjectBytes) {
            try client.putObject(
                key: Self.key(prefix: options.prefix, topic: object.topic, first: object.first, last: object.last),
                body: object.body, contentType: "application/x-ndjson")
        }
    }

    func disconnect(worker: Int) { clients[worker] = nil }

    struct OffsetKey: Hashable {
        var topic: String
        var offset: UInt64
    }

    /// One object of a batch: its topic, first and last offsets, and its lines.
    struct Object: Equatable {
        var topic: String
        var first: UInt64
        var last: UInt64
        var body: [UInt8]
    }

    /// Splits a batch into objects: in offset order per topic, each offset once (a redelivery of an event still
    /// queued can share a batch with its first delivery), one object per topic, each at most `maxBytes` (at
    /// least one event).
    static func objects(_ batch: [Delivery], maxBytes: Int) -> [Object] {
        var objects: [Object] = []
        var seen: Set<OffsetKey> = []
        let ordered = batch.enumerated().sorted { a, b in
            (a.element.topic, a.element.offset, a.offset) < (b.element.topic, b.element.offset, b.offset)
        }.map(\.element)
        for delivery in ordered where seen.insert(OffsetKey(topic: delivery.topic, offset: delivery.offset)).inserted {
            let line = Array(CloudEventJSON.encode(delivery.event).utf8) + [0x0A]
            if var current = objects.last, current.topic == delivery.topic,
                current.body.count + line.count <= maxBytes
            {
                current.last = delivery.offset
                current.body += line
                objects[objects.count - 1] = current
            } else {
                objects.append(Object(topic: delivery.topic, first: delivery.offset, last: delivery.offset, body: line))
            }
        }
        return objects
    }

    /// `<prefix><topic>/<first>-<last>.jsonl` with 20-digit offsets.
    static func key(prefix: String, topic: String, first: UInt64, last: UInt64) -> String {
        func padded(_ n: UInt64) -> String {
            let digits = String(n)
            return String(repeating: "0", count: max(0, 20 - digits.count)) + digits
        }
        return "\(prefix)\(topic)/\(padded(first))-\(padded(last)).jsonl"
    }
}
