/// The binary encoding of `Envelope`s between raft-log nodes; the plugin README's "Node-to-node protocol"
/// section is the reference for the layout.
///
/// A frame is `u32` length of what follows, `u8` frame type, then the fields of that type. All integers are
/// little-endian, a string is `u32` length + UTF-8, a byte array `u32` length + bytes, a bool one byte (0 or 1).
/// A connection starts with a HELLO frame (`PXRN`, `u16` version, the sender's node id); every later frame is
/// an envelope: `from`, `to`, `stream`, then the message's fields.
public enum PeerCodec {
    /// The HELLO frame's magic, "PXRN".
    public static let magic: [UInt8] = Array("PXRN".utf8)
    /// The protocol version of a HELLO without a proof; the envelopes that follow are the same in both versions.
    public static let version: UInt16 = 1
    /// The version of a HELLO that carries a proof of the cluster secret (timestamp, nonce, HMAC-SHA256).
    /// A HELLO of any other version is refused.
    public static let authenticatedVersion: UInt16 = 2
    /// The largest HELLO accepted (the bytes after its length field): a node id of up to 1,013 bytes.
    public static let maxHelloBytes = 1024
    /// The largest term, index or offset a peer's frame may carry (2^62): the state machine adds one to
    /// each, and no honest cluster gets near it.
    public static let maxCounter: UInt64 = 1 << 62

    /// The `u8` after a frame's length.
    public enum FrameType: UInt8, Sendable, CaseIterable {
        case hello = 0
        case preVote = 1
        case preVoteReply = 2
        case vote = 3
        case voteReply = 4
        case append = 5
        case appendReply = 6
        case snapshot = 7
        case snapshotReply = 8
        case timeoutNow = 9
        case forward = 10
        case forwardReply = 11
    }

    /// The frame type that carries `message`.
    public static func frameType(of message: RaftMessage) -> FrameType {
        switch message {
        case .preVote: .preVote
        case .preVoteReply: .preVoteReply
        case .vote: .vote
        case .voteReply: .voteReply
        case .append: .append
        case .appendReply: .appendReply
        case .snapshot: .snapshot
        case .snapshotReply: .snapshotReply
        case .timeoutNow: .timeoutNow
        case .forward: .forward
        case .forwardReply: .forwardReply
        }
    }

    // MARK: Encoding

    /// The HELLO frame that opens a connection from `node`, length field included: version 1 without a cluster
    /// secret, version 2 with the proof that the sender knows it (see `PeerSecret`).
    public static func encodeHello(node: NodeID, secret: PeerSecret? = nil) -> [UInt8] {
        guard let secret else { return encodeHello(node: node, version: version, proof: nil) }
        let timestamp = PeerSecret.nowMs()
        let nonce = PeerSecret.randomNonce()
        // The MAC covers the payload up to and including the nonce; the frame is built twice (cheap: once a
        // connection) so that the signed bytes are exactly the ones sent.
        let unsigned = encodeHello(
            node: node, version: authenticatedVersion, proof: HelloProof(timestampMs: timestamp, nonce: nonce, mac: []))
        let signed = Array(unsigned[4..<(unsigned.count - 4)])
        return encodeHello(
            node: node, version: authenticatedVersion,
            proof: HelloProof(timestampMs: timestamp, nonce: nonce, mac: secret.mac(signed)))
    }

