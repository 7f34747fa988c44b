/// The one rule for topic names, applied by the kernel wherever a topic is opened (publish, subscribe, a
/// dead-letter topic, a pull stream), so that every protocol and plugin is held to it; documented in
/// docs/delivery.md.
///
/// A topic name is 1 to 255 bytes of UTF-8 with no control character (U+0000 to U+001F, U+007F to U+009F)
/// and no backslash; split at `/`, no segment is empty, `.` or `..` (so no leading, trailing or doubled
/// `/`). Storage plugins may therefore use a name as a relative path without escaping it out of its
/// directory, and a name shown or logged cannot forge a line or a terminal sequence.
public enum TopicName {
    /// The rule in one sentence, as refusals quote it.
    public static let rule =
        "a topic name is 1 to \(maxBytes) bytes of UTF-8 without control characters or '\\', and its "
        + "'/'-separated segments are neither empty nor '.' or '..'"

    /// The longest name, in bytes of UTF-8.
    public static let maxBytes = 255

    /// Why `name` is not a valid topic name (naming the rule), or `nil` when it is.
    public static func problem(_ name: String) -> String? {
        let bytes = Array(name.utf8)
        let fault: String?
        if bytes.isEmpty {
            fault = "it is empty"
        } else if bytes.count > maxBytes {
            fault = "it is \(bytes.count) bytes long"
        } else if name.unicodeScalars.contains(where: { isControl($0) }) {
            fault = "it contains a control character"
        } else if bytes.contains(UInt8(ascii: "\\")) {
            fault = "it contains '\\'"
        } else if let bad = name.split(separator: "/", omittingEmptySubsequences: false).first(where: {
            $0.isEmpty || $0 == "." || $0 == ".."
        }) {
            fault =
                bad.isEmpty
                ? "it has an empty segment (a leading, trailing or doubled '/')" : "it has a '\(bad)' segment"
        } else {
            fault = nil
        }
        guard let fault else { return nil }
        return "topic \(quoted(name)) is not a valid topic name: \(fault); \(rule)"
    }

    /// Whether `scalar` is a control character (C0, DEL or C1).
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// `text` quoted for messages and logs: in single quotes, with control characters, `'` and `\` escaped
    /// (`\n`, `\u{1B}`, `\'`, `\\`) and anything past `limit` characters elided, so that whatever a client
    /// sent shows as one printable line.
    public static func quoted(_ text: String, limit: Int = 200) -> String {
        var out = "'"
        var count = 0
        for scalar in text.unicodeScalars {
            if count == limit {
                out += "…"
                break
            }
            count += 1
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "'": out += "\\'"
            case "\\": out += "\\\\"
            case _ where isControl(scalar): out += "\\u{\(String(scalar.value, radix: 16, uppercase: true))}"
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "'"
    }
}
