import Dispatch
import NIOCore
import NIOPosix
import PlexusCore
import PlexusWire
import Synchronization

/// Called with a publish's first offset once the server reports it durable, or with why it failed.
public typealias PublishCompletion = @Sendable (Result<UInt64, PlexusClientError>) -> Void

/// The client's engine: one connection at a time, reconnecting after a loss.
///
/// Two kinds of state. What callers on any thread touch (publishes and acknowledgements waiting to be
/// sent) is `staging`, behind a lock: callers encode into it and the event loop sends everything staged
/// in one write per turn, which is where batching and pipelining come from. Everything else belongs to
/// the event loop.
final class ClientCore: @unchecked Sendable {
    // Safe: every `var` is read and written only on `eventLoop` (see `assertOnLoop`), and `staging` is a
    // Mutex; the `let`s are immutable or Sendable.
    let config: ClientConfiguration
    let eventLoop: any EventLoop
    private let staging = Mutex(Staging())

    private struct Batch {
        var topic: String
        var noAck: Bool
        var events: ByteBuffer
        var count = 0
        /// Each caller's completion with the index of its first event in the batch.
        var completions: [(index: Int, done: PublishCompletion)] = []
    }

    private struct Staging {
        /// The open batch per topic (acknowledged publishes) and per topic without ack.
        var open: [String: Batch] = [:]
        var openNoAck: [String: Batch] = [:]
        var sealed: [Batch] = []
        var acks: [UInt64] = []
        var frames: [Frame] = []
        var flushScheduled = false
        /// The connected session's number; 0 while not connected.
        var session: UInt64 = 0
    }

    private struct SubscriptionState {
        var topic: String
        var options: SubscribeOptions
        var handler: @Sendable (ReceivedEvent) -> Void
        var onEnd: @Sendable () -> Void
        var serverID: UInt64?
    }

    private var channel: (any Channel)?
    private var session: UInt64 = 0
    private var sessionCounter: UInt64 = 0
    private var nextID: UInt64 = 1
    private var publishes: [UInt64: [(index: Int, done: PublishCompletion)]] = [:]
    private var requests: [UInt64: (Result<Frame, PlexusClientError>) -> Void] = [:]
    private var subscriptions: [UInt64: SubscriptionState] = [:]
    private var byServerID: [UInt64: UInt64] = [:]
    private var nextKey: UInt64 = 1
    private var heartbeatNs: Int64 = 10_000_000_000
    private var lastReceived: Int64 = 0
    private var lastSent: Int64 = 0
    private var tickerTask: RepeatedTask?
    private var closed = false
    /// The server said GOODBYE on the current connection: the next attempt is made without waiting, unless
    /// the connection lasted less than a second (a server saying goodbye at once would make a busy loop).
    private var serverSaidGoodbye = false
    private var establishedAt: Int64 = 0
    private(set) var welcome: Welcome?
    /// Failures the server reported for fire-and-forget publishes and other frames with nobody waiting.
    let asyncErrors = Atomic<Int>(0)
    private let lastAsyncError = Mutex<String?>(nil)

    init(config: ClientConfiguration) {
        self.config = config
        eventLoop = (config.eventLoopGroup ?? MultiThreadedEventLoopGroup.singleton).next()
    }

