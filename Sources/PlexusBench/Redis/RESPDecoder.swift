import NIOCore

/// Splits the bytes a Redis server sends into ``RESPValue``s (RESP2).
///
/// A reply is consumed only once all of it, nested arrays included, has arrived.
struct RESPDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = RESPValue

    /// The longest header line accepted (`$123\r\n`, `-ERR …\r\n`).
    static let maxLine = 64 * 1024
    /// The deepest nesting accepted; XREADGROUP replies nest four levels.
    static let maxDepth = 16

    mutating func decode(buffer: inout ByteBuffer) throws -> RESPValue? {
        // A large reply arrives in many reads: check that all of it is here by skipping over it, which
        // copies nothing, before parsing it once.
        var probe = buffer
        guard try Self.skip(&probe, depth: 0) else { return nil }
        guard let value = try Self.parse(&buffer, depth: 0) else {
            throw Self.violation("a reply that was complete could not be parsed")
        }
        return value
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPValue? {
        try decode(buffer: &buffer)
    }

    /// Moves past one complete value; `false` when it has not all arrived.
    private static func skip(_ buffer: inout ByteBuffer, depth: Int) throws -> Bool {
        guard depth < maxDepth else { throw violation("replies nested deeper than \(maxDepth)") }
        guard let type = buffer.readInteger(as: UInt8.self), let line = try readLine(&buffer) else { return false }
        switch type {
        case UInt8(ascii: "$"):
            guard let length = Int(line), length >= -1 else { throw violation("bulk length '\(line.prefix(32))'") }
            if length == -1 { return true }
            guard buffer.readableBytes >= length + 2 else { return false }
            buffer.moveReaderIndex(forwardBy: length + 2)
            return true
        case UInt8(ascii: "*"):
            guard let count = Int(line), count >= -1 else { throw violation("array length '\(line.prefix(32))'") }
            for _ in 0..<max(count, 0) {
                guard try skip(&buffer, depth: depth + 1) else { return false }
            }
            return true
        default:
            return true
        }
    }

    /// Reads one value from `buffer`, or returns `nil` (with `buffer` partly read) when it is incomplete.
    private static func parse(_ buffer: inout ByteBuffer, depth: Int) throws -> RESPValue? {
        guard depth < maxDepth else { throw violation("replies nested deeper than \(maxDepth)") }
        guard let type = buffer.readInteger(as: UInt8.self), let line = try readLine(&buffer) else { return nil }
        switch type {
        case UInt8(ascii: "+"):
            return .simpleString(line)
        case UInt8(ascii: "-"):
            return .error(line)
        case UInt8(ascii: ":"):
            guard let value = Int(line) else { throw violation("integer reply '\(line.prefix(32))'") }
            return .integer(value)
        case UInt8(ascii: "$"):
            guard let length = Int(line), length >= -1 else { throw violation("bulk length '\(line.prefix(32))'") }
            if length == -1 { return .bulkString(nil) }
            guard buffer.readableBytes >= length + 2, let bytes = buffer.readBytes(length: length) else { return nil }
            guard buffer.readBytes(length: 2) == [UInt8(ascii: "\r"), UInt8(ascii: "\n")] else {
                throw violation("bulk string not followed by CRLF")
            }
            return .bulkString(bytes)
        case UInt8(ascii: "*"):
            guard let count = Int(line), count >= -1 else { throw violation("array length '\(line.prefix(32))'") }
            if count == -1 { return .array(nil) }
            var elements: [RESPValue] = []
            elements.reserveCapacity(min(count, 1024))
            for _ in 0..<count {
                guard let element = try parse(&buffer, depth: depth + 1) else { return nil }
                elements.append(element)
            }
            return .array(elements)
        default:
            throw violation("unknown reply type byte \(type)")
        }
    }

    /// The text up to the next CRLF, consumed with it; `nil` when the CRLF has not arrived.
    private static func readLine(_ buffer: inout ByteBuffer) throws -> String? {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > maxLine { throw violation("line longer than \(maxLine) bytes") }
            return nil
        }
        let length = newline - buffer.readerIndex + 1
        guard length >= 2, buffer.getInteger(at: newline - 1, as: UInt8.self) == UInt8(ascii: "\r"),
            let text = buffer.readString(length: length - 2)
        else {
            throw violation("line not ended by CRLF")
        }
        buffer.moveReaderIndex(forwardBy: 2)
        return text
    }

    private static func violation(_ message: String) -> BenchError {
        BenchError(.protocolViolation, subject: "redis", message)
    }
}
