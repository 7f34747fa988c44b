import PlexusClient
import PlexusCore
import Synchronization

/// Plexus over its TCP protocol, through `PlexusClient`: one connection per producer and per consumer.
///
/// Each send publishes one event. By default each event travels in a `PUBLISH` frame of its own, as each
/// baseline sends one message per request: the client's coalescing of concurrent publishes into one frame
/// is off (`maxBatchEvents` 1). Frames written in one event-loop turn may still share one socket write,
/// as NATS's and Redis's clients buffer their writes.
///
/// Settings: `credits` (a consumer's flow-control window, default 1000), `token`, `coalesce` (`true`: the
/// client packs concurrent publishes to a topic into one frame of up to 512 events, the client's default;
/// such runs are the *batched* rows and must be labelled so).
final class PlexusDriver: BenchDriver {
    let options: DriverOptions
    var name: String { "plexus" }

    init(options: DriverOptions) { self.options = options }

    /// Whether concurrent publishes are coalesced into one frame (`--set coalesce=true`).
    var coalesces: Bool { Self.coalesces(options.settings) }

    /// The `coalesce` setting: `true`/`1`/`yes` turn coalescing on; absent or anything else leaves it off.
    static func coalesces(_ settings: [String: String]) -> Bool {
        ["true", "1", "yes"].contains(settings["coalesce"]?.lowercased() ?? "")
    }

    /// The client configuration for one connection: coalescing off unless asked for.
    static func configuration(options: DriverOptions, role: String) -> ClientConfiguration {
        var config = ClientConfiguration(
            host: options.host, port: options.port, name: "bench-\(role)", token: options.settings["token"] ?? "",
            connectTimeout: .milliseconds(Int64(options.timeoutSeconds * 1000)), reconnect: false,
            eventLoopGroup: options.eventLoopGroup)
        config.requestTimeout = config.connectTimeout
        // One event per PUBLISH frame: a new publish never joins a frame already staged.
        if !coalesces(options.settings) { config.maxBatchEvents = 1 }
        return config
    }

    var semantics: String {
        let framing =
            coalesces
            ? "BATCHED: concurrent publishes coalesced, up to 512 events per PUBLISH frame"
            : "one event per PUBLISH frame (no coalescing)"
        return options.fireAndForget
            ? "plexus, \(framing), publish completes when its frame is written to the socket (fire-and-forget)"
            : "plexus, \(framing), publish completes on the node's acknowledgement (stored per the topic's storage)"
    }

    private func connect(_ role: String) async throws -> PlexusClient {
        try await PlexusClient.connect(Self.configuration(options: options, role: role))
    }

    func setUp(topics: [String]) async throws {
        // Topics are created on first publish (topics.autoCreate, the default).
    }

    func makeProducer(topic: String) async throws -> any BenchProducer {
        PlexusProducer(client: try await connect("producer"), topic: topic, fireAndForget: options.fireAndForget)
    }

    func makeConsumer(
        topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) async throws -> any BenchConsumer {
        let client = try await connect("consumer")
        let credits = UInt32(options.settings["credits"] ?? "") ?? 1000
        let subscription = try await client.subscribe(
            topic: topic, options: SubscribeOptions(group: group, start: .latest, credits: credits)
        ) { received in
            onMessage(received.data)
            received.ack()
        }
        return PlexusConsumer(client: client, subscription: subscription)
    }

    func tearDown() async {}
}

final class PlexusProducer: BenchProducer {
    let client: PlexusClient
    let topic: String
    let fireAndForget: Bool
    private let sequence = Atomic<UInt64>(0)

    init(client: PlexusClient, topic: String, fireAndForget: Bool) {
        self.client = client
        self.topic = topic
        self.fireAndForget = fireAndForget
    }

    func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        let n = sequence.add(1, ordering: .relaxed).newValue
        let event = CloudEvent(
            id: String(n), source: "/bench", type: "bench", extensions: key.map { [("partitionkey", $0)] } ?? [],
            data: payload)
        if fireAndForget {
            // Complete when the frame's bytes reach the socket (the write promise), as NATS's client does; not
            // when the event is merely staged in the client.
            client.publishWithoutAck(topic: topic, [event]) { error in completion(error) }
            return
        }
        client.publish(topic: topic, [event]) { result in
            switch result {
            case .success: completion(nil)
            case .failure(let error): completion(error)
            }
        }
    }

    func close() async { await client.close() }
}

final class PlexusConsumer: BenchConsumer {
    let client: PlexusClient
    let subscription: ClientSubscription

    init(client: PlexusClient, subscription: ClientSubscription) {
        self.client = client
        self.subscription = subscription
    }

    func close() async {
        await subscription.cancel()
        await client.close()
    }
}
