import NIOCore

/// Answers the server's HTTP/2 PINGs (RFC 9113 §6.7) in front of the HTTP/2 handler, which never sees them.
///
/// Why: grpc-go servers, etcd 3.4's among them, estimate the bandwidth-delay product with a PING after nearly
/// every request that carries data, so a client doing hundreds of puts a second receives hundreds of PINGs a
/// second. swift-nio-http2 (1.46) counts inbound PINGs as control frames and, past 200 in 30 s, drops the
/// connection as a denial of service (`ExcessiveControlFrames`); grpc-swift-nio-transport does not let its
/// users raise that limit. Every ~200 puts the connection would fail the calls in flight and reconnect, which
/// would charge etcd with errors and latency that are the client library's. The server gets exactly the
/// answer the HTTP/2 handler would send: a PING with the ACK flag and the same 8 bytes, at once.
///
/// It parses only frame headers (9 bytes: length, type, flags, stream id) of the inbound byte stream, holds
/// back a header until it is complete, and passes every other frame through unchanged and in order.
///
/// - Important: Add it first in the pipeline (nearest the socket), before any byte is read. Event loop only.
final class ServerPingResponder: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    static let frameHeaderSize = 9
    static let pingType: UInt8 = 0x6
    static let ackFlag: UInt8 = 0x1

    /// The header of the frame being read, while incomplete.
    private var header: [UInt8] = []
    /// Payload bytes of the current frame still to pass through.
    private var passing = 0
    /// The payload of a server PING being read (never passed on), and how much of it is still to come.
    private var ping: [UInt8] = []
    private var pingRemaining = 0
    /// How many PINGs were answered here.
    private(set) var answered = 0

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var input = unwrapInboundIn(data)
        var output = context.channel.allocator.buffer(capacity: input.readableBytes + header.count)
        var acks: [ByteBuffer] = []
        while input.readableBytes > 0 {
            if pingRemaining > 0 {
                let n = min(pingRemaining, input.readableBytes)
                ping += input.readBytes(length: n) ?? []
                pingRemaining -= n
                if pingRemaining == 0 {
                    acks.append(Self.ack(ping, allocator: context.channel.allocator))
                    ping = []
                }
            } else if passing > 0 {
                let n = min(passing, input.readableBytes)
                if var slice = input.readSlice(length: n) { output.writeBuffer(&slice) }
                passing -= n
            } else {
                let n = min(Self.frameHeaderSize - header.count, input.readableBytes)
                header += input.readBytes(length: n) ?? []
                guard header.count == Self.frameHeaderSize else { continue }
                let length = Int(header[0]) << 16 | Int(header[1]) << 8 | Int(header[2])
                let stream =
                    (UInt32(header[5]) << 24 | UInt32(header[6]) << 16 | UInt32(header[7]) << 8
                        | UInt32(header[8])) & 0x7FFF_FFFF
                if header[3] == Self.pingType && header[4] & Self.ackFlag == 0 && length == 8 && stream == 0 {
                    pingRemaining = 8
                } else {
                    // Anything else, a malformed PING included, is the HTTP/2 handler's to judge.
                    output.writeBytes(header)
                    passing = length
                }
                header = []
            }
        }
        if output.readableBytes > 0 { context.fireChannelRead(wrapInboundOut(output)) }
        if !acks.isEmpty {
            answered += acks.count
            for ack in acks { context.write(wrapOutboundOut(ack), promise: nil) }
            context.flush()
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
