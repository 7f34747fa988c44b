import NIOCore
import PlexusCore
import PlexusWire

/// A client of the Plexus TCP protocol (docs/protocols/tcp.md).
///
/// ```swift
/// let client = try await PlexusClient.connect(ClientConfiguration(port: 10000))
/// let offset = try await client.publish(topic: "demo", CloudEvent(id: "1", source: "/me", type: "greeting"))
/// for await received in try await client.subscribe(topic: "demo") { print(received.event); received.ack() }
/// ```
///
/// Publishes are pipelined and batched: concurrent publishes to one topic travel in one frame, and
/// nothing waits for an earlier acknowledgement. A lost connection fails the publishes in flight with
/// `connectionLost` (they may or may not be stored: publish again, consumers tolerate duplicates);
/// the client reconnects with backoff and subscribes again. While it is disconnected, publishes fail
/// at once with `notConnected`.
public final class PlexusClient: Sendable {
    let core: ClientCore

    private init(core: ClientCore) { self.core = core }

    /// Connects and completes the handshake.
    /// - Throws: `PlexusClientError` when the server cannot be reached or refuses the client.
    public static func connect(_ configuration: ClientConfiguration = ClientConfiguration()) async throws
        -> PlexusClient
    {
        let core = ClientCore(config: configuration)
        try await core.connect().get()
        return PlexusClient(core: core)
    }

    /// The server's answer to the handshake: node, session, heartbeat and frame size.
    public var welcome: Welcome? { get async { try? await core.eventLoop.submit { self.core.welcome }.get() } }

    /// Failures the server reported with nobody waiting for them (fire-and-forget publishes), and the last.
    public var asynchronousErrors: (count: Int, last: String?) {
        (core.asyncErrors.load(ordering: .relaxed), core.lastError)
    }

    /// Publishes one event; returns its offset once the node reports it durable.
    public func publish(topic: String, _ event: CloudEvent) async throws -> UInt64 {
        try await publish(topic: topic, [event])
    }

    /// Publishes events as one batch; returns the offset of the first (the rest follow densely).
    public func publish(topic: String, _ events: [CloudEvent]) async throws -> UInt64 {
        try await withCheckedThrowingContinuation { continuation in
            if let refusal = core.publish(
                topic: topic, events: events, noAck: false,
                completion: {
                    continuation.resume(with: $0)
                })
            {
                continuation.resume(throwing: refusal)
            }
        }
    }

    /// Publishes without waiting: `completion` runs (on the client's event loop) with the first offset
    /// once the node reports the events durable, or with the failure.
    public func publish(topic: String, _ events: [CloudEvent], completion: @escaping PublishCompletion) {
        if let refusal = core.publish(topic: topic, events: events, noAck: false, completion: completion) {
            completion(.failure(refusal))
        }
    }

    /// Publishes fire-and-forget: no acknowledgement is asked for. A refusal is only counted in
    /// `asynchronousErrors`.
    /// - Throws: `PlexusClientError` when not connected or an event is invalid.
    public func publishWithoutAck(topic: String, _ events: [CloudEvent]) throws {
        if let refusal = core.publish(topic: topic, events: events, noAck: true, completion: nil) { throw refusal }
    }

    /// Publishes fire-and-forget, like `publishWithoutAck(topic:_:)`, and calls `written` once the frame
    /// carrying the events has been written to the socket (NIO's write promise succeeded: the bytes are in
    /// the kernel's socket buffer, not yet read by the server), with `nil`; or with why it was not written
    /// (refused at once, not connected, the write failed). This is when a NATS client's publish is done.
    /// - Important: `written` runs exactly once, on the client's event loop or on the caller's thread for a
    ///   refusal; it must not block.
    public func publishWithoutAck(
        topic: String, _ events: [CloudEvent], written: @escaping @Sendable (PlexusClientError?) -> Void
    ) {
        let refusal = core.publish(
            topic: topic, events: events, noAck: true,
            completion: { result in
                switch result {
                case .success: written(nil)
                case .failure(let error): written(error)
                }
            })
        if let refusal { written(refusal) }
    }

    /// Subscribes; `handler` runs on the client's event loop for each delivery (keep it short) and must
    /// `ack()` or `nack()` each one, then or later.
    /// - Throws: `PlexusClientError` when not connected or the server refuses.
    public func subscribe(
        topic: String, options: SubscribeOptions = SubscribeOptions(),
        handler: @escaping @Sendable (ReceivedEvent) -> Void
    ) async throws -> ClientSubscription {
        let key = try await core.subscribe(topic: topic, options: options, handler: handler, onEnd: {}).get()
        return ClientSubscription(topic: topic, options: options, key: key, core: core)
    }

    /// Subscribes; deliveries arrive as an async sequence that ends with the subscription or the client.
    public func subscribe(topic: String, options: SubscribeOptions = SubscribeOptions()) async throws -> EventStream {
        let (stream, continuation) = AsyncStream.makeStream(of: ReceivedEvent.self)
        let key = try await core.subscribe(
            topic: topic, options: options, handler: { continuation.yield($0) }, onEnd: { continuation.finish() }
        ).get()
        let subscription = ClientSubscription(topic: topic, options: options, key: key, core: core)
        return EventStream(subscription: subscription, stream: stream)
    }

    /// Waits up to `timeout` for publishes in flight to be answered, says goodbye and closes. The client
    /// does not reconnect afterwards; its subscriptions' sequences end.
    public func close(timeout: Duration = .seconds(5)) async {
        try? await core.close(timeout: timeout).get()
    }
}
