import NIOCore

/// Keeps two ordinary habits of etcd's Go gRPC server from tripping swift-nio-http2's denial-of-service limits,
/// by handling them in front of the HTTP/2 handler, which never sees them:
///
/// - **PINGs.** grpc-go estimates the bandwidth-delay product with a PING after nearly every request that
///   carries data, so a client doing hundreds of puts a second receives hundreds of PINGs a second.
///   swift-nio-http2 (1.46) drops a connection that receives more than 200 PINGs in 30 s. Here each server
///   PING (RFC 9113 §6.7) is answered at once with the ACK the HTTP/2 handler would send: same 8 bytes.
/// - **RST_STREAM(NO_ERROR) after a complete response.** When a call's handler finishes before grpc-go has
///   read the client's END_STREAM (common with many calls in flight), it ends the stream with
///   RST_STREAM(NO_ERROR), as RFC 9113 §8.1 allows ("clients MUST NOT discard responses as a result").
///   grpc-swift-nio-transport drops a connection that receives more than 200 RST_STREAMs in 10 s. Here an
///   RST_STREAM(NO_ERROR) for a stream whose response already ended (a HEADERS or DATA frame with END_STREAM)
///   is dropped: the call is complete, and the client has sent or is sending its own END_STREAM. Any other
///   RST_STREAM passes.
///
/// Neither limit can be raised through grpc-swift-nio-transport. Without this, the connection failed every
/// ~200 puts, and again at high concurrency, charging etcd with errors and reconnections that are the client
/// library's; etcd sees an ordinary client either way.
///
/// It reads only frame headers (9 bytes: length, type, flags, stream id) of the inbound byte stream, holds
/// back a header until it is complete and the short payload of a PING or RST_STREAM until it can decide, and
/// passes everything else through unchanged and in order.
///
/// - Important: Add it first in the pipeline (nearest the socket), before any byte is read. Event loop only.
final class GoServerFrameFilter: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let frameHeaderSize = 9
    static let dataType: UInt8 = 0x0
    static let headersType: UInt8 = 0x1
    static let rstStreamType: UInt8 = 0x3
    static let pingType: UInt8 = 0x6
    static let ackFlag: UInt8 = 0x1
    static let endStreamFlag: UInt8 = 0x1
    /// How many recently ended streams are remembered: an RST_STREAM follows its stream's end closely.
    static let rememberedStreams = 4096

    /// The header of the frame being read, while incomplete.
    private var header: [UInt8] = []
    /// Payload bytes of the current frame still to pass through.
    private var passing = 0
    /// The payload of a held frame (a server PING, or an RST_STREAM of an ended stream) and how much is to come.
    private var held: [UInt8] = []
    private var heldRemaining = 0
    /// Streams whose response ended, oldest first, and as a set.
    private var endedOrder: [UInt32] = []
    private var ended = Set<UInt32>()
    /// What was done here, for tests and reports.
    private(set) var pingsAnswered = 0
    private(set) var resetsDropped = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        var output = context.channel.allocator.buffer(capacity: input.readableBytes + header.count)
        var acks: [ByteBuffer] = []
        while input.readableBytes > 0 {
            if heldRemaining > 0 {
                let n = min(heldRemaining, input.readableBytes)
                held += input.readBytes(length: n) ?? []
                heldRemaining -= n
                if heldRemaining == 0 { decideHeld(output: &output, acks: &acks, allocator: context.channel.allocator) }
            } else if passing > 0 {
                let n = min(passing, input.readableBytes)
                if var slice = input.readSlice(length: n) { output.writeBuffer(&slice) }
                passing -= n
            } else {
                let n = min(Self.frameHeaderSize - header.count, input.readableBytes)
                header += input.readBytes(length: n) ?? []
                guard header.count == Self.frameHeaderSize else { continue }
                startFrame(output: &output)
            }
        }
        if output.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(output)) }
        if !acks.isEmpty {
            for ack in acks { context.write(wrapOutboundOut(ack), promise: nil) }
            context.flush()
        }
    }

    /// The frame whose header is complete in `header`: hold it, or pass its header and then its payload.
    private func startFrame(output: inout ByteBuffer) {
        let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
        let type = header[3]
        let flags = header[4]
        let stream =
            (UInt32(header[5]) << 24 | UInt32(header[6]) << 16 | UInt32(header[7]) << 8 | UInt32(header[8]))
            & 0x7FFF_FFFF
        if type == Self.pingType && flags & Self.ackFlag == 0 && length == 8 && stream == 0 {
            heldRemaining = 8
            held = header
        } else if type == Self.rstStreamType && length == 4 && ended.contains(stream) {
            heldRemaining = 4
            held = header
        } else {
            if (type == Self.dataType || type == Self.headersType) && flags & Self.endStreamFlag != 0 && stream != 0 {
                remember(stream)
            }
            // Anything else, a malformed PING or RST_STREAM included, is the HTTP/2 handler's to judge.
            output.writeBytes(header)
            passing = length
        }
        header = []
    }

    /// `held` is a complete frame (header and payload): answer a PING; drop an RST_STREAM(NO_ERROR) of an ended
    /// stream; pass any other RST_STREAM.
    private func decideHeld(output: inout ByteBuffer, acks: inout [ByteBuffer], allocator: ByteBufferAllocator) {
        let frame = held
        held = []
        let payload = Array(frame[Self.frameHeaderSize...])
        if frame[3] == Self.pingType {
            acks.append(Self.ack(payload, allocator: allocator))
            pingsAnswered += 1
            return
        }
        let stream =
            (UInt32(frame[5]) << 24 | UInt32(frame[6]) << 16 | UInt32(frame[7]) << 8 | UInt32(frame[8])) & 0x7FFF_FFFF
        ended.remove(stream)
        if payload == [0, 0, 0, 0] {
            resetsDropped += 1
        } else {
            output.writeBytes(frame)
        }
    }

    private func remember(_ stream: UInt32) {
        guard ended.insert(stream).inserted else { return }
        endedOrder.append(stream)
        if endedOrder.count > Self.rememberedStreams * 2 {
            for old in endedOrder.prefix(endedOrder.count - Self.rememberedStreams) { ended.remove(old) }
            endedOrder.removeFirst(endedOrder.count - Self.rememberedStreams)
        }
    }

    /// A PING frame with the ACK flag and `payload`.
    static func ack(_ payload: [UInt8], allocator: ByteBufferAllocator) -> ByteBuffer {
        var frame = allocator.buffer(capacity: frameHeaderSize + payload.count)
        frame.writeBytes([0, 0, UInt8(payload.count), pingType, ackFlag, 0, 0, 0, 0])
        frame.writeBytes(payload)
        return frame
    }
}
