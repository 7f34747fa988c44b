/// The CloudEvents HTTP protocol binding (CloudEvents 1.0): binary mode's `ce-` headers, the media types of
/// structured and batch mode, and the checks an HTTP intermediary makes before accepting an event.
public enum CloudEventHTTP {
    /// `application/cloudevents+json`: one event in the JSON format, in the body.
    public static let structuredType = "application/cloudevents+json"
    /// `application/cloudevents-batch+json`: a JSON array of events, in the body.
    public static let batchType = "application/cloudevents-batch+json"

    /// How a request carries its events, decided by its `Content-Type`.
    public enum Mode: Equatable, Sendable {
        case binary, structured, batch
        /// A structured format this binding does not read (`application/cloudevents+xml`, …).
        case unsupportedFormat(String)
    }

    /// The mode of a message with this `Content-Type` (absent: binary).
    public static func mode(contentType: String?) -> Mode {
        guard let contentType else { return .binary }
        let media = CloudEventJSON.mediaType(contentType)
        if media == structuredType { return .structured }
        if media == batchType { return .batch }
        if media.hasPrefix("application/cloudevents") { return .unsupportedFormat(media) }
        return .binary
    }

    /// The attributes that travel as `ce-` headers in binary mode (all but `datacontenttype`, which is
    /// `Content-Type`), in the order they are written.
    static let headerAttributes = ["specversion", "id", "source", "type", "subject", "time", "dataschema"]

    /// The headers of one event in binary mode: `ce-` headers for its attributes and extensions
    /// (percent-encoded) and `Content-Type` for its `datacontenttype`; the body is `event.data`.
    public static func binaryHeaders(_ event: CloudEvent) -> [(name: String, value: String)] {
        var headers: [(name: String, value: String)] = [
            ("ce-specversion", percentEncode(event.specversion)), ("ce-id", percentEncode(event.id)),
            ("ce-source", percentEncode(event.source)), ("ce-type", percentEncode(event.type)),
        ]
        if let v = event.subject { headers.append(("ce-subject", percentEncode(v))) }
        if let v = event.time { headers.append(("ce-time", percentEncode(v))) }
        if let v = event.dataschema { headers.append(("ce-dataschema", percentEncode(v))) }
        for (key, value) in event.extensions { headers.append(("ce-" + key, percentEncode(value))) }
        if let v = event.datacontenttype { headers.append(("Content-Type", v)) }
        return headers
    }

    /// Reads a binary-mode event: every `ce-` header (names case-insensitive, values percent-decoded) is an
    /// attribute or extension, `Content-Type` is `datacontenttype`, the body is `data`.
    /// - Throws: `CloudEventJSON.DecodingError` naming the header when one repeats, does not decode, or is
    ///   `ce-datacontenttype` (binary mode carries it as `Content-Type`).
    public static func decodeBinary(headers: [(name: String, value: String)], body: [UInt8])
        throws(CloudEventJSON.DecodingError) -> CloudEvent
    {
        var event = CloudEvent(id: "", source: "", specversion: "", type: "", data: body)
        var seen: Set<String> = []
        var present: Set<String> = []
        for (rawName, rawValue) in headers {
            let lower = rawName.lowercased()
            if lower == "content-type" {
                event.datacontenttype = rawValue
                continue
            }
            guard lower.hasPrefix("ce-") else { continue }
            let name = String(lower.dropFirst(3))
            guard seen.insert(name).inserted else {
                throw CloudEventJSON.DecodingError(attribute: name, "header 'ce-\(name)' appears more than once")
            }
            guard let value = percentDecode(rawValue) else {
                throw CloudEventJSON.DecodingError(
                    attribute: name, "header 'ce-\(name)' is not valid percent-encoded UTF-8")
            }
            present.insert(name)
            switch name {
            case "id": event.id = value
            case "source": event.source = value
            case "specversion": event.specversion = value
            case "type": event.type = value
            case "subject": event.subject = value
            case "time": event.time = value
            case "dataschema": event.dataschema = value
            case "datacontenttype":
                throw CloudEventJSON.DecodingError(
                    attribute: name, "binary mode carries 'datacontenttype' as Content-Type, not 'ce-datacontenttype'")
            default: event.extensions.append((name, value))
            }
        }
        if let missing = ["specversion", "id", "source", "type"].first(where: { !present.contains($0) }) {
            throw CloudEventJSON.DecodingError(attribute: missing, "header 'ce-\(missing)' is required")
        }
        return event
    }