    private static func encodeHello(node: NodeID, version: UInt16, proof: HelloProof?) -> [UInt8] {
        var size = 4 + 1 + 4 + 2 + stringSize(node)
        if let proof { size += 8 + 4 + proof.nonce.count + 4 + proof.mac.count }
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            var writer = WireWriter(buffer.baseAddress.map(UnsafeMutableRawPointer.init))
            writer.u32(UInt32(size - 4))
            writer.u8(FrameType.hello.rawValue)
            writer.u8(magic[0])
            writer.u8(magic[1])
            writer.u8(magic[2])
            writer.u8(magic[3])
            writer.u16(version)
            writer.string(node)
            if let proof {
                writer.u64(proof.timestampMs)
                writer.bytes(proof.nonce)
                writer.bytes(proof.mac)
            }
            count = writer.offset
        }
    }

    /// The size of `envelope`'s frame, length field included: the encoder run without a buffer, so the two
    /// cannot disagree.
    public static func encodedSize(of envelope: Envelope) -> Int {
        var counter = WireWriter(nil)
        write(envelope, length: 0, into: &counter)
        return counter.offset
    }

    private static func write(_ envelope: Envelope, length: UInt32, into writer: inout WireWriter) {
        writer.u32(length)
        writer.u8(frameType(of: envelope.message).rawValue)
        writer.string(envelope.from)
        writer.string(envelope.to)
        writer.string(envelope.stream)
        writer.message(envelope.message)
    }

    /// `envelope` as one frame, length field included, in a single allocation of the exact size.
    /// - Important: the frame must stay below 4 GiB (`encodedSize(of:)`); `PeerTransport` refuses anything
    ///   beyond its `maxFrameBytes` before encoding.
    public static func encode(_ envelope: Envelope) -> [UInt8] {
        let size = encodedSize(of: envelope)
        return [UInt8](unsafeUninitializedCapacity: size) { buffer, count in
            count = encode(envelope, size: size, into: UnsafeMutableRawBufferPointer(buffer))
        }
    }

    /// Writes `envelope`'s frame of `size` bytes (its `encodedSize`) into `buffer`; returns `size`.
    static func encode(_ envelope: Envelope, size: Int, into buffer: UnsafeMutableRawBufferPointer) -> Int {
        precondition(size <= Int(UInt32.max) && buffer.count >= size, "a node-to-node frame of \(size) bytes")
        var writer = WireWriter(buffer.baseAddress)
        write(envelope, length: UInt32(size - 4), into: &writer)
        return size
    }

    static func stringSize(_ string: String) -> Int { 4 + string.utf8.count }

    /// A `WireEntry`'s fixed fields: term, index, offset, append time, kind, body CRC.
    static let entryHeaderSize = 8 * 4 + 2 + 4

    // MARK: Decoding

    /// Decodes one whole envelope frame, length field included.
    /// - Throws: `PeerCodecError` when the bytes are not exactly one valid envelope frame of at most
    ///   `maxFrameBytes` (after the length field).
    public static func decode(frame: [UInt8], maxFrameBytes: Int) throws(PeerCodecError) -> Envelope {
        try withBytes(of: frame) { (raw) throws(PeerCodecError) -> Envelope in
            let length = try payloadLength(raw, limit: maxFrameBytes)
            try checkWhole(raw, length: length)
            return try decodeEnvelope(payload: UnsafeRawBufferPointer(rebasing: raw[4...]))
        }
    }

    /// Decodes one whole HELLO frame, length field included, and returns the sender's node id.
    /// - Throws: `PeerCodecError` on anything but a valid HELLO of version 1 or 2.
    public static func decodeHello(frame: [UInt8]) throws(PeerCodecError) -> NodeID {
        try decodeProvenHello(frame: frame).node
    }

    /// Decodes one whole HELLO frame, length field included: the sender and, in version 2, its proof.
    public static func decodeProvenHello(frame: [UInt8]) throws(PeerCodecError) -> (node: NodeID, proof: HelloProof?) {
        try withBytes(of: frame) { (raw) throws(PeerCodecError) -> (node: NodeID, proof: HelloProof?) in
            try checkHelloStart(raw)
            let length = try payloadLength(raw, limit: maxHelloBytes)
            try checkWhole(raw, length: length)
            return try decodeHello(payload: UnsafeRawBufferPointer(rebasing: raw[4...]))
        }
    }

    /// `Array.withUnsafeBytes` with a typed error (it only rethrows `any Error`).
    static func withBytes<T>(
        of bytes: [UInt8], _ body: (UnsafeRawBufferPointer) throws(PeerCodecError) -> T
    ) throws(PeerCodecError) -> T {
        try bytes.withUnsafeBytes { raw in Result { () throws(PeerCodecError) in try body(raw) } }.get()
    }

    /// The length field at the start of `raw`, checked against `limit`.
    static func payloadLength(_ raw: UnsafeRawBufferPointer, limit: Int) throws(PeerCodecError) -> Int {
        guard raw.count >= 4 else {
            throw PeerCodecError(.truncated, "a frame of \(raw.count) bytes ends inside its 4-byte length field")
        }
        let length = Int(UInt32(littleEndian: raw.loadUnaligned(as: UInt32.self)))
        guard length <= limit else {
            throw PeerCodecError(
                .oversize, "a frame announces \(length) bytes, more than the limit of \(limit) (maxFrameBytes)")
        }
        guard length >= 1 else { throw PeerCodecError(.truncated, "a frame of length 0 has no type byte") }
        return length
    }

    private static func checkWhole(_ raw: UnsafeRawBufferPointer, length: Int) throws(PeerCodecError) {
        guard raw.count >= 4 + length else {
            throw PeerCodecError(
                .truncated, "a frame announces \(length) bytes after its length field but only \(raw.count - 4) follow")
        }
        guard raw.count == 4 + length else {
            throw PeerCodecError(
                .trailingBytes, "\(raw.count - 4 - length) bytes follow the frame's \(length) announced bytes")
        }
    }

    /// Checks as much of a connection's first bytes as are there: the frame type and the magic of a HELLO.
    /// A stranger (say an HTTP client) is refused after its first 9 bytes whatever it announces as a length.
    static func checkHelloStart(_ raw: UnsafeRawBufferPointer) throws(PeerCodecError) {
        let head = Array(raw.prefix(9))
        guard head.count >= 5 else { return }
        let startsWell =
            head[4] == FrameType.hello.rawValue && zip(head.dropFirst(5), magic).allSatisfy { $0.0 == $0.1 }
        guard startsWell else {
            let shown = head.map { hex($0) }.joined(separator: " ")
            throw PeerCodecError(
                .badMagic,
                "the connection does not start with a node-to-node HELLO frame (type 0, magic \"PXRN\"); "
                    + "its first bytes are \(shown)")
        }
    }

    static func decodeHello(payload: UnsafeRawBufferPointer) throws(PeerCodecError) -> (
        node: NodeID, proof: HelloProof?
    ) {
        var reader = WireReader(payload, type: .hello)
        _ = try reader.u8("type")
        for expected in magic {
            guard try reader.u8("magic") == expected else {
                throw PeerCodecError(.badMagic, "the HELLO frame's magic is not \"PXRN\"")
            }
        }
        let peerVersion = try reader.u16("version")
        guard peerVersion == version || peerVersion == authenticatedVersion else {
            throw PeerCodecError(
                .badVersion,
                "the peer speaks node-to-node protocol version \(peerVersion); this node speaks versions \(version) "
                    + "and \(authenticatedVersion)")
        }
        let node = try reader.string("node id")
        guard peerVersion == authenticatedVersion else {
            try reader.finish()
            return (node, nil)
        }
        let timestamp = try reader.u64("timestamp")
        let nonce = try reader.bytes("nonce")
        let signedEnd = reader.offset
        let mac = try reader.bytes("mac")
        try reader.finish()
        guard nonce.count == PeerSecret.nonceBytes, mac.count == PeerSecret.macBytes else {
            throw PeerCodecError(
                .badValue,
                "the HELLO's proof has a \(nonce.count)-byte nonce and a \(mac.count)-byte MAC; expected "
                    + "\(PeerSecret.nonceBytes) and \(PeerSecret.macBytes)")
        }
        var proof = HelloProof(timestampMs: timestamp, nonce: nonce, mac: mac)
        proof.signed = Array(UnsafeRawBufferPointer(rebasing: payload[0..<signedEnd]))
        return (node, proof)
    }

    /// Decodes an envelope frame's bytes after its length field: type, addressing and message, exactly.
    static func decodeEnvelope(payload: UnsafeRawBufferPointer) throws(PeerCodecError) -> Envelope {
        var reader = WireReader(payload, type: nil)
        let code = try reader.u8("type")
        guard let type = FrameType(rawValue: code), type != .hello else {
            throw PeerCodecError(
                .unknownType,
                code == 0
                    ? "a HELLO frame arrived after the connection's first frame"
                    : "unknown frame type \(code) (this node knows 1...\(FrameType.allCases.count - 1))")
        }
        reader.type = type
        let from = try reader.string("from")
        let to = try reader.string("to")
        let stream = try reader.string("stream")
        let message = try reader.message(type)
        try reader.finish()
        return Envelope(from: from, to: to, stream: stream, message: message)
    }

    static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 15)]])
    }
}

