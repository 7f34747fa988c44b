import PlexusCore
import PlexusWire

/// What a subscriber asks for; zero means the server's default for each numeric option.
public struct SubscribeOptions: Sendable {
    public enum Start: Sendable, Equatable {
        case latest, earliest
        case offset(UInt64)
    }

    /// The consumer group; empty: a group of its own (every event).
    public var group: String
    /// Every member of the group gets every event.
    public var broadcast: Bool
    /// Where a new group starts.
    public var start: Start
    /// One delivery in flight per partition key.
    public var ordered: Bool
    /// The flow-control window: the most unacknowledged deliveries at once.
    public var credits: UInt32
    public var retry: UInt32
    public var linearBackoff: Bool
    public var backoffDelayMs: UInt64
    public var backoffMaxMs: UInt64
    public var timeoutMs: UInt64
    public var deadLetterTopic: String
    /// Exact matches on attributes or extensions.
    public var filters: [(name: String, value: String)]

    public init(
        group: String = "", broadcast: Bool = false, start: Start = .latest, ordered: Bool = false,
        credits: UInt32 = 0, retry: UInt32 = 0, linearBackoff: Bool = false, backoffDelayMs: UInt64 = 0,
        backoffMaxMs: UInt64 = 0, timeoutMs: UInt64 = 0, deadLetterTopic: String = "",
        filters: [(name: String, value: String)] = []
    ) {
        self.group = group
        self.broadcast = broadcast
        self.start = start
        self.ordered = ordered
        self.credits = credits
        self.retry = retry
        self.linearBackoff = linearBackoff
        self.backoffDelayMs = backoffDelayMs
        self.backoffMaxMs = backoffMaxMs
        self.timeoutMs = timeoutMs
        self.deadLetterTopic = deadLetterTopic
        self.filters = filters
    }

    func frame(topic: String) -> Subscribe {
        var s = Subscribe(
            topic: topic, group: group, mode: broadcast ? .broadcast : .clustering, ordered: ordered,
            credits: credits, retry: retry, backoff: linearBackoff ? .linear : .exponential,
            backoffDelayMs: backoffDelayMs, backoffMaxMs: backoffMaxMs, timeoutMs: timeoutMs,
            deadLetterTopic: deadLetterTopic, filters: filters.map { .init(name: $0.name, value: $0.value) })
        switch start {
        case .latest: s.start = .latest
        case .earliest: s.start = .earliest
        case .offset(let offset):
            s.start = .offset
            s.startOffset = offset
        }
        return s
    }
}

/// One event delivered to a subscriber. Acknowledge it with `ack()` once handled, or `nack`.
public struct ReceivedEvent: Sendable {
    public var topic: String
    public var offset: UInt64
    /// 1 on first delivery.
    public var attempt: UInt32
    /// Unix time in ns when the node stored it; 0 if unknown.
    public var appendTimeNs: UInt64
    public var deliveryID: UInt64
    /// The event as it came off the wire; decoded on access.
    let wire: WireEvents

    /// The event, decoded from its wire bytes (each access decodes again: keep the value if you need it twice).
    public var event: CloudEvent { wire.cloudEvent(at: 0) }

    /// Only the event's data, without decoding its attributes.
    public var data: [UInt8] {
        let span = wire.layouts[0].data
        return wire.bytes.getBytes(at: wire.bytes.readerIndex + span.offset, length: span.length) ?? []
    }
    let core: ClientCore
    let session: UInt64

    /// Acknowledges the event: it counts as delivered. Acknowledgements are batched and sent within the
    /// event loop's next turn. An event acknowledged after its connection was lost is redelivered anyway.
    public func ack() { core.ack(deliveryID, session: session) }

    /// Rejects the event: redelivered after the subscription's backoff, or dead-lettered now.
    public func nack(deadLetter: Bool = false, reason: String = "") {
        core.nack(Nack(delivery: deliveryID, deadLetter: deadLetter, reason: reason), session: session)
    }
}

/// A live subscription. Deliveries arrive through the handler or the async sequence it was made with;
/// after a reconnection the client subscribes again with the same options.
public final class ClientSubscription: Sendable {
    public let topic: String
    public let options: SubscribeOptions
    let key: UInt64
    let core: ClientCore

    init(topic: String, options: SubscribeOptions, key: UInt64, core: ClientCore) {
        self.topic = topic
        self.options = options
        self.key = key
        self.core = core
    }

    /// Ends the subscription; events delivered and not acknowledged go to other members of the group.
    public func cancel() async {
        await core.unsubscribe(key: key)
    }
}

/// Deliveries of one subscription as an async sequence; ends when the subscription or the client ends.
public struct EventStream: AsyncSequence, Sendable {
    public typealias Element = ReceivedEvent
    public let subscription: ClientSubscription
    let stream: AsyncStream<ReceivedEvent>

    public func makeAsyncIterator() -> AsyncStream<ReceivedEvent>.AsyncIterator { stream.makeAsyncIterator() }
}
