import Glibc
import NIOCore
import PlexusCore
import PlexusWire

// A libFuzzer target for the TCP protocol's frame decoder (docs/protocols/tcp.md). `scripts/fuzz` builds and
// runs it. Each input is a byte stream from a hostile peer. The decoder must never crash on it, and every
// frame it accepts must survive the round trip: re-encoded, it decodes back equal, to bytes that differ from
// the input only where the spec says a receiver ignores them. Every violated property traps; the trap is
// the fuzzer's finding.

/// The largest frame the fuzzed decoder accepts: small enough that mutated lengths reach it often.
let maxFrameSize = 1 << 16

/// How one pass over the input ended, after the frames it gave.
enum Outcome: Equatable {
    case inbound(InboundFrame)
    /// A fatal error: the stream cannot be framed any further.
    case fatal(WireError)
    /// Bytes of an incomplete frame were left over.
    case incomplete(Int)
}

/// Stops the process with what went wrong: the fuzzer records the input that got here.
func finding(_ message: String) -> Never {
    fatalError("fuzz finding: \(message)")
}

/// Decodes `bytes`, delivered as two chunks split at `split`, checking every frame on the way.
func decodeStream(_ bytes: UnsafeBufferPointer<UInt8>, split: Int) -> [Outcome] {
    let decoder = FrameDecoder(maxFrameSize: maxFrameSize)
    var buffer = ByteBuffer(bytes: UnsafeBufferPointer(rebasing: bytes[..<split]))
    var outcomes: [Outcome] = []
    var delivered = split
    while true {
        let before = buffer
        let inbound: InboundFrame?
        do {
            inbound = try decoder.next(from: &buffer)
        } catch let error as WireError {
            guard error.fatal else { finding("a non-fatal error was thrown: \(error)") }
            guard error.status == .frameTooLarge || error.status == .unsupportedVersion else {
                finding("a fatal error with status \(error.status): \(error)")
            }
            outcomes.append(.fatal(error))
            return outcomes
        } catch {
            finding("not a WireError: \(error)")
        }
        guard let inbound else {
            guard buffer.readerIndex == before.readerIndex else {
                finding("next(from:) returned nil but consumed bytes")
            }
            if delivered < bytes.count {
                buffer.writeBytes(UnsafeBufferPointer(rebasing: bytes[delivered...]))
                delivered = bytes.count
                continue
            }
            outcomes.append(.incomplete(buffer.readableBytes))
            return outcomes
        }
        // The frame is exactly the bytes its length field announced.
        guard let length = before.getInteger(at: before.readerIndex, as: UInt32.self),
            let original = before.getSlice(at: before.readerIndex, length: Int(length) + 4)
        else { finding("a frame came out of fewer than four bytes") }
        let consumed = before.readableBytes - buffer.readableBytes
        guard consumed == original.readableBytes else {
            finding("consumed \(consumed) bytes of a \(original.readableBytes)-byte frame")
        }
        switch inbound {
        case .frame(let frame): checkRoundTrip(frame, original: original)
        case .invalid(let error):
            guard !error.fatal, error.status == .malformedFrame || error.status == .unknownFrameType else {
                finding("an .invalid frame with status \(error.status), fatal \(error.fatal): \(error)")
            }
        }
        outcomes.append(.inbound(inbound))
    }
}

/// Re-encodes a decoded frame and checks that it decodes back equal, to bytes equal to the original's
/// apart from what a receiver ignores.
func checkRoundTrip(_ frame: Frame, original: ByteBuffer) {
    var encoded = ByteBuffer()
    do {
        try FrameCodec.encode(frame, into: &encoded)
    } catch {
        finding("a decoded \(frame.kind) frame does not encode: \(error)")
    }
    let canonical = encoded
    let again: InboundFrame?
    do {
        again = try FrameDecoder(maxFrameSize: maxFrameSize).next(from: &encoded)
    } catch {
        finding("a re-encoded \(frame.kind) frame does not decode: \(error)")
    }
    guard again == .frame(frame) else {
        finding("\(frame) re-encoded decodes as \(String(describing: again))")
    }
    guard encoded.readableBytes == 0 else { finding("\(encoded.readableBytes) bytes left after a re-encoded frame") }
    let significant = significantBytes(original, kind: frame.kind)
    let reencoded = significantBytes(canonical, kind: frame.kind)
    guard reencoded == significant else {
        finding("\(frame.kind) frame re-encodes to \(reencoded), read from \(significant)")
    }
    switch frame.body {
    case .publish(let publish): checkEvents(publish.events)
    case .deliver(let deliver): checkEvents(deliver.event)
    default: break
    }
}

