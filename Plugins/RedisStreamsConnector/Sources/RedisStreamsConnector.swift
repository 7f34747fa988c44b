import PlexusPluginSDK

/// Where and how the connector reaches Redis, from its configuration.
struct RedisOptions: Sendable {
    var host: String
    var port: Int
    var stream: String
    var redisGroup: String
    var consumer: String
    var startID: String
    var maxLen: Int
    var timeoutMs: Int

    init(_ config: PluginConfig) throws {
        let entries = config.entries
        host = config.text("host", default: "127.0.0.1")
        port = try config.nonNegativeInteger("port", default: 6379)
        guard let stream = entries["stream"], !stream.isEmpty else {
            throw PluginError.invalidArgument("\(config.instanceName): 'stream' must name a Redis stream")
        }
        self.stream = stream
        redisGroup = config.text("redisGroup", default: config.instanceName)
        consumer = config.text("consumer", default: config.nodeID)
        startID = config.text("startID", default: "0")
        maxLen = try config.nonNegativeInteger("maxLen", default: 0)
        timeoutMs = max(1, try config.nonNegativeInteger("timeoutMs", default: 5000))
    }
}

/// A Redis Streams connector: with `mode: source` it publishes the entries of a stream into a topic (a
/// consumer group, XREADGROUP, XACK after the node acknowledged); with `mode: sink` it appends the events of
/// a topic to a stream (XADD, pipelined per batch, acknowledged after the replies).
public final class RedisStreamsConnector: Plugin {
    public static let name = "redis-streams"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    let role: ConnectorRole

    public init(host: Host, config: PluginConfig) throws {
        let settings = try ConnectorSettings(config)
        let options = try RedisOptions(config)
        role = try ConnectorRole.from(
            config,
            source: {
                let driver = RedisStreamsSource(options: options)
                let positions = try PositionStores.open(host: host, config: config)
                return SourceConnector(
                    name: config.instanceName, host: host, settings: settings, driver: driver, positions: positions)
            },
            sink: {
                let driver = RedisStreamsSink(options: options, workers: settings.concurrency)
                return SinkConnector(name: config.instanceName, host: host, settings: settings, driver: driver)
            })
    }

    public func start() throws { try role.start() }

    public func stop(timeout: Duration) throws { try role.stop(timeout: timeout) }

    public func health() throws { try role.health() }

    /// Events published (source) or written (sink) since this instance started.
    var transferred: UInt64 { role.transferred }
}

@_cdecl("px_plugin_entry_v1")
public func redisStreamsConnectorEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(RedisStreamsConnector.self, api, out, err)
}

/// Operation `transferred`: events published (source) or written (sink) since this instance started.
@_cdecl("px_op_redis_streams_transferred")
public func redisStreamsTransferred(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RedisStreamsConnector.self, instance)?.transferred ?? 0
}
