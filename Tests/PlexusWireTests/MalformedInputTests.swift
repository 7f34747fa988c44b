import NIOCore
import NIOEmbedded
import PlexusCore
import PlexusWire
import Testing

/// What the decoder does with bytes a correct peer never sends: fatal errors when the stream can no longer
/// be framed, `.invalid` when one whole frame cannot be read, `nil` while a frame is incomplete.
@Suite("FrameDecoder on truncated, malformed and hostile input")
struct MalformedInputTests {
    typealias S = FrameSamples

    /// The error `next(from:)` throws, or `nil` (recorded as an issue) when it throws none.
    static func fatal(
        _ bytes: ByteBuffer, maxFrameSize: Int = Frame.defaultMaxFrameSize,
        sourceLocation: SourceLocation = #_sourceLocation
    ) -> WireError? {
        var buffer = bytes
        do {
            let result = try FrameDecoder(maxFrameSize: maxFrameSize).next(from: &buffer)
            Issue.record("expected a fatal error, got \(String(describing: result))", sourceLocation: sourceLocation)
        } catch let error as WireError {
            #expect(error.fatal, "\(error)", sourceLocation: sourceLocation)
            return error
        } catch {
            Issue.record("not a WireError: \(error)", sourceLocation: sourceLocation)
        }
        return nil
    }

    /// The `.invalid` error one whole frame decodes to, or `nil` (recorded as an issue) for anything else.
    static func invalid(_ bytes: ByteBuffer, sourceLocation: SourceLocation = #_sourceLocation) throws -> WireError? {
        var buffer = bytes
        let result = try FrameDecoder().next(from: &buffer)
        #expect(buffer.readableBytes == 0, "the whole frame is consumed", sourceLocation: sourceLocation)
        guard case .invalid(let error) = result else {
            Issue.record("expected .invalid, got \(String(describing: result))", sourceLocation: sourceLocation)
            return nil
        }
        #expect(!error.fatal, sourceLocation: sourceLocation)
        return error
    }

    /// The body of an encoded frame.
    static func body(_ frame: Frame) -> [UInt8] { Array(S.encode(frame).bytes.dropFirst(Frame.headerSize)) }

    // MARK: Framing

    @Test("every proper prefix of every sample frame gives nil and consumes nothing")
    func truncatedFrames() throws {
        let decoder = FrameDecoder()
        for (name, frame) in S.frames {
            let bytes = S.encode(frame).bytes
            for length in 0..<bytes.count {
                var buffer = ByteBuffer(bytes: bytes[..<length])
                #expect(try decoder.next(from: &buffer) == nil, "\(name): prefix of \(length) bytes")
                #expect(buffer.readableBytes == length, "\(name): prefix of \(length) bytes")
            }
        }
    }

