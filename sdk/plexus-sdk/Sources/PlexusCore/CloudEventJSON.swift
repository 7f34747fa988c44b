/// The CloudEvents JSON event format (CloudEvents 1.0, "JSON Event Format"), written without a JSON library
/// so that the event's bytes go out exactly as stored.
public enum CloudEventJSON {
    /// One event as one line of JSON (no newline).
    ///
    /// `data` is embedded as JSON when `datacontenttype` is JSON (`application/json` or `…+json`) and the
    /// bytes are one valid JSON value, not `null`, with no white space around it; as a string when the type is
    /// textual but not JSON (or absent) and the bytes are valid UTF-8; and as `data_base64` otherwise (JSON-typed
    /// bytes that are not embedded included: as a string they would read back as a JSON string value, not as
    /// those bytes). Extensions are written as strings.
    /// `CloudEventJSON.decode` reads what this writes back to the same event.
    /// - Parameter fields: extra members written first (the CLI adds the topic and offset), as raw JSON values.
    public static func encode(_ event: CloudEvent, fields: [(String, String)] = []) -> String {
        var out = "{"
        var first = true
        func member(_ name: String, raw: String) {
            if !first { out += "," }
            first = false
            out += quote(name) + ":" + raw
        }
        for (name, raw) in fields { member(name, raw: raw) }
        member("specversion", raw: quote(event.specversion))
        member("id", raw: quote(event.id))
        member("source", raw: quote(event.source))
        member("type", raw: quote(event.type))
        if let v = event.datacontenttype { member("datacontenttype", raw: quote(v)) }
        if let v = event.dataschema { member("dataschema", raw: quote(v)) }
        if let v = event.subject { member("subject", raw: quote(v)) }
        if let v = event.time { member("time", raw: quote(v)) }
        for (key, value) in event.extensions { member(key, raw: quote(value)) }
        if !event.data.isEmpty || event.datacontenttype != nil {
            let text = String(validating: event.data, as: UTF8.self)
            if isJSONType(event.datacontenttype), let text, embedsAsJSON(event.data) {
                member("data", raw: text)
            } else if isTextType(event.datacontenttype), !isJSONType(event.datacontenttype), let text {
                member("data", raw: quote(text))
            } else {
                member("data_base64", raw: quote(base64(event.data)))
            }
        }
        return out + "}"
    }

    /// Whether JSON-typed data goes out as the JSON value itself: a valid document, with no white space around
    /// it (the reader would not keep it: those bytes then go as `data_base64`), and not the literal `null`
    /// (which reads back as no data).
    static func embedsAsJSON(_ data: [UInt8]) -> Bool {
        let space: Set<UInt8> = [0x20, 0x09, 0x0A, 0x0D]
        guard let first = data.first, let last = data.last, !space.contains(first), !space.contains(last) else {
            return false
        }
        return data != Array("null".utf8) && JSONReader.isValidDocument(data)
    }

    /// The media type without parameters, lowercased: `Application/JSON; charset=utf-8` → `application/json`.
    static func mediaType(_ type: String) -> String {
        String(type.split(separator: ";", omittingEmptySubsequences: false).first ?? "").trimmingWhitespace
            .lowercased()
    }

    static func isJSONType(_ type: String?) -> Bool {
        guard let type else { return false }
        let media = mediaType(type)
        return media == "application/json" || media == "text/json" || media.hasSuffix("+json")
    }

    static func isTextType(_ type: String?) -> Bool {
        guard let type else { return true }
        let media = mediaType(type)
        return media.hasPrefix("text/") || isJSONType(type) || media == "application/xml" || media.hasSuffix("+xml")
    }

    /// A JSON string literal.
    public static func quote(_ s: String) -> String {
        // On UTF-8 bytes: every byte that needs an escape is ASCII, and a multi-byte sequence (all of its bytes
        // 0x80 or more) is copied as it is, so the output is the same as escaping scalar by scalar, without
        // appending one scalar at a time (55 µs for a 1.4 KB string before; the connectors' sinks were bound
        // by it).
        var contiguous = s
        return contiguous.withUTF8 { quote(bytes: $0) }
    }

    private static func quote<Bytes: RandomAccessCollection>(bytes: Bytes) -> String where Bytes.Element == UInt8 {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + 2)
        out.append(UInt8(ascii: "\""))
        for byte in bytes {
            switch byte {
            case UInt8(ascii: "\""): out += [UInt8(ascii: "\\"), UInt8(ascii: "\"")]
            case UInt8(ascii: "\\"): out += [UInt8(ascii: "\\"), UInt8(ascii: "\\")]
            case UInt8(ascii: "\n"): out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
            case UInt8(ascii: "\r"): out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
            case UInt8(ascii: "\t"): out += [UInt8(ascii: "\\"), UInt8(ascii: "t")]
            case 0..<0x20:
                out += [UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0")]
                out += [hex[Int(byte >> 4)], hex[Int(byte & 15)]]
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
        return String(decoding: out, as: UTF8.self)
    }

    /// Standard base64 with padding.
    public static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        var out: [UInt8] = []
        out.reserveCapacity((bytes.count + 2) / 3 * 4)
        var i = 0
        while i < bytes.count {
            let b0 = UInt32(bytes[i])
            let b1 = i + 1 < bytes.count ? UInt32(bytes[i + 1]) : 0
            let b2 = i + 2 < bytes.count ? UInt32(bytes[i + 2]) : 0
            let n = b0 << 16 | b1 << 8 | b2
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            out.append(i + 1 < bytes.count ? alphabet[Int(n >> 6 & 63)] : UInt8(ascii: "="))
            out.append(i + 2 < bytes.count ? alphabet[Int(n & 63)] : UInt8(ascii: "="))
            i += 3
        }
        return String(decoding: out, as: UTF8.self)
    }
}

extension String {
    fileprivate var trimmingWhitespace: String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }

}
