import Foundation
import GRPCCore
import PlexusGRPCServices
import PlexusPluginSDK
import SwiftProtobuf
import Synchronization

/// EventMesh's status codes, carried in the `statuscode` attribute of responses (and in the trailing metadata
/// of a failed call).
enum EventMeshStatus: String {
    case success = "0"
    case overload = "1"
    case sendRequestReplyError = "3"
    case waitingReplyError = "4"
    case headerError = "6"
    case bodyError = "7"
    case rejected = "9"
    case batchPublishError = "10"
    case runtimeError = "16"
    case subscribeError = "17"
    case unsubscribeError = "18"
}

/// What the EventMesh services share: credentials, conversion, responses and errors.
struct EventMesh: Sendable {
    let kernel: Kernel

    /// Attributes that carry credentials in EventMesh's clients; never stored with an event.
    static let credentialAttributes: Set<String> = ["username", "passwd"]

    /// A failed call: the gRPC status, with EventMesh's status in the trailing metadata.
    static func error(_ code: RPCError.Code, _ status: EventMeshStatus, _ message: String) -> RPCError {
        var metadata = Metadata()
        metadata.addString(status.rawValue, forKey: "statuscode")
        metadata.addString(message, forKey: "responsemessage")
        return RPCError(code: code, message: message, metadata: metadata)
    }

    /// The same error with EventMesh's status added.
    static func error(_ error: any Error, _ status: EventMeshStatus) -> RPCError {
        if let rpc = error as? RPCError { return Self.error(rpc.code, status, rpc.message) }
        if let plugin = error as? PluginError { return Self.error(Kernel.code(plugin.status), status, plugin.message) }
        return Self.error(.internalError, .runtimeError, "\(error)")
    }

    /// A response event: the request's identity, `statuscode`, `responsemessage` and `time`.
    static func response(to request: EMCloudEvent, _ status: EventMeshStatus, _ message: String) -> EMCloudEvent {
        var response = EMCloudEvent()
        response.id = request.id.isEmpty ? UUID().uuidString : request.id
        response.source = request.source.isEmpty ? "plexus" : request.source
        response.specVersion = "1.0"
        response.type = request.type.isEmpty ? "org.apache.eventmesh.response" : request.type
        if let subject = request.attributeString("subject") { response.setString("subject", subject) }
        response.setString("statuscode", status.rawValue)
        response.setString("responsemessage", message)
        response.setString("time", rfc3339Now())
        return response
    }

    /// Checks the call's credentials: from the metadata; attribute credentials only when configured.
    /// - Throws: `RPCError` `permissionDenied` for attribute credentials, `unauthenticated` without a token.
    func authorize(_ metadata: Metadata, _ events: [EMCloudEvent]) throws {
        let attributeToken = events.lazy.compactMap { $0.attributeString("passwd") }.first { !$0.isEmpty }
        let attributeUser = events.lazy.compactMap { $0.attributeString("username") }.first { !$0.isEmpty }
        if attributeToken != nil || attributeUser != nil, !kernel.settings.allowAttributeCredentials {
            throw Self.error(
                .permissionDenied, .headerError,
                "credentials in event attributes (username, passwd) are refused: send them in the call's metadata")
        }
        do {
            try kernel.authorize(metadata, attributeToken: attributeToken)
        } catch {
            throw Self.error(error, .headerError)
        }
    }

    /// The topic (`subject`) and Plexus event of an EventMesh event.
    /// - Throws: `RPCError` `invalidArgument`: header error for a missing topic or attribute, body error else.
    func event(_ message: EMCloudEvent) throws -> (topic: String, event: CloudEvent) {
        guard let topic = message.attributeString("subject"), !topic.isEmpty else {
            throw Self.error(.invalidArgument, .headerError, "the topic (attribute 'subject') is missing")
        }
        let event: CloudEvent
        do {
            event = try message.cloudEventsFormat.plexusEvent(dropping: Self.credentialAttributes)
        } catch let error as CloudEventConversionError {
            let header = ["id", "source", "specversion", "type"].contains(error.attribute ?? "")
            throw Self.error(.invalidArgument, header ? .headerError : .bodyError, error.message)
        }
        do {
            try kernel.checkSize([event])
        } catch {
            throw Self.error(error, .bodyError)
        }
        return (topic, event)
    }

