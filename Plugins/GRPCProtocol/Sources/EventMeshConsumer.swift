import Foundation
import GRPCCore
import PlexusGRPCServices
import PlexusPluginSDK
import Synchronization

/// One item of an EventMesh subscription (`text_data` JSON): a topic, `CLUSTERING` or `BROADCASTING`, and
/// `SYNC` or `ASYNC` (recorded; both are delivered alike).
struct SubscriptionItem: Equatable {
    var topic: String
    var broadcast: Bool

    /// The items of a subscription's JSON: a list of items, or an object with `subscriptionItems`.
    /// - Throws: `RPCError` `invalidArgument` (EventMesh body error) when it is not that.
    static func parse(_ text: String) throws -> [SubscriptionItem] {
        let json = try? JSONSerialization.jsonObject(with: Data(text.utf8))
        let list = (json as? [Any]) ?? ((json as? [String: Any])?["subscriptionItems"] as? [Any])
        guard let list, !list.isEmpty else {
            throw EventMesh.error(
                .invalidArgument, .bodyError, "text_data must be a JSON list of subscription items (topic, mode, type)")
        }
        return try list.map { entry in
            guard let item = entry as? [String: Any], let topic = item["topic"] as? String, !topic.isEmpty else {
                throw EventMesh.error(.invalidArgument, .bodyError, "a subscription item needs a topic")
            }
            let mode = (item["mode"] as? String ?? "CLUSTERING").uppercased()
            guard mode == "CLUSTERING" || mode == "BROADCASTING" else {
                throw EventMesh.error(
                    .invalidArgument, .bodyError, "subscription mode '\(mode)' is not CLUSTERING or BROADCASTING")
            }
            let type = (item["type"] as? String ?? "ASYNC").uppercased()
            guard type == "ASYNC" || type == "SYNC" else {
                throw EventMesh.error(.invalidArgument, .bodyError, "subscription type '\(type)' is not ASYNC or SYNC")
            }
            return SubscriptionItem(topic: topic, broadcast: mode == "BROADCASTING")
        }
    }
}

/// The open EventMesh subscribe streams, by consumer group (for `unsubscribe`).
final class EventMeshStreams: Sendable {
    private let state = Mutex<[UInt64: (group: String, stream: DeliveryStream<EMCloudEvent>)]>([:])
    private let next = Atomic<UInt64>(1)

    func add(group: String, _ stream: DeliveryStream<EMCloudEvent>) -> UInt64 {
        let key = next.add(1, ordering: .relaxed).oldValue
        state.withLock { $0[key] = (group, stream) }
        return key
    }

    func remove(_ key: UInt64) { state.withLock { _ = $0.removeValue(forKey: key) } }

    func streams(of group: String) -> [DeliveryStream<EMCloudEvent>] {
        state.withLock { $0.values.filter { $0.group == group }.map(\.stream) }
    }
}

/// A stream's key in `EventMeshStreams`, once it has subscribed.
final class Registration: Sendable {
    let value = Mutex<UInt64?>(nil)
}

/// `org.apache.eventmesh.cloudevents.v1.ConsumerService`.
struct EventMeshConsumer: EMConsumerService.ServiceProtocol {
    let mesh: EventMesh
    let open = EventMeshStreams()

    init(kernel: Kernel) { mesh = EventMesh(kernel: kernel) }

    /// Webhook subscriptions are the HTTP plugin's: refused here with `unimplemented`.
    func subscribe(request: ServerRequest<EMCloudEvent>, context: ServerContext) async throws -> ServerResponse<
        EMCloudEvent
    > {
        try mesh.authorize(request.metadata, [request.message])
        throw EventMesh.error(
            .unimplemented, .subscribeError,
            "webhook subscriptions are served by the HTTP protocol plugin; use subscribeStream on gRPC")
    }

    /// Ends the consumer group's stream subscriptions to the items' topics on this node.
    func unsubscribe(request: ServerRequest<EMCloudEvent>, context: ServerContext) async throws -> ServerResponse<
        EMCloudEvent
    > {
        let message = request.message
        try mesh.authorize(request.metadata, [message])
        guard let group = message.attributeString("consumergroup"), !group.isEmpty else {
            throw EventMesh.error(.invalidArgument, .headerError, "an unsubscribe names its consumergroup")
        }
        guard case .textData(let text)? = message.data else {
            throw EventMesh.error(.invalidArgument, .bodyError, "an unsubscribe carries its items in text_data")
        }
        let topics = Set(try SubscriptionItem.parse(text).map(\.topic))
        var ended = 0
        for stream in open.streams(of: group) {
            for subscription in stream.remove(topics: topics) {
                await mesh.kernel.unsubscribe(subscription)
                ended += 1
            }
        }
        var response = EventMesh.response(to: message, .success, "success")
        response.setString("count", String(ended))
        return ServerResponse(message: response)
    }