/// Why bytes from a peer are not a valid frame: the connection that carried them is closed.
public struct PeerCodecError: Error, Equatable, CustomStringConvertible {
    public enum Code: Sendable, Equatable {
        /// The bytes end inside a field (or a length announces more than the frame holds).
        case truncated
        /// A frame's length is beyond the limit (`maxFrameBytes`, or `PeerCodec.maxHelloBytes` for a HELLO).
        case oversize
        /// A frame type this node does not know, or a HELLO where an envelope belongs.
        case unknownType
        /// A string field that is not valid UTF-8.
        case badUTF8
        /// A field with a value outside its range, such as a bool that is neither 0 nor 1.
        case badValue
        /// Bytes left in a frame after its last field.
        case trailingBytes
        /// The connection does not start with a HELLO frame of this protocol.
        case badMagic
        /// The HELLO names a protocol version this node does not speak.
        case badVersion
    }

    public var code: Code
    /// What is wrong, naming the frame and the field.
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "node-to-node protocol error: \(message)" }
}

/// Appends little-endian fields at a raw pointer whose room the caller computed exactly.
struct WireWriter {
    let base: UnsafeMutableRawPointer?
    var offset = 0

    init(_ base: UnsafeMutableRawPointer?) { self.base = base }

    mutating func u8(_ value: UInt8) {
        base?.storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
        offset += 1
    }

