import GRPCCore
import PlexusGRPCServices
import PlexusPluginSDK
import Synchronization

/// `plexus.v1.Plexus`: publish (unary and streamed) acknowledged once durable, and the subscribe stream.
final class PlexusService: PXPlexus.ServiceProtocol {
    let kernel: Kernel
    private let nextGroup = Atomic<UInt64>(1)

    init(kernel: Kernel) { self.kernel = kernel }

    func publish(request: ServerRequest<PXPublishRequest>, context: ServerContext) async throws -> ServerResponse<
        PXPublishAck
    > {
        try kernel.authorize(request.metadata)
        let message = request.message
        let events = try Self.events(message)
        try kernel.checkSize(events)
        let first = try await kernel.publish(topic: message.topic, events)
        var ack = PXPublishAck()
        ack.sequence = message.sequence
        ack.count = UInt32(events.count)
        ack.firstOffset = first
        return ServerResponse(message: ack)
    }

    /// The Plexus events of a publish request.
    /// - Throws: `RPCError` `invalidArgument` naming the event and attribute at fault.
    static func events(_ request: PXPublishRequest) throws -> [CloudEvent] {
        guard !request.topic.isEmpty else { throw RPCError(code: .invalidArgument, message: "the topic is empty") }
        guard !request.events.isEmpty else {
            throw RPCError(code: .invalidArgument, message: "a publish needs at least one event")
        }
        return try request.events.enumerated().map { index, event in
            do {
                return try event.plexusEvent()
            } catch let error as CloudEventConversionError {
                throw RPCError(code: .invalidArgument, message: "event \(index): \(error.message)")
            }
        }
    }

