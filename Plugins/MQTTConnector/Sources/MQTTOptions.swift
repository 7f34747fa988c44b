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
        func integer(_ key: String, _ fallback: Int) throws -> Int {
            guard let text = entries[key], !text.isEmpty else { return fallback }
            guard let value = Int(text), value >= 0 else {
                throw PluginError.invalidArgument("\(config.instanceName): '\(key)' must be a non-negative integer")
            }
            return value
        }
        host = entries["host"].flatMap { $0.isEmpty ? nil : $0 } ?? "127.0.0.1"
        port = try integer("port", 1883)
        guard let topic = entries["mqttTopic"], !topic.isEmpty else {
            throw PluginError.invalidArgument(
                "\(config.instanceName): 'mqttTopic' must name an MQTT topic (a source: a topic filter)")
        }
        mqttTopic = topic
        clientID =
            entries["clientID"].flatMap { $0.isEmpty ? nil : $0 } ?? "plexus-\(config.nodeID)-\(config.instanceName)"
        guard clientID.utf8.count <= 65535 else {
            throw PluginError.invalidArgument("\(config.instanceName): 'clientID' is longer than MQTT allows")
        }
        keepAlive = max(5, try integer("keepAliveSeconds", 30))
        timeoutMs = max(1, try integer("timeoutMs", 5000))
    }
}
