import NIOCore

/// What the decoder hands up the pipeline: a frame, or a frame that arrived whole but could not be read
/// (the connection stays usable; answer it with an `ERROR` frame).
public enum InboundFrame: Sendable, Equatable {
    case frame(Frame)
    case invalid(WireError)
}

/// Splits a byte stream into frames.
///
/// A length below the header size or above `maxFrameSize` is fatal (thrown as a `WireError` with
/// `fatal`): the stream can no longer be framed. A whole frame with a bad body is passed on as
/// `.invalid`.
public struct FrameDecoder: ByteToMessageDecoder, Sendable {
    public typealias InboundOut = InboundFrame

    public let maxFrameSize: Int

    /// - Parameter maxFrameSize: the largest frame accepted, length field included.
    public init(maxFrameSize: Int = Frame.defaultMaxFrameSize) {
        self.maxFrameSize = maxFrameSize
    }

    /// Takes the next whole frame off the front of `buffer`; `nil` when it is not all there yet.
    /// - Throws: `WireError` (fatal) for a length outside the allowed range.
    public func next(from buffer: inout ByteBuffer) throws -> InboundFrame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        let total = Int(length) + 4
        guard total >= Frame.headerSize else {
            throw WireError(.frameTooLarge, "frame length \(length) is below the 12-byte header", fatal: true)
        }
        guard total <= maxFrameSize else {
            throw WireError(
                .frameTooLarge, "frame of \(total) bytes exceeds the maximum of \(maxFrameSize)", fatal: true)
        }
        guard buffer.readableBytes >= total, var frame = buffer.readSlice(length: total) else { return nil }
        frame.moveReaderIndex(forwardBy: 4)
        // The header is all there: the length checks above guarantee 16 bytes.
        let type: UInt8 = frame.readInteger() ?? 0
        let flags: UInt8 = frame.readInteger() ?? 0
        frame.moveReaderIndex(forwardBy: 2)
        let id: UInt64 = frame.readInteger() ?? 0
        do {
            return .frame(try FrameCodec.decodeBody(type: type, flags: flags, id: id, body: &frame))
        } catch let error as WireError {
            if error.fatal { throw error }
            return .invalid(error)
        }
    }

    public mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let inbound = try next(from: &buffer) else { return .needMoreData }
        context.fireChannelRead(wrapInboundOut(inbound))
        return .continue
    }

    public mutating func decodeLast(
        context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool
    ) throws -> DecodingState {
        while try decode(context: context, buffer: &buffer) == .continue {}
        // Bytes left over at EOF are a truncated frame: nothing to deliver, the connection is closing anyway.
        buffer.moveReaderIndex(to: buffer.writerIndex)
        return .needMoreData
    }
}

/// Writes frames as bytes.
public struct FrameEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = Frame

    public init() {}

    public func encode(data: Frame, out: inout ByteBuffer) throws {
        try FrameCodec.encode(data, into: &out)
    }
}
