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
        url = config.text("url", default: "nats://127.0.0.1:4222")
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
        durable = config.text("durable", default: config.instanceName)
        ackWaitMs = max(100, try config.nonNegativeInteger("ackWaitMs", default: 30000))
        timeoutMs = max(1, try config.nonNegativeInteger("timeoutMs", default: 5000))
    }
}