    /// An EventMesh event for a Plexus event delivered from `topic`: every attribute as `ce_string`, the topic
    /// in `subject`.
    static func message(_ event: CloudEvent, topic: String) -> EMCloudEvent {
        var message = (try? EMCloudEvent(CECloudEvent(event, timeAsString: true))) ?? EMCloudEvent()
        message.setString("subject", topic)
        return message
    }
}

/// `org.apache.eventmesh.cloudevents.v1.PublisherService`.
final class EventMeshPublisher: EMPublisherService.ServiceProtocol {
    let mesh: EventMesh
    private let nextGroup = Atomic<UInt64>(1)

    init(kernel: Kernel) { mesh = EventMesh(kernel: kernel) }

    func publish(request: ServerRequest<EMCloudEvent>, context: ServerContext) async throws -> ServerResponse<
        EMCloudEvent
    > {
        try mesh.authorize(request.metadata, [request.message])
        let (topic, event) = try mesh.event(request.message)
        do {
            let offset = try await mesh.kernel.publish(topic: topic, [event])
            var response = EventMesh.response(to: request.message, .success, "success")
            response.setString("offset", String(offset))
            return ServerResponse(message: response)
        } catch {
            throw EventMesh.error(error, .rejected)
        }
    }

    func publishOneWay(request: ServerRequest<EMCloudEvent>, context: ServerContext) async throws -> ServerResponse<
        Google_Protobuf_Empty
    > {
        try mesh.authorize(request.metadata, [request.message])
        let (topic, event) = try mesh.event(request.message)
        let host = mesh.kernel.host
        mesh.kernel.publish(topic: topic, [event]) { result in
            if case .failure(let error) = result {
                host.count("publish_one_way_failed")
                host.log(.warning, "grpc-protocol: a one-way publish to '\(topic)' failed: \(error.message)")
            }
        }
        return ServerResponse(message: Google_Protobuf_Empty())
    }

    /// The batch's events by topic, in order of first appearance.
    private func grouped(_ batch: EMCloudEventBatch) throws -> [(topic: String, events: [CloudEvent])] {
        guard !batch.events.isEmpty else {
            throw EventMesh.error(.invalidArgument, .bodyError, "the batch has no events")
        }
        var order: [String] = []
        var byTopic: [String: [CloudEvent]] = [:]
        for message in batch.events {
            let (topic, event) = try mesh.event(message)
            if byTopic[topic] == nil { order.append(topic) }
            byTopic[topic, default: []].append(event)
        }
        return order.map { ($0, byTopic[$0] ?? []) }
    }

