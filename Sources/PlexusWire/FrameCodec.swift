import NIOCore

/// Encodes frames to bytes and decodes them back, as docs/protocols/tcp.md lays them out.
public enum FrameCodec {
    static let flagNoAck: UInt8 = 1 << 0
    static let flagDeadLetter: UInt8 = 1 << 0
    static let flagReply: UInt8 = 1 << 0
    static let flagFatal: UInt8 = 1 << 0

    /// Appends one frame to `buffer`.
    /// - Throws: `WireError` (invalid argument) when a string is longer than the wire allows, or a `PUBLISH`
    ///   has no events or a `DELIVER` other than one; nothing is written then.
    public static func encode(_ frame: Frame, into buffer: inout ByteBuffer) throws {
        let start = buffer.writerIndex
        do {
            buffer.writeInteger(UInt32(0))  // the length, patched below
            buffer.writeInteger(frame.kind.rawValue)
            let flagsAt = buffer.writerIndex
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(UInt16(0))
            buffer.writeInteger(frame.id)
            let flags = try writeBody(frame.body, into: &buffer)
            buffer.setInteger(flags, at: flagsAt)
            let length = buffer.writerIndex - start - 4
            guard length <= Int(UInt32.max) else {
                throw WireError(.invalidArgument, "a frame of \(length) bytes exceeds 4 GiB", fatal: false)
            }
            buffer.setInteger(UInt32(length), at: start)
        } catch {
            buffer.moveWriterIndex(to: start)
            throw error
        }
    }

    /// Appends a `PUBLISH` frame whose events are already encoded back to back in `events` (as
    /// `ByteBuffer.writeWireEvent` writes them), without parsing them again.
    /// - Throws: `WireError` (invalid argument) when the topic is longer than the wire allows.
    public static func encodePublish(
        id: UInt64, topic: String, noAck: Bool, count: Int, events: inout ByteBuffer, into buffer: inout ByteBuffer
    ) throws {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(Frame.Kind.publish.rawValue)
        buffer.writeInteger(noAck ? flagNoAck : 0)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(id)
        do {
            try buffer.writeWireString(topic)
        } catch {
            buffer.moveWriterIndex(to: start)
            throw error
        }
        buffer.writeInteger(UInt32(count))
        buffer.writeBuffer(&events)
        buffer.setInteger(UInt32(buffer.writerIndex - start - 4), at: start)
    }

    /// Writes the body; returns the flags byte.
    private static func writeBody(_ body: Frame.Body, into buffer: inout ByteBuffer) throws -> UInt8 {
        switch body {
        case .hello(let hello):
            buffer.writeInteger(Frame.magic)
            buffer.writeInteger(hello.version)
            buffer.writeInteger(UInt16(0))
            try buffer.writeWireString(hello.client)
            try buffer.writeWireString(hello.token)
            buffer.writeInteger(hello.heartbeatMs)
            buffer.writeInteger(hello.maxFrameSize)
        case .welcome(let welcome):
            buffer.writeInteger(welcome.version)
            buffer.writeInteger(UInt16(0))
            try buffer.writeWireString(welcome.node)
            buffer.writeInteger(welcome.session)
            buffer.writeInteger(welcome.heartbeatMs)
            buffer.writeInteger(welcome.maxFrameSize)
        case .publish(let publish):
            guard publish.events.count >= 1 else {
                throw WireError(.invalidArgument, "a PUBLISH carries 1 or more events, not 0", fatal: false)
            }
            try buffer.writeWireString(publish.topic)
            buffer.writeInteger(UInt32(publish.events.count))
            var events = publish.events.bytes
            buffer.writeBuffer(&events)
            return publish.noAck ? flagNoAck : 0
        case .publishAck(let ack):
            buffer.writeInteger(ack.status.rawValue)
            buffer.writeInteger(ack.count)
            buffer.writeInteger(ack.firstOffset)
            try buffer.writeWireString(ack.message)
        case .subscribe(let s):
            try buffer.writeWireString(s.topic)
            try buffer.writeWireString(s.group)
            buffer.writeInteger(s.mode.rawValue)
            buffer.writeInteger(s.start.rawValue)
            buffer.writeInteger(UInt8(s.ordered ? 1 : 0))
            buffer.writeInteger(s.backoff.rawValue)
            buffer.writeInteger(s.startOffset)
            buffer.writeInteger(s.credits)
            buffer.writeInteger(s.retry)
            buffer.writeInteger(s.backoffDelayMs)
            buffer.writeInteger(s.backoffMaxMs)
            buffer.writeInteger(s.timeoutMs)
            try buffer.writeWireString(s.deadLetterTopic)
            guard s.filters.count <= Int(UInt16.max) else {
                throw WireError(.invalidArgument, "\(s.filters.count) filters exceed 65535", fatal: false)
            }
            buffer.writeInteger(UInt16(s.filters.count))
            for filter in s.filters {
                try buffer.writeWireString(filter.name)
                try buffer.writeWireString(filter.value)
            }
        case .subscribed(let id), .unsubscribe(let id), .unsubscribed(let id):
            buffer.writeInteger(id)
        case .deliver(let d):
            guard d.event.count == 1 else {
                throw WireError(
                    .invalidArgument, "a DELIVER carries exactly 1 event, not \(d.event.count)", fatal: false)
            }
            buffer.writeInteger(d.subscription)
            buffer.writeInteger(d.delivery)
            buffer.writeInteger(d.attempt)
            buffer.writeInteger(d.offset)
            buffer.writeInteger(d.appendTimeNs)
            var event = d.event.bytes
            buffer.writeBuffer(&event)
        case .ack(let deliveries):
            buffer.writeInteger(UInt32(deliveries.count))
            for id in deliveries { buffer.writeInteger(id) }
        case .nack(let nack):
            buffer.writeInteger(nack.delivery)
            try buffer.writeWireString(nack.reason)
            return nack.deadLetter ? flagDeadLetter : 0
        case .heartbeat(let reply):
            return reply ? flagReply : 0
        case .goodbye(let reason):
            try buffer.writeWireString(reason)
        case .error(let error):
            buffer.writeInteger(error.status.rawValue)
            buffer.writeInteger(error.frameType)
            try buffer.writeWireString(error.message)
            return error.fatal ? flagFatal : 0
        }
        return 0
    }

