import RaftCore
import Testing

/// Envelopes of every message type, with edge values: empty and 1 MiB bodies, unicode names, extreme integers.
enum Samples {
    static let megabyte: [UInt8] = (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

    static func entry(_ index: UInt64, body: [UInt8], kind: UInt16 = 1) -> WireEntry {
        WireEntry(
            term: 3, index: index, offset: index &- 1, appendTime: 1_700_000_000_000_000_000 &+ index, kind: kind,
            bodyCRC: UInt32(truncatingIfNeeded: index &* 2_654_435_761), body: body)
    }

    /// Small envelopes of every type (each frame well under 1 KiB).
    static let small: [Envelope] = [
        Envelope(
            from: "a", to: "b", stream: "orders",
            message: .preVote(VoteRequest(term: 7, lastIndex: 100, lastTerm: 6))),
        Envelope(
            from: "node-α", to: "узел-β", stream: "заказы/🚀 émoji",
            message: .vote(
                VoteRequest(term: PeerCodec.maxCounter, lastIndex: PeerCodec.maxCounter, lastTerm: 0, transfer: true))),
        Envelope(from: "b", to: "a", stream: "", message: .preVoteReply(VoteReply(term: 8, granted: true))),
        Envelope(from: "b", to: "a", stream: "a/b c", message: .voteReply(VoteReply(term: 0, granted: false))),
        Envelope(
            from: "a", to: "b", stream: "orders",
            message: .append(AppendRequest(term: 3, prevIndex: 9, prevTerm: 2, commit: 8, entries: []))),
        Envelope(
            from: "a", to: "b", stream: "orders",
            message: .append(
                AppendRequest(
                    term: 3, prevIndex: 9, prevTerm: 2, commit: 9,
                    entries: [
                        entry(10, body: []), entry(11, body: [1, 2, 3], kind: 2),
                        entry(12, body: Array("{\"members\":[]}".utf8), kind: 3),
                        WireEntry(
                            term: 3, index: 13, offset: 10, appendTime: 1, kind: 1, bodyCRC: 5, body: [9],
                            forward: ForwardTag(origin: "follower-β", id: .max)),
                    ]))),
        Envelope(
            from: "b", to: "a", stream: "orders",
            message: .appendReply(AppendReply(term: 3, success: true, index: 12))),
        Envelope(
            from: "b", to: "a", stream: "orders",
            message: .appendReply(AppendReply(term: 4, success: false, index: 5, rejected: 9))),
        Envelope(
            from: "a", to: "c", stream: "orders",
            message: .snapshot(
                SnapshotRequest(
                    term: 5, index: 1000, indexTerm: 4, nextOffset: 990, chain: 0xDEAD_BEEF,
                    membership: Membership(members: [
                        .init(id: "c", address: "10.0.0.3:7000", learner: true),
                        .init(id: "a", address: "10.0.0.1:7000"), .init(id: "ß", address: "[::1]:7000"),
                    ])))),
        Envelope(
            from: "a", to: "c", stream: "orders",
            message: .snapshot(
                SnapshotRequest(
                    term: 5, index: 0, indexTerm: 0, nextOffset: 0, chain: 0, membership: Membership(members: [])))),
        Envelope(
            from: "c", to: "a", stream: "orders",
            message: .snapshotReply(AppendReply(term: 5, success: true, index: 1000))),
        Envelope(from: "a", to: "b", stream: "orders", message: .timeoutNow(term: 42)),
        Envelope(
            from: "b", to: "a", stream: "orders",
            message: .forward(ForwardRequest(id: 1, bodies: [], crcs: []))),
        Envelope(
            from: "b", to: "a", stream: "orders",
            message: .forward(ForwardRequest(id: .max, bodies: [[], [9, 8, 7]], crcs: [0, 0xFFFF_FFFF]))),
        Envelope(
            from: "a", to: "b", stream: "orders",
            message: .forwardReply(
                ForwardReply(id: 77, status: 0, message: "", firstOffset: 117, lastIndex: 120))),
        Envelope(
            from: "a", to: "b", stream: "orders",
            message: .forwardReply(
                ForwardReply(
                    id: 78, status: -5, message: "raft-log: no leader for 'orders' — réessayez", firstOffset: 0,
                    lastIndex: 0))),
    ]

    /// Envelopes with 1 MiB bodies.
    static let large: [Envelope] = [
        Envelope(
            from: "a", to: "b", stream: "big",
            message: .append(
                AppendRequest(
                    term: 3, prevIndex: 0, prevTerm: 0, commit: 0,
                    entries: [entry(1, body: megabyte), entry(2, body: []), entry(3, body: Array(megabyte.prefix(10)))]
                ))),
        Envelope(
            from: "b", to: "a", stream: "big",
            message: .forward(ForwardRequest(id: 2, bodies: [megabyte, []], crcs: [1, 2]))),
    ]
}

/// Little-endian building blocks for hand-made frames.
enum Bytes {
    static func u16(_ value: UInt16) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    static func u32(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    static func u64(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
    static func string(_ value: String) -> [UInt8] { u32(UInt32(value.utf8.count)) + Array(value.utf8) }
    /// A frame: the length of `payload`, then `payload`.
    static func frame(_ payload: [UInt8]) -> [UInt8] { u32(UInt32(payload.count)) + payload }
}

/// Expects `body` to throw a `PeerCodecError` with `code`.
func expectCodecError(
    _ code: PeerCodecError.Code, _ context: String = "", sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> Void
) {
    do {
        try body()
        Issue.record("expected a \(code) error, nothing was thrown \(context)", sourceLocation: sourceLocation)
    } catch let error as PeerCodecError {
        #expect(error.code == code, "\(error.message) \(context)", sourceLocation: sourceLocation)
        #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected a PeerCodecError, got \(error) \(context)", sourceLocation: sourceLocation)
    }
}

/// Every frame decoded from `decoder` until it needs more bytes.
func drain(_ decoder: inout FrameDecoder) throws -> [PeerFrame] {
    var frames: [PeerFrame] = []
    while let frame = try decoder.next() { frames.append(frame) }
    return frames
}

@Suite struct CodecTests {
    static let limit = 4 << 20

    /// (Arguments are indices: a test's name shows its arguments, and two of these hold 1 MiB.)
    @Test(arguments: 0..<(Samples.small.count + Samples.large.count))
    func everyMessageRoundTrips(_ sample: Int) throws {
        let envelope = (Samples.small + Samples.large)[sample]
        let frame = PeerCodec.encode(envelope)
        #expect(frame.count == PeerCodec.encodedSize(of: envelope))
        #expect(Array(frame.prefix(4)) == Bytes.u32(UInt32(frame.count - 4)))
        #expect(frame[4] == PeerCodec.frameType(of: envelope.message).rawValue)
        #expect(Array(frame[5..<9]) == Bytes.u32(UInt32(envelope.from.utf8.count)))
        #expect(try PeerCodec.decode(frame: frame, maxFrameBytes: Self.limit) == envelope)
    }

    @Test func everyMessageTypeIsCovered() {
        let types = Set((Samples.small + Samples.large).map { PeerCodec.frameType(of: $0.message) })
        #expect(types == Set(PeerCodec.FrameType.allCases.filter { $0 != .hello }))
    }

    @Test func appendLayoutIsTheDocumentedOne() throws {
        let entry = Samples.entry(10, body: [0xAA, 0xBB])
        let envelope = Envelope(
            from: "a", to: "b", stream: "s",
            message: .append(AppendRequest(term: 3, prevIndex: 9, prevTerm: 2, commit: 8, entries: [entry])))
        let payload: [UInt8] =
            [5] + Bytes.string("a") + Bytes.string("b") + Bytes.string("s") + Bytes.u64(3) + Bytes.u64(9)
            + Bytes.u64(2) + Bytes.u64(8) + Bytes.u32(1) + Bytes.u64(entry.term) + Bytes.u64(entry.index)
            + Bytes.u64(entry.offset) + Bytes.u64(entry.appendTime) + Bytes.u16(entry.kind) + Bytes.u32(entry.bodyCRC)
            + Bytes.u32(2) + [0xAA, 0xBB] + Bytes.string("") + Bytes.u64(0)
        #expect(PeerCodec.encode(envelope) == Bytes.frame(payload))
    }

    @Test func helloRoundTripsAndHasTheDocumentedLayout() throws {
        let hello = PeerCodec.encodeHello(node: "node-α")
        #expect(hello == Bytes.frame([0] + Array("PXRN".utf8) + Bytes.u16(1) + Bytes.string("node-α")))
        #expect(try PeerCodec.decodeHello(frame: hello) == "node-α")
        var decoder = FrameDecoder(maxFrameBytes: Self.limit)
        decoder.append(hello)
        #expect(try drain(&decoder) == [.hello("node-α")])
        #expect(!decoder.awaitingHello)
    }

    /// The streaming decoder gives the same frames however the stream is cut into reads.
    @Test func decoderIsIndependentOfHowBytesAreSplit() throws {
        let envelopes = Array(Samples.small.prefix(8))
        let stream = PeerCodec.encodeHello(node: "a") + envelopes.flatMap(PeerCodec.encode)
        let expected = [PeerFrame.hello("a")] + envelopes.map(PeerFrame.envelope)
        for split in 0...stream.count {
            var decoder = FrameDecoder(maxFrameBytes: Self.limit)
            decoder.append(stream[..<split])
            var frames = try drain(&decoder)
            decoder.append(stream[split...])
            frames += try drain(&decoder)
            #expect(frames == expected, "split at \(split)")
            #expect(decoder.bufferedBytes == 0)
            try decoder.finish()
        }
        var decoder = FrameDecoder(maxFrameBytes: Self.limit)
        var frames: [PeerFrame] = []
        for byte in stream {
            decoder.append([byte])
            frames += try drain(&decoder)
        }
        #expect(frames == expected)
    }

    @Test func largeFramesStreamInPieces() throws {
        let stream = PeerCodec.encodeHello(node: "a") + Samples.large.flatMap(PeerCodec.encode)
        var decoder = FrameDecoder(maxFrameBytes: Self.limit)
        var frames: [PeerFrame] = []
        var position = 0
        while position < stream.count {
            let end = min(stream.count, position + 65_521)
            decoder.append(stream[position..<end])
            frames += try drain(&decoder)
            position = end
        }
        #expect(frames == [.hello("a")] + Samples.large.map(PeerFrame.envelope))
    }

    /// Every proper prefix of a frame is refused as truncated by the whole-frame decoder, and makes the streaming
    /// decoder wait; a frame whose length field is cut to match fails inside whichever field it ends in.
    @Test(arguments: Samples.small.indices)
    func everyTruncationFailsCleanly(_ sample: Int) throws {
        let envelope = Samples.small[sample]
        let frame = PeerCodec.encode(envelope)
        for cut in 0..<frame.count {
            let prefix = Array(frame[..<cut])
            expectCodecError(.truncated, "at \(cut) of \(frame.count)") {
                _ = try PeerCodec.decode(frame: prefix, maxFrameBytes: Self.limit)
            }
            var decoder = FrameDecoder(maxFrameBytes: Self.limit, expectHello: false)
            decoder.append(prefix)
            #expect(try decoder.next() == nil)
            #expect(decoder.bufferedBytes == cut)
            if cut > 0 {
                expectCodecError(.truncated, "at end of stream after \(cut)") { try decoder.finish() }
            }
        }
        for cut in 1..<(frame.count - 4) {
            let shortened = Bytes.frame(Array(frame[4..<(4 + cut)]))
            expectCodecError(.truncated, "payload cut at \(cut)") {
                _ = try PeerCodec.decode(frame: shortened, maxFrameBytes: Self.limit)
            }
            var decoder = FrameDecoder(maxFrameBytes: Self.limit, expectHello: false)
            decoder.append(shortened)
            expectCodecError(.truncated, "streamed, payload cut at \(cut)") { _ = try decoder.next() }
        }
    }

    @Test func everyTruncatedHelloFailsCleanly() throws {
        let hello = PeerCodec.encodeHello(node: "node-a")
        for cut in 0..<hello.count {
            expectCodecError(.truncated, "at \(cut)") { _ = try PeerCodec.decodeHello(frame: Array(hello[..<cut])) }
        }
    }

    @Test func oversizeLengthIsRefusedBeforeTheBytesArrive() throws {
        let envelope = Samples.large[0]
        let frame = PeerCodec.encode(envelope)
        expectCodecError(.oversize) { _ = try PeerCodec.decode(frame: frame, maxFrameBytes: frame.count - 5) }
        #expect(try PeerCodec.decode(frame: frame, maxFrameBytes: frame.count - 4) == envelope)

        var decoder = FrameDecoder(maxFrameBytes: 1024, expectHello: false)
        decoder.append(Bytes.u32(1025))
        expectCodecError(.oversize) { _ = try decoder.next() }
        var atLimit = FrameDecoder(maxFrameBytes: 1024, expectHello: false)
        atLimit.append(Bytes.u32(1024))
        #expect(try atLimit.next() == nil)

        var beforeHello = FrameDecoder(maxFrameBytes: Self.limit)
        beforeHello.append(Bytes.u32(UInt32(PeerCodec.maxHelloBytes + 1)))
        expectCodecError(.oversize) { _ = try beforeHello.next() }
        var huge = FrameDecoder(maxFrameBytes: Self.limit)
        huge.append(Bytes.u32(.max))
        expectCodecError(.oversize) { _ = try huge.next() }
    }

    @Test func unknownTypeIsRefused() throws {
        let payload = [UInt8(99)] + Bytes.string("a") + Bytes.string("b") + Bytes.string("s") + Bytes.u64(1)
        expectCodecError(.unknownType) { _ = try PeerCodec.decode(frame: Bytes.frame(payload), maxFrameBytes: 1024) }
        let misplacedHello = PeerCodec.encodeHello(node: "a")
        expectCodecError(.unknownType) { _ = try PeerCodec.decode(frame: misplacedHello, maxFrameBytes: 1024) }

        var decoder = FrameDecoder(maxFrameBytes: 1024)
        decoder.append(misplacedHello + misplacedHello)
        #expect(try decoder.next() == .hello("a"))
        expectCodecError(.unknownType) { _ = try decoder.next() }
    }

    @Test func badUTF8IsRefused() throws {
        let payload =
            [UInt8(9)] + Bytes.string("a") + Bytes.string("b") + Bytes.u32(3) + [0x61, 0xFF, 0xFE]
            + Bytes.u64(1)
        expectCodecError(.badUTF8) { _ = try PeerCodec.decode(frame: Bytes.frame(payload), maxFrameBytes: 1024) }
        let overlong = [UInt8(9)] + Bytes.u32(2) + [0xC0, 0x80] + Bytes.string("b") + Bytes.string("s") + Bytes.u64(1)
        expectCodecError(.badUTF8) { _ = try PeerCodec.decode(frame: Bytes.frame(overlong), maxFrameBytes: 1024) }
    }

    @Test func trailingBytesAreRefused() throws {
        let frame = PeerCodec.encode(Samples.small[0])
        let padded = Bytes.frame(Array(frame[4...]) + [0])
        expectCodecError(.trailingBytes) { _ = try PeerCodec.decode(frame: padded, maxFrameBytes: 1024) }
        expectCodecError(.trailingBytes) { _ = try PeerCodec.decode(frame: frame + [0], maxFrameBytes: 1024) }
        var decoder = FrameDecoder(maxFrameBytes: 1024, expectHello: false)
        decoder.append(padded)
        expectCodecError(.trailingBytes) { _ = try decoder.next() }
        let hello = PeerCodec.encodeHello(node: "a")
        expectCodecError(.trailingBytes) { _ = try PeerCodec.decodeHello(frame: Bytes.frame(Array(hello[4...]) + [1])) }
    }

    @Test func boolOutOfRangeIsRefused() throws {
        let payload =
            [UInt8(3)] + Bytes.string("a") + Bytes.string("b") + Bytes.string("s") + Bytes.u64(1)
            + Bytes.u64(2) + Bytes.u64(3) + [2]
        expectCodecError(.badValue) { _ = try PeerCodec.decode(frame: Bytes.frame(payload), maxFrameBytes: 1024) }
    }

    /// A forged count is checked against the bytes that follow before anything is reserved for it.
    @Test func forgedCountsAreRefusedWithoutAllocating() throws {
        let header =
            [UInt8(5)] + Bytes.string("a") + Bytes.string("b") + Bytes.string("s") + Bytes.u64(1)
            + Bytes.u64(0) + Bytes.u64(0) + Bytes.u64(0)
        expectCodecError(.truncated) {
            _ = try PeerCodec.decode(frame: Bytes.frame(header + Bytes.u32(.max)), maxFrameBytes: 1024)
        }
        let forward =
            [UInt8(10)] + Bytes.string("a") + Bytes.string("b") + Bytes.string("s") + Bytes.u64(1)
            + Bytes.u32(.max)
        expectCodecError(.truncated) { _ = try PeerCodec.decode(frame: Bytes.frame(forward), maxFrameBytes: 1024) }
        let body =
            [UInt8(10)] + Bytes.string("a") + Bytes.string("b") + Bytes.string("s") + Bytes.u64(1)
            + Bytes.u32(1) + Bytes.u32(.max)
        expectCodecError(.truncated) { _ = try PeerCodec.decode(frame: Bytes.frame(body), maxFrameBytes: 1024) }
    }

    /// An append no leader sends (the defect: entries not following `prevIndex` one by one reached a
    /// `precondition` in `RaftNode` and killed the node) is refused by the codec, so its connection closes.
    @Test(arguments: [
        ("a gap", [Samples.entry(10, body: []), Samples.entry(12, body: [])], UInt64(3), UInt64(2)),
        ("not after prevIndex", [Samples.entry(11, body: [])], 3, 2),
        ("a repeated index", [Samples.entry(10, body: []), Samples.entry(10, body: [])], 3, 2),
        ("an entry term after the leader's", [Samples.entry(10, body: [])], 2, 2),
        ("prevTerm after the leader's term", [], 3, 4),
        ("an unknown kind", [Samples.entry(10, body: [], kind: 9)], 3, 2),
        ("the index overflowing", [Samples.entry(0, body: [])], 3, 2),
        (
            "an event at the last offset",
            [WireEntry(term: 3, index: 10, offset: .max, appendTime: 1, kind: 1, bodyCRC: 0, body: [])], 3, 2
        ),
    ])
    func inconsistentAppendsAreRefused(_ name: String, _ entries: [WireEntry], _ term: UInt64, _ prevTerm: UInt64)
        throws
    {
        // Samples.entry makes entries of term 3.
        let prevIndex: UInt64 = name == "the index overflowing" ? .max : 9
        let envelope = Envelope(
            from: "a", to: "b", stream: "s",
            message: .append(
                AppendRequest(term: term, prevIndex: prevIndex, prevTerm: prevTerm, commit: 0, entries: entries)))
        expectCodecError(.badValue, name) {
            _ = try PeerCodec.decode(frame: PeerCodec.encode(envelope), maxFrameBytes: Self.limit)
        }
    }

    @Test func decreasingEntryTermsAndVotesFromTheFutureAreRefused() throws {
        var decreasing = AppendRequest(
            term: 5, prevIndex: 9, prevTerm: 2, commit: 0,
            entries: [Samples.entry(10, body: []), Samples.entry(11, body: [])])
        decreasing.entries[1].term = 2
        let append = Envelope(from: "a", to: "b", stream: "s", message: .append(decreasing))
        expectCodecError(.badValue) {
            _ = try PeerCodec.decode(frame: PeerCodec.encode(append), maxFrameBytes: Self.limit)
        }
        let vote = Envelope(
            from: "a", to: "b", stream: "s", message: .vote(VoteRequest(term: 2, lastIndex: 1, lastTerm: 3)))
        expectCodecError(.badValue) {
            _ = try PeerCodec.decode(frame: PeerCodec.encode(vote), maxFrameBytes: Self.limit)
        }
    }

    @Test func strangersAndOtherVersionsAreRefusedAtHello() throws {
        var http = FrameDecoder(maxFrameBytes: Self.limit)
        http.append(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        expectCodecError(.badMagic) { _ = try http.next() }

        var early = FrameDecoder(maxFrameBytes: Self.limit)
        early.append(Array(PeerCodec.encode(Samples.small[0]).prefix(9)))
        expectCodecError(.badMagic) { _ = try early.next() }

        let badMagic = Bytes.frame([0] + Array("PXRX".utf8) + Bytes.u16(1) + Bytes.string("a"))
        expectCodecError(.badMagic) { _ = try PeerCodec.decodeHello(frame: badMagic) }
        var streamed = FrameDecoder(maxFrameBytes: Self.limit)
        streamed.append(badMagic)
        expectCodecError(.badMagic) { _ = try streamed.next() }

        let version3 = Bytes.frame([0] + Array("PXRN".utf8) + Bytes.u16(3) + Bytes.string("a"))
        expectCodecError(.badVersion) { _ = try PeerCodec.decodeHello(frame: version3) }
        var newer = FrameDecoder(maxFrameBytes: Self.limit)
        newer.append(version3)
        expectCodecError(.badVersion) { _ = try newer.next() }
    }
}

/// Terms, indices and offsets above 2^62 are refused before they reach the state machine, which adds one to
/// them (a follower told `timeoutNow` at term `UInt64.max` campaigned to `term + 1` and trapped: a libFuzzer
/// finding, `Tests/Fuzz/corpus/raft-peer/timeout-now-max-term`).
@Suite struct PeerCounterBoundTests {
    @Test(arguments: [
        ("timeout-now term", RaftMessage.timeoutNow(term: .max)),
        ("vote term", .vote(VoteRequest(term: .max, lastIndex: 1, lastTerm: 1))),
        ("pre-vote last index", .preVote(VoteRequest(term: 2, lastIndex: .max, lastTerm: 1))),
        ("vote reply term", .voteReply(VoteReply(term: PeerCodec.maxCounter + 1, granted: true))),
        ("append reply index", .appendReply(AppendReply(term: 1, success: true, index: .max))),
        ("append commit", .append(AppendRequest(term: 1, prevIndex: 0, prevTerm: 0, commit: .max, entries: []))),
        (
            "snapshot index",
            .snapshot(
                SnapshotRequest(
                    term: 1, index: .max, indexTerm: 1, nextOffset: 0, chain: 0, membership: Membership(members: [])))
        ),
    ])
    func countersAboveTheBoundAreRefused(_ name: String, _ message: RaftMessage) {
        let frame = PeerCodec.encode(Envelope(from: "a", to: "b", stream: "s", message: message))
        #expect(throws: PeerCodecError.self, "\(name)") {
            _ = try PeerCodec.decode(frame: frame, maxFrameBytes: 1 << 16)
        }
    }

    @Test func theBoundItselfIsAccepted() throws {
        let frame = PeerCodec.encode(
            Envelope(from: "a", to: "b", stream: "s", message: .timeoutNow(term: PeerCodec.maxCounter)))
        let envelope = try PeerCodec.decode(frame: frame, maxFrameBytes: 1 << 16)
        #expect(envelope.message == .timeoutNow(term: PeerCodec.maxCounter))
    }
}