    @Test("a length field below 12 is fatal (frame too large) as soon as its 4 bytes arrive", arguments: 0..<12)
    func lengthBelowHeader(length: Int) {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(length))
        let error = Self.fatal(buffer)
        #expect(error?.status == .frameTooLarge)
        #expect(error?.frameType == 0)
        // The same with a whole (shorter) header behind it.
        let padded = S.raw(type: 0x30, id: 5, body: [], length: UInt32(length))
        #expect(Self.fatal(padded)?.status == .frameTooLarge)
    }

    @Test("length 12 with a 16-byte header is the smallest frame")
    func smallestFrame() throws {
        var buffer = S.raw(type: 0x30, id: 1, body: [], length: 12)
        #expect(try FrameDecoder().next(from: &buffer) == .frame(Frame(id: 1, .heartbeat(reply: false))))
    }

    @Test("a frame above maxFrameSize is fatal before its bytes arrive; one at the maximum is read")
    func lengthAboveMaximum() throws {
        let maximum = Frame.minimumMaxFrameSize
        for length in [UInt32(maximum - 4 + 1), UInt32(maximum), UInt32(Int32.max), .max] {
            var buffer = ByteBuffer()
            buffer.writeInteger(length)
            let error = Self.fatal(buffer, maxFrameSize: maximum)
            #expect(error?.status == .frameTooLarge, "length \(length)")
        }
        // The default maximum, 1 MiB.
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(Frame.defaultMaxFrameSize - 3))
        #expect(Self.fatal(buffer)?.status == .frameTooLarge)

        // Exactly the maximum: a GOODBYE whose frame is `maximum` bytes long.
        let reason = String(repeating: "r", count: maximum - Frame.headerSize - 2)
        var exact = S.encode(Frame(.goodbye(reason: reason)))
        #expect(exact.readableBytes == maximum)
        let decoder = FrameDecoder(maxFrameSize: maximum)
        var partial = exact.getSlice(at: 0, length: maximum - 1) ?? ByteBuffer()
        #expect(try decoder.next(from: &partial) == nil)
        #expect(try decoder.next(from: &exact) == .frame(Frame(.goodbye(reason: reason))))
    }

    @Test("an unknown frame type is .invalid (65) with its type and id, and the next frame still decodes")
    func unknownFrameTypes() throws {
        let known = Set(Frame.Kind.allCases.map(\.rawValue))
        let decoder = FrameDecoder()
        let next = Frame(id: 5, .heartbeat(reply: true))
        for type in UInt8.min...UInt8.max where !known.contains(type) {
            var buffer = S.raw(type: type, flags: 0xFF, id: 0xABCD, body: [UInt8](repeating: type, count: Int(type)))
            var following = S.encode(next)
            buffer.writeBuffer(&following)
            let first = try decoder.next(from: &buffer)
            guard case .invalid(let error) = first else {
                Issue.record("type 0x\(String(type, radix: 16)): \(String(describing: first))")
                continue
            }
            #expect(error.status == .unknownFrameType)
            #expect(error.status.rawValue == 65)
            #expect(error.frameType == type)
            #expect(error.frameID == 0xABCD)
            #expect(!error.fatal)
            #expect(try decoder.next(from: &buffer) == .frame(next))
            #expect(buffer.readableBytes == 0)
        }
    }

    // MARK: Bodies

    @Test("a body with bytes after its last field is malformed (64)", arguments: S.frames.map(\.name))
    func trailingBytes(name: String) throws {
        let frame = try #require(S.frames.first { $0.name == name }?.frame)
        for extra in [[0x00], [0xFF, 0xFF, 0xFF, 0xFF], S.encode(frame).bytes] as [[UInt8]] {
            var bytes = S.encode(frame)
            bytes.writeBytes(extra)
            bytes.setInteger(UInt32(bytes.readableBytes - 4), at: 0)
            let error = try Self.invalid(bytes)
            #expect(error?.status == .malformedFrame)
            #expect(error?.status.rawValue == 64)
            #expect(error?.frameType == frame.kind.rawValue)
            #expect(error?.frameID == frame.id)
        }
    }

    @Test("a body cut short (a length field that ends early) is malformed", arguments: S.frames.map(\.name))
    func shortBodies(name: String) throws {
        let frame = try #require(S.frames.first { $0.name == name }?.frame)
        let body = Self.body(frame)
        for length in 0..<body.count {
            var bytes = S.raw(type: frame.kind.rawValue, id: frame.id, body: Array(body[..<length]))
            // Keep the flags: they do not change how much body a type needs.
            bytes.setInteger(S.encode(frame).getInteger(at: 5, as: UInt8.self) ?? 0, at: 5)
            let error = try Self.invalid(bytes)
            #expect(error?.status == .malformedFrame, "\(name), body of \(length)")
        }
    }

    @Test("invalid UTF-8 in any string is malformed")
    func invalidUTF8() throws {
        let bad: [[UInt8]] = [
            [0xFF], [0xC3], [0xC0, 0xAF],  // stray byte, truncated sequence, overlong "/"
            [0xED, 0xA0, 0x80],  // a UTF-16 surrogate
            [0xF4, 0x90, 0x80, 0x80],  // above U+10FFFF
            [0x80],  // a lone continuation byte
            Array("abcdefgh".utf8) + [0xFE],  // past the eight-at-a-time ASCII check
            Array("abcdefghijklmnop".utf8) + [0xE2, 0x82],  // a cut three-byte sequence at the end
            Array("é".utf8) + [0xC3, 0x28],  // a bad continuation after valid non-ASCII
        ]
        for b in bad {
            let bodies: [(UInt8, [UInt8])] = [
                (0x31, S.string(b)),  // GOODBYE reason
                (0x3F, S.u16(1) + [0] + S.string(b)),  // ERROR message
                (0x26, S.u64(1) + S.string(b)),  // NACK reason
                (
                    0x01,
                    S.u32(Frame.magic) + S.u16(1) + S.u16(0) + S.string("ok") + S.string(b) + S.u32(0) + S.u32(0)
                ),
                (0x10, S.string(b) + S.u32(1) + Self.eventBytes()),  // PUBLISH topic
                (0x10, S.string("t") + S.u32(1) + Self.eventBytes(id: b)),  // an event's id
                (0x10, S.string("t") + S.u32(1) + Self.eventBytes(presence: 0x04, optionals: [b])),  // subject
                (0x10, S.string("t") + S.u32(1) + Self.eventBytes(extensions: [(b, [])])),  // an extension name
                (0x10, S.string("t") + S.u32(1) + Self.eventBytes(extensions: [(Array("k".utf8), b)])),
                (0x20, Self.subscribeBytes(filters: [(Array("type".utf8), b)])),  // a filter value
            ]
            for (type, body) in bodies {
                let error = try Self.invalid(S.raw(type: type, id: 4, body: body))
                #expect(error?.status == .malformedFrame, "type 0x\(String(type, radix: 16)), bytes \(b)")
            }
        }
        // Invalid UTF-8 in event data is fine: data is bytes.
        var data = S.raw(type: 0x10, body: S.string("t") + S.u32(1) + Self.eventBytes(data: [0xFF, 0xC0]))
        guard case .frame(let frame) = try FrameDecoder().next(from: &data), case .publish(let p) = frame.body else {
            Issue.record("data with invalid UTF-8 was refused")
            return
        }
        #expect(p.events.cloudEvents.first?.data == [0xFF, 0xC0])
    }

    @Test("an event count larger than the body holds is malformed, never a large allocation")
    func eventCountTooLarge() throws {
        let one = Self.eventBytes(id: Array("id".utf8))
        for count in [2, 3, 1000, UInt32(Int32.max), .max] as [UInt32] {
            let error = try Self.invalid(S.raw(type: 0x10, id: 9, body: S.string("t") + S.u32(count) + one))
            #expect(error?.status == .malformedFrame, "count \(count)")
        }
        // Enough bytes to pass the 15-bytes-per-event bound, but not enough events.
        let big = Self.eventBytes(data: [UInt8](repeating: 7, count: 100))
        let error = try Self.invalid(S.raw(type: 0x10, body: S.string("t") + S.u32(3) + big))
        #expect(error?.status == .malformedFrame)
        #expect(error?.message.contains("event 1") == true, "\(String(describing: error))")
    }

    @Test("a PUBLISH with no events is malformed: the count is 1 or more")
    func emptyPublish() throws {
        let error = try Self.invalid(S.raw(type: 0x10, id: 3, body: S.string("t") + S.u32(0)))
        #expect(error?.status == .malformedFrame)
        #expect(error?.frameID == 3)
    }

    @Test("an ACK count larger than the body holds is malformed")
    func ackCountTooLarge() throws {
        for count in [2, 1 << 29, .max] as [UInt32] {
            let error = try Self.invalid(S.raw(type: 0x25, body: S.u32(count) + S.u64(1)))
            #expect(error?.status == .malformedFrame, "count \(count)")
        }
    }

    @Test("a DELIVER carries exactly one event: none or two are malformed")
    func deliverEventCount() throws {
        let header = S.u64(1) + S.u64(2) + S.u32(1) + S.u64(3) + S.u64(4)
        #expect(try Self.invalid(S.raw(type: 0x24, body: header))?.status == .malformedFrame)
        let two = header + Self.eventBytes() + Self.eventBytes()
        #expect(try Self.invalid(S.raw(type: 0x24, body: two))?.status == .malformedFrame)
    }

    @Test("an event's data or string length past the body is malformed")
    func lengthsPastTheBody() throws {
        var event = Self.eventBytes(data: [1, 2, 3])
        event.replaceSubrange(event.count - 7..<event.count - 3, with: S.u32(.max))
        #expect(try Self.invalid(S.raw(type: 0x10, body: S.string("t") + S.u32(1) + event))?.status == .malformedFrame)
        #expect(try Self.invalid(S.raw(type: 0x31, body: [0xFF, 0xFF, 0x61]))?.status == .malformedFrame)
        // An extension count past the body.
        var ext = Self.eventBytes()
        ext.replaceSubrange(ext.count - 6..<ext.count - 4, with: S.u16(.max))
        #expect(try Self.invalid(S.raw(type: 0x10, body: S.string("t") + S.u32(1) + ext))?.status == .malformedFrame)
    }

    @Test("SUBSCRIBE with an unknown mode, start, ordered or backoff byte is malformed")
    func subscribeEnums() throws {
        let good = Self.subscribeBytes(mode: 1, start: 2, ordered: 1, backoff: 1)
        var valid = S.raw(type: 0x20, id: 2, body: good)
        guard case .frame(let frame) = try FrameDecoder().next(from: &valid), case .subscribe(let s) = frame.body else {
            Issue.record("the valid SUBSCRIBE did not decode")
            return
        }
        #expect(s.mode == .broadcast && s.start == .offset && s.ordered && s.backoff == .linear)

        let bad: [(String, [UInt8])] = [
            ("mode", Self.subscribeBytes(mode: 2)), ("mode", Self.subscribeBytes(mode: 0xFF)),
            ("start", Self.subscribeBytes(start: 3)), ("start", Self.subscribeBytes(start: 0xFF)),
            ("ordered", Self.subscribeBytes(ordered: 2)), ("ordered", Self.subscribeBytes(ordered: 0xFF)),
            ("backoff", Self.subscribeBytes(backoff: 2)), ("backoff", Self.subscribeBytes(backoff: 0x80)),
        ]
        for (field, body) in bad {
            let error = try Self.invalid(S.raw(type: 0x20, id: 2, body: body))
            #expect(error?.status == .malformedFrame, "\(field)")
            #expect(error?.message.contains(field) == true, "\(String(describing: error))")
            #expect(error?.frameType == 0x20)
            #expect(error?.frameID == 2)
        }
        // A filter count past the body.
        var filters = Self.subscribeBytes()
        filters.replaceSubrange(filters.count - 2..<filters.count, with: S.u16(3))
        #expect(try Self.invalid(S.raw(type: 0x20, body: filters))?.status == .malformedFrame)
    }

    @Test("an event with presence bits 4 to 7 set is malformed", arguments: [0x10, 0x20, 0x40, 0x80, 0xF0, 0xFF])
    func unknownPresenceBits(presence: Int) throws {
        let optionals = [[UInt8]](repeating: [], count: (presence & 0x0F).nonzeroBitCount)
        let event = Self.eventBytes(presence: UInt8(presence), optionals: optionals)
        let publish = try Self.invalid(S.raw(type: 0x10, body: S.string("t") + S.u32(1) + event))
        #expect(publish?.status == .malformedFrame)
        #expect(publish?.message.contains("presence") == true, "\(String(describing: publish))")
        let deliver = S.u64(1) + S.u64(2) + S.u32(1) + S.u64(3) + S.u64(4) + event
        #expect(try Self.invalid(S.raw(type: 0x24, body: deliver))?.status == .malformedFrame)
    }

    @Test("a HELLO with a wrong magic is fatal (unsupported version, 70)")
    func wrongMagic() throws {
        for magic in [0, 0x504C_5854, 0x5358_4C50, .max] as [UInt32] {
            let body = S.u32(magic) + S.u16(1) + S.u16(0) + S.string("c") + S.string("") + S.u32(0) + S.u32(0)
            let error = Self.fatal(S.raw(type: 0x01, id: 1, body: body))
            #expect(error?.status == .unsupportedVersion)
            #expect(error?.status.rawValue == 70)
            #expect(error?.frameType == 0x01)
            #expect(error?.frameID == 1)
        }
        // The magic is checked first: a wrong magic in a short HELLO is still fatal.
        #expect(Self.fatal(S.raw(type: 0x01, body: S.u32(1)))?.status == .unsupportedVersion)
        // Too short to hold the magic: malformed, not fatal.
        #expect(try Self.invalid(S.raw(type: 0x01, body: [0x50, 0x4C]))?.status == .malformedFrame)
        // Another version decodes: the server, not the codec, refuses it.
        let v2 = S.u32(Frame.magic) + S.u16(2) + S.u16(0) + S.string("c") + S.string("") + S.u32(0) + S.u32(0)
        var buffer = S.raw(type: 0x01, body: v2)
        #expect(
            try FrameDecoder().next(from: &buffer)
                == .frame(Frame(.hello(Hello(version: 2, client: "c", maxFrameSize: 0)))))
    }

    // MARK: Streams

    @Test("garbage after a valid frame: the frame comes out first, then the garbage's verdict")
    func garbageAfterFrame() throws {
        let valid = Frame(id: 5, .heartbeat(reply: false))
        let decoder = FrameDecoder()
        func stream(_ garbage: [UInt8]) -> ByteBuffer {
            var buffer = S.encode(valid)
            buffer.writeBytes(garbage)
            return buffer
        }

        // A length below the header: fatal.
        var tooShort = stream([0, 0, 0, 1, 0xFF, 0xFF])
        #expect(try decoder.next(from: &tooShort) == .frame(valid))
        #expect(Self.fatal(tooShort)?.status == .frameTooLarge)

        // A huge length: fatal.
        var huge = stream([0xFF, 0xFF, 0xFF, 0xFF, 0x30])
        #expect(try decoder.next(from: &huge) == .frame(valid))
        #expect(Self.fatal(huge)?.status == .frameTooLarge)

        // Text where a frame should start ("GET " is a length of about 1.2 GB): fatal.
        var http = stream(Array("GET / HTTP/1.1\r\n\r\n".utf8))
        #expect(try decoder.next(from: &http) == .frame(valid))
        #expect(Self.fatal(http)?.status == .frameTooLarge)

        // Fewer than four bytes: not yet anything.
        var fragment = stream([0x00, 0x00])
        #expect(try decoder.next(from: &fragment) == .frame(valid))
        #expect(try decoder.next(from: &fragment) == nil)
        #expect(fragment.readableBytes == 2)

        // A whole frame of an unknown type: .invalid, then the stream goes on.
        var unknown = stream(S.raw(type: 0x00, id: 9, body: [1, 2]).bytes + S.encode(valid).bytes)
        #expect(try decoder.next(from: &unknown) == .frame(valid))
        #expect(try decoder.next(from: &unknown).flatMap(Self.status) == .unknownFrameType)
        #expect(try decoder.next(from: &unknown) == .frame(valid))

        // A whole frame with a malformed body: .invalid, then the stream goes on.
        var malformed = stream(S.raw(type: 0x21, id: 9, body: [1, 2]).bytes + S.encode(valid).bytes)
        #expect(try decoder.next(from: &malformed) == .frame(valid))
        #expect(try decoder.next(from: &malformed).flatMap(Self.status) == .malformedFrame)
        #expect(try decoder.next(from: &malformed) == .frame(valid))
        #expect(malformed.readableBytes == 0)
    }

    @Test("the NIO handler passes .invalid frames on and stops at a fatal error")
    func throughChannelHandler() throws {
        var input = S.encode(Frame(id: 1, .heartbeat(reply: false)))
        var unknown = S.raw(type: 0x77, id: 2, body: [])
        input.writeBuffer(&unknown)
        input.writeInteger(UInt32(3))  // a fatal length
        let result = try Self.feedChannel(input)
        #expect(result.frames.count == 2)
        #expect(result.frames.first == .frame(Frame(id: 1, .heartbeat(reply: false))))
        #expect(result.frames.last.flatMap(Self.status) == .unknownFrameType)
        #expect(result.error?.status == .frameTooLarge)
        #expect(result.error?.fatal == true)
    }

    // MARK: Helpers

    /// Writes `input` into a channel whose pipeline is the `FrameDecoder`; returns what came out of it.
    static func feedChannel(_ input: ByteBuffer) throws -> (frames: [InboundFrame], error: WireError?) {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(FrameDecoder()))
        var error: WireError?
        do {
            try channel.writeInbound(input)
        } catch let e as WireError {
            error = e
        }
        var frames: [InboundFrame] = []
        while let frame = try channel.readInbound(as: InboundFrame.self) { frames.append(frame) }
        _ = try? channel.finish()
        return (frames, error)
    }

    static func status(_ inbound: InboundFrame) -> WireStatus? {
        if case .invalid(let error) = inbound { return error.status }
        return nil
    }

    /// One event's bytes, built field by field.
    static func eventBytes(
        presence: UInt8 = 0, id: [UInt8] = Array("1".utf8), optionals: [[UInt8]] = [],
        extensions: [([UInt8], [UInt8])] = [], data: [UInt8] = []
    ) -> [UInt8] {
        var bytes = [presence] + S.string(id) + S.string("/s") + S.string("1.0") + S.string("t")
        for o in optionals { bytes += S.string(o) }
        bytes += S.u16(UInt16(extensions.count))
        for (name, value) in extensions { bytes += S.string(name) + S.string(value) }
        return bytes + S.u32(UInt32(data.count)) + data
    }

    /// A SUBSCRIBE body, built field by field.
    static func subscribeBytes(
        mode: UInt8 = 0, start: UInt8 = 0, ordered: UInt8 = 0, backoff: UInt8 = 0, filters: [([UInt8], [UInt8])] = []
    ) -> [UInt8] {
        var bytes = S.string("topic") + S.string("group") + [mode, start, ordered, backoff]
        bytes += S.u64(0) + S.u32(0) + S.u32(0) + S.u64(0) + S.u64(0) + S.u64(0) + S.string("")
        bytes += S.u16(UInt16(filters.count))
        for (name, value) in filters { bytes += S.string(name) + S.string(value) }
        return bytes
    }
}
