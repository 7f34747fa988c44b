import NIOCore
import PlexusABI
import PlexusCore
import PlexusWire
import Testing

@Suite("Frames and events round-trip through the codec")
struct RoundTripTests {
    @Test("the samples cover every frame type")
    func samplesCoverEveryKind() {
        let kinds = Set(FrameSamples.frames.map(\.frame.kind.rawValue))
        #expect(kinds == Set(Frame.Kind.allCases.map(\.rawValue)))
    }

    @Test("every sample frame encodes and decodes back equal", arguments: FrameSamples.frames.map(\.name))
    func frameRoundTrip(name: String) throws {
        let frame = try #require(FrameSamples.frames.first { $0.name == name }?.frame)
        var buffer = FrameSamples.encode(frame)
        let encoded = buffer.bytes
        #expect(Int(buffer.getInteger(at: 0, as: UInt32.self) ?? 0) == buffer.readableBytes - 4)
        #expect(buffer.getInteger(at: 4, as: UInt8.self) == frame.kind.rawValue)
        #expect(buffer.getInteger(at: 6, as: UInt16.self) == 0, "reserved is sent as 0")
        #expect(buffer.getInteger(at: 8, as: UInt64.self) == frame.id)

        let decoded = try FrameDecoder().next(from: &buffer)
        #expect(decoded == .frame(frame))
        #expect(buffer.readableBytes == 0)

        // Encoding the decoded frame gives the same bytes.
        guard case .frame(let again) = decoded else { return }
        #expect(FrameSamples.encode(again).bytes == encoded)
    }

    @Test("every flag goes out as bit 0 and comes back")
    func flags() throws {
        let flagged: [(Frame, UInt8)] = [
            (Frame(.heartbeat(reply: true)), 1), (Frame(.heartbeat(reply: false)), 0),
            (Frame(.publish(Publish(topic: "t", noAck: true, events: FrameSamples.wire([FrameSamples.minimal])))), 1),
            (Frame(.publish(Publish(topic: "t", noAck: false, events: FrameSamples.wire([FrameSamples.minimal])))), 0),
            (Frame(.nack(Nack(delivery: 1, deadLetter: true))), 1), (Frame(.nack(Nack(delivery: 1))), 0),
            (Frame(.error(ErrorBody(status: .idleTimeout, fatal: true, message: ""))), 1),
            (Frame(.error(ErrorBody(status: .idleTimeout, fatal: false, message: ""))), 0),
        ]
        for (frame, flags) in flagged {
            var buffer = FrameSamples.encode(frame)
            #expect(buffer.getInteger(at: 5, as: UInt8.self) == flags, "\(frame.kind)")
            #expect(try FrameDecoder().next(from: &buffer) == .frame(frame))
        }
    }

    @Test("flag bits a type does not define, and the reserved field, are ignored")
    func undefinedFlagsIgnored() throws {
        let cases: [(type: UInt8, flags: UInt8, body: [UInt8], expected: Frame.Body)] = [
            (0x30, 0xFE, [], .heartbeat(reply: false)),
            (0x30, 0xFF, [], .heartbeat(reply: true)),
            (0x31, 0xFF, FrameSamples.string("bye"), .goodbye(reason: "bye")),
            (0x21, 0x80, FrameSamples.u64(9), .subscribed(subscription: 9)),
            (0x26, 0xFE, FrameSamples.u64(3) + FrameSamples.string(""), .nack(Nack(delivery: 3))),
            (
                0x3F, 0x81, FrameSamples.u16(64) + [0x10] + FrameSamples.string("m"),
                .error(ErrorBody(status: .malformedFrame, frameType: 0x10, fatal: true, message: "m"))
            ),
        ]
        for c in cases {
            var buffer = FrameSamples.raw(type: c.type, flags: c.flags, reserved: 0xBEEF, id: 77, body: c.body)
            #expect(try FrameDecoder().next(from: &buffer) == .frame(Frame(id: 77, c.expected)))
        }
    }