    mutating func u16(_ value: UInt16) {
        base?.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt16.self)
        offset += 2
    }

    mutating func u32(_ value: UInt32) {
        base?.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt32.self)
        offset += 4
    }

    mutating func u64(_ value: UInt64) {
        base?.storeBytes(of: value.littleEndian, toByteOffset: offset, as: UInt64.self)
        offset += 8
    }

    mutating func bool(_ value: Bool) { u8(value ? 1 : 0) }

    mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        if let source = bytes.baseAddress, bytes.count > 0 {
            base?.advanced(by: offset).copyMemory(from: source, byteCount: bytes.count)
        }
        offset += bytes.count
    }

    mutating func bytes(_ bytes: [UInt8]) {
        u32(UInt32(bytes.count))
        bytes.withUnsafeBytes { raw($0) }
    }

    mutating func string(_ string: String) {
        u32(UInt32(string.utf8.count))
        let copied: Void? = string.utf8.withContiguousStorageIfAvailable { raw(UnsafeRawBufferPointer($0)) }
        if copied == nil {
            for byte in string.utf8 { u8(byte) }
        }
    }

    mutating func message(_ message: RaftMessage) {
        switch message {
        case .preVote(let request), .vote(let request):
            u64(request.term)
            u64(request.lastIndex)
            u64(request.lastTerm)
            bool(request.transfer)
        case .preVoteReply(let reply), .voteReply(let reply):
            u64(reply.term)
            bool(reply.granted)
        case .append(let request):
            u64(request.term)
            u64(request.prevIndex)
            u64(request.prevTerm)
            u64(request.commit)
            u32(UInt32(request.entries.count))
            for entry in request.entries {
                u64(entry.term)
                u64(entry.index)
                u64(entry.offset)
                u64(entry.appendTime)
                u16(entry.kind)
                u32(entry.bodyCRC)
                bytes(entry.body)
                string(entry.forward?.origin ?? "")
                u64(entry.forward?.id ?? 0)
            }
        case .appendReply(let reply), .snapshotReply(let reply):
            u64(reply.term)
            bool(reply.success)
            u64(reply.index)
            u64(reply.rejected)
        case .snapshot(let request):
            u64(request.term)
            u64(request.index)
            u64(request.indexTerm)
            u64(request.nextOffset)
            u32(request.chain)
            u32(UInt32(request.membership.members.count))
            for member in request.membership.members {
                string(member.id)
                string(member.address)
                bool(member.learner)
            }
        case .timeoutNow(let term):
            u64(term)
        case .forward(let request):
            u64(request.id)
            u32(UInt32(request.bodies.count))
            for body in request.bodies { bytes(body) }
            u32(UInt32(request.crcs.count))
            for crc in request.crcs { u32(crc) }
        case .forwardReply(let reply):
            u64(reply.id)
            u32(UInt32(bitPattern: reply.status))
            string(reply.message)
            u64(reply.firstOffset)
            u64(reply.lastIndex)
        }
    }
}

