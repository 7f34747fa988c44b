import PlexusPluginSDK

/// Where and how the connector reaches the MQTT broker, from its configuration.
struct MQTTOptions: Sendable {
    var host: String
    var port: Int
    var mqttTopic: String
    var clientID: String
    var keepAlive: Int
    var timeoutMs: Int

    init(_ config: PluginConfig) throws {
        let entries = config.entries
        host = config.text("host", default: "127.0.0.1")
        port = try config.nonNegativeInteger("port", default: 1883)
        guard let topic = entries["mqttTopic"], !topic.isEmpty else {
            throw PluginError.invalidArgument(
                "\(config.instanceName): 'mqttTopic' must name an MQTT topic (a source: a topic filter)")
        }
        mqttTopic = topic
        clientID =
            config.text("clientID", default: "plexus-\(config.nodeID)-\(config.instanceName)")
        guard clientID.utf8.count <= 65535 else {
            throw PluginError.invalidArgument("\(config.instanceName): 'clientID' is longer than MQTT allows")
        }
        keepAlive = max(5, try config.nonNegativeInteger("keepAliveSeconds", default: 30))
        timeoutMs = max(1, try config.nonNegativeInteger("timeoutMs", default: 5000))
    }
}
