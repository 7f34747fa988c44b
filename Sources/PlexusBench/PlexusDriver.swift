import PlexusClient
import PlexusCore
import Synchronization

/// Plexus over its TCP protocol, through `PlexusClient`: one connection per producer and per consumer.
///
/// Settings: `credits` (a consumer's flow-control window, default 1000), `token`.
final class PlexusDriver: BenchDriver {
    let options: DriverOptions
    var name: String { "plexus" }

    init(options: DriverOptions) { self.options = options }

    private func connect(_ role: String) async throws -> PlexusClient {
        var config = ClientConfiguration(
            host: options.host, port: options.port, name: "bench-\(role)", token: options.settings["token"] ?? "",
            connectTimeout: .milliseconds(Int64(options.timeoutSeconds * 1000)), reconnect: false,
            eventLoopGroup: options.eventLoopGroup)
        config.requestTimeout = config.connectTimeout
        return try await PlexusClient.connect(config)
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
            do {
                try client.publishWithoutAck(topic: topic, [event])
                completion(nil)
            } catch {
                completion(error)
            }
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
