import Dispatch
import NIOCore
import PlexusNIOServer
import PlexusPluginSDK
import PlexusWire
import Synchronization

/// Serves one client connection on its event loop: the handshake, publishes, subscriptions, acks,
/// heartbeats and the idle timeout. What kernel threads touch lives in `Session`.
final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = InboundFrame

    private enum Phase { case awaitingHello, open, closing }

    private let server: TCPServer
    private let session: Session
    private var phase = Phase.awaitingHello
    private var heartbeatNs: Int64
    private let connectedAt = Session.now()
    private var lastFrameAt = Session.now()
    private var ticker: RepeatedTask?
    /// Kernel subscriptions made on this connection, by id.
    private var subscriptions: [UInt64: Subscription] = [:]
    private var nextGate: UInt64 = 1

    /// Frame types that only a server sends: fatal from a client (docs/protocols/tcp.md).
    static let serverOnly: Set<Frame.Kind> = [.welcome, .publishAck, .subscribed, .unsubscribed, .deliver]

    /// The connection is one over `maxConnections`: it is told so and closed as soon as it is active.
    private let overLimit: Bool

    init(server: TCPServer, session: Session, overLimit: Bool = false) {
        self.server = server
        self.session = session
        self.overLimit = overLimit
        self.heartbeatNs = Int64(server.settings.heartbeatMs) * 1_000_000
    }

    var settings: TCPProtocol.Settings { server.settings }

    func channelActive(context: ChannelHandlerContext) {
        if overLimit {
            server.host.count("connections_refused")
            fail(
                .resourceExhausted,
                "the server serves \(server.maxConnections) connections at most (maxConnections); retry later")
            return context.fireChannelActive()
        }
        let tick = TimeAmount.milliseconds(Int64(max(50, min(1000, settings.heartbeatMs / 4))))
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in
            loopBound.value.tick()
        }
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
        endSession(reason: "connection closed")
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastFrameAt = Session.now()
        switch unwrapInboundIn(data) {
        case .invalid(let error):
            server.host.count("frames_invalid")
            // A frame only servers send is a protocol violation whatever its body (fatal), and so is any
            // frame before a good HELLO: the spec's fatal cases do not depend on whether the body parses.
            if let kind = Frame.Kind(rawValue: error.frameType), Self.serverOnly.contains(kind) {
                return fail(
                    .protocolViolation, "\(kind) is sent by servers only", frameType: error.frameType, id: error.frameID
                )
            }
            if phase == .awaitingHello {
                return fail(
                    error.frameType == Frame.Kind.hello.rawValue ? error.status : .protocolViolation,
                    error.frameType == Frame.Kind.hello.rawValue
                        ? error.message : "the first frame must be HELLO: \(error.message)",
                    frameType: error.frameType, id: error.frameID)
            }
            session.send(
                Frame(
                    id: error.frameID,
                    .error(ErrorBody(status: error.status, frameType: error.frameType, message: error.message))))
        case .frame(let frame):
            handle(frame)
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else {
            return context.fireUserInboundEventTriggered(event)
        }
        // The client will send nothing more (a half-close, or a close seen first as one): as after GOODBYE,
        // its subscriptions end, the acknowledgements owed for its publishes are sent, then the server closes.
        guard phase != .closing else { return }
        phase = .closing
        endSession(reason: "client closed its side")
        closeWhenAcknowledged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let wire = error as? WireError {
            server.host.count("frames_invalid")
            fail(wire.status, wire.message, frameType: wire.frameType, id: wire.frameID)
        } else if phase == .closing || error is ByteToMessageDecoderError {
            // More bytes after a fatal error (the decoder gave up on the stream), or anything while the
            // connection is ending: closing now would reset it over the frames still to be read, so the
            // ending (`Linger`) closes it. A reset from the client closes the channel by itself.
            return
        } else {
            // A reset or a write to a closed socket: nothing to tell the client.
            session.channel.close(promise: nil)
        }
    }

    /// Sends a fatal `ERROR` and closes the connection after it is written.
    private func fail(_ status: WireStatus, _ message: String, frameType: UInt8 = 0, id: UInt64 = 0) {
        guard phase != .closing else { return }
        phase = .closing
        session.send(
            Frame(id: id, .error(ErrorBody(status: status, frameType: frameType, fatal: true, message: message))))
        session.close()
        session.flushThenClose()
    }

    private func handle(_ frame: Frame) {
        if case .awaitingHello = phase {
            guard case .hello(let hello) = frame.body else {
                return fail(
                    .protocolViolation, "the first frame must be HELLO, got \(frame.kind)",
                    frameType: frame.kind.rawValue, id: frame.id)
            }
            return handshake(hello, id: frame.id)
        }
        guard phase == .open else { return }
        switch frame.body {
        case .publish(let publish): self.publish(publish, id: frame.id)
        case .subscribe(let subscribe): self.subscribe(subscribe, id: frame.id)
        case .unsubscribe(let subscription): unsubscribe(subscription, id: frame.id)
        case .ack(let deliveries): ack(deliveries)
        case .nack(let nack): self.nack(nack)
        case .heartbeat(let reply):
            if !reply { session.send(Frame(id: frame.id, .heartbeat(reply: true))) }
        case .goodbye:
            phase = .closing
            endSession(reason: "goodbye")
            closeWhenAcknowledged()
        case .error(let error):
            server.host.log(.warning, "session \(session.id): client reported \(error.status): \(error.message)")
        case .hello:
            fail(.protocolViolation, "a second HELLO", frameType: frame.kind.rawValue, id: frame.id)
        case .welcome, .publishAck, .subscribed, .unsubscribed, .deliver:
            fail(
                .protocolViolation, "\(frame.kind) is sent by servers only", frameType: frame.kind.rawValue,
                id: frame.id)
        }
    }

    private func handshake(_ hello: Hello, id: UInt64) {
        guard hello.version == Frame.version else {
            return fail(
                .unsupportedVersion,
                "protocol version \(hello.version) is not supported; this server speaks \(Frame.version)",
                frameType: Frame.Kind.hello.rawValue, id: id)
        }
        guard server.accepts(token: hello.token) else {
            return fail(.unauthenticated, "the token is not accepted", frameType: Frame.Kind.hello.rawValue, id: id)
        }
        guard hello.maxFrameSize >= UInt32(Frame.minimumMaxFrameSize) else {
            return fail(
                .invalidArgument, "max frame size \(hello.maxFrameSize) is below \(Frame.minimumMaxFrameSize)",
                frameType: Frame.Kind.hello.rawValue, id: id)
        }
        session.clientMaxFrame.store(Int(hello.maxFrameSize), ordering: .relaxed)
        let agreed =
            hello.heartbeatMs == 0 ? settings.heartbeatMs : min(max(hello.heartbeatMs, 100), settings.heartbeatMs)
        heartbeatNs = Int64(agreed) * 1_000_000
        phase = .open
        session.send(
            Frame(
                id: id,
                .welcome(
                    Welcome(
                        version: Frame.version, node: settings.node, session: session.id, heartbeatMs: agreed,
                        maxFrameSize: UInt32(settings.maxFrameSize)))))
        server.host.log(.debug, "session \(session.id): hello from \(TopicName.quoted(hello.client))")
    }

    // MARK: Publish

    private func publish(_ publish: Publish, id: UInt64) {
        let count = publish.events.count
        guard !publish.topic.isEmpty, count > 0 else {
            return refusePublish(
                publish, id: id, .invalidArgument,
                publish.topic.isEmpty ? "the topic is empty" : "a publish needs at least one event")
        }
        let pending = session.pendingEvents.add(count, ordering: .relaxed).newValue
        if pending >= settings.maxPendingEvents, !session.readPaused.exchange(true, ordering: .relaxed) {
            // Backpressure: stop reading until acknowledgements drain (see `publishDone`).
            session.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
        }
        let session = self.session
        let noAck = publish.noAck
        let resumeBelow = settings.maxPendingEvents / 2
        do {
            try publish.events.withCEvents { events, n in
                try server.host.publish(topic: publish.topic, events: events, count: n) { result in
                    Self.publishDone(session, id: id, count: count, noAck: noAck, resumeBelow: resumeBelow, result)
                }
            }
        } catch {
            let failure = error as? PluginError ?? PluginError(PX_ERR_INTERNAL, "\(error)")
            Self.publishDone(session, id: id, count: count, noAck: noAck, resumeBelow: resumeBelow, .failure(failure))
        }
    }

    private func refusePublish(_ publish: Publish, id: UInt64, _ status: WireStatus, _ message: String) {
        Self.publishFailed(session, id: id, count: publish.events.count, noAck: publish.noAck, status, message)
    }

    /// Answers a failed publish: a `PUBLISH_ACK` with the status, or for fire-and-forget an `ERROR`.
    private static func publishFailed(
        _ session: Session, id: UInt64, count: Int, noAck: Bool, _ status: WireStatus, _ message: String
    ) {
        if noAck {
            session.refuse(id, .publish, status, message)
        } else {
            session.send(
                Frame(
                    id: id,
                    .publishAck(PublishAck(status: status, count: UInt32(count), firstOffset: 0, message: message))))
        }
    }

    /// Answers a publish once the kernel reports it durable (or failed); any thread.
    private static func publishDone(
        _ session: Session, id: UInt64, count: Int, noAck: Bool, resumeBelow: Int, _ result: Result<UInt64, PluginError>
    ) {
        switch result {
        case .success(let first):
            if !noAck {
                session.send(
                    Frame(id: id, .publishAck(PublishAck(status: .ok, count: UInt32(count), firstOffset: first))))
            }
        case .failure(let error):
            publishFailed(session, id: id, count: count, noAck: noAck, WireStatus(error), error.message)
        }
        let pending = session.pendingEvents.subtract(count, ordering: .relaxed).newValue
        if pending <= resumeBelow, session.readPaused.exchange(false, ordering: .relaxed) {
            let channel = session.channel
            channel.eventLoop.execute {
                channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
                channel.read()
            }
        }
    }

    // MARK: Subscriptions

    private func subscribe(_ request: Subscribe, id: UInt64) {
        guard !request.topic.isEmpty else {
            return session.refuse(id, .subscribe, .invalidArgument, "the topic is empty")
        }
        var options = SubscriptionOptions()
        // An empty group is a group of its own: every such subscription gets every event.
        options.group = request.group.isEmpty ? "tcp-\(session.id)-\(nextGate)" : request.group
        options.broadcast = request.mode == .broadcast
        options.filters = request.filters.map { ($0.name, $0.value) }
        options.retry = request.retry
        options.linearBackoff = request.backoff == .linear
        options.backoffDelayMs = request.backoffDelayMs
        options.backoffMaxMs = request.backoffMaxMs
        options.timeoutMs = request.timeoutMs
        options.deadLetterTopic = request.deadLetterTopic
        options.ordered = request.ordered
        options.maxInFlight = request.credits == 0 ? settings.defaultCredits : request.credits
        switch request.start {
        case .latest: options.start = .latest
        case .earliest: options.start = .earliest
        case .offset: options.start = .offset(request.startOffset)
        }
        let gate = nextGate
        nextGate += 1
        session.openGate(gate)
        let session = self.session
        let host = server.host
        do {
            let subscription = try host.subscribe(topic: request.topic, options: options) { delivery in
                switch session.deliver(delivery, gate: gate) {
                case .queued, .closed:
                    break
                case .unsendable(let reason):
                    host.count("deliveries_unsendable")
                    host.nack(
                        deliveryID: delivery.pointee.delivery_id, deadLetter: true,
                        reason: "tcp-protocol cannot send it: \(reason)")
                }
            }
            subscriptions[subscription.id] = subscription
            session.passGate(gate, with: Frame(id: id, .subscribed(subscription: subscription.id)))
        } catch {
            session.dropGate(gate)
            let failure = error as? PluginError ?? PluginError(PX_ERR_INTERNAL, "\(error)")
            session.refuse(id, .subscribe, WireStatus(failure), failure.message)
        }
    }

    private func unsubscribe(_ id: UInt64, id frameID: UInt64) {
        guard let subscription = subscriptions.removeValue(forKey: id) else {
            return session.refuse(frameID, .unsubscribe, .notFound, "no subscription \(id) on this connection")
        }
        let session = self.session
        let host = server.host
        // The kernel's unsubscribe waits for running deliveries: never on the event loop.
        server.offLoop {
            host.unsubscribe(subscription)
            session.send(Frame(id: frameID, .unsubscribed(subscription: id)))
        }
    }

    private func ack(_ deliveries: [UInt64]) {
        let unknown = Set(session.settle(deliveries))
        for id in unknown {
            session.refuse(id, .ack, .notFound, "delivery \(id) is not in flight on this connection")
        }
        // Only this connection's own deliveries reach the kernel.
        for delivery in deliveries where !unknown.contains(delivery) {
            if server.host.ack(deliveryID: delivery) != PX_OK.status { server.host.count("acks_late") }
        }
    }

    private func nack(_ nack: Nack) {
        guard session.settle([nack.delivery]).isEmpty else {
            return session.refuse(
                nack.delivery, .nack, .notFound, "delivery \(nack.delivery) is not in flight on this connection")
        }
        if server.host.nack(deliveryID: nack.delivery, deadLetter: nack.deadLetter, reason: nack.reason) != PX_OK.status
        {
            server.host.count("acks_late")
        }
    }

    // MARK: Endings

    /// Ends every subscription of the connection (their unacknowledged deliveries go to other members)
    /// and forgets the session.
    private func endSession(reason: String) {
        let ended = Array(subscriptions.values)
        subscriptions.removeAll()
        server.forget(session)
        guard !ended.isEmpty else { return }
        let host = server.host
        server.offLoop {
            for subscription in ended { host.unsubscribe(subscription) }
        }
    }

    /// After `GOODBYE`: closes once every publish received has been answered.
    private func closeWhenAcknowledged() {
        if session.pendingEvents.load(ordering: .relaxed) == 0 {
            session.close()
            session.flushThenClose()
        }
    }

    /// Runs a few times per heartbeat interval: heartbeats, the idle and handshake timeouts, a pending
    /// goodbye.
    private func tick() {
        let now = Session.now()
        switch phase {
        case .awaitingHello:
            if now - connectedAt > Int64(settings.handshakeTimeoutMs) * 1_000_000 {
                server.host.count("connections_timed_out")
                fail(.idleTimeout, "no HELLO within \(settings.handshakeTimeoutMs) ms")
            }
        case .open:
            if now - lastFrameAt > 3 * heartbeatNs {
                server.host.count("connections_timed_out")
                fail(.idleTimeout, "no complete frame for \(3 * heartbeatNs / 1_000_000) ms")
            } else if now - session.lastSent.load(ordering: .relaxed) >= heartbeatNs {
                session.send(Frame(.heartbeat(reply: false)))
            }
        case .closing:
            closeWhenAcknowledged()
        }
    }
}