    /// The first message subscribes (`consumergroup` attribute, items in `text_data`) and is answered with a
    /// response event; events then come on the stream, each with a `deliveryid` attribute, and the client
    /// acknowledges them with messages carrying `ackid` (or `nackid`) attributes. Later messages with items
    /// add subscriptions; messages with a `subject` and neither are published (replies to requestReply).
    func subscribeStream(
        request: StreamingServerRequest<EMCloudEvent>, context: ServerContext
    ) async throws -> StreamingServerResponse<EMCloudEvent> {
        try mesh.authorize(request.metadata, [])
        let mesh = self.mesh
        let open = self.open
        return StreamingServerResponse { writer in
            mesh.kernel.streams.add(1, ordering: .relaxed)
            defer { mesh.kernel.streams.subtract(1, ordering: .relaxed) }
            let deliveries = DeliveryStream<EMCloudEvent>()
            let key = Registration()
            var failure: (any Error)?
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        var consumerGroup: String?
                        for try await message in request.messages {
                            try await Self.handle(message, &consumerGroup, deliveries, mesh)
                            if let consumerGroup, key.value.withLock({ $0 }) == nil {
                                let registered = open.add(group: consumerGroup, deliveries)
                                key.value.withLock { $0 = registered }
                            }
                        }
                        deliveries.endMessages()
                    }
                    group.addTask {
                        for await message in deliveries.messages { try await writer.write(message) }
                    }
                    _ = try await group.next()
                    group.cancelAll()
                }
            } catch {
                failure = error
            }
            if let registered = key.value.withLock({ $0 }) { open.remove(registered) }
            for subscription in deliveries.finish() { await mesh.kernel.unsubscribe(subscription) }
            if let failure { throw failure }
            return [:]
        }
    }

    private static func handle(
        _ message: EMCloudEvent, _ consumerGroup: inout String?, _ deliveries: DeliveryStream<EMCloudEvent>,
        _ mesh: EventMesh
    ) async throws {
        let host = mesh.kernel.host
        if let ids = message.attributeString("ackid") {
            for id in ids.split(separator: ",").compactMap({ UInt64($0.trimmingCharacters(in: .whitespaces)) }) {
                guard deliveries.settle(id) else {
                    host.count("acks_unknown")
                    continue
                }
                if host.ack(deliveryID: id) != PX_OK.status { host.count("acks_late") }
            }
            return
        }
        if let text = message.attributeString("nackid"), let id = UInt64(text) {
            guard deliveries.settle(id) else { return host.count("acks_unknown") }
            let reason = message.attributeString("responsemessage") ?? "nacked by the EventMesh client"
            if host.nack(deliveryID: id, reason: reason) != PX_OK.status { host.count("acks_late") }
            return
        }
        if case .textData(let text)? = message.data, consumerGroup == nil || message.attributeString("subject") == nil {
            guard let group = message.attributeString("consumergroup"), !group.isEmpty else {
                throw EventMesh.error(.invalidArgument, .headerError, "a subscription names its consumergroup")
            }
            if let consumerGroup, consumerGroup != group {
                throw EventMesh.error(
                    .invalidArgument, .subscribeError, "one stream serves one consumergroup ('\(consumerGroup)')")
            }
            let items = try SubscriptionItem.parse(text)
            let known = Set(deliveries.topics)
            for item in items where !known.contains(item.topic) {
                try subscribe(item, group: group, deliveries, mesh)
            }
            let response = EventMesh.response(to: message, .success, "subscribe success")
            if consumerGroup == nil {
                consumerGroup = group
                deliveries.open(first: response)
            } else {
                deliveries.send(response)
            }
            return
        }
        guard consumerGroup != nil else {
            throw EventMesh.error(
                .failedPrecondition, .subscribeError, "the first message of subscribeStream must be the subscription")
        }
        // A reply (or any event) the consumer sends back: published to its subject.
        let (topic, event) = try mesh.event(message)
        do {
            _ = try await mesh.kernel.publish(topic: topic, [event])
        } catch {
            host.count("stream_publish_failed")
            host.log(.warning, "grpc-protocol: an event sent on subscribeStream to '\(topic)' failed: \(error)")
        }
    }

    private static func subscribe(
        _ item: SubscriptionItem, group: String, _ deliveries: DeliveryStream<EMCloudEvent>, _ mesh: EventMesh
    ) throws {
        var options = SubscriptionOptions()
        options.group = group
        options.broadcast = item.broadcast
        options.maxInFlight = mesh.kernel.settings.defaultCredits
        let topic = item.topic
        do {
            let subscription = try mesh.kernel.host.subscribe(topic: topic, options: options) { delivery in
                guard let event = delivery.pointee.record?.pointee.event else { return }
                var message = EventMesh.message(CloudEvent(copying: event), topic: topic)
                message.setString("deliveryid", String(delivery.pointee.delivery_id))
                message.setString("attempt", String(delivery.pointee.attempt))
                deliveries.deliver(delivery.pointee.delivery_id, message)
            }
            deliveries.add(subscription, topic: topic)
        } catch {
            throw EventMesh.error(error, .subscribeError)
        }
    }
}
