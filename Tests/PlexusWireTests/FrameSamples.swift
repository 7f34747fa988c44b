import NIOCore
import PlexusCore
import PlexusWire

/// Events and frames that every codec test runs over: each frame type with realistic and edge values.
enum FrameSamples {
    /// A typical event: every optional attribute present, a partition key, JSON data.
    static let typical = CloudEvent(
        id: "e-1", source: "/orders", type: "order.created", datacontenttype: "application/json",
        dataschema: "https://example.com/order.json", subject: "order-42", time: "2026-11-25T12:00:00Z",
        extensions: [("partitionkey", "customer-7"), ("traceparent", "00-4bf92f3577b34da6-00f067aa0ba902b7-01")],
        data: Array("{\"total\":12.5}".utf8))

    /// Every string empty, every optional attribute absent, no extensions, no data.
    static let minimal = CloudEvent(id: "", source: "", specversion: "", type: "")

    /// Every optional attribute present but empty, and an extension with an empty value: distinct from absent.
    static let presentButEmpty = CloudEvent(
        id: "e-2", source: "/s", type: "t", datacontenttype: "", dataschema: "", subject: "", time: "",
        extensions: [("empty", "")])

    /// Only some optional attributes present, so each presence bit is tested apart from the others.
    static let mixedPresence = CloudEvent(id: "e-3", source: "/s", type: "t", dataschema: "urn:x", time: "")

    /// Data with every byte value, twice, and in both orders.
    static let binary = CloudEvent(
        id: "e-4", source: "/bin", type: "blob", datacontenttype: "application/octet-stream",
        data: Array(0...255) + Array((0...255).reversed()))

    /// Multi-byte UTF-8 everywhere: 2-, 3- and 4-byte sequences, a combining mark, a NUL.
    static let unicode = CloudEvent(
        id: "é-日本-🎉", source: "/données/東京", type: "e\u{301}vénement", datacontenttype: "text/plain; charset=utf-8",
        subject: "Ω≈ç√∫", time: "2026-11-25T12:00:00+09:00",
        extensions: [("ünïcode", "値"), ("nul", "a\u{0}b"), ("emoji", "👩‍👩‍👧‍👦")], data: Array("¡olé! 🎉".utf8))

    /// Many extensions, including a repeated name (the wire keeps order and duplicates).
    static let manyExtensions = CloudEvent(
        id: "e-5", source: "/s", type: "t",
        extensions: (0..<40).map { ("ext\($0 % 20)", String(repeating: "v", count: $0)) }, data: [0])

    static let events: [CloudEvent] = [
        typical, minimal, presentButEmpty, mixedPresence, binary, unicode, manyExtensions,
    ]

    static func wire(_ events: [CloudEvent]) -> WireEvents {
        do {
            return try WireEvents(events)
        } catch {
            preconditionFailure("sample events encode: \(error)")
        }
    }

