import PlexusABI

/// The CloudEvents 1.0 constraints on attribute values, in one place, for every way an event enters a node:
/// the kernel's publish (`EventCheck`, which every protocol plugin and `host.publish` goes through), the
/// owned `CloudEvent` (`invalidReason`) and the HTTP binding's early answer (`CloudEventHTTP.problem`).
///
/// - every attribute and extension value: no control character (U+0000 to U+001F, U+007F to U+009F), which
///   the CloudEvents type system's String excludes;
/// - `source`: a URI-reference (RFC 3986);
/// - `dataschema`: an absolute URI (RFC 3986: a scheme, `:`, then URI characters);
/// - in both, non-ASCII characters are accepted as they are, as in an IRI (RFC 3987), but not spaces,
///   `"`, `<`, `>`, `\`, `^`, `` ` ``, `{`, `|`, `}` or a `%` that does not start a `%XX` escape;
/// - `datacontenttype`: a media type (RFC 2046 as written in RFC 9110: `type/subtype`, then optional
///   `; name=value` parameters, a value being a token or a quoted string);
/// - `time`: an RFC 3339 timestamp;
/// - `datacontenttype`, `dataschema`, `subject` and `time`, when present, not empty.
///
/// The required attributes (`id`, `source`, `type` not empty, `specversion` "1.0") and extension names
/// (1 to 20 lower-case letters or digits) are checked beside these by `EventCheck` and `invalidReason`.
public enum CloudEventRules {
    /// The context attributes whose values these rules constrain, in the order they are checked.
    enum Attribute: String, CaseIterable {
        case id, source, type, datacontenttype, dataschema, subject, time
    }

    /// What is wrong with the value of a present context attribute named `name`, or `nil` (also for a
    /// name that is not a context attribute: extensions are only checked for control characters).
    /// - Parameters:
    ///   - name: a context attribute's name (`id`, `source`, …).
    ///   - value: the value's UTF-8 bytes (already known to be valid UTF-8).
    public static func problem(_ name: String, _ value: UnsafeRawBufferPointer) -> String? {
        Attribute(rawValue: name).flatMap { problem($0, value) }
    }

    /// What is wrong with the value of a present context attribute, or `nil`. Allocates nothing unless it
    /// finds a problem: the kernel runs it for every event it stores.
    static func problem(_ attribute: Attribute, _ value: UnsafeRawBufferPointer) -> String? {
        switch attribute {
        case .datacontenttype, .dataschema, .subject, .time:
            if value.isEmpty { return "attribute '\(attribute.rawValue)' must not be empty when present" }
        case .id, .source, .type: break
        }
        if hasControl(value) { return "attribute '\(attribute.rawValue)' contains a control character" }
        switch attribute {
        case .source:
            if !isURIReference(value) {
                return "attribute 'source' must be a URI-reference (RFC 3986), found \(shown(value))"
            }
        case .dataschema:
            if !isAbsoluteURI(value) {
                return "attribute 'dataschema' must be an absolute URI (RFC 3986), found \(shown(value))"
            }
        case .datacontenttype:
            if !isMediaType(value) {
                return "attribute 'datacontenttype' must be a media type (RFC 2046: type/subtype, then optional "
                    + "'; name=value' parameters), found \(shown(value))"
            }
        case .time:
            if !CloudEventHTTP.isTimestamp(bytes: value) {
                return "attribute 'time' must be an RFC 3339 timestamp, found \(shown(value))"
            }
        case .id, .type, .subject: break
        }
        return nil
    }

    /// The first rule an owned event breaks, with the attribute's name; `nil` when it keeps them all.
    public static func problem(_ event: CloudEvent) -> (attribute: String, message: String)? {
        for attribute in Attribute.allCases {
            guard var value = event.attribute(attribute.rawValue) else { continue }
            if let message = value.withUTF8({ problem(attribute, UnsafeRawBufferPointer($0)) }) {
                return (attribute.rawValue, message)
            }
        }
        for (key, value) in event.extensions where value.unicodeScalars.contains(where: TopicName.isControl) {
            return (key, "extension '\(key)' contains a control character")
        }
        return nil
    }

    /// The first rule a borrowed event breaks; `nil` when it keeps them all. Its text must already be
    /// known to be sound (`EventCheck.isPlainText`).
    static func problem(_ e: px_event) -> String? {
        func check(_ attribute: Attribute, _ value: px_str) -> String? {
            guard let ptr = value.ptr else { return nil }
            return problem(attribute, UnsafeRawBufferPointer(start: ptr, count: value.len))
        }
        if let message = check(.id, e.id) ?? check(.source, e.source) ?? check(.type, e.type)
            ?? check(.datacontenttype, e.datacontenttype) ?? check(.dataschema, e.dataschema)
            ?? check(.subject, e.subject) ?? check(.time, e.time)
        {
            return message
        }
        for index in 0..<e.extension_count {
            guard let pair = e.extensions?[index], let ptr = pair.value.ptr else { continue }
            if hasControl(UnsafeRawBufferPointer(start: ptr, count: pair.value.len)) {
                return "extension '\(pair.key.string)' contains a control character"
            }
        }
        return nil
    }