    func batchPublish(request: ServerRequest<EMCloudEventBatch>, context: ServerContext) async throws
        -> ServerResponse<EMCloudEvent>
    {
        try mesh.authorize(request.metadata, request.message.events)
        let groups = try grouped(request.message)
        let kernel = mesh.kernel
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (topic, events) in groups {
                    group.addTask { _ = try await kernel.publish(topic: topic, events) }
                }
                try await group.waitForAll()
            }
        } catch {
            throw EventMesh.error(error, .batchPublishError)
        }
        var response = EventMesh.response(to: request.message.events[0], .success, "success")
        response.setString("count", String(request.message.events.count))
        return ServerResponse(message: response)
    }

    func batchPublishOneWay(request: ServerRequest<EMCloudEventBatch>, context: ServerContext) async throws
        -> ServerResponse<Google_Protobuf_Empty>
    {
        try mesh.authorize(request.metadata, request.message.events)
        let host = mesh.kernel.host
        for (topic, events) in try grouped(request.message) {
            mesh.kernel.publish(topic: topic, events) { result in
                if case .failure = result { host.count("publish_one_way_failed") }
            }
        }
        return ServerResponse(message: Google_Protobuf_Empty())
    }

    /// Publishes the request with `replyto` and `correlationid` attributes and answers with the first event
    /// published to the reply topic carrying the same `correlationid`, or fails after the timeout (the
    /// request's `ttl` attribute in milliseconds, else the `requestReplyTimeoutMs` key).
    func requestReply(request: ServerRequest<EMCloudEvent>, context: ServerContext) async throws -> ServerResponse<
        EMCloudEvent
    > {
        try mesh.authorize(request.metadata, [request.message])
        var (topic, event) = try mesh.event(request.message)
        let correlation = event.attribute("correlationid").flatMap { $0.isEmpty ? nil : $0 } ?? event.id
        let replyTopic = event.attribute("replyto").flatMap { $0.isEmpty ? nil : $0 } ?? "\(topic)-reply"
        event.extensions.removeAll { $0.key == "correlationid" || $0.key == "replyto" }
        event.extensions.append(("correlationid", correlation))
        event.extensions.append(("replyto", replyTopic))
        let ttl = request.message.attributeString("ttl").flatMap { Int($0) } ?? 0
        let timeoutMs = ttl > 0 ? ttl : mesh.kernel.settings.requestReplyTimeoutMs
        let kernel = mesh.kernel

        let (replies, continuation) = AsyncStream<CloudEvent>.makeStream()
        var options = SubscriptionOptions()
        options.group = "grpc-reply-\(nextGroup.add(1, ordering: .relaxed).oldValue)-\(correlation)"
        options.filters = [("correlationid", correlation)]
        options.maxInFlight = 1
        let subscription: Subscription
        do {
            subscription = try kernel.host.subscribe(topic: replyTopic, options: options) { delivery in
                if let event = delivery.pointee.record?.pointee.event {
                    continuation.yield(CloudEvent(copying: event))
                }
                kernel.host.ack(deliveryID: delivery.pointee.delivery_id)
            }
        } catch {
            throw EventMesh.error(error, .sendRequestReplyError)
        }
        do {
            _ = try await kernel.publish(topic: topic, [event])
        } catch {
            continuation.finish()
            await kernel.unsubscribe(subscription)
            throw EventMesh.error(error, .sendRequestReplyError)
        }
        let reply = await withTaskGroup(of: CloudEvent?.self) { group in
            group.addTask {
                for await reply in replies { return reply }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .milliseconds(timeoutMs))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        continuation.finish()
        await kernel.unsubscribe(subscription)
        guard let reply else {
            throw EventMesh.error(
                .deadlineExceeded, .waitingReplyError,
                "no reply with correlationid '\(correlation)' on '\(replyTopic)' within \(timeoutMs) ms")
        }
        var response = EventMesh.message(reply, topic: replyTopic)
        response.setString("statuscode", EventMeshStatus.success.rawValue)
        response.setString("responsemessage", "success")
        response.setString("time", rfc3339Now())
        return ServerResponse(message: response)
    }
}

/// `org.apache.eventmesh.cloudevents.v1.HeartbeatService`.
struct EventMeshHeartbeat: EMHeartbeatService.ServiceProtocol {
    let mesh: EventMesh

    init(kernel: Kernel) { mesh = EventMesh(kernel: kernel) }

    func heartbeat(request: ServerRequest<EMCloudEvent>, context: ServerContext) async throws -> ServerResponse<
        EMCloudEvent
    > {
        try mesh.authorize(request.metadata, [request.message])
        let message = request.message
        let group = message.attributeString("consumergroup") ?? message.attributeString("producergroup") ?? ""
        guard !group.isEmpty else {
            throw EventMesh.error(
                .invalidArgument, .headerError, "a heartbeat names its client's group (consumergroup or producergroup)")
        }
        return ServerResponse(message: EventMesh.response(to: message, .success, "success"))
    }
}