    /// One frame of each type, with variations; `name` says which.
    static let frames: [(name: String, frame: Frame)] = [
        ("HELLO defaults", Frame(id: 1, .hello(Hello(client: "cli")))),
        (
            "HELLO full",
            Frame(
                id: .max,
                .hello(
                    Hello(
                        version: 1, client: "client/ünï 🎉", token: "s3cr3t-tøken", heartbeatMs: .max,
                        maxFrameSize: 4096)))
        ),
        (
            "HELLO empty strings, version 0",
            Frame(id: 0, .hello(Hello(version: 0, client: "", token: "", heartbeatMs: 0, maxFrameSize: 0)))
        ),
        (
            "WELCOME",
            Frame(
                id: 1,
                .welcome(
                    Welcome(version: 1, node: "node-1", session: 7, heartbeatMs: 10_000, maxFrameSize: 1 << 20)))
        ),
        (
            "WELCOME extremes",
            Frame(
                id: 2,
                .welcome(Welcome(version: .max, node: "", session: .max, heartbeatMs: .max, maxFrameSize: .max)))
        ),
        ("PUBLISH one event", Frame(id: 3, .publish(Publish(topic: "orders", events: wire([typical]))))),
        ("PUBLISH batch", Frame(id: 4, .publish(Publish(topic: "demo", events: wire(events))))),
        (
            "PUBLISH fire-and-forget, empty topic",
            Frame(id: 0, .publish(Publish(topic: "", noAck: true, events: wire([minimal]))))
        ),
        (
            "PUBLISH unicode topic",
            Frame(id: 5, .publish(Publish(topic: "トピック/ü", events: wire([unicode, binary]))))
        ),
        ("PUBLISH_ACK ok", Frame(id: 3, .publishAck(PublishAck(status: .ok, count: 2, firstOffset: 40)))),
        (
            "PUBLISH_ACK failure",
            Frame(
                id: 4,
                .publishAck(
                    PublishAck(
                        status: .invalidArgument, count: 7, firstOffset: 0,
                        message: "event 1: attribute 'id' is required")))
        ),
        (
            "PUBLISH_ACK unknown status, extremes",
            Frame(
                id: .max,
                .publishAck(
                    PublishAck(status: WireStatus(rawValue: .max), count: .max, firstOffset: .max, message: "ü")))
        ),
        ("SUBSCRIBE defaults", Frame(id: 2, .subscribe(Subscribe(topic: "demo")))),
        (
            "SUBSCRIBE every option",
            Frame(
                id: 6,
                .subscribe(
                    Subscribe(
                        topic: "orders", group: "billing", mode: .broadcast, start: .offset, startOffset: 1234,
                        ordered: true, credits: 256, retry: 5, backoff: .linear, backoffDelayMs: 100,
                        backoffMaxMs: 60_000, timeoutMs: 30_000, deadLetterTopic: "orders.dead",
                        filters: [
                            .init(name: "type", value: "order.created"), .init(name: "partitionkey", value: ""),
                            .init(name: "", value: "ünï"),
                        ])))
        ),
        (
            "SUBSCRIBE earliest, extremes",
            Frame(
                id: 7,
                .subscribe(
                    Subscribe(
                        topic: "t", mode: .clustering, start: .earliest, startOffset: .max, credits: .max,
                        retry: .max, backoff: .exponential, backoffDelayMs: .max, backoffMaxMs: .max,
                        timeoutMs: .max)))
        ),
        ("SUBSCRIBED", Frame(id: 2, .subscribed(subscription: 1))),
        ("SUBSCRIBED max", Frame(id: 2, .subscribed(subscription: .max))),
        ("UNSUBSCRIBE", Frame(id: 8, .unsubscribe(subscription: 1))),
        ("UNSUBSCRIBE zero", Frame(id: 8, .unsubscribe(subscription: 0))),
        ("UNSUBSCRIBED", Frame(id: 8, .unsubscribed(subscription: .max))),
        (
            "DELIVER",
            Frame(
                id: 0,
                .deliver(
                    Deliver(
                        subscription: 1, delivery: 901, attempt: 1, offset: 40, appendTimeNs: 1_764_072_000_000_000_000,
                        event: wire([typical]))))
        ),
        (
            "DELIVER minimal event, extremes",
            Frame(
                id: .max,
                .deliver(
                    Deliver(
                        subscription: .max, delivery: .max, attempt: .max, offset: .max, appendTimeNs: 0,
                        event: wire([minimal]))))
        ),
        (
            "DELIVER binary",
            Frame(
                id: 0,
                .deliver(
                    Deliver(
                        subscription: 3, delivery: 4, attempt: 2, offset: 5, appendTimeNs: 6, event: wire([binary])))
            )
        ),
        ("ACK none", Frame(id: 0, .ack(deliveries: []))),
        ("ACK one", Frame(id: 0, .ack(deliveries: [901]))),
        ("ACK many", Frame(id: 0, .ack(deliveries: (0..<100).map { $0 * 0x0101_0101_0101_0101 } + [0, .max]))),
        ("NACK retry", Frame(id: 0, .nack(Nack(delivery: 902, reason: "busy")))),
        ("NACK dead-letter", Frame(id: 0, .nack(Nack(delivery: .max, deadLetter: true, reason: "poison: ü")))),
        ("NACK empty reason", Frame(id: 0, .nack(Nack(delivery: 0)))),
        ("HEARTBEAT", Frame(id: 5, .heartbeat(reply: false))),
        ("HEARTBEAT reply", Frame(id: 5, .heartbeat(reply: true))),
        ("GOODBYE", Frame(id: 0, .goodbye(reason: "done"))),
        ("GOODBYE empty", Frame(id: 0, .goodbye(reason: ""))),
        ("GOODBYE unicode", Frame(id: 0, .goodbye(reason: "さようなら 👋"))),
        (
            "ERROR",
            Frame(id: 902, .error(ErrorBody(status: .notFound, frameType: 0x26, message: "unknown delivery 902")))
        ),
        (
            "ERROR fatal",
            Frame(
                id: 0,
                .error(ErrorBody(status: .idleTimeout, frameType: 0, fatal: true, message: "no frame for 30 s")))
        ),
        (
            "ERROR unknown status, empty message",
            Frame(id: .max, .error(ErrorBody(status: WireStatus(rawValue: 9999), frameType: 0xFF, message: "")))
        ),
    ]

    /// The bytes of one frame.
    static func encode(_ frame: Frame) -> ByteBuffer {
        var buffer = ByteBuffer()
        do {
            try FrameCodec.encode(frame, into: &buffer)
        } catch {
            preconditionFailure("sample frame encodes: \(error)")
        }
        return buffer
    }

    /// The bytes of several frames back to back.
    static func encode(_ frames: [Frame]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for frame in frames {
            var bytes = encode(frame)
            buffer.writeBuffer(&bytes)
        }
        return buffer
    }

    /// A frame assembled by hand, so that tests can send what the encoder never writes.
    /// - Parameter length: the length field; by default the true one (12 + body size).
    static func raw(
        type: UInt8, flags: UInt8 = 0, reserved: UInt16 = 0, id: UInt64 = 0, body: [UInt8], length: UInt32? = nil
    ) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(length ?? UInt32(12 + body.count))
        buffer.writeInteger(type)
        buffer.writeInteger(flags)
        buffer.writeInteger(reserved)
        buffer.writeInteger(id)
        buffer.writeBytes(body)
        return buffer
    }

    /// A wire string: u16 length, then the bytes as given (not necessarily UTF-8).
    static func string(_ bytes: [UInt8]) -> [UInt8] {
        [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
    }

    static func string(_ s: String) -> [UInt8] { string(Array(s.utf8)) }

    static func u16(_ v: UInt16) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
    static func u32(_ v: UInt32) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
    static func u64(_ v: UInt64) -> [UInt8] { withUnsafeBytes(of: v.bigEndian, Array.init) }
}

extension ByteBuffer {
    /// The readable bytes as an array.
    var bytes: [UInt8] { Array(readableBytesView) }
}