    /// Whether UTF-8 `bytes` hold a control character: C0, DEL, or C1 (encoded `C2 80` to `C2 9F`).
    static func hasControl(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var previous: UInt8 = 0
        for byte in bytes {
            if byte < 0x20 || byte == 0x7F || (previous == 0xC2 && (0x80...0x9F).contains(byte)) { return true }
            previous = byte
        }
        return false
    }

    // MARK: RFC 3986

    private static func isAlpha(_ c: UInt8) -> Bool { (65...90).contains(c) || (97...122).contains(c) }
    private static func isDigit(_ c: UInt8) -> Bool { (48...57).contains(c) }
    private static func isHex(_ c: UInt8) -> Bool { isDigit(c) || (65...70).contains(c) || (97...102).contains(c) }

    /// Whether `c` may appear in a URI as it is: unreserved, gen-delims or sub-delims (`%` is checked apart).
    private static func isURIChar(_ c: UInt8) -> Bool {
        if isAlpha(c) || isDigit(c) { return true }
        switch c {
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"),
            UInt8(ascii: ":"), UInt8(ascii: "/"), UInt8(ascii: "?"), UInt8(ascii: "#"), UInt8(ascii: "["),
            UInt8(ascii: "]"), UInt8(ascii: "@"),
            UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("),
            UInt8(ascii: ")"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"),
            UInt8(ascii: "="):
            return true
        default:
            return false
        }
    }

    /// Whether every byte is a URI character, a `%XX` escape or part of a non-ASCII character (IRI), with at
    /// most one `#`.
    private static func hasURICharacters(_ b: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        var fragment = false
        while i < b.count {
            let c = b[i]
            if c == UInt8(ascii: "%") {
                guard i + 2 < b.count, isHex(b[i + 1]), isHex(b[i + 2]) else { return false }
                i += 3
                continue
            }
            guard c >= 0x80 || isURIChar(c) else { return false }
            if c == UInt8(ascii: "#") {
                if fragment { return false }
                fragment = true
            }
            i += 1
        }
        return true
    }

    /// The length of the scheme when `b` starts with `scheme ":"` (the `:` before any `/`, `?` or `#`);
    /// `0` when it has no `:` there; `nil` when the text before that `:` is not a scheme.
    private static func schemeLength(_ b: UnsafeRawBufferPointer) -> Int? {
        // The first of ':', '/', '?' and '#'.
        guard let colon = b.firstIndex(where: { $0 == 58 || $0 == 47 || $0 == 63 || $0 == 35 }),
            b[colon] == UInt8(ascii: ":")
        else { return 0 }
        guard colon > 0, isAlpha(b[0]) else { return nil }
        for c in b[1..<colon]
        where !(isAlpha(c) || isDigit(c) || c == UInt8(ascii: "+") || c == UInt8(ascii: "-") || c == UInt8(ascii: "."))
        {
            return nil
        }
        return colon
    }

    /// Whether `b` is a URI-reference (RFC 3986 section 4.1): a URI, or a relative reference whose first
    /// segment has no `:`.
    public static func isURIReference(_ b: UnsafeRawBufferPointer) -> Bool {
        hasURICharacters(b) && schemeLength(b) != nil
    }

    /// Whether `b` is a URI with a scheme (RFC 3986 section 3; a fragment allowed).
    public static func isAbsoluteURI(_ b: UnsafeRawBufferPointer) -> Bool {
        guard hasURICharacters(b), let scheme = schemeLength(b) else { return false }
        return scheme > 0
    }

    // MARK: Media types

    private static func isTokenChar(_ c: UInt8) -> Bool {
        if isAlpha(c) || isDigit(c) { return true }
        switch c {
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    /// Whether `b` is a media type: `type "/" subtype *( OWS ";" OWS name "=" ( token / quoted-string ) )`.
    public static func isMediaType(_ b: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        func token() -> Bool {
            let start = i
            while i < b.count, isTokenChar(b[i]) { i += 1 }
            return i > start
        }
        func space() { while i < b.count, b[i] == 0x20 || b[i] == 0x09 { i += 1 } }
        guard token(), i < b.count, b[i] == UInt8(ascii: "/") else { return false }
        i += 1
        guard token() else { return false }
        while true {
            space()
            if i == b.count { return true }
            guard b[i] == UInt8(ascii: ";") else { return false }
            i += 1
            space()
            guard token(), i < b.count, b[i] == UInt8(ascii: "=") else { return false }
            i += 1
            if i < b.count, b[i] == UInt8(ascii: "\"") {
                i += 1
                var closed = false
                while i < b.count {
                    let c = b[i]
                    if c == UInt8(ascii: "\\") {
                        i += 2
                        continue
                    }
                    i += 1
                    if c == UInt8(ascii: "\"") {
                        closed = true
                        break
                    }
                }
                guard closed, i <= b.count else { return false }
            } else {
                guard token() else { return false }
            }
        }
    }

    /// A value for a message: quoted and escaped, at most 100 characters.
    private static func shown(_ value: UnsafeRawBufferPointer) -> String {
        TopicName.quoted(String(decoding: value, as: UTF8.self), limit: 100)
    }
}
