import PlexusPluginSDK

/// Where and how the connector reaches NATS, from its configuration.
struct NATSOptions: Sendable {
    var url: String
    var subject: String
    var jetStream: Bool
    var stream: String
    var durable: String
    var ackWaitMs: Int
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
        url = entries["url"].flatMap { $0.isEmpty ? nil : $0 } ?? "nats://127.0.0.1:4222"
        guard let subject = entries["subject"], !subject.isEmpty else {
            throw PluginError.invalidArgument("\(config.instanceName): 'subject' must name a NATS subject")
        }
        self.subject = subject
        switch entries["jetstream"] ?? "false" {
        case "true": jetStream = true
        case "false", "": jetStream = false
        case let other:
            throw PluginError.invalidArgument(
                "\(config.instanceName): 'jetstream' must be true or false, not '\(other)'")
        }
        stream = entries["stream"] ?? ""
        if jetStream && stream.isEmpty {
            throw PluginError.invalidArgument(
                "\(config.instanceName): 'jetstream: true' needs 'stream', the stream's name")
        }
        durable = entries["durable"].flatMap { $0.isEmpty ? nil : $0 } ?? config.instanceName
        ackWaitMs = max(100, try integer("ackWaitMs", 30000))
        timeoutMs = max(1, try integer("timeoutMs", 5000))
    }
}
