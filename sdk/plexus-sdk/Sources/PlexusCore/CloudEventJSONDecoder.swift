/// Reads the CloudEvents JSON event format (CloudEvents 1.0, "JSON Event Format") without a JSON library,
/// so that an event arrives exactly as sent: `data` holding JSON is kept byte for byte as it appeared in the
/// document, a `data` string is its decoded text, and `data_base64` is decoded to its bytes.
extension CloudEventJSON {
    /// Why a document is not a CloudEvent (or a batch of them).
    public struct DecodingError: Error, Equatable, CustomStringConvertible, Sendable {
        /// The attribute at fault (`id`, `time`, `data_base64`, an extension), or `nil` when the JSON itself is bad.
        public var attribute: String?
        /// The index of the event in a batch, or `nil` for a single event.
        public var index: Int?
        public var message: String

        public init(attribute: String? = nil, index: Int? = nil, _ message: String) {
            self.attribute = attribute
            self.index = index
            self.message = message
        }

        public var description: String {
            (index.map { "event \($0): " } ?? "") + message
        }
    }

    /// Decodes one event from a JSON object (`application/cloudevents+json`).
    ///
    /// Attributes must be JSON strings; extensions may also be numbers or booleans (kept as their JSON text);
    /// `null` means absent. `data` with a JSON `datacontenttype` (or none, for a non-string value) is kept as
    /// its raw JSON text; a `data` string with any other type is its decoded text; `data_base64` is decoded.
    /// The event's validity (required attributes, `specversion`) is not checked here: see `invalidReason`.
    /// - Throws: `DecodingError` naming the attribute when the document is not one well-formed event.
    public static func decode(_ bytes: [UInt8]) throws(DecodingError) -> CloudEvent {
        var reader = JSONReader(bytes: bytes)
        reader.skipSpace()
        let event = try reader.event()
        reader.skipSpace()
        guard reader.atEnd else { throw DecodingError("unexpected bytes after the event at offset \(reader.i)") }
        return event
    }

    /// Decodes a batch (`application/cloudevents-batch+json`): a JSON array of events, possibly empty.
    /// - Throws: `DecodingError` with the index of the first bad event.
    public static func decodeBatch(_ bytes: [UInt8]) throws(DecodingError) -> [CloudEvent] {
        var reader = JSONReader(bytes: bytes)
        reader.skipSpace()
        guard reader.peek == UInt8(ascii: "[") else { throw DecodingError("a batch must be a JSON array of events") }
        reader.i += 1
        reader.skipSpace()
        var events: [CloudEvent] = []
        if reader.peek == UInt8(ascii: "]") {
            reader.i += 1
        } else {
            while true {
                do {
                    events.append(try reader.event())
                } catch {
                    var error = error
                    error.index = events.count
                    throw error
                }
                reader.skipSpace()
                guard let c = reader.next() else { throw DecodingError("the batch array is not closed") }
                if c == UInt8(ascii: "]") { break }
                guard c == UInt8(ascii: ",") else {
                    throw DecodingError("expected ',' or ']' at offset \(reader.i - 1) of the batch")
                }
                reader.skipSpace()
            }
        }
        reader.skipSpace()
        guard reader.atEnd else { throw DecodingError("unexpected bytes after the batch at offset \(reader.i)") }
        return events
    }

    /// Decodes standard base64 (padding optional, no whitespace); `nil` when `text` is not base64.
    public static func decodeBase64(_ text: String) -> [UInt8]? {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count / 4 * 3)
        var accumulator: UInt32 = 0
        var bits = 0
        var padding = 0
        for c in text.utf8 {
            let value: UInt32
            switch c {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"): value = UInt32(c - UInt8(ascii: "A"))
            case UInt8(ascii: "a")...UInt8(ascii: "z"): value = UInt32(c - UInt8(ascii: "a")) + 26
            case UInt8(ascii: "0")...UInt8(ascii: "9"): value = UInt32(c - UInt8(ascii: "0")) + 52
            case UInt8(ascii: "+"): value = 62
            case UInt8(ascii: "/"): value = 63
            case UInt8(ascii: "="):
                padding += 1
                continue
            default: return nil
            }
            guard padding == 0 else { return nil }
            accumulator = accumulator << 6 | value
            bits += 6
            if bits >= 8 {
                bits -= 8
                out.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        let symbols = text.utf8.count - padding
        guard padding <= 2, symbols % 4 != 1, padding == 0 || (symbols + padding) % 4 == 0 else { return nil }
        return out
    }
}

/// A JSON reader over bytes that keeps the raw span of every value it skips.
struct JSONReader {
    typealias DecodingError = CloudEventJSON.DecodingError

    let bytes: [UInt8]
    var i = 0

    var atEnd: Bool { i >= bytes.count }

    /// Whether `bytes` are exactly one JSON value (RFC 8259), surrounded by nothing but white space.
    static func isValidDocument(_ bytes: [UInt8]) -> Bool {
        var reader = JSONReader(bytes: bytes)
        reader.skipSpace()
        guard (try? reader.value(depth: 0, named: "data")) != nil else { return false }
        reader.skipSpace()
        return reader.atEnd
    }
    var peek: UInt8? { i < bytes.count ? bytes[i] : nil }