    private static func now() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds) }

    private func nanos(_ d: Duration) -> Int64 {
        d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
    }

    var lastError: String? { lastAsyncError.withLock { $0 } }

    // MARK: Connecting

    /// Connects and completes the handshake.
    func connect() -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { self.openConnection() }
    }

    private func openConnection() -> EventLoopFuture<Void> {
        let maxFrame = config.maxFrameSize
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.nanoseconds(nanos(config.connectTimeout)))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxFrameSize: maxFrame)))
                    try channel.pipeline.syncOperations.addHandler(ClientHandler(core: self))
                }
            }
        return bootstrap.connect(host: config.host, port: config.port).flatMap { channel in
            self.channel = channel
            let promise = self.eventLoop.makePromise(of: Void.self)
            let hello = Hello(
                client: self.config.name, token: self.config.token,
                heartbeatMs: UInt32(clamping: self.nanos(self.config.heartbeat) / 1_000_000),
                maxFrameSize: UInt32(clamping: maxFrame))
            self.request(.hello(hello), timeout: self.config.connectTimeout) { result in
                switch result {
                case .success(let frame):
                    guard case .welcome(let welcome) = frame.body else {
                        channel.close(promise: nil)
                        return promise.fail(PlexusClientError(.refused, "the server answered HELLO with \(frame.kind)"))
                    }
                    self.established(welcome)
                    promise.succeed(())
                case .failure(let error):
                    channel.close(promise: nil)
                    promise.fail(error)
                }
            }
            return promise.futureResult
        }.flatMapErrorThrowing { error in
            if let error = error as? PlexusClientError { throw error }
            throw PlexusClientError(
                .notConnected, "cannot connect to \(self.config.host):\(self.config.port): \(error)")
        }
    }

    private func established(_ welcome: Welcome) {
        self.welcome = welcome
        sessionCounter += 1
        session = sessionCounter
        establishedAt = Self.now()
        let session = self.session
        staging.withLock { $0.session = session }
        heartbeatNs = Int64(welcome.heartbeatMs) * 1_000_000
        lastReceived = Self.now()
        let tick = TimeAmount.nanoseconds(max(50_000_000, min(1_000_000_000, heartbeatNs / 4)))
        tickerTask?.cancel()
        tickerTask = eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { [self] _ in self.tick() }
        for (key, sub) in subscriptions { sendSubscribe(key: key, state: sub, completion: nil) }
    }

    private func tick() {
        guard let channel, session != 0 else { return }
        let now = Self.now()
        if now - lastReceived > 3 * heartbeatNs {
            channel.close(promise: nil)  // the server went quiet: treat the connection as lost
        } else if now - lastSent >= heartbeatNs {
            write([Frame(.heartbeat(reply: false))])
        }
    }

    /// The connection ended (on the loop): fail what was in flight, then reconnect unless closed.
    func connectionLost() {
        guard channel != nil else { return }
        let wasEstablished = session != 0
        let goodbye = serverSaidGoodbye && Self.now() - establishedAt >= 1_000_000_000
        serverSaidGoodbye = false
        channel = nil
        session = 0
        welcome = nil
        tickerTask?.cancel()
        tickerTask = nil
        let staged = staging.withLock { s -> [Batch] in
            s.session = 0
            defer {
                s.open = [:]
                s.openNoAck = [:]
                s.sealed = []
                s.acks = []
                s.frames = []
            }
            return s.sealed + Array(s.open.values) + Array(s.openNoAck.values)
        }
        let lost = PlexusClientError(.connectionLost, "the connection was lost before the server answered")
        for batch in staged { for entry in batch.completions { entry.done(.failure(lost)) } }
        let inFlight = publishes
        publishes = [:]
        for (_, entries) in inFlight { for entry in entries { entry.done(.failure(lost)) } }
        let waiting = requests
        requests = [:]
        for (_, answer) in waiting { answer(.failure(lost)) }
        byServerID = [:]
        for key in subscriptions.keys { subscriptions[key]?.serverID = nil }
        // A connection lost during its handshake: the attempt that made it reports the failure.
        guard wasEstablished else { return }
        if closed || !config.reconnect {
            finishSubscriptions()
        } else {
            scheduleReconnect(after: goodbye ? .zero : config.reconnectDelay)
        }
    }

    private func scheduleReconnect(after delay: Duration) {
        guard !closed else { return }
        eventLoop.scheduleTask(in: .nanoseconds(nanos(delay))) { [self] in
            guard !closed, channel == nil else { return }
            openConnection().whenFailure { [self] _ in
                scheduleReconnect(after: min(max(delay * 2, config.reconnectDelay), config.reconnectMaxDelay))
            }
        }
    }

    // MARK: Frames in

    func received(_ inbound: InboundFrame) {
        lastReceived = Self.now()
        guard case .frame(let frame) = inbound else {
            if case .invalid(let error) = inbound { noteAsyncError("an unreadable frame from the server: \(error)") }
            return
        }
        switch frame.body {
        case .publishAck(let ack):
            guard let entries = publishes.removeValue(forKey: frame.id) else { return }
            if ack.status == .ok {
                for entry in entries { entry.done(.success(ack.firstOffset + UInt64(entry.index))) }
            } else {
                let error = PlexusClientError(.refused, ack.message, status: ack.status.rawValue)
                for entry in entries { entry.done(.failure(error)) }
            }
        case .deliver(let deliver):
            guard let key = byServerID[deliver.subscription], let sub = subscriptions[key] else { return }
            sub.handler(
                ReceivedEvent(
                    topic: sub.topic, offset: deliver.offset, attempt: deliver.attempt,
                    appendTimeNs: deliver.appendTimeNs, deliveryID: deliver.delivery, wire: deliver.event, core: self,
                    session: session))
        case .heartbeat(let reply):
            if !reply { write([Frame(id: frame.id, .heartbeat(reply: true))]) }
        case .welcome, .subscribed, .unsubscribed:
            requests.removeValue(forKey: frame.id)?(.success(frame))
        case .error(let error):
            if let answer = requests.removeValue(forKey: frame.id) {
                answer(.failure(PlexusClientError(.refused, error.message, status: error.status.rawValue)))
            } else if frame.id != 0, let entries = publishes.removeValue(forKey: frame.id) {
                let failure = PlexusClientError(.refused, error.message, status: error.status.rawValue)
                for entry in entries { entry.done(.failure(failure)) }
            } else {
                noteAsyncError("\(error.status): \(error.message)")
            }
        case .goodbye:
            serverSaidGoodbye = true
            channel?.close(promise: nil)
        case .hello, .publish, .subscribe, .unsubscribe, .ack, .nack:
            noteAsyncError("the server sent a client-only frame \(frame.kind)")
            channel?.close(promise: nil)
        }
    }

    private func noteAsyncError(_ message: String) {
        asyncErrors.add(1, ordering: .relaxed)
        lastAsyncError.withLock { $0 = message }
    }

    // MARK: Frames out

    /// Writes frames now; on the loop.
    private func write(_ frames: [Frame]) {
        guard let channel else { return }
        var out = channel.allocator.buffer(capacity: 256)
        for frame in frames { try? FrameCodec.encode(frame, into: &out) }
        lastSent = Self.now()
        channel.writeAndFlush(out, promise: nil)
    }

    /// Sends a request and calls `answer` with the reply or a failure; on the loop.
    private func request(
        _ body: Frame.Body, timeout: Duration, _ answer: @escaping (Result<Frame, PlexusClientError>) -> Void
    ) {
        let id = nextID
        nextID += 1
        requests[id] = answer
        write([Frame(id: id, body)])
        eventLoop.scheduleTask(in: .nanoseconds(nanos(timeout))) { [self] in
            requests.removeValue(forKey: id)?(.failure(PlexusClientError(.timeout, "no answer within \(timeout)")))
        }
    }

    /// Stages events for `topic`; they go out with the loop's next turn, in one frame with other events
    /// staged meanwhile. Any thread.
    /// - Returns: why the events were refused at once (invalid, not connected), in which case `completion` is
    ///   never called; `nil` when they were staged. `completion` gets the server's answer; for
    ///   `noAck` it runs (with offset 0) once the frame was written to the socket, or with the write's failure.
    func publish(topic: String, events: [CloudEvent], noAck: Bool, completion: PublishCompletion?)
        -> PlexusClientError?
    {
        var problem: String?
        if topic.isEmpty {
            problem = "the topic is empty"
        } else if events.isEmpty {
            problem = "no events to publish"
        } else if topic.utf8.count > Int(UInt16.max) {
            problem = "the topic is longer than 65535 bytes"
        } else {
            problem = events.lazy.compactMap(\.invalidReason).first
        }
        if let problem { return PlexusClientError(.invalidArgument, problem) }
        let limitEvents = config.maxBatchEvents
        let limitBytes = config.maxBatchBytes
        // Encoded straight into the topic's open batch: one copy from the caller's values to the wire bytes.
        let outcome = staging.withLock { s -> (scheduled: Bool, failure: PlexusClientError?) in
            guard s.session != 0 else {
                return (false, PlexusClientError(.notConnected, "not connected to \(config.host):\(config.port)"))
            }
            var batch =
                (noAck ? s.openNoAck.removeValue(forKey: topic) : s.open.removeValue(forKey: topic))
                ?? Batch(topic: topic, noAck: noAck, events: ByteBufferAllocator().buffer(capacity: 4096))
            if batch.count > 0, batch.count + events.count > limitEvents || batch.events.readableBytes > limitBytes {
                s.sealed.append(batch)
                batch = Batch(topic: topic, noAck: noAck, events: ByteBufferAllocator().buffer(capacity: 4096))
            }
            let mark = batch.events.writerIndex
            var failure: PlexusClientError?
            do {
                for event in events { try batch.events.writeWireEvent(event) }
                if let completion { batch.completions.append((batch.count, completion)) }
                batch.count += events.count
            } catch {
                batch.events.moveWriterIndex(to: mark)
                failure = PlexusClientError(.invalidArgument, "\(error)")
            }
            if noAck { s.openNoAck[topic] = batch } else { s.open[topic] = batch }
            guard failure == nil else { return (false, failure) }
            defer { s.flushScheduled = true }
            return (!s.flushScheduled, nil)
        }
        if let failure = outcome.failure { return failure }
        if outcome.scheduled { eventLoop.execute { self.flush() } }
        return nil
    }

    func ack(_ delivery: UInt64, session: UInt64) {
        stage(session: session) { $0.acks.append(delivery) }
    }

    func nack(_ nack: Nack, session: UInt64) {
        stage(session: session) { $0.frames.append(Frame(.nack(nack))) }
    }

    private func stage(session: UInt64, _ change: (inout Staging) -> Void) {
        let scheduled = staging.withLock { s -> Bool in
            // A delivery of an earlier connection is void: the server redelivers it.
            guard s.session == session, session != 0 else { return false }
            change(&s)
            defer { s.flushScheduled = true }
            return !s.flushScheduled
        }
        if scheduled { eventLoop.execute { self.flush() } }
    }

    /// Sends everything staged in one write; on the loop.
    private func flush() {
        let (batches, acks, frames) = staging.withLock { s -> ([Batch], [UInt64], [Frame]) in
            defer {
                s.sealed = []
                s.open = [:]
                s.openNoAck = [:]
                s.acks = []
                s.frames = []
                s.flushScheduled = false
            }
            return (s.sealed + Array(s.open.values) + Array(s.openNoAck.values), s.acks, s.frames)
        }
        guard let channel else {
            let lost = PlexusClientError(.connectionLost, "the connection was lost before the publish was sent")
            for batch in batches { for entry in batch.completions { entry.done(.failure(lost)) } }
            return
        }
        var out = channel.allocator.buffer(capacity: batches.reduce(64) { $0 + 32 + $1.events.readableBytes })
        // Fire-and-forget publishes that asked to hear when they were written: completed by this write's promise.
        var written: [PublishCompletion] = []
        for var batch in batches where batch.count > 0 {
            let id = nextID
            nextID += 1
            do {
                try FrameCodec.encodePublish(
                    id: id, topic: batch.topic, noAck: batch.noAck, count: batch.count, events: &batch.events,
                    into: &out)
                if batch.noAck {
                    written += batch.completions.map { $0.done }
                } else if !batch.completions.isEmpty {
                    publishes[id] = batch.completions
                }
            } catch {
                let failure = PlexusClientError(.invalidArgument, "\(error)")
                for entry in batch.completions { entry.done(.failure(failure)) }
            }
        }
        if !acks.isEmpty { try? FrameCodec.encode(Frame(.ack(deliveries: acks)), into: &out) }
        for frame in frames { try? FrameCodec.encode(frame, into: &out) }
        lastSent = Self.now()
        guard !written.isEmpty else {
            channel.writeAndFlush(out, promise: nil)
            return
        }
        let promise = channel.eventLoop.makePromise(of: Void.self)
        let completions = written
        promise.futureResult.whenComplete { result in
            let outcome: Result<UInt64, PlexusClientError> = result.mapError { error in
                PlexusClientError(.connectionLost, "the write failed: \(error)")
            }.map { _ in UInt64(0) }
            for done in completions { done(outcome) }
        }
        channel.writeAndFlush(out, promise: promise)
    }

    // MARK: Subscriptions

    func subscribe(
        topic: String, options: SubscribeOptions, handler: @escaping @Sendable (ReceivedEvent) -> Void,
        onEnd: @escaping @Sendable () -> Void
    ) -> EventLoopFuture<UInt64> {
        eventLoop.flatSubmit { [self] in
            let promise = eventLoop.makePromise(of: UInt64.self)
            guard channel != nil, session != 0 else {
                promise.fail(PlexusClientError(.notConnected, "not connected to \(config.host):\(config.port)"))
                return promise.futureResult
            }
            let key = nextKey
            nextKey += 1
            let state = SubscriptionState(topic: topic, options: options, handler: handler, onEnd: onEnd)
            subscriptions[key] = state
            sendSubscribe(key: key, state: state) { [self] result in
                switch result {
                case .success: promise.succeed(key)
                case .failure(let error):
                    subscriptions.removeValue(forKey: key)
                    promise.fail(error)
                }
            }
            return promise.futureResult
        }
    }

    private func sendSubscribe(
        key: UInt64, state: SubscriptionState, completion: ((Result<Void, PlexusClientError>) -> Void)?
    ) {
        request(.subscribe(state.options.frame(topic: state.topic)), timeout: config.requestTimeout) { [self] result in
            switch result {
            case .success(let frame):
                guard case .subscribed(let serverID) = frame.body, subscriptions[key] != nil else {
                    completion?(.failure(PlexusClientError(.refused, "unexpected answer \(frame.kind) to SUBSCRIBE")))
                    return
                }
                subscriptions[key]?.serverID = serverID
                byServerID[serverID] = key
                completion?(.success(()))
            case .failure(let error):
                if let completion {
                    completion(.failure(error))
                } else {
                    noteAsyncError("resubscribing to '\(state.topic)' failed: \(error)")
                }
            }
        }
    }

    func unsubscribe(key: UInt64) async {
        let future = eventLoop.flatSubmit { [self] () -> EventLoopFuture<Void> in
            guard let state = subscriptions.removeValue(forKey: key) else { return eventLoop.makeSucceededVoidFuture() }
            state.onEnd()
            guard let serverID = state.serverID, channel != nil else { return eventLoop.makeSucceededVoidFuture() }
            byServerID.removeValue(forKey: serverID)
            let promise = eventLoop.makePromise(of: Void.self)
            request(.unsubscribe(subscription: serverID), timeout: config.requestTimeout) { _ in promise.succeed(()) }
            return promise.futureResult
        }
        try? await future.get()
    }

    private func finishSubscriptions() {
        let all = subscriptions
        subscriptions = [:]
        byServerID = [:]
        for (_, state) in all { state.onEnd() }
    }

    // MARK: Closing

    /// Waits up to `timeout` for publishes in flight, says goodbye and closes; no reconnection after it.
    func close(timeout: Duration) -> EventLoopFuture<Void> {
        eventLoop.flatSubmit { [self] in
            guard !closed else { return eventLoop.makeSucceededVoidFuture() }
            closed = true
            flush()
            let promise = eventLoop.makePromise(of: Void.self)
            finishClosing(deadline: NIODeadline.now() + .nanoseconds(nanos(timeout)), promise)
            return promise.futureResult
        }
    }

    /// Polls until no publish awaits an answer (or the deadline), then says goodbye and closes; on the loop.
    private func finishClosing(deadline: NIODeadline, _ promise: EventLoopPromise<Void>) {
        if !publishes.isEmpty, channel != nil, NIODeadline.now() < deadline {
            eventLoop.scheduleTask(in: .milliseconds(5)) { [self] in finishClosing(deadline: deadline, promise) }
            return
        }
        if let channel {
            write([Frame(.goodbye(reason: "client closing"))])
            channel.close(promise: nil)
        }
        channel = nil
        tickerTask?.cancel()
        let failed = publishes
        publishes = [:]
        let error = PlexusClientError(.closed, "the client closed before the server answered")
        for (_, entries) in failed { for entry in entries { entry.done(.failure(error)) } }
        staging.withLock { $0.session = 0 }
        finishSubscriptions()
        promise.succeed(())
    }
}

/// Hands the connection's frames and its end to the core; on the loop.
final class ClientHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = InboundFrame
    let core: ClientCore

    init(core: ClientCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        core.received(unwrapInboundIn(data))
    }

    func channelInactive(context: ChannelHandlerContext) {
        core.connectionLost()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }
}