    func publishStream(
        request: StreamingServerRequest<PXPublishRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<PXPublishAck> {
        try kernel.authorize(request.metadata)
        let kernel = self.kernel
        return StreamingServerResponse { writer in
            kernel.streams.add(1, ordering: .relaxed)
            defer { kernel.streams.subtract(1, ordering: .relaxed) }
            let window = PublishWindow<PXPublishAck>(limit: kernel.settings.maxPendingEvents)
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for try await message in request.messages {
                            let events: [CloudEvent]
                            do {
                                events = try Self.events(message)
                                try kernel.checkSize(events)
                            } catch let error as RPCError {
                                var ack = PXPublishAck()
                                ack.sequence = message.sequence
                                ack.code = Int32(error.code.rawValue)
                                ack.message = error.message
                                window.refuse(ack)
                                continue
                            }
                            await window.reserve(events.count)
                            let sequence = message.sequence
                            kernel.publish(topic: message.topic, events) { result in
                                var ack = PXPublishAck()
                                ack.sequence = sequence
                                ack.count = UInt32(events.count)
                                switch result {
                                case .success(let first): ack.firstOffset = first
                                case .failure(let error):
                                    ack.code = Int32(Kernel.code(error.status).rawValue)
                                    ack.message = error.message
                                }
                                window.answer(ack, count: events.count)
                            }
                        }
                        window.readerFinished()
                    }
                    group.addTask {
                        for await ack in window.acks { try await writer.write(ack) }
                    }
                    try await group.waitForAll()
                }
            } catch {
                window.cancel()
                throw error
            }
            return [:]
        }
    }

    func subscribe(
        request: StreamingServerRequest<PXSubscribeRequest>, context: ServerContext
    ) async throws -> StreamingServerResponse<PXSubscribeResponse> {
        try kernel.authorize(request.metadata)
        let kernel = self.kernel
        let groupNumber = nextGroup.add(1, ordering: .relaxed).oldValue
        return StreamingServerResponse { writer in
            kernel.streams.add(1, ordering: .relaxed)
            defer { kernel.streams.subtract(1, ordering: .relaxed) }
            let deliveries = DeliveryStream<PXSubscribeResponse>()
            var failure: (any Error)?
            do {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask {
                        try await Self.readRequests(request.messages, deliveries, kernel, groupNumber)
                    }
                    group.addTask {
                        for await message in deliveries.messages { try await writer.write(message) }
                    }
                    // The first to end (the client half-closed, failed or a write failed) ends the call.
                    _ = try await group.next()
                    group.cancelAll()
                }
            } catch {
                failure = error
            }
            for subscription in deliveries.finish() { await kernel.unsubscribe(subscription) }
            if let failure { throw failure }
            return [:]
        }
    }

    /// Reads the client's side of a subscribe call: the subscription, then acks and nacks.
    private static func readRequests(
        _ requests: RPCAsyncSequence<PXSubscribeRequest, any Error>, _ deliveries: DeliveryStream<PXSubscribeResponse>,
        _ kernel: Kernel, _ groupNumber: UInt64
    ) async throws {
        var subscribed = false
        for try await request in requests {
            switch request.kind {
            case .subscription(let spec):
                guard !subscribed else {
                    throw RPCError(code: .failedPrecondition, message: "a subscribe call carries one subscription")
                }
                try subscribe(spec, deliveries, kernel, groupNumber)
                subscribed = true
            case .ack(let ack):
                guard subscribed else { throw notSubscribed }
                for id in ack.deliveryIds {
                    guard deliveries.settle(id) else {
                        kernel.host.count("acks_unknown")
                        continue
                    }
                    if kernel.host.ack(deliveryID: id) != PX_OK.status { kernel.host.count("acks_late") }
                }
            case .nack(let nack):
                guard subscribed else { throw notSubscribed }
                guard deliveries.settle(nack.deliveryID) else {
                    kernel.host.count("acks_unknown")
                    continue
                }
                let reason = nack.reason.isEmpty ? "nacked by the gRPC client" : nack.reason
                if kernel.host.nack(deliveryID: nack.deliveryID, deadLetter: nack.deadLetter, reason: reason)
                    != PX_OK.status
                {
                    kernel.host.count("acks_late")
                }
            case nil:
                throw RPCError(code: .invalidArgument, message: "a subscribe request carries nothing")
            }
        }
        deliveries.endMessages()
    }

    private static let notSubscribed = RPCError(
        code: .failedPrecondition, message: "the first message of a subscribe call must be the subscription")

    private static func subscribe(
        _ spec: PXSubscription, _ deliveries: DeliveryStream<PXSubscribeResponse>, _ kernel: Kernel,
        _ groupNumber: UInt64
    ) throws {
        guard !spec.topic.isEmpty else { throw RPCError(code: .invalidArgument, message: "the topic is empty") }
        var options = SubscriptionOptions()
        options.group = spec.group.isEmpty ? "grpc-\(groupNumber)" : spec.group
        options.broadcast = spec.broadcast
        options.filters = spec.filters.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        options.maxInFlight = spec.credits == 0 ? kernel.settings.defaultCredits : spec.credits
        options.retry = spec.retry
        options.timeoutMs = spec.ackTimeoutMs
        options.deadLetterTopic = spec.deadLetterTopic
        switch spec.start {
        case .earliest: options.start = .earliest
        case .offset: options.start = .offset(spec.startOffset)
        default: options.start = .latest
        }
        let subscription: Subscription
        do {
            subscription = try kernel.host.subscribe(topic: spec.topic, options: options) { delivery in
                var message = PXSubscribeResponse()
                var out = PXDelivery()
                out.deliveryID = delivery.pointee.delivery_id
                out.attempt = delivery.pointee.attempt
                out.topic = delivery.pointee.topic.string
                if let record = delivery.pointee.record {
                    out.offset = record.pointee.offset
                    if let event = record.pointee.event { out.event = CECloudEvent(CloudEvent(copying: event)) }
                }
                message.delivery = out
                deliveries.deliver(out.deliveryID, message)
            }
        } catch let error as PluginError {
            throw Kernel.rpcError(error)
        }
        deliveries.add(subscription, topic: spec.topic)
        var subscribed = PXSubscribeResponse()
        var body = PXSubscribed()
        body.subscriptionID = subscription.id
        subscribed.subscribed = body
        deliveries.open(first: subscribed)
    }
}