    mutating func next() -> UInt8? {
        guard i < bytes.count else { return nil }
        defer { i += 1 }
        return bytes[i]
    }

    mutating func skipSpace() {
        while let c = peek, c == 0x20 || c == 0x0A || c == 0x0D || c == 0x09 { i += 1 }
    }

    /// A value's kind, decided by its first byte.
    enum Kind { case object, array, string, number, literal }

    /// One member's value: its kind, its raw span, and for strings the decoded text.
    struct Value {
        var kind: Kind
        var range: Range<Int>
        var text: String?
    }

    /// Reads one event object.
    mutating func event() throws(DecodingError) -> CloudEvent {
        guard next() == UInt8(ascii: "{") else { throw DecodingError("an event must be a JSON object") }
        var event = CloudEvent(id: "", source: "", specversion: "", type: "")
        var seen: Set<String> = []
        var data: Value?
        var dataBase64: String?
        var required: Set<String> = ["id", "source", "specversion", "type"]
        skipSpace()
        if peek == UInt8(ascii: "}") {
            i += 1
        } else {
            while true {
                skipSpace()
                guard peek == UInt8(ascii: "\"") else { throw DecodingError("expected a member name at offset \(i)") }
                let name = try string()
                skipSpace()
                guard next() == UInt8(ascii: ":") else { throw DecodingError("expected ':' after \"\(name)\"") }
                skipSpace()
                guard seen.insert(name).inserted else {
                    throw DecodingError(attribute: name, "attribute '\(name)' appears twice")
                }
                let value = try self.value(depth: 0, named: name)
                let isNull = value.kind == .literal && bytes[value.range.lowerBound] == UInt8(ascii: "n")
                switch name {
                case "data":
                    if !isNull { data = value }
                case "data_base64":
                    guard !isNull else { break }
                    guard let text = value.text else {
                        throw DecodingError(attribute: name, "'data_base64' must be a string")
                    }
                    dataBase64 = text
                case "id", "source", "specversion", "type", "datacontenttype", "dataschema", "subject", "time":
                    guard !isNull else { break }
                    guard let text = value.text else {
                        throw DecodingError(attribute: name, "attribute '\(name)' must be a JSON string")
                    }
                    required.remove(name)
                    switch name {
                    case "id": event.id = text
                    case "source": event.source = text
                    case "specversion": event.specversion = text
                    case "type": event.type = text
                    case "datacontenttype": event.datacontenttype = text
                    case "dataschema": event.dataschema = text
                    case "subject": event.subject = text
                    default: event.time = text
                    }
                default:
                    guard !isNull else { break }
                    switch value.kind {
                    case .string: event.extensions.append((name, value.text ?? ""))
                    case .number, .literal:
                        event.extensions.append((name, String(decoding: bytes[value.range], as: UTF8.self)))
                    case .object, .array:
                        throw DecodingError(
                            attribute: name, "extension '\(name)' must be a string, a number or a boolean")
                    }
                }
                skipSpace()
                guard let c = next() else { throw DecodingError("the event object is not closed") }
                if c == UInt8(ascii: "}") { break }
                guard c == UInt8(ascii: ",") else { throw DecodingError("expected ',' or '}' at offset \(i - 1)") }
            }
        }
        if let missing = ["specversion", "id", "source", "type"].first(where: { required.contains($0) }) {
            throw DecodingError(attribute: missing, "attribute '\(missing)' is required")
        }
        switch (data, dataBase64) {
        case (.some, .some):
            throw DecodingError(attribute: "data_base64", "an event has 'data' or 'data_base64', not both")
        case (nil, let text?):
            guard let decoded = CloudEventJSON.decodeBase64(text) else {
                throw DecodingError(attribute: "data_base64", "'data_base64' is not valid base64")
            }
            event.data = decoded
        case (let value?, nil):
            if value.kind == .string, !CloudEventJSON.isJSONType(event.datacontenttype) {
                event.data = Array((value.text ?? "").utf8)
            } else {
                event.data = Array(bytes[value.range])
            }
        case (nil, nil):
            break
        }
        return event
    }

