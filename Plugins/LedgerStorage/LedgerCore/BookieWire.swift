import NIOCore
import StorageIO

/// The bookie wire protocol: length-prefixed binary frames over TCP, each with a request id and a CRC-32C.
///
/// ```
/// offset 0   u32  length    bytes after this field (at least 13, at most the peer's limit)
/// offset 4   u32  crc       CRC-32C of the bytes after this field (op, request id, body)
/// offset 8   u8   op        a request's op (1-5); its response carries op | 0x80
/// offset 9   u64  request   chosen by the client, echoed by the response (requests are pipelined)
/// offset 17  ...  body
/// ```
///
/// Integers are big-endian. Request bodies: add (1) `u64 ledger, i64 entry, i64 lac, u8 flags (bit 0:
/// recovery), payload (the rest)`; read (2) `u64 ledger, i64 entry`; readTail (3), fence (4), delete (5)
/// `u64 ledger`. A response body starts with `u8 status` (0: done; else a `LedgerError` code, see
/// `BookieWire.statusCodes`); after 0: nothing for add and delete, `i64 entry, i64 lac, payload (the rest)`
/// for read, `i64 lastEntry, i64 lac` for readTail and fence; after an error the error's message (UTF-8, the
/// rest).
public enum BookieWire {
    /// The operations a client asks of a bookie.
    public enum Op: UInt8, Sendable {
        case add = 1
        case read = 2
        case readTail = 3
        case fence = 4
        case delete = 5
    }

    /// The response flag on `op`.
    static let responseFlag: UInt8 = 0x80
    /// Bytes before the body: length, crc, op, request id.
    public static let headerBytes = 17
    /// The largest add header after the frame header (ledger, entry, lac, flags).
    public static let addHeaderBytes = 25
    /// The frame limit for a bookie accepting payloads of up to `maxPayloadBytes` (the bytes after the length
    /// field of an add or a read's response, with room to spare).
    public static func maxFrameBytes(maxPayloadBytes: Int) -> Int { maxPayloadBytes + 64 }

    /// `LedgerError` codes on the wire (index 0 is success). Append only: the numbers are the protocol.
    static let statusCodes: [LedgerError.Code?] = [
        nil, .fenced, .noSuchEntry, .noSuchLedger, .deleted, .corrupt, .io, .notEnoughBookies, .closed, .conflict,
        .invalidArgument, .stopped, .bookieUnavailable,
    ]

    static func status(of code: LedgerError.Code) -> UInt8 {
        UInt8(statusCodes.firstIndex(of: code) ?? statusCodes.firstIndex(of: .io)!)
    }

    /// One decoded frame: its op (with the response flag for responses), request id and body.
    public struct Frame: Sendable {
        public var op: UInt8
        public var request: UInt64
        public var body: ByteBuffer
    }

    /// Why bytes cannot be a frame; the connection that carried them is closed.
    public struct FrameError: Error, CustomStringConvertible {
        public var message: String
        public var description: String { message }
    }

    // MARK: Encoding

    /// Starts a frame in `buffer`: placeholders for length and CRC, then op and request id.
    static func begin(_ buffer: inout ByteBuffer, op: UInt8, request: UInt64) -> Int {
        let start = buffer.writerIndex
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(UInt32(0))
        buffer.writeInteger(op)
        buffer.writeInteger(request)
        return start
    }

