import PlexusPluginSDK

/// An MQTT connector over libmosquitto: with `mode: source` it publishes the messages of an MQTT topic filter
/// into a topic (QoS 1, a persistent session, spooled until the node acknowledged them); with `mode: sink` it
/// publishes the events of a topic to an MQTT topic (QoS 1, acknowledged after the broker's PUBACK).
public final class MQTTConnector: Plugin {
    public static let name = "mqtt-connector"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    let role: ConnectorRole

    public init(host: Host, config: PluginConfig) throws {
        let settings = try ConnectorSettings(config)
        let options = try MQTTOptions(config)
        role = try ConnectorRole.from(
            config,
            source: {
                let driver = try MQTTSource(options: options, dataDirectory: config.dataDirectory)
                let positions = try PositionStores.open(host: host, config: config)
                return SourceConnector(
                    name: config.instanceName, host: host, settings: settings, driver: driver, positions: positions)
            },
            sink: {
                let driver = MQTTSink(options: options, workers: settings.concurrency)
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