    /// Reads one frame's body.
    /// - Parameters:
    ///   - type: the type byte; `flags`, `id`: the header's.
    ///   - body: exactly the body's bytes.
    /// - Throws: `WireError`, not fatal (the frame's extent is known, so the stream stays readable):
    ///   unknown frame type, or a malformed body (short, long, bad UTF-8, bad enumerations).
    public static func decodeBody(type: UInt8, flags: UInt8, id: UInt64, body: inout ByteBuffer) throws -> Frame {
        guard let kind = Frame.Kind(rawValue: type) else {
            throw WireError(
                .unknownFrameType, "unknown frame type 0x\(String(type, radix: 16))", frameType: type, frameID: id,
                fatal: false)
        }
        do {
            let frame = Frame(id: id, try readBody(kind, flags: flags, body: &body))
            guard body.readableBytes == 0 else {
                throw WireError(.malformedFrame, "\(body.readableBytes) bytes after the body", fatal: false)
            }
            return frame
        } catch let error as WireError {
            throw WireError(
                error.status, "\(kind) frame: \(error.message)", frameType: type, frameID: id, fatal: error.fatal)
        }
    }

    private static func readBody(_ kind: Frame.Kind, flags: UInt8, body: inout ByteBuffer) throws -> Frame.Body {
        if kind == .publish {
            let topic = try body.withUnsafeReadableBytes { raw -> (String, UInt32, Int) in
                var cursor = WireCursor(raw)
                let topic = try cursor.string("topic")
                return (topic, try cursor.u32("the event count"), cursor.position)
            }
            body.moveReaderIndex(forwardBy: topic.2)
            guard topic.1 >= 1 else { throw WireError(.malformedFrame, "count 0: no events", fatal: false) }
            // Every event takes at least 15 bytes, so the count cannot promise more than the body holds.
            guard Int(topic.1) <= body.readableBytes / 15 else {
                throw WireError(.malformedFrame, "count \(topic.1) exceeds what the body can hold", fatal: false)
            }
            let events = try WireEvents(parsing: &body, count: Int(topic.1))
            return .publish(Publish(topic: topic.0, noAck: flags & flagNoAck != 0, events: events))
        }
        if kind == .deliver {
            let header = try body.withUnsafeReadableBytes { raw -> (UInt64, UInt64, UInt32, UInt64, UInt64, Int) in
                var c = WireCursor(raw)
                return (
                    try c.u64("subscription"), try c.u64("delivery"), try c.u32("attempt"), try c.u64("offset"),
                    try c.u64("append time"), c.position
                )
            }
            body.moveReaderIndex(forwardBy: header.5)
            let event = try WireEvents(parsing: &body, count: 1)
            return .deliver(
                Deliver(
                    subscription: header.0, delivery: header.1, attempt: header.2, offset: header.3,
                    appendTimeNs: header.4, event: event))
        }
        let (result, consumed) = try body.withUnsafeReadableBytes { raw -> (Frame.Body, Int) in
            var c = WireCursor(raw)
            let result = try readFixedBody(kind, flags: flags, &c)
            return (result, c.position)
        }
        body.moveReaderIndex(forwardBy: consumed)
        return result
    }

