/// The configuration keys every connector built on `SourceConnector` or `SinkConnector` shares, read from the
/// instance's validated configuration (`PluginConfig.entries`), with the defaults below when a key is absent.
///
/// | key | default | meaning |
/// | --- | --- | --- |
/// | `topic` | (required) | a source publishes to it; a sink subscribes to it |
/// | `group` | the instance name | the sink's consumer group |
/// | `batchSize` | 100 | most events per publish (source) or per write (sink) |
/// | `batchMaxWaitMs` | 20 | how long a sink waits for a batch to fill after its first event |
/// | `maxInFlight` | 0 (kernel: 100) | the sink's unacknowledged deliveries (`max_in_flight`) |
/// | `concurrency` | 1 | the sink's writes in progress at once (1 keeps the topic's order) |
/// | `retry` | 0 (kernel: 3) | attempts of a delivery the sink failed to write, before dead-lettering |
/// | `backoffDelayMs` | 0 (kernel: 200) | the first retry's delay (exponential) |
/// | `backoffMaxMs` | 0 (kernel: 60,000) | the longest retry delay |
/// | `deadLetterTopic` | none | where deliveries go after their last attempt |
/// | `start` | `earliest` | where a new sink group starts: `earliest` or `latest` |
/// | `reconnectMaxMs` | 5000 | the longest wait between attempts to reach the external system |
public struct ConnectorSettings: Sendable, Equatable {
    public var topic: String
    public var group: String
    public var batchSize: Int
    public var batchMaxWaitMs: Int
    public var maxInFlight: UInt32
    public var concurrency: Int
    public var retry: UInt32
    public var backoffDelayMs: UInt64
    public var backoffMaxMs: UInt64
    public var deadLetterTopic: String
    public var startEarliest: Bool
    public var reconnectMaxMs: Int

    /// Reads the common keys from `config`.
    /// - Throws: `PluginError` (`PX_ERR_INVALID_ARGUMENT`) naming the key and the value that is not valid.
    public init(_ config: PluginConfig) throws {
        try self.init(entries: config.entries, instanceName: config.instanceName)
    }

    /// Reads the common keys from configuration entries (scalars as text).
    /// - Throws: `PluginError` (`PX_ERR_INVALID_ARGUMENT`) naming the key and the value that is not valid.
    public init(entries: [String: String], instanceName: String) throws {
        func integer(_ key: String, _ fallback: Int, minimum: Int) throws -> Int {
            guard let text = entries[key], !text.isEmpty else { return fallback }
            guard let value = Int(text), value >= minimum else {
                throw PluginError.invalidArgument(
                    "\(instanceName): '\(key)' must be an integer of at least \(minimum), not '\(text)'")
            }
            return value
        }
        guard let topic = entries["topic"], !topic.isEmpty else {
            throw PluginError.invalidArgument("\(instanceName): 'topic' must name a topic")
        }
        self.topic = topic
        let group = entries["group"] ?? ""
        self.group = group.isEmpty ? instanceName : group
        batchSize = try integer("batchSize", 100, minimum: 1)
        batchMaxWaitMs = try integer("batchMaxWaitMs", 20, minimum: 0)
        maxInFlight = UInt32(clamping: try integer("maxInFlight", 0, minimum: 0))
        concurrency = try integer("concurrency", 1, minimum: 1)
        retry = UInt32(clamping: try integer("retry", 0, minimum: 0))
        backoffDelayMs = UInt64(try integer("backoffDelayMs", 0, minimum: 0))
        backoffMaxMs = UInt64(try integer("backoffMaxMs", 0, minimum: 0))
        deadLetterTopic = entries["deadLetterTopic"] ?? ""
        reconnectMaxMs = try integer("reconnectMaxMs", 5000, minimum: 1)
        switch entries["start"] ?? "earliest" {
        case "earliest", "": startEarliest = true
        case "latest": startEarliest = false
        case let other:
            throw PluginError.invalidArgument("\(instanceName): 'start' must be 'earliest' or 'latest', not '\(other)'")
        }
    }

    /// The subscription a sink makes: the delivery contract from these settings.
    public var subscriptionOptions: SubscriptionOptions {
        var options = SubscriptionOptions()
        options.group = group
        options.retry = retry
        options.backoffDelayMs = backoffDelayMs
        options.backoffMaxMs = backoffMaxMs
        options.deadLetterTopic = deadLetterTopic
        options.maxInFlight = maxInFlight
        options.start = startEarliest ? .earliest : .latest
        return options
    }
}