    @Test("the reserved u16 of HELLO and WELCOME is ignored")
    func bodyReservedIgnored() throws {
        let hello =
            FrameSamples.u32(Frame.magic) + FrameSamples.u16(1) + FrameSamples.u16(0xFFFF) + FrameSamples.string("c")
            + FrameSamples.string("") + FrameSamples.u32(0) + FrameSamples.u32(4096)
        var buffer = FrameSamples.raw(type: 0x01, id: 1, body: hello)
        #expect(
            try FrameDecoder().next(from: &buffer)
                == .frame(Frame(id: 1, .hello(Hello(client: "c", maxFrameSize: 4096)))))

        let welcome =
            FrameSamples.u16(1) + FrameSamples.u16(0x1234) + FrameSamples.string("n") + FrameSamples.u64(7)
            + FrameSamples.u32(10) + FrameSamples.u32(4096)
        buffer = FrameSamples.raw(type: 0x02, id: 1, body: welcome)
        let expected = Welcome(version: 1, node: "n", session: 7, heartbeatMs: 10, maxFrameSize: 4096)
        #expect(try FrameDecoder().next(from: &buffer) == .frame(Frame(id: 1, .welcome(expected))))
    }

    @Test("WireEvents gives back the CloudEvents it was built from", arguments: 0..<FrameSamples.events.count)
    func cloudEventsRoundTrip(index: Int) throws {
        let event = FrameSamples.events[index]
        let wire = try WireEvents([event])
        #expect(wire.count == 1)
        #expect(wire.cloudEvents == [event])
        #expect(wire.cloudEvent(at: 0).datacontenttype == event.datacontenttype)
    }

    @Test("WireEvents(parsing:) keeps exactly the events' bytes and moves the reader index past them")
    func parsingKeepsBytes() throws {
        var events = ByteBuffer()
        for event in [FrameSamples.typical, FrameSamples.binary] { try events.writeWireEvent(event) }
        var buffer = ByteBuffer(bytes: [0xEE, 0xEE])
        buffer.moveReaderIndex(forwardBy: 1)
        buffer.writeImmutableBuffer(events)
        buffer.writeBytes([0xDD])
        buffer.moveReaderIndex(forwardBy: 1)

        let parsed = try WireEvents(parsing: &buffer, count: 2)
        #expect(parsed.bytes == events)
        #expect(buffer.bytes == [0xDD])
        #expect(parsed.cloudEvents == [FrameSamples.typical, FrameSamples.binary])
    }

    @Test("a batch keeps every event, in order, through a PUBLISH frame")
    func batchThroughFrame() throws {
        let events = FrameSamples.events + FrameSamples.events.reversed()
        var buffer = FrameSamples.encode(Frame(id: 9, .publish(Publish(topic: "demo", events: try WireEvents(events)))))
        let decoded = try FrameDecoder().next(from: &buffer)
        guard case .frame(let frame) = decoded, case .publish(let publish) = frame.body else {
            Issue.record("not a PUBLISH: \(String(describing: decoded))")
            return
        }
        #expect(publish.events.count == events.count)
        #expect(publish.events.cloudEvents == events)
    }

    @Test("events decoded from the middle of a stream read their own bytes")
    func eventsFromMidStream() throws {
        // Junk before the frames and other frames around it move the reader index away from 0.
        var buffer = ByteBuffer(bytes: [0xAA, 0xBB, 0xCC])
        buffer.moveReaderIndex(forwardBy: 3)
        var frames = FrameSamples.encode([
            Frame(.heartbeat(reply: false)),
            Frame(id: 1, .publish(Publish(topic: "a", events: FrameSamples.wire([FrameSamples.unicode])))),
            Frame(
                .deliver(
                    Deliver(
                        subscription: 1, delivery: 2, attempt: 1, offset: 3, appendTimeNs: 4,
                        event: FrameSamples.wire([FrameSamples.typical])))),
        ])
        buffer.writeBuffer(&frames)
        let decoder = FrameDecoder()
        var events: [CloudEvent] = []
        while let inbound = try decoder.next(from: &buffer) {
            guard case .frame(let frame) = inbound else {
                Issue.record("unexpected \(inbound)")
                return
            }
            switch frame.body {
            case .publish(let publish): events += publish.events.cloudEvents
            case .deliver(let deliver): events += deliver.event.cloudEvents
            default: break
            }
        }
        #expect(events == [FrameSamples.unicode, FrameSamples.typical])
    }

    @Test("withCEvents lends px_events equal to the originals")
    func cEvents() throws {
        let events = FrameSamples.events
        // Through the wire, so the px_events point into a decoded frame's buffer.
        var buffer = FrameSamples.encode(Frame(.publish(Publish(topic: "t", events: try WireEvents(events)))))
        guard case .frame(let frame) = try FrameDecoder().next(from: &buffer),
            case .publish(let publish) = frame.body
        else {
            Issue.record("not a PUBLISH")
            return
        }
        let copies = publish.events.withCEvents { pointers, count in
            (0..<count).map { i in pointers[i].map(CloudEvent.init(copying:)) }
        }
        #expect(copies == events.map(Optional.some))
    }

    @Test("withCEvents: absent attributes are NULL, present empty ones are not; struct_size is set")
    func cEventPresence() throws {
        let wire = try WireEvents([FrameSamples.presentButEmpty, FrameSamples.minimal])
        wire.withCEvents { pointers, count in
            #expect(count == 2)
            guard let full = pointers[0]?.pointee, let bare = pointers[1]?.pointee else {
                Issue.record("missing event pointer")
                return
            }
            #expect(full.struct_size == UInt32(MemoryLayout<px_event>.size))
            for s in [full.datacontenttype, full.dataschema, full.subject, full.time] {
                #expect(s.ptr != nil && s.len == 0)
            }
            #expect(full.extension_count == 1)
            for s in [bare.datacontenttype, bare.dataschema, bare.subject, bare.time] {
                #expect(s.ptr == nil && s.len == 0)
            }
            #expect(bare.id.ptr != nil && bare.id.len == 0, "a required attribute is always present")
            #expect(bare.extension_count == 0)
            #expect(bare.data.len == 0)
        }
    }

    @Test("a C event encodes to the same bytes as its Swift twin")
    func cEventEncoding() throws {
        for event in FrameSamples.events {
            var fromSwift = ByteBuffer()
            try fromSwift.writeWireEvent(event)
            var fromC = ByteBuffer()
            try event.withCEvent { try fromC.writeWireEvent($0) }
            #expect(fromC == fromSwift, "\(event.id)")
        }
    }

    @Test("strings up to 65,535 bytes encode; longer ones throw and leave the buffer as it was")
    func stringLimits() throws {
        let longest = String(repeating: "x", count: 65_535)
        var buffer = FrameSamples.encode(Frame(.goodbye(reason: longest)))
        #expect(try FrameDecoder().next(from: &buffer) == .frame(Frame(.goodbye(reason: longest))))

        var out = ByteBuffer(bytes: [1, 2, 3])
        let tooLong = longest + "y"
        for frame in [
            Frame(.goodbye(reason: tooLong)), Frame(.hello(Hello(client: "c", token: tooLong))),
            Frame(.subscribe(Subscribe(topic: "t", filters: [.init(name: "n", value: tooLong)]))),
        ] {
            #expect(throws: WireError.self) { try FrameCodec.encode(frame, into: &out) }
            #expect(out.bytes == [1, 2, 3])
        }
        do {
            _ = try WireEvents([CloudEvent(id: tooLong, source: "s", type: "t")])
            Issue.record("an over-long event attribute encoded")
        } catch let error as WireError {
            #expect(error.status == .invalidArgument)
        }
    }

    @Test("the encoder refuses a PUBLISH without events and a DELIVER without exactly one")
    func eventCountsOnEncode() throws {
        let none = try WireEvents([])
        let two = FrameSamples.wire([FrameSamples.minimal, FrameSamples.typical])
        var out = ByteBuffer(bytes: [9])
        for frame in [
            Frame(.publish(Publish(topic: "t", events: none))),
            Frame(.deliver(Deliver(subscription: 1, delivery: 1, attempt: 1, offset: 0, appendTimeNs: 0, event: none))),
            Frame(.deliver(Deliver(subscription: 1, delivery: 1, attempt: 1, offset: 0, appendTimeNs: 0, event: two))),
        ] {
            do {
                try FrameCodec.encode(frame, into: &out)
                Issue.record("\(frame.kind) with \(frame) encoded")
            } catch let error as WireError {
                #expect(error.status == .invalidArgument)
            }
            #expect(out.bytes == [9], "nothing is written")
        }
    }
}