/// Reads little-endian fields from a frame's bytes, throwing on anything out of bounds or out of range.
struct WireReader {
    let bytes: UnsafeRawBufferPointer
    var offset = 0
    /// The type of the frame being read once known, for error messages.
    var type: PeerCodec.FrameType?

    init(_ bytes: UnsafeRawBufferPointer, type: PeerCodec.FrameType?) {
        self.bytes = bytes
        self.type = type
    }

    var remaining: Int { bytes.count - offset }

    /// "the append frame", named only when an error is thrown (describing an enum is not free).
    private var frame: String { type.map { "the \($0) frame" } ?? "the frame" }

    /// Consumes `count` bytes of `field` (`suffix` is appended to its name in an error) and returns where
    /// they start.
    private mutating func take(_ count: Int, _ field: String, _ suffix: String = "") throws(PeerCodecError) -> Int {
        guard count <= remaining else {
            throw PeerCodecError(
                .truncated,
                "\(frame) ends inside its \(field)\(suffix) field (at byte \(offset) of \(bytes.count) after the "
                    + "length field, \(count) bytes needed)")
        }
        defer { offset += count }
        return offset
    }

    mutating func u8(_ field: String) throws(PeerCodecError) -> UInt8 {
        bytes[try take(1, field)]
    }

    mutating func u16(_ field: String) throws(PeerCodecError) -> UInt16 {
        UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(2, field), as: UInt16.self))
    }

    mutating func u32(_ field: String) throws(PeerCodecError) -> UInt32 {
        UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(4, field), as: UInt32.self))
    }

    mutating func u64(_ field: String) throws(PeerCodecError) -> UInt64 {
        UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(8, field), as: UInt64.self))
    }

    /// A term, log index or offset: at most `PeerCodec.maxCounter`. The state machine adds one to each
    /// (a campaign to `term + 1`, the entry after `index`), so a peer's value near `UInt64.max` would trap
    /// the node on that addition; no honest cluster reaches 2^62 elections or entries.
    mutating func counter(_ field: String) throws(PeerCodecError) -> UInt64 {
        let value = try u64(field)
        guard value <= PeerCodec.maxCounter else {
            throw PeerCodecError(
                .badValue, "\(frame)'s \(field) field is \(value), above \(PeerCodec.maxCounter) (2^62)")
        }
        return value
    }

    mutating func bool(_ field: String) throws(PeerCodecError) -> Bool {
        let value = try u8(field)
        guard value <= 1 else {
            throw PeerCodecError(.badValue, "\(frame)'s \(field) field is \(value), not a bool (0 or 1)")
        }
        return value == 1
    }

    /// A `u32` count of items each at least `minimumSize` bytes, checked against the bytes that remain so that
    /// a forged count cannot make the decoder reserve memory the frame does not hold.
    mutating func count(_ field: String, minimumSize: Int) throws(PeerCodecError) -> Int {
        let count = Int(try u32(field))
        guard count <= remaining / minimumSize else {
            throw PeerCodecError(
                .truncated,
                "\(frame) announces \(count) \(field) but only \(remaining) bytes follow "
                    + "(each takes at least \(minimumSize))")
        }
        return count
    }

    private mutating func slice(_ field: String) throws(PeerCodecError) -> UnsafeRawBufferPointer {
        let length = Int(
            UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: try take(4, field, " length"), as: UInt32.self)))
        let start = try take(length, field)
        return UnsafeRawBufferPointer(rebasing: bytes[start..<start + length])
    }

    mutating func bytes(_ field: String) throws(PeerCodecError) -> [UInt8] {
        Array(try slice(field))
    }

    mutating func string(_ field: String) throws(PeerCodecError) -> String {
        let utf8 = try slice(field)
        guard let string = String(validating: utf8.bindMemory(to: UInt8.self), as: UTF8.self) else {
            throw PeerCodecError(.badUTF8, "\(frame)'s \(field) field is not valid UTF-8")
        }
        return string
    }

    func finish() throws(PeerCodecError) {
        guard remaining == 0 else {
            throw PeerCodecError(
                .trailingBytes,
                "\(remaining) bytes follow the last field of \(frame) (\(bytes.count) bytes after the length field)")
        }
    }

    mutating func message(_ type: PeerCodec.FrameType) throws(PeerCodecError) -> RaftMessage {
        switch type {
        case .hello:
            throw PeerCodecError(.unknownType, "a HELLO frame arrived after the connection's first frame")
        case .preVote: return .preVote(try voteRequest())
        case .vote: return .vote(try voteRequest())
        case .preVoteReply: return .preVoteReply(try voteReply())
        case .voteReply: return .voteReply(try voteReply())
        case .append: return .append(try appendRequest())
        case .appendReply: return .appendReply(try appendReply())
        case .snapshotReply: return .snapshotReply(try appendReply())
        case .snapshot: return .snapshot(try snapshotRequest())
        case .timeoutNow: return .timeoutNow(term: try counter("term"))
        case .forward: return .forward(try forwardRequest())
        case .forwardReply:
            return .forwardReply(
                ForwardReply(
                    id: try u64("id"), status: Int32(bitPattern: try u32("status")), message: try string("message"),
                    firstOffset: try counter("firstOffset"), lastIndex: try counter("lastIndex")))
        }
    }

    private mutating func voteRequest() throws(PeerCodecError) -> VoteRequest {
        let request = VoteRequest(
            term: try counter("term"), lastIndex: try counter("lastIndex"), lastTerm: try counter("lastTerm"),
            transfer: try bool("transfer"))
        guard request.lastTerm <= request.term else {
            throw PeerCodecError(
                .badValue, "the vote request's last log term \(request.lastTerm) is after its term \(request.term)")
        }
        return request
    }

    private mutating func voteReply() throws(PeerCodecError) -> VoteReply {
        VoteReply(term: try counter("term"), granted: try bool("granted"))
    }

    private mutating func appendRequest() throws(PeerCodecError) -> AppendRequest {
        let term = try counter("term")
        let prevIndex = try counter("prevIndex")
        let prevTerm = try counter("prevTerm")
        let commit = try counter("commit")
        let count = try count("entries", minimumSize: PeerCodec.entryHeaderSize + 4 + 4 + 8)
        var entries: [WireEntry] = []
        entries.reserveCapacity(count)
        for _ in 0..<count {
            var entry = WireEntry(
                term: try counter("entry term"), index: try counter("entry index"), offset: try counter("entry offset"),
                appendTime: try u64("entry appendTime"), kind: try u16("entry kind"),
                bodyCRC: try u32("entry bodyCRC"), body: try bytes("entry body"))
            let origin = try string("entry forward origin")
            let id = try u64("entry forward id")
            if !origin.isEmpty { entry.forward = ForwardTag(origin: origin, id: id) }
            entries.append(entry)
        }
        let request = AppendRequest(
            term: term, prevIndex: prevIndex, prevTerm: prevTerm, commit: commit, entries: entries)
        if let problem = request.inconsistency { throw PeerCodecError(.badValue, "the append frame: \(problem)") }
        return request
    }

    private mutating func appendReply() throws(PeerCodecError) -> AppendReply {
        AppendReply(
            term: try counter("term"), success: try bool("success"), index: try counter("index"),
            rejected: try counter("rejected"))
    }

    private mutating func snapshotRequest() throws(PeerCodecError) -> SnapshotRequest {
        let term = try counter("term")
        let index = try counter("index")
        let indexTerm = try counter("indexTerm")
        let nextOffset = try counter("nextOffset")
        let chain = try u32("chain")
        let count = try count("members", minimumSize: 4 + 4 + 1)
        var members: [Membership.Member] = []
        members.reserveCapacity(count)
        for _ in 0..<count {
            members.append(
                Membership.Member(
                    id: try string("member id"), address: try string("member address"),
                    learner: try bool("member learner")))
        }
        return SnapshotRequest(
            term: term, index: index, indexTerm: indexTerm, nextOffset: nextOffset, chain: chain,
            membership: Membership(members: members))
    }

    private mutating func forwardRequest() throws(PeerCodecError) -> ForwardRequest {
        let id = try u64("id")
        let bodyCount = try count("bodies", minimumSize: 4)
        var bodies: [[UInt8]] = []
        bodies.reserveCapacity(bodyCount)
        for _ in 0..<bodyCount { bodies.append(try bytes("body")) }
        let crcCount = try count("crcs", minimumSize: 4)
        var crcs: [UInt32] = []
        crcs.reserveCapacity(crcCount)
        for _ in 0..<crcCount { crcs.append(try u32("crc")) }
        return ForwardRequest(id: id, bodies: bodies, crcs: crcs)
    }
}
