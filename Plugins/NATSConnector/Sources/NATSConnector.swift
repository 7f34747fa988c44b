import PlexusPluginSDK

/// A NATS connector over libnats, the official C client: with `mode: source` it publishes the messages of a
/// JetStream stream (a durable pull consumer, acknowledged after the node acknowledged them) or of a core NATS
/// subject (at most once) into a topic; with `mode: sink` it publishes the events of a topic to a subject
/// (core NATS: flushed before the ack; JetStream: acknowledged after the stream's PubAck).
public final class NATSConnector: Plugin {
    public static let name = "nats-connector"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    enum Role {
        case source(SourceConnector)
        case sink(SinkConnector)
    }

    let role: Role

    public init(host: Host, config: PluginConfig) throws {
        let settings = try ConnectorSettings(config)
        let options = try NATSOptions(config)
        switch config.entries["mode"] ?? "" {
        case "source":
            let driver: any SourceDriver =
                options.jetStream ? JetStreamSource(options: options) : CoreNATSSource(options: options)
            let positions = try PositionStores.open(host: host, config: config)
            role = .source(
                SourceConnector(
                    name: config.instanceName, host: host, settings: settings, driver: driver, positions: positions))
        case "sink":
            let driver = NATSSink(options: options, workers: settings.concurrency)
            role = .sink(SinkConnector(name: config.instanceName, host: host, settings: settings, driver: driver))
        case let other:
            throw PluginError.invalidArgument(
                "\(config.instanceName): 'mode' must be 'source' or 'sink', not '\(other)'")
        }
    }

    public func start() throws {
        switch role {
        case .source(let source): try source.start()
        case .sink(let sink): try sink.start()
        }
    }

    public func stop(timeout: Duration) throws {
        switch role {
        case .source(let source): try source.stop(timeout: timeout)
        case .sink(let sink): try sink.stop(timeout: timeout)
        }
    }

    public func health() throws {
        switch role {
        case .source(let source): try source.health.check()
        case .sink(let sink): try sink.health.check()
        }
    }

    /// Events published (source) or written (sink) since this instance started.
    var transferred: UInt64 {
        switch role {
        case .source(let source): source.publishedCount
        case .sink(let sink): sink.writtenCount
        }
    }
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
