import PlexusPluginSDK

/// An MQTT connector over libmosquitto: with `mode: source` it publishes the messages of an MQTT topic filter
/// into a topic (QoS 1, a persistent session, spooled until the node acknowledged them); with `mode: sink` it
/// publishes the events of a topic to an MQTT topic (QoS 1, acknowledged after the broker's PUBACK).
public final class MQTTConnector: Plugin {
    public static let name = "mqtt-connector"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    enum Role {
        case source(SourceConnector)
        case sink(SinkConnector)
    }

    let role: Role

    public init(host: Host, config: PluginConfig) throws {
        let settings = try ConnectorSettings(config)
        let options = try MQTTOptions(config)
        switch config.entries["mode"] ?? "" {
        case "source":
            let driver = try MQTTSource(options: options, dataDirectory: config.dataDirectory)
            let positions = try PositionStores.open(host: host, config: config)
            role = .source(
                SourceConnector(
                    name: config.instanceName, host: host, settings: settings, driver: driver, positions: positions))
        case "sink":
            let driver = MQTTSink(options: options, workers: settings.concurrency)
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
public func mqttConnectorEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(MQTTConnector.self, api, out, err)
}

/// Operation `transferred`: events published (source) or written (sink) since this instance started.
@_cdecl("px_op_mqtt_transferred")
public func mqttTransferred(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(MQTTConnector.self, instance)?.transferred ?? 0
}
