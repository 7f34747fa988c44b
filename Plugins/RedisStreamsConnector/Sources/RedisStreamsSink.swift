import PlexusPluginSDK

/// Appends each event to a Redis stream (XADD), a batch as one pipeline: the batch is acknowledged after
/// every reply came back as an entry id.
final class RedisStreamsSink: SinkDriver, @unchecked Sendable {
    // Safe: `SinkConnector` calls a driver for worker `w` from that worker's thread only, and each worker
    // has its own slot of `connections`, allocated before the workers start and never resized.
    let options: RedisOptions
    private let connections: UnsafeMutableBufferPointer<RedisConnection?>

    init(options: RedisOptions, workers: Int) {
        self.options = options
        connections = .allocate(capacity: workers)
        connections.initialize(repeating: nil)
    }

    deinit {
        _ = connections.deinitialize()
        connections.deallocate()
    }

    func connect(worker: Int) throws {
        connections[worker] = try RedisConnection(host: options.host, port: options.port, timeoutMs: options.timeoutMs)
    }

    func write(worker: Int, _ batch: [Delivery]) throws {
        guard let connection = connections[worker] else {
            throw RedisError(context: options.stream, reason: "not connected")
        }
        var head: [[UInt8]] = [Array("XADD".utf8), Array(options.stream.utf8)]
        if options.maxLen > 0 { head += [Array("MAXLEN".utf8), Array("~".utf8), Array(String(options.maxLen).utf8)] }
        head.append(Array("*".utf8))
        let replies = try connection.pipeline(batch.map { head + StreamEntry.fields(of: $0.event) })
        for reply in replies {
            if case .error(let reason) = reply { throw RedisError(context: "XADD \(options.stream)", reason: reason) }
        }
    }

    func disconnect(worker: Int) { connections[worker] = nil }
}