    /// Percent-encodes a header value as the binding asks: space, `"`, `%` and every byte outside printable
    /// ASCII (UTF-8 encoded first) become `%XX`.
    public static func percentEncode(_ value: String) -> String {
        guard value.utf8.contains(where: { $0 <= 0x20 || $0 >= 0x7F || $0 == 0x22 || $0 == 0x25 }) else {
            return value
        }
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(value.utf8.count * 3)
        for byte in value.utf8 {
            if byte <= 0x20 || byte >= 0x7F || byte == 0x22 || byte == 0x25 {
                out += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            } else {
                out.append(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Decodes `%XX` sequences; `nil` when a sequence is malformed or the result is not valid UTF-8.
    public static func percentDecode(_ value: String) -> String? {
        guard value.utf8.contains(UInt8(ascii: "%")) else { return value }
        var out: [UInt8] = []
        out.reserveCapacity(value.utf8.count)
        var bytes = value.utf8.makeIterator()
        while let byte = bytes.next() {
            guard byte == UInt8(ascii: "%") else {
                out.append(byte)
                continue
            }
            guard let high = bytes.next().flatMap(hexValue), let low = bytes.next().flatMap(hexValue) else {
                return nil
            }
            out.append(high << 4 | low)
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hexValue(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }

    /// What is wrong with an event arriving over HTTP, naming the attribute, or `nil` when it may be accepted:
    /// `invalidReason`'s required attributes and extension names, then `CloudEventRules` (the same rules the
    /// kernel applies to every publish), with the attribute at fault named for the problem body.
    public static func problem(_ event: CloudEvent) -> (attribute: String, message: String)? {
        if event.id.isEmpty || event.source.isEmpty || event.specversion != "1.0" || event.type.isEmpty
            || !event.extensions.allSatisfy({ CloudEventHTTP.isExtensionName($0.key) })
        {
            let reason = event.invalidReason ?? "the event is not valid"
            for name in ["id", "source", "specversion", "type"] where reason.contains("'\(name)'") {
                return (name, reason)
            }
            let name = event.extensions.first { reason.contains("'\($0.key)'") }?.key ?? "extension"
            return (name, reason)
        }
        return CloudEventRules.problem(event)
    }

    /// Whether `name` is 1 to 20 lower-case ASCII letters or digits (an extension attribute's name).
    static func isExtensionName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 20
            && name.utf8.allSatisfy { (97...122).contains($0) || (48...57).contains($0) }
    }

    /// Whether `text` is an RFC 3339 `date-time`: `YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`, with its fields
    /// in range (`T` and `Z` in either case).
    public static func isTimestamp(_ text: String) -> Bool {
        isTimestamp(bytes: Array(text.utf8))
    }

    /// `isTimestamp` over UTF-8 bytes, without making a string.
    static func isTimestamp<Bytes: RandomAccessCollection>(bytes b: Bytes) -> Bool
    where Bytes.Element == UInt8, Bytes.Index == Int {
        func digits(_ at: Int, _ count: Int) -> Int? {
            guard at + count <= b.count else { return nil }
            var value = 0
            for c in b[at..<(at + count)] {
                guard c >= 0x30, c <= 0x39 else { return nil }
                value = value * 10 + Int(c - 0x30)
            }
            return value
        }
        guard let year = digits(0, 4), b.count > 19, b[4] == UInt8(ascii: "-"), let month = digits(5, 2),
            b[7] == UInt8(ascii: "-"), let day = digits(8, 2), b[10] | 0x20 == UInt8(ascii: "t"),
            let hour = digits(11, 2), b[13] == UInt8(ascii: ":"), let minute = digits(14, 2),
            b[16] == UInt8(ascii: ":"), let second = digits(17, 2)
        else { return false }
        let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
        let daysInMonth: Int
        switch month {
        case 2: daysInMonth = leap ? 29 : 28
        case 4, 6, 9, 11: daysInMonth = 30
        default: daysInMonth = 31
        }
        guard (1...12).contains(month), (1...daysInMonth).contains(day), hour <= 23, minute <= 59,
            second <= 60
        else { return false }
        var i = 19
        if b[i] == UInt8(ascii: ".") {
            i += 1
            let start = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x39 { i += 1 }
            guard i > start else { return false }
        }
        guard i < b.count else { return false }
        if b[i] | 0x20 == UInt8(ascii: "z") { return i + 1 == b.count }
        guard b[i] == UInt8(ascii: "+") || b[i] == UInt8(ascii: "-"), i + 6 == b.count,
            let offsetHour = digits(i + 1, 2),
            b[i + 3] == UInt8(ascii: ":"), let offsetMinute = digits(i + 4, 2)
        else { return false }
        return offsetHour <= 23 && offsetMinute <= 59
    }
}
