import PlexusPluginSDK
import Synchronization

/// Reads a Redis stream through a consumer group (XREADGROUP) and releases each entry (XACK) only after the
/// node acknowledged its publish. After a restart it first reads its pending entries (delivered to this
/// consumer, never acknowledged): those at or before the saved position were published already and are only
/// acknowledged; the others are published.
final class RedisStreamsSource: SourceDriver, @unchecked Sendable {
    // Safe: `SourceConnector` calls a driver from its one thread only; `dropped` is atomic.
    let options: RedisOptions
    private var connection: RedisConnection?
    private var readingPending = true
    private var saved: String?
    let dropped = Atomic<UInt64>(0)

    init(options: RedisOptions) { self.options = options }

    func connect(position: [UInt8]?) throws {
        let connection = try RedisConnection(host: options.host, port: options.port, timeoutMs: options.timeoutMs)
        let created = try connection.command(
            "XGROUP", "CREATE", options.stream, options.redisGroup, options.startID, "MKSTREAM")
        if case .error(let reason) = created, !reason.hasPrefix("BUSYGROUP") {
            throw RedisError(context: "XGROUP CREATE \(options.stream) \(options.redisGroup)", reason: reason)
        }
        self.connection = connection
        saved = position.map { String(decoding: $0, as: UTF8.self) }
        readingPending = true
    }

    func read(max: Int, wait: Duration) throws -> SourceBatch {
        guard let connection else { throw RedisError(context: options.stream, reason: "not connected") }
        var arguments = ["XREADGROUP", "GROUP", options.redisGroup, options.consumer, "COUNT", String(max)]
        if !readingPending {
            let ms = Int(wait.components.seconds) * 1000 + Int(wait.components.attoseconds / 1_000_000_000_000_000)
            arguments += ["BLOCK", String(Swift.max(1, ms))]
        }
        arguments += ["STREAMS", options.stream, readingPending ? "0" : ">"]
        let reply = try connection.command(arguments.map { Array($0.utf8) })
        let entries = try Self.entries(reply, stream: options.stream)
        if readingPending && entries.isEmpty {
            readingPending = false
            return SourceBatch(events: [], position: nil)
        }
        var events: [CloudEvent] = []
        var handles: [String] = []
        var dropped = 0
        for (id, fields) in entries {
            handles.append(id)
            // A pending entry at or before the saved position was published before the restart.
            if readingPending, let saved, !StreamEntry.precedes(saved, id) { continue }
            events.append(StreamEntry.event(stream: options.stream, entryID: id, fields: fields, dropped: &dropped))
        }
        if dropped > 0 { self.dropped.add(UInt64(dropped), ordering: .relaxed) }
        let last = handles.last.map { Array($0.utf8) }
        return SourceBatch(events: events, position: events.isEmpty ? nil : last, handles: handles)
    }

    func published(_ batch: SourceBatch) throws {
        guard !batch.handles.isEmpty else { return }
        guard let connection else { throw RedisError(context: options.stream, reason: "not connected") }
        let reply = try connection.command(
            (["XACK", options.stream, options.redisGroup] + batch.handles).map { Array($0.utf8) })
        if case .error(let reason) = reply { throw RedisError(context: "XACK \(options.stream)", reason: reason) }
        if let last = batch.handles.last, saved == nil || StreamEntry.precedes(saved ?? "", last) {
            saved = last
        }
    }

    func disconnect() { connection = nil }

    /// The entries of an XREADGROUP reply for one stream: `[[stream, [[id, [field, value, …]], …]]]`.
    static func entries(_ reply: RedisValue, stream: String) throws -> [(String, [(String, [UInt8])])] {
        switch reply {
        case .null: return []
        case .error(let reason): throw RedisError(context: "XREADGROUP \(stream)", reason: reason)
        case .array(let streams):
            var out: [(String, [(String, [UInt8])])] = []
            for case .array(let pair) in streams where pair.count == 2 {
                guard case .array(let items) = pair[1] else { continue }
                for case .array(let entry) in items where entry.count == 2 {
                    guard let id = entry[0].text else { continue }
                    var fields: [(String, [UInt8])] = []
                    if case .array(let flat) = entry[1] {
                        var i = 0
                        while i + 1 < flat.count {
                            if let name = flat[i].text, case .string(let value) = flat[i + 1] {
                                fields.append((name, value))
                            }
                            i += 2
                        }
                    }
                    // A pending entry deleted from the stream comes back with no fields: nothing to publish.
                    out.append((id, fields))
                }
            }
            return out
        default:
            throw RedisError(context: "XREADGROUP \(stream)", reason: "unexpected reply \(reply)")
        }
    }
}