    /// Fills in the length and CRC of the frame begun at `start`.
    static func end(_ buffer: inout ByteBuffer, start: Int) {
        let length = buffer.writerIndex - start - 4
        buffer.setInteger(UInt32(length), at: start)
        let crc = buffer.withUnsafeReadableBytes { raw in
            let from = start - buffer.readerIndex + 8
            return CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[from..<(from + length - 4)]))
        }
        buffer.setInteger(crc, at: start + 4)
    }

    /// An add request.
    public static func add(
        _ buffer: inout ByteBuffer, request: UInt64, ledger: UInt64, entry: Int64, lastAddConfirmed: Int64,
        payload: [UInt8], recovery: Bool
    ) {
        let start = begin(&buffer, op: Op.add.rawValue, request: request)
        buffer.writeInteger(ledger)
        buffer.writeInteger(entry)
        buffer.writeInteger(lastAddConfirmed)
        buffer.writeInteger(UInt8(recovery ? 1 : 0))
        buffer.writeBytes(payload)
        end(&buffer, start: start)
    }

    /// A read request.
    public static func read(_ buffer: inout ByteBuffer, request: UInt64, ledger: UInt64, entry: Int64) {
        let start = begin(&buffer, op: Op.read.rawValue, request: request)
        buffer.writeInteger(ledger)
        buffer.writeInteger(entry)
        end(&buffer, start: start)
    }

    /// A readTail, fence or delete request.
    public static func ledgerOnly(_ buffer: inout ByteBuffer, op: Op, request: UInt64, ledger: UInt64) {
        let start = begin(&buffer, op: op.rawValue, request: request)
        buffer.writeInteger(ledger)
        end(&buffer, start: start)
    }

    /// A response: status 0 and `body`'s fields, or the error.
    static func response(
        _ buffer: inout ByteBuffer, op: UInt8, request: UInt64, error: LedgerError?,
        body: (inout ByteBuffer) -> Void = { _ in }
    ) {
        let start = begin(&buffer, op: op | responseFlag, request: request)
        if let error {
            buffer.writeInteger(status(of: error.code))
            buffer.writeString(error.message)
        } else {
            buffer.writeInteger(UInt8(0))
            body(&buffer)
        }
        end(&buffer, start: start)
    }

    // MARK: Decoding

    /// Takes one whole frame off `buffer`; nil until all its bytes are there.
    /// - Throws: `FrameError` for a length below the header or above `maxFrameBytes` (as soon as the length
    ///   field is there), or a CRC that does not match.
    public static func decodeFrame(_ buffer: inout ByteBuffer, maxFrameBytes: Int) throws(FrameError) -> Frame? {
        guard let length = buffer.getInteger(at: buffer.readerIndex, as: UInt32.self) else { return nil }
        guard length >= UInt32(headerBytes - 4) else {
            throw FrameError(message: "a frame of \(length) bytes is shorter than its header (\(headerBytes - 4))")
        }
        guard length <= UInt32(maxFrameBytes) else {
            throw FrameError(message: "a frame of \(length) bytes is larger than the limit of \(maxFrameBytes)")
        }
        let size = 4 + Int(length)
        guard buffer.readableBytes >= size else { return nil }
        let stored = buffer.getInteger(at: buffer.readerIndex + 4, as: UInt32.self)!
        let computed = buffer.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[8..<size]))
        }
        guard stored == computed else {
            throw FrameError(
                message: "a frame's CRC-32C is \(hex(stored)) but its bytes give \(hex(computed)) (damaged in transit)")
        }
        let op = buffer.getInteger(at: buffer.readerIndex + 8, as: UInt8.self)!
        let request = buffer.getInteger(at: buffer.readerIndex + 9, as: UInt64.self)!
        let body = buffer.getSlice(at: buffer.readerIndex + headerBytes, length: size - headerBytes)!
        buffer.moveReaderIndex(forwardBy: size)
        return Frame(op: op, request: request, body: body)
    }

    static func hex(_ value: UInt32) -> String {
        let digits = String(value, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }

    /// A request as the server reads it.
    public enum Request: Sendable, Equatable {
        case add(ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, recovery: Bool, payload: [UInt8])
        case read(ledger: UInt64, entry: Int64)
        case readTail(ledger: UInt64)
        case fence(ledger: UInt64)
        case delete(ledger: UInt64)
    }

    /// The request a frame carries.
    /// - Throws: `FrameError` for an unknown op, a response, or a body of the wrong size.
    public static func decodeRequest(_ frame: Frame) throws(FrameError) -> Request {
        var body = frame.body
        func short(_ name: String) -> FrameError {
            FrameError(
                message: "request \(frame.request): the \(name) body of \(frame.body.readableBytes) bytes is malformed")
        }
        guard let op = Op(rawValue: frame.op) else {
            throw FrameError(message: "request \(frame.request): unknown op \(frame.op)")
        }
        switch op {
        case .add:
            guard let ledger = body.readInteger(as: UInt64.self), let entry = body.readInteger(as: Int64.self),
                let lac = body.readInteger(as: Int64.self), let flags = body.readInteger(as: UInt8.self)
            else { throw short("add") }
            return .add(
                ledger: ledger, entry: entry, lastAddConfirmed: lac, recovery: flags & 1 != 0,
                payload: body.readBytes(length: body.readableBytes) ?? [])
        case .read:
            guard let ledger = body.readInteger(as: UInt64.self), let entry = body.readInteger(as: Int64.self),
                body.readableBytes == 0
            else { throw short("read") }
            return .read(ledger: ledger, entry: entry)
        case .readTail, .fence, .delete:
            guard let ledger = body.readInteger(as: UInt64.self), body.readableBytes == 0 else {
                throw short("\(op)")
            }
            switch op {
            case .readTail: return .readTail(ledger: ledger)
            case .fence: return .fence(ledger: ledger)
            default: return .delete(ledger: ledger)
            }
        }
    }

    /// A response's status: nil for success (the body's fields follow), else the error it carries.
    /// - Throws: `FrameError` for an empty body or an unknown status.
    static func decodeStatus(_ body: inout ByteBuffer, request: UInt64) throws(FrameError) -> LedgerError? {
        guard let status = body.readInteger(as: UInt8.self) else {
            throw FrameError(message: "response \(request) has no status")
        }
        guard status != 0 else { return nil }
        guard Int(status) < statusCodes.count, let code = statusCodes[Int(status)] else {
            throw FrameError(message: "response \(request) has an unknown status \(status)")
        }
        return LedgerError(code, body.readString(length: body.readableBytes) ?? "")
    }
}

/// Splits a connection's bytes into `BookieWire.Frame`s (NIO decoder).
struct BookieFrameDecoder: ByteToMessageDecoder {
    typealias InboundOut = BookieWire.Frame
    let maxFrameBytes: Int

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let frame = try BookieWire.decodeFrame(&buffer, maxFrameBytes: maxFrameBytes) else {
            return .needMoreData
        }
        context.fireChannelRead(wrapInboundOut(frame))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}
