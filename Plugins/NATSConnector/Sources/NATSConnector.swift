import PlexusPluginSDK

/// A NATS connector over libnats, the official C client: with `mode: source` it publishes the messages of a
/// JetStream stream (a durable pull consumer, acknowledged after the node acknowledged them) or of a core NATS
/// subject (at most once) into a topic; with `mode: sink` it publishes the events of a topic to a subject
/// (core NATS: flushed before the ack; JetStream: acknowledged after the stream's PubAck).
public final class NATSConnector: Plugin {
    public static let name = "nats-connector"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    let role: ConnectorRole

    public init(host: Host, config: PluginConfig) throws {
        let settings = try ConnectorSettings(config)
        let options = try NATSOptions(config)
        role = try ConnectorRole.from(
            config,
            source: {
                let driver: any SourceDriver =
                    options.jetStream ? JetStreamSource(options: options) : CoreNATSSource(options: options)
                let positions = try PositionStores.open(host: host, config: config)
                return SourceConnector(
                    name: config.instanceName, host: host, settings: settings, driver: driver, positions: positions)
            },
            sink: {
                let driver = NATSSink(options: options, workers: settings.concurrency)
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
public func natsConnectorEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(NATSConnector.self, api, out, err)
}

/// Operation `transferred`: events published (source) or written (sink) since this instance started.
@_cdecl("px_op_nats_transferred")
public func natsTransferred(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(NATSConnector.self, instance)?.transferred ?? 0
}
