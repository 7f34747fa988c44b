#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A frame from a peer: the HELLO that opens its connection, then envelopes.
public enum PeerFrame: Sendable, Equatable {
    /// A version 1 HELLO: the sender, without a proof.
    case hello(NodeID)
    /// A version 2 HELLO: the sender and its proof of the cluster secret.
    case provenHello(NodeID, HelloProof)
    case envelope(Envelope)
}

/// Splits the byte stream of one inbound connection into frames, whatever the bytes' split into reads.
///
/// The first frame must be a HELLO (its type and magic are checked as soon as 9 bytes are there, so a stranger
/// is refused at once); every later one an envelope of at most `maxFrameBytes` after its length field, refused as
/// soon as its length field is there.
/// - Important: not thread-safe; one connection's reader owns it.
public struct FrameDecoder {
    /// The largest envelope frame accepted, counting the bytes after its length field.
    public let maxFrameBytes: Int
    /// Whether the next frame must be the connection's HELLO.
    public private(set) var awaitingHello: Bool

    /// Bytes `start..<end` are received and not yet decoded.
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    /// The whole size of the frame that begins at `start`, once its length field is there.
    private var pendingFrameSize = 0

    private enum Step {
        case needMore(frameSize: Int)
        case frame(PeerFrame, size: Int)
    }

    /// The room a read asks for at least.
    static let readChunk = 64 * 1024

    /// - Parameters:
    ///   - maxFrameBytes: the limit on envelope frames (the bytes after the length field).
    ///   - expectHello: false to decode a stream of envelopes without the connection's HELLO.
    public init(maxFrameBytes: Int, expectHello: Bool = true) {
        self.maxFrameBytes = maxFrameBytes
        self.awaitingHello = expectHello
        self.buffer = []
    }

    /// Received bytes not decoded yet: a partial frame, or whole frames `next()` has not returned.
    public var bufferedBytes: Int { end - start }

    /// Adds received bytes.
    public mutating func append(_ bytes: some Collection<UInt8>) {
        makeRoom(for: bytes.count)
        let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
            buffer.withUnsafeMutableBytes { target in
                if let base = source.baseAddress, !source.isEmpty {
                    target.baseAddress?.advanced(by: end).copyMemory(from: base, byteCount: source.count)
                }
            }
        }
        if copied == nil { buffer.replaceSubrange(end..<end + bytes.count, with: bytes) }
        end += bytes.count
    }

    /// The next whole frame, or nil until more bytes arrive.
    /// - Throws: `PeerCodecError` when the bytes cannot be the protocol: the connection must be closed (the
    ///   decoder is not usable after an error).
    public mutating func next() throws(PeerCodecError) -> PeerFrame? {
        guard end > start else { return nil }
        let hello = awaitingHello
        let limit = hello ? PeerCodec.maxHelloBytes : maxFrameBytes
        let step = try PeerCodec.withBytes(of: buffer) { (raw) throws(PeerCodecError) -> Step in
            let view = UnsafeRawBufferPointer(rebasing: raw[start..<end])
            if hello { try PeerCodec.checkHelloStart(view) }
            guard view.count >= 4 else { return .needMore(frameSize: 0) }
            let size = 4 + (try PeerCodec.payloadLength(view, limit: limit))
            guard view.count >= size else { return .needMore(frameSize: size) }
            let payload = UnsafeRawBufferPointer(rebasing: view[4..<size])
            let frame: PeerFrame
            if hello {
                let (node, proof) = try PeerCodec.decodeHello(payload: payload)
                frame = proof.map { .provenHello(node, $0) } ?? .hello(node)
            } else {
                frame = .envelope(try PeerCodec.decodeEnvelope(payload: payload))
            }
            return .frame(frame, size: size)
        }
        guard case .frame(let frame, let size) = step else {
            if case .needMore(let frameSize) = step { pendingFrameSize = frameSize }
            return nil
        }
        pendingFrameSize = 0
        start += size
        if start == end {
            start = 0
            end = 0
        }
        if hello { awaitingHello = false }
        return frame
    }

    /// Checks the stream's end: the connection closed between frames.
    /// - Throws: `PeerCodecError.truncated` when it closed inside a frame.
    public func finish() throws(PeerCodecError) {
        guard bufferedBytes == 0 else {
            throw PeerCodecError(
                .truncated,
                "the connection closed inside a frame (\(bufferedBytes) bytes of it arrived"
                    + (pendingFrameSize > 0 ? " of \(pendingFrameSize))" : ")"))
        }
    }

    /// Reads once from `fd` into the buffer (room for the whole pending frame, and at least `readChunk`).
    /// - Returns: what `read` returned (the count of bytes added, 0 at the end of the stream, -1 with `errno`).
    mutating func read(from fd: Int32) -> Int {
        makeRoom(for: max(Self.readChunk, pendingFrameSize - bufferedBytes))
        let count = buffer.withUnsafeMutableBytes { raw in
            recv(fd, raw.baseAddress.map { $0 + end }, raw.count - end, 0)
        }
        if count > 0 { end += count }
        return count
    }

    /// Makes `buffer[end...]` hold at least `count` bytes: moves the undecoded bytes to the front when that is
    /// enough, else moves them into a larger buffer.
    private mutating func makeRoom(for count: Int) {
        if buffer.count - end >= count { return }
        let live = end - start
        if buffer.count - live >= count {
            buffer.withUnsafeMutableBytes { raw in
                if live > 0, let base = raw.baseAddress { memmove(base, base + start, live) }
            }
        } else {
            var grown = [UInt8](repeating: 0, count: max(live + count, buffer.count * 2, 4096))
            if live > 0 {
                grown.withUnsafeMutableBytes { target in
                    buffer.withUnsafeBytes { source in
                        target.baseAddress?.copyMemory(from: source.baseAddress! + start, byteCount: live)
                    }
                }
            }
            buffer = grown
        }
        start = 0
        end = live
    }
}