    private static func readFixedBody(_ kind: Frame.Kind, flags: UInt8, _ c: inout WireCursor) throws -> Frame.Body {
        func malformed(_ message: String) -> WireError { WireError(.malformedFrame, message, fatal: false) }
        switch kind {
        case .hello:
            let magic = try c.u32("magic")
            guard magic == Frame.magic else {
                throw WireError(
                    .unsupportedVersion, "magic 0x\(String(magic, radix: 16)) is not \"PLXS\"", fatal: true)
            }
            let version = try c.u16("version")
            _ = try c.u16("reserved")
            return .hello(
                Hello(
                    version: version, client: try c.string("client"), token: try c.string("token"),
                    heartbeatMs: try c.u32("heartbeat"), maxFrameSize: try c.u32("max frame size")))
        case .welcome:
            let version = try c.u16("version")
            _ = try c.u16("reserved")
            return .welcome(
                Welcome(
                    version: version, node: try c.string("node"), session: try c.u64("session"),
                    heartbeatMs: try c.u32("heartbeat"), maxFrameSize: try c.u32("max frame size")))
        case .publishAck:
            return .publishAck(
                PublishAck(
                    status: WireStatus(rawValue: try c.u16("status")), count: try c.u32("count"),
                    firstOffset: try c.u64("first offset"), message: try c.string("message")))
        case .subscribe:
            let topic = try c.string("topic")
            let group = try c.string("group")
            let modeByte = try c.u8("mode")
            let startByte = try c.u8("start")
            let orderedByte = try c.u8("ordered")
            let backoffByte = try c.u8("backoff policy")
            guard let mode = Subscribe.GroupMode(rawValue: modeByte) else { throw malformed("mode \(modeByte)") }
            guard let start = Subscribe.Start(rawValue: startByte) else { throw malformed("start \(startByte)") }
            guard orderedByte <= 1 else { throw malformed("ordered \(orderedByte)") }
            guard let backoff = Subscribe.Backoff(rawValue: backoffByte) else {
                throw malformed("backoff policy \(backoffByte)")
            }
            var s = Subscribe(topic: topic, group: group, mode: mode, start: start, ordered: orderedByte == 1)
            s.backoff = backoff
            s.startOffset = try c.u64("start offset")
            s.credits = try c.u32("credits")
            s.retry = try c.u32("retry")
            s.backoffDelayMs = try c.u64("backoff delay")
            s.backoffMaxMs = try c.u64("backoff max")
            s.timeoutMs = try c.u64("timeout")
            s.deadLetterTopic = try c.string("dead-letter topic")
            let filterCount = Int(try c.u16("filter count"))
            for _ in 0..<filterCount {
                s.filters.append(.init(name: try c.string("a filter name"), value: try c.string("a filter value")))
            }
            return .subscribe(s)
        case .subscribed: return .subscribed(subscription: try c.u64("subscription"))
        case .unsubscribe: return .unsubscribe(subscription: try c.u64("subscription"))
        case .unsubscribed: return .unsubscribed(subscription: try c.u64("subscription"))
        case .ack:
            let count = Int(try c.u32("count"))
            guard count <= c.remaining / 8 else { throw malformed("count \(count) exceeds what the body holds") }
            var ids: [UInt64] = []
            ids.reserveCapacity(count)
            for _ in 0..<count { ids.append(try c.u64("delivery")) }
            return .ack(deliveries: ids)
        case .nack:
            return .nack(
                Nack(
                    delivery: try c.u64("delivery"), deadLetter: flags & flagDeadLetter != 0,
                    reason: try c.string("reason")))
        case .heartbeat:
            return .heartbeat(reply: flags & flagReply != 0)
        case .goodbye:
            return .goodbye(reason: try c.string("reason"))
        case .error:
            return .error(
                ErrorBody(
                    status: WireStatus(rawValue: try c.u16("status")), frameType: try c.u8("frame type"),
                    fatal: flags & flagFatal != 0, message: try c.string("message")))
        case .publish, .deliver:
            preconditionFailure("handled by readBody")
        }
    }
}
