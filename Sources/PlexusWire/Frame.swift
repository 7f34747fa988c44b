import PlexusCore

/// One frame of the Plexus TCP protocol (docs/protocols/tcp.md): a correlation id and a typed body.
public struct Frame: Sendable, Equatable {
    /// Correlates a request with its reply: chosen by the sender of a request, echoed in the reply; 0 when
    /// the frame needs no reply.
    public var id: UInt64
    public var body: Body

    public init(id: UInt64 = 0, _ body: Body) {
        self.id = id
        self.body = body
    }

    public enum Body: Sendable, Equatable {
        case hello(Hello)
        case welcome(Welcome)
        case publish(Publish)
        case publishAck(PublishAck)
        case subscribe(Subscribe)
        case subscribed(subscription: UInt64)
        case unsubscribe(subscription: UInt64)
        case unsubscribed(subscription: UInt64)
        case deliver(Deliver)
        case ack(deliveries: [UInt64])
        case nack(Nack)
        /// `reply` marks the answer to a heartbeat.
        case heartbeat(reply: Bool)
        case goodbye(reason: String)
        case error(ErrorBody)
    }

    /// The numbers of the frame types on the wire.
    public enum Kind: UInt8, Sendable, CaseIterable {
        case hello = 0x01
        case welcome = 0x02
        case publish = 0x10
        case publishAck = 0x11
        case subscribe = 0x20
        case subscribed = 0x21
        case unsubscribe = 0x22
        case unsubscribed = 0x23
        case deliver = 0x24
        case ack = 0x25
        case nack = 0x26
        case heartbeat = 0x30
        case goodbye = 0x31
        case error = 0x3F
    }

    public var kind: Kind {
        switch body {
        case .hello: .hello
        case .welcome: .welcome
        case .publish: .publish
        case .publishAck: .publishAck
        case .subscribe: .subscribe
        case .subscribed: .subscribed
        case .unsubscribe: .unsubscribe
        case .unsubscribed: .unsubscribed
        case .deliver: .deliver
        case .ack: .ack
        case .nack: .nack
        case .heartbeat: .heartbeat
        case .goodbye: .goodbye
        case .error: .error
        }
    }

    /// "PLXS": the first four bytes of every `HELLO` body.
    public static let magic: UInt32 = 0x504C_5853
    /// The protocol version this library speaks.
    public static let version: UInt16 = 1
    /// Bytes before the body: length (4), type (1), flags (1), reserved (2), id (8).
    public static let headerSize = 16
    /// The default and the smallest allowed maximum frame size (length field included).
    public static let defaultMaxFrameSize = 1 << 20
    public static let minimumMaxFrameSize = 4096
}

/// The client's first frame.
public struct Hello: Sendable, Equatable {
    public var version: UInt16
    /// Names the client in the server's logs.
    public var client: String
    /// Authentication token; empty when the server requires none.
    public var token: String
    /// The heartbeat interval the client proposes, in ms; 0 takes the server's.
    public var heartbeatMs: UInt32
    /// The largest frame the client accepts.
    public var maxFrameSize: UInt32

    public init(
        version: UInt16 = Frame.version, client: String, token: String = "", heartbeatMs: UInt32 = 0,
        maxFrameSize: UInt32 = UInt32(Frame.defaultMaxFrameSize)
    ) {
        self.version = version
        self.client = client
        self.token = token
        self.heartbeatMs = heartbeatMs
        self.maxFrameSize = maxFrameSize
    }
}

/// The server's answer to an accepted `HELLO`.
public struct Welcome: Sendable, Equatable {
    public var version: UInt16
    public var node: String
    public var session: UInt64
    /// The agreed heartbeat interval in ms: each side sends a heartbeat when it has sent nothing for this
    /// long, and the server closes a connection from which no complete frame arrived for three intervals.
    public var heartbeatMs: UInt32
    /// The largest frame the server accepts.
    public var maxFrameSize: UInt32

    public init(version: UInt16, node: String, session: UInt64, heartbeatMs: UInt32, maxFrameSize: UInt32) {
        self.version = version
        self.node = node
        self.session = session
        self.heartbeatMs = heartbeatMs
        self.maxFrameSize = maxFrameSize
    }
}

/// One or more events for one topic.
public struct Publish: Sendable, Equatable {
    public var topic: String
    /// Fire-and-forget: the server sends no `PUBLISH_ACK` on success (it still sends `ERROR` on failure).
    public var noAck: Bool
    public var events: WireEvents