    /// Reads any value, returning its span (and text, for a string).
    mutating func value(depth: Int, named name: String) throws(DecodingError) -> Value {
        guard depth < 512 else { throw DecodingError(attribute: name, "'\(name)' is nested too deeply") }
        let start = i
        guard let c = peek else { throw DecodingError(attribute: name, "'\(name)' has no value") }
        switch c {
        case UInt8(ascii: "\""):
            let text = try string()
            return Value(kind: .string, range: start..<i, text: text)
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            let close = c == UInt8(ascii: "{") ? UInt8(ascii: "}") : UInt8(ascii: "]")
            i += 1
            skipSpace()
            if peek == close {
                i += 1
            } else {
                while true {
                    if close == UInt8(ascii: "}") {
                        guard peek == UInt8(ascii: "\"") else {
                            throw DecodingError(attribute: name, "expected a member name at offset \(i)")
                        }
                        _ = try string()
                        skipSpace()
                        guard next() == UInt8(ascii: ":") else {
                            throw DecodingError(attribute: name, "expected ':' at offset \(i - 1)")
                        }
                        skipSpace()
                    }
                    _ = try value(depth: depth + 1, named: name)
                    skipSpace()
                    guard let d = next() else { throw DecodingError(attribute: name, "'\(name)' is not closed") }
                    if d == close { break }
                    guard d == UInt8(ascii: ",") else {
                        throw DecodingError(attribute: name, "unexpected byte at offset \(i - 1) in '\(name)'")
                    }
                    skipSpace()
                }
            }
            return Value(kind: c == UInt8(ascii: "{") ? .object : .array, range: start..<i)
        case UInt8(ascii: "t"), UInt8(ascii: "f"), UInt8(ascii: "n"):
            for word in ["true", "false", "null"] where bytes[start...].starts(with: word.utf8) {
                i += word.utf8.count
                return Value(kind: .literal, range: start..<i)
            }
            throw DecodingError(attribute: name, "'\(name)' has an invalid value at offset \(start)")
        default:
            try number(named: name)
            return Value(kind: .number, range: start..<i)
        }
    }

    mutating func number(named name: String) throws(DecodingError) {
        let start = i
        if peek == UInt8(ascii: "-") { i += 1 }
        func digits() -> Int {
            let from = i
            while let c = peek, c >= 0x30, c <= 0x39 { i += 1 }
            return i - from
        }
        let bad = DecodingError(attribute: name, "'\(name)' has an invalid value at offset \(start)")
        if peek == UInt8(ascii: "0") {
            i += 1
        } else if digits() == 0 {
            throw bad
        }
        if peek == UInt8(ascii: ".") {
            i += 1
            guard digits() > 0 else { throw bad }
        }
        if let e = peek, e | 0x20 == UInt8(ascii: "e") {
            i += 1
            if peek == UInt8(ascii: "+") || peek == UInt8(ascii: "-") { i += 1 }
            guard digits() > 0 else { throw bad }
        }
    }

    /// Reads a string literal and decodes its escapes; the text must be valid UTF-8.
    mutating func string() throws(DecodingError) -> String {
        let start = i
        i += 1
        var out: [UInt8] = []
        var runStart = i
        while true {
            guard let c = next() else { throw DecodingError("a string starting at offset \(start) is not closed") }
            switch c {
            case UInt8(ascii: "\""):
                out.append(contentsOf: bytes[runStart..<(i - 1)])
                guard let text = String(validating: out, as: UTF8.self) else {
                    throw DecodingError("the string at offset \(start) is not valid UTF-8")
                }
                return text
            case UInt8(ascii: "\\"):
                out.append(contentsOf: bytes[runStart..<(i - 1)])
                guard let e = next() else { throw DecodingError("a string starting at offset \(start) is not closed") }
                switch e {
                case UInt8(ascii: "\""): out.append(0x22)
                case UInt8(ascii: "\\"): out.append(0x5C)
                case UInt8(ascii: "/"): out.append(0x2F)
                case UInt8(ascii: "b"): out.append(0x08)
                case UInt8(ascii: "f"): out.append(0x0C)
                case UInt8(ascii: "n"): out.append(0x0A)
                case UInt8(ascii: "r"): out.append(0x0D)
                case UInt8(ascii: "t"): out.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try hex4(start: start)
                    if (0xD800..<0xDC00).contains(scalar) {
                        guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else {
                            throw DecodingError("a lone surrogate in the string at offset \(start)")
                        }
                        let low = try hex4(start: start)
                        guard (0xDC00..<0xE000).contains(low) else {
                            throw DecodingError("a lone surrogate in the string at offset \(start)")
                        }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00..<0xE000).contains(scalar) {
                        throw DecodingError("a lone surrogate in the string at offset \(start)")
                    }
                    guard let unicode = Unicode.Scalar(scalar) else {
                        throw DecodingError("an invalid escape in the string at offset \(start)")
                    }
                    out.append(contentsOf: String(Character(unicode)).utf8)
                default:
                    throw DecodingError("an invalid escape in the string at offset \(start)")
                }
                runStart = i
            case 0..<0x20:
                throw DecodingError("a control character in the string at offset \(start)")
            default:
                continue
            }
        }
    }

    mutating func hex4(start: Int) throws(DecodingError) -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 {
            guard let h = next() else { throw DecodingError("a string starting at offset \(start) is not closed") }
            let digit: UInt32
            switch h {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = UInt32(h - UInt8(ascii: "0"))
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = UInt32(h - UInt8(ascii: "a")) + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = UInt32(h - UInt8(ascii: "A")) + 10
            default: throw DecodingError("an invalid \\u escape in the string at offset \(start)")
            }
            value = value << 4 | digit
        }
        return value
    }
}