/// A frame's bytes with what the receiver ignores zeroed: the reserved header field, flag bits the type
/// does not define, and the reserved u16 in HELLO and WELCOME.
func significantBytes(_ frame: ByteBuffer, kind: Frame.Kind) -> [UInt8] {
    var bytes = Array(frame.readableBytesView)
    guard bytes.count >= Frame.headerSize else { finding("a frame of \(bytes.count) bytes") }
    let flagged: Set<Frame.Kind> = [.publish, .nack, .heartbeat, .error]
    bytes[5] &= flagged.contains(kind) ? 1 : 0
    bytes[6] = 0
    bytes[7] = 0
    let reserved: Int? =
        switch kind {
        case .hello: Frame.headerSize + 6
        case .welcome: Frame.headerSize + 2
        default: nil
        }
    if let reserved {
        bytes[reserved] = 0
        bytes[reserved + 1] = 0
    }
    return bytes
}

/// Checks that decoded events convert to Swift values and to C events without loss.
func checkEvents(_ events: WireEvents) {
    let values = events.cloudEvents
    guard values.count == events.count else { finding("\(events.count) events gave \(values.count) values") }
    do {
        let rebuilt = try WireEvents(values)
        guard rebuilt.bytes == events.bytes else { finding("events changed on the way through CloudEvent") }
    } catch {
        finding("decoded events do not encode: \(error)")
    }
    let copies = events.withCEvents { pointers, count in
        (0..<count).map { i -> CloudEvent in
            guard let pointer = pointers[i] else { finding("withCEvents lent a NULL event \(i)") }
            return CloudEvent(copying: pointer)
        }
    }
    guard copies == values else { finding("withCEvents lent other events than cloudEvents") }
    var fromC = ByteBuffer()
    events.withCEvents { pointers, count in
        for i in 0..<count {
            guard let pointer = pointers[i] else { finding("withCEvents lent a NULL event \(i)") }
            do {
                try fromC.writeWireEvent(pointer)
            } catch {
                finding("a lent C event does not encode: \(error)")
            }
        }
    }
    guard fromC == events.bytes else { finding("events changed on the way through px_event") }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    let whole = decodeStream(bytes, split: size)
    // The same stream split where its first byte says must give the same frames and the same end.
    let split = size == 0 ? 0 : Int(bytes[0]) * size / 256
    let chunked = decodeStream(bytes, split: split)
    guard whole == chunked else { finding("split at \(split) of \(size): \(chunked), whole: \(whole)") }
    return 0
}

/// With `PLEXUS_FUZZ_SEEDS` set to a directory, writes the test suite's sample frames there as seed inputs,
/// one file per frame and one with all of them back to back. libFuzzer calls this before it reads its
/// corpus directories, so the same run can start from them.
@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    guard let directory = getenv("PLEXUS_FUZZ_SEEDS").map({ String(cString: $0) }) else { return 0 }
    func write(_ name: String, _ bytes: ByteBuffer) {
        let path = "\(directory)/\(name)"
        guard let file = fopen(path, "wb") else { fatalError("cannot create seed file \(path): errno \(errno)") }
        defer { fclose(file) }
        let written = bytes.withUnsafeReadableBytes { fwrite($0.baseAddress, 1, $0.count, file) }
        guard written == bytes.readableBytes else { fatalError("cannot write seed file \(path): errno \(errno)") }
    }
    mkdir(directory, 0o755)
    for (index, sample) in FrameSamples.frames.enumerated() {
        write("frame-\(index)", FrameSamples.encode(sample.frame))
    }
    write("all-frames", FrameSamples.encode(FrameSamples.frames.map(\.frame)))
    return 0
}
