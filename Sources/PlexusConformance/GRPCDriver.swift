import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import PlexusCore
import PlexusGRPCServices
import Synchronization

/// The gRPC protocol through the generated client of the Plexus service: unary `Publish` (answered once
/// durable, refusals in the ack's `code`), a `Subscribe` stream per subscription with acks and nacks written
/// on it.
final class GRPCDriver: ProtocolDriver {
    let name = "grpc"
    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let connections: Task<Void, Never>
    private let plexus: PXPlexus.Client<HTTP2ClientTransport.Posix>
    private let sequence = Atomic<UInt64>(0)

    init(port: Int) throws {
        client = GRPCClient(
            transport: try .http2NIOPosix(
                target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext))
        let client = self.client
        connections = Task { try? await client.runConnections() }
        plexus = PXPlexus.Client(wrapping: client)
    }

    func publish(topic: String, _ events: [CloudEvent]) async throws -> Refusal? {
        var request = PXPublishRequest()
        request.topic = topic
        request.sequence = sequence.add(1, ordering: .relaxed).newValue
        request.events = events.map { CECloudEvent($0) }
        do {
            let ack = try await plexus.publish(request)
            return ack.code == 0 ? nil : Refusal(description: "code \(ack.code): \(ack.message)")
        } catch let error as RPCError {
            return Refusal(description: "RPC \(error.code): \(error.message)")
        }
    }

    func subscribe(topic: String, group: String, ordered: Bool) async throws -> any DriverSubscription {
        try await GRPCSubscription(plexus: plexus, topic: topic, group: group)
    }

    func publishInvalid(topic: String) async throws -> (what: String, refusal: Refusal?) {
        var event = CECloudEvent(CloudEvent(id: "x", source: "/conformance", type: "t"))
        event.id = ""
        var request = PXPublishRequest()
        request.topic = topic
        request.sequence = sequence.add(1, ordering: .relaxed).newValue
        request.events = [event]
        do {
            let ack = try await plexus.publish(request)
            return (
                "an event without an id", ack.code == 0 ? nil : Refusal(description: "code \(ack.code): \(ack.message)")
            )
        } catch let error as RPCError {
            return ("an event without an id", Refusal(description: "RPC \(error.code): \(error.message)"))
        }
    }

    func close() async {
        client.beginGracefulShutdown()
        await connections.value
    }
}

/// One `Subscribe` call: deliveries into an inbox, acks and nacks written on the request stream.
final class GRPCSubscription: DriverSubscription {
    let inbox = DeliveryInbox()
    private let requests: AsyncStream<PXSubscribeRequest>.Continuation
    private let call: Task<Void, Never>

    init(plexus: PXPlexus.Client<HTTP2ClientTransport.Posix>, topic: String, group: String) async throws {
        let (stream, continuation) = AsyncStream<PXSubscribeRequest>.makeStream()
        requests = continuation
        let (subscribed, subscribedContinuation) = AsyncStream<Bool>.makeStream()
        let inbox = self.inbox
        call = Task {
            do {
                try await plexus.subscribe(
                    requestProducer: { writer in
                        var subscription = PXSubscription()
                        subscription.topic = topic
                        subscription.group = group
                        subscription.start = .earliest
                        var first = PXSubscribeRequest()
                        first.subscription = subscription
                        try await writer.write(first)
                        for await request in stream { try await writer.write(request) }
                    },
                    onResponse: { response in
                        for try await message in response.messages {
                            switch message.kind {
                            case .subscribed: subscribedContinuation.yield(true)
                            case .delivery(let delivery):
                                let event = try delivery.event.plexusEvent()
                                inbox.put(
                                    DriverDelivery(event: event, attempt: delivery.attempt, id: delivery.deliveryID))
                            case nil: break
                            }
                        }
                    })
                inbox.end("the server ended the call")
            } catch {
                inbox.end("\(error)")
            }
            subscribedContinuation.finish()
        }
        var confirmed = false
        for await ok in subscribed {
            confirmed = ok
            break
        }
        if !confirmed {
            throw Violation(expected: "the Subscribe call to be confirmed", observed: "it ended first")
        }
    }

    func next(timeout: Duration) async throws -> DriverDelivery? { try await inbox.next(timeout: timeout) }

    func ack(_ delivery: DriverDelivery) async throws {
        var request = PXSubscribeRequest()
        request.ack = PXAck.with { $0.deliveryIds = [delivery.id] }
        requests.yield(request)
    }

    func nack(_ delivery: DriverDelivery) async throws {
        var request = PXSubscribeRequest()
        request.nack = PXNack.with {
            $0.deliveryID = delivery.id
            $0.reason = "conformance nack"
        }
        requests.yield(request)
    }

    func cancel() async {
        requests.finish()
        call.cancel()
        await call.value
    }
}
