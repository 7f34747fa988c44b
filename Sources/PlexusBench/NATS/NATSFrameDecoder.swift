import NIOCore

/// Splits the bytes a NATS server sends into ``NATSFrame``s.
///
/// A frame is a control line ending in `\r\n`; `MSG` and `HMSG` lines are followed by their payload and
/// another `\r\n`. A frame is only consumed once all of it has arrived.
struct NATSFrameDecoder: NIOSingleStepByteToMessageDecoder {
    typealias InboundOut = NATSFrame

    /// The longest control line accepted (the server's own `max_control_line` default is 4 KiB).
    static let maxControlLine = 4096

    mutating func decode(buffer: inout ByteBuffer) throws -> NATSFrame? {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > Self.maxControlLine {
                throw Self.violation("control line longer than \(Self.maxControlLine) bytes")
            }
            return nil
        }
        let lineLength = newline - buffer.readerIndex + 1
        // The line without its CRLF (a bare LF is accepted too).
        let crlf = lineLength >= 2 && buffer.getInteger(at: newline - 1, as: UInt8.self) == UInt8(ascii: "\r")
        guard let line = buffer.getString(at: buffer.readerIndex, length: lineLength - (crlf ? 2 : 1)) else {
            return nil
        }
        let words = line.split(separator: " ", omittingEmptySubsequences: true)
        guard let op = words.first?.uppercased() else {
            throw Self.violation("empty control line")
        }
        switch op {
        case "MSG", "HMSG":
            return try decodeMessage(words: words, headers: op == "HMSG", lineLength: lineLength, buffer: &buffer)
        case "PING":
            buffer.moveReaderIndex(forwardBy: lineLength)
            return .ping
        case "PONG":
            buffer.moveReaderIndex(forwardBy: lineLength)
            return .pong
        case "+OK":
            buffer.moveReaderIndex(forwardBy: lineLength)
            return .ok
        case "-ERR":
            buffer.moveReaderIndex(forwardBy: lineLength)
            let text = line.dropFirst(4).trimmingCharacters(in: " '")
            return .error(text)
        case "INFO":
            buffer.moveReaderIndex(forwardBy: lineLength)
            return .info(String(line.dropFirst(4).drop { $0 == " " }))
        default:
            throw Self.violation("unknown operation '\(op.prefix(16))'")
        }
    }

    mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> NATSFrame? {
        try decode(buffer: &buffer)
    }

    /// `MSG <subject> <sid> [reply-to] <#bytes>` or `HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>`.
    private func decodeMessage(
        words: [Substring], headers: Bool, lineLength: Int, buffer: inout ByteBuffer
    ) throws -> NATSFrame? {
        let sizes = headers ? 2 : 1
        guard words.count == 3 + sizes || words.count == 4 + sizes else {
            throw Self.violation("\(words[0]) with \(words.count - 1) arguments")
        }
        guard let sid = Int(words[2]), let total = Int(words[words.count - 1]), total >= 0 else {
            throw Self.violation("\(words[0]) with a bad sid or size")
        }
        let headerLength = headers ? Int(words[words.count - 2]) ?? -1 : 0
        guard headerLength >= 0, headerLength <= total else {
            throw Self.violation("HMSG with a bad header size")
        }
        guard buffer.readableBytes >= lineLength + total + 2 else { return nil }
        buffer.moveReaderIndex(forwardBy: lineLength)
        let headerBytes = headers ? buffer.readBytes(length: headerLength) : nil
        let payload = buffer.readBytes(length: total - headerLength) ?? []
        guard buffer.readBytes(length: 2) == [UInt8(ascii: "\r"), UInt8(ascii: "\n")] else {
            throw Self.violation("payload not followed by CRLF")
        }
        let replyTo = words.count == 4 + sizes ? String(words[3]) : nil
        return .message(
            NATSMessage(
                subject: String(words[1]), sid: sid, replyTo: replyTo, headers: headerBytes, payload: payload))
    }

    private static func violation(_ message: String) -> BenchError {
        BenchError(.protocolViolation, subject: "nats", message)
    }
}

extension StringProtocol {
    /// The string without leading and trailing characters from `characters`.
    fileprivate func trimmingCharacters(in characters: String) -> String {
        let set = Set(characters)
        return String(self.drop { set.contains($0) }.reversed().drop { set.contains($0) }.reversed())
    }
}