    public init(topic: String, noAck: Bool = false, events: WireEvents) {
        self.topic = topic
        self.noAck = noAck
        self.events = events
    }
}

/// The outcome of one `PUBLISH`: on success the offset of its first event (the rest follow densely).
public struct PublishAck: Sendable, Equatable {
    public var status: WireStatus
    public var count: UInt32
    public var firstOffset: UInt64
    public var message: String

    public init(status: WireStatus, count: UInt32, firstOffset: UInt64, message: String = "") {
        self.status = status
        self.count = count
        self.firstOffset = firstOffset
        self.message = message
    }
}

/// What a consumer asks for; zero means the server's default for each numeric option.
public struct Subscribe: Sendable, Equatable {
    public enum GroupMode: UInt8, Sendable { case clustering = 0, broadcast = 1 }
    public enum Start: UInt8, Sendable { case latest = 0, earliest = 1, offset = 2 }
    public enum Backoff: UInt8, Sendable { case exponential = 0, linear = 1 }

    public var topic: String
    public var group: String
    public var mode: GroupMode
    public var start: Start
    public var startOffset: UInt64
    /// Ordered delivery per partition key.
    public var ordered: Bool
    /// Flow control: the most deliveries the server keeps unacknowledged on this subscription.
    public var credits: UInt32
    public var retry: UInt32
    public var backoff: Backoff
    public var backoffDelayMs: UInt64
    public var backoffMaxMs: UInt64
    public var timeoutMs: UInt64
    public var deadLetterTopic: String
    /// Exact match on attributes or extensions.
    public var filters: [Filter]

    public struct Filter: Sendable, Equatable {
        public var name: String
        public var value: String
        public init(name: String, value: String) {
            self.name = name
            self.value = value
        }
    }

    public init(
        topic: String, group: String = "", mode: GroupMode = .clustering, start: Start = .latest,
        startOffset: UInt64 = 0, ordered: Bool = false, credits: UInt32 = 0, retry: UInt32 = 0,
        backoff: Backoff = .exponential, backoffDelayMs: UInt64 = 0, backoffMaxMs: UInt64 = 0, timeoutMs: UInt64 = 0,
        deadLetterTopic: String = "", filters: [Filter] = []
    ) {
        self.topic = topic
        self.group = group
        self.mode = mode
        self.start = start
        self.startOffset = startOffset
        self.ordered = ordered
        self.credits = credits
        self.retry = retry
        self.backoff = backoff
        self.backoffDelayMs = backoffDelayMs
        self.backoffMaxMs = backoffMaxMs
        self.timeoutMs = timeoutMs
        self.deadLetterTopic = deadLetterTopic
        self.filters = filters
    }
}

/// One event handed to a subscriber; answer with `ACK` or `NACK` naming `delivery`.
public struct Deliver: Sendable, Equatable {
    public var subscription: UInt64
    public var delivery: UInt64
    public var attempt: UInt32
    public var offset: UInt64
    /// Unix time in ns when the storage stored it; 0 if unknown.
    public var appendTimeNs: UInt64
    /// Exactly one event.
    public var event: WireEvents

    public init(
        subscription: UInt64, delivery: UInt64, attempt: UInt32, offset: UInt64, appendTimeNs: UInt64,
        event: WireEvents
    ) {
        self.subscription = subscription
        self.delivery = delivery
        self.attempt = attempt
        self.offset = offset
        self.appendTimeNs = appendTimeNs
        self.event = event
    }
}

/// Rejects one delivery: retry it after the subscription's backoff, or dead-letter it now.
public struct Nack: Sendable, Equatable {
    public var delivery: UInt64
    public var deadLetter: Bool
    public var reason: String

    public init(delivery: UInt64, deadLetter: Bool = false, reason: String = "") {
        self.delivery = delivery
        self.deadLetter = deadLetter
        self.reason = reason
    }
}

/// A refusal or failure; `fatal` means the sender closes the connection after it.
public struct ErrorBody: Sendable, Equatable {
    public var status: WireStatus
    /// The type of the frame the error is about (its id is the frame's id); 0 when none.
    public var frameType: UInt8
    public var fatal: Bool
    public var message: String

    public init(status: WireStatus, frameType: UInt8 = 0, fatal: Bool = false, message: String) {
        self.status = status
        self.frameType = frameType
        self.fatal = fatal
        self.message = message
    }
}
