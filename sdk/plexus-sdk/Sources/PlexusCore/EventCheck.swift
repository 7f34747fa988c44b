import PlexusABI

/// Checks and reads a `px_event` where it lies, without copying it into a `CloudEvent`: the kernel's
/// publish path validates the caller's events in place and hands the same pointers to the storage.
public enum EventCheck {
    /// Why `event` is not a valid CloudEvent to store, or `nil` when it is.
    ///
    /// The rules are `CloudEvent.invalidReason`'s, applied to the bytes: `id`, `source` and `type` present and
    /// non-empty, `specversion` "1.0", extension names 1 to 20 lower-case letters or digits, and the attribute
    /// value constraints of `CloudEventRules` (URIs, media type, timestamp, no control characters). On top, what a
    /// copy would have papered over and a borrowed pointer cannot: every `px_str` and `px_bytes` with a
    /// length has a pointer, lengths fit in `Int`, attribute text is UTF-8, and an extension array is given
    /// when the count says so.
    public static func invalidReason(_ event: UnsafePointer<px_event>) -> String? {
        let e = event.pointee
        // The common case first, without building a message: every text present and well-formed.
        if isPlainText(e.id), isPlainText(e.source), isPlainText(e.type), e.id.len > 0, e.source.len > 0,
            e.type.len > 0, equals(e.specversion, "1.0"), isPlainText(e.datacontenttype),
            isPlainText(e.dataschema), isPlainText(e.subject), isPlainText(e.time),
            e.data.ptr != nil || e.data.len == 0, Int(bitPattern: UInt(e.data.len)) >= 0,
            extensionsAreSound(e)
        {
            return CloudEventRules.problem(e)
        }
        return reason(e)
    }

    /// Whether a `px_str` is absent, or present with a pointer, a length that fits, and ASCII or UTF-8 text.
    @inline(__always)
    static func isPlainText(_ s: px_str) -> Bool {
        guard let ptr = s.ptr else { return s.len == 0 }
        guard Int(bitPattern: UInt(s.len)) >= 0 else { return false }
        let bytes = UnsafeRawBufferPointer(start: ptr, count: s.len)
        for byte in bytes where byte >= 0x80 { return textProblem(s, name: "") == nil }
        return true
    }

    /// Whether every extension is well-formed, with a lower-case name of 1 to 20 letters or digits.
    static func extensionsAreSound(_ e: px_event) -> Bool {
        let count = e.extension_count
        if count == 0 { return true }
        guard Int(bitPattern: UInt(count)) >= 0, count <= 1 << 16, let pairs = e.extensions else { return false }
        for index in 0..<count {
            let pair = pairs[index]
            guard let key = pair.key.ptr, pair.key.len > 0, pair.key.len <= 20, isPlainText(pair.value) else {
                return false
            }
            for byte in UnsafeRawBufferPointer(start: key, count: pair.key.len)
            where !((97...122).contains(byte) || (48...57).contains(byte)) {
                return false
            }
        }
        return true
    }

    /// The reason an event that failed the quick check is refused.
    static func reason(_ e: px_event) -> String? {
        let required: [(String, px_str)] = [("id", e.id), ("source", e.source), ("type", e.type)]
        for (name, value) in required {
            if let problem = textProblem(value, name: "attribute '\(name)'") { return problem }
            if value.ptr == nil || value.len == 0 { return "attribute '\(name)' is required and must not be empty" }
        }
        if let problem = textProblem(e.specversion, name: "attribute 'specversion'") { return problem }
        if !equals(e.specversion, "1.0") {
            return "attribute 'specversion' must be \"1.0\", found \"\(e.specversion.string)\""
        }
        let optional: [(String, px_str)] = [
            ("datacontenttype", e.datacontenttype), ("dataschema", e.dataschema), ("subject", e.subject),
            ("time", e.time),
        ]
        for (name, value) in optional {
            if let problem = textProblem(value, name: "attribute '\(name)'") { return problem }
        }
        if e.data.ptr == nil && e.data.len != 0 || Int(bitPattern: UInt(e.data.len)) < 0 {
            return "data has length \(e.data.len) but no bytes"
        }
        let count = e.extension_count
        if Int(bitPattern: UInt(count)) < 0 || count > 1 << 16 || (count > 0 && e.extensions == nil) {
            return "extension_count \(count) needs an array of that many extensions (at most 65536)"
        }
        for index in 0..<count {
            guard let pair = e.extensions?[index] else { break }
            if let problem = textProblem(pair.key, name: "extension \(index)'s name") { return problem }
            if let problem = textProblem(pair.value, name: "extension \(index)'s value") { return problem }
            let key = UnsafeRawBufferPointer(start: pair.key.ptr, count: pair.key.ptr == nil ? 0 : pair.key.len)
            guard !key.isEmpty, key.count <= 20, key.allSatisfy({ (97...122).contains($0) || (48...57).contains($0) })
            else {
                return "extension name '\(pair.key.string)' must be 1 to 20 lowercase letters or digits"
            }
        }
        return CloudEventRules.problem(e)
    }

    /// The value of an attribute or extension, as it lies in the event; `nil` when absent.
    ///
    /// - Important: The buffer points into the event: valid only as long as the event is.
    public static func attribute(_ event: UnsafePointer<px_event>, _ key: AttributeKey) -> UnsafeRawBufferPointer? {
        let e = event.pointee
        func bytes(_ s: px_str) -> UnsafeRawBufferPointer? {
            guard let ptr = s.ptr else { return nil }
            return UnsafeRawBufferPointer(start: ptr, count: s.len)
        }
        switch key.field {
        case .id: return bytes(e.id)
        case .source: return bytes(e.source)
        case .specversion: return bytes(e.specversion)
        case .type: return bytes(e.type)
        case .datacontenttype: return bytes(e.datacontenttype)
        case .dataschema: return bytes(e.dataschema)
        case .subject: return bytes(e.subject)
        case .time: return bytes(e.time)
        case .extension:
            for index in 0..<e.extension_count {
                guard let pair = e.extensions?[index], let name = bytes(pair.key) else { continue }
                if name.elementsEqual(key.name) {
                    return bytes(pair.value) ?? UnsafeRawBufferPointer(start: nil, count: 0)
                }
            }
            return nil
        }
    }

    /// The bytes of an event's attributes, extension names and values, and data, as they lie (what a copy of
    /// the event needs besides its structs).
    public static func byteCount(_ e: px_event) -> Int {
        var total = e.id.len + e.source.len + e.specversion.len + e.type.len + e.datacontenttype.len
        total += e.dataschema.len + e.subject.len + e.time.len + e.data.len
        for index in 0..<e.extension_count {
            if let pair = e.extensions?[index] { total += pair.key.len + pair.value.len }
        }
        return total
    }

    /// Whether a present `px_str` holds exactly `text`.
    static func equals(_ s: px_str, _ text: StaticString) -> Bool {
        guard let ptr = s.ptr, s.len == text.utf8CodeUnitCount else { return false }
        return UnsafeRawBufferPointer(start: ptr, count: s.len).elementsEqual(
            UnsafeRawBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// What is wrong with a `px_str` that a borrowing reader would trip on, or `nil`.
    static func textProblem(_ s: px_str, name: String) -> String? {
        if Int(bitPattern: UInt(s.len)) < 0 { return "\(name) has length \(s.len), more than fits in memory" }
        guard let ptr = s.ptr else {
            return s.len == 0 ? nil : "\(name) has length \(s.len) but no text"
        }
        let bytes = UnsafeRawBufferPointer(start: ptr, count: s.len)
        // ASCII, the common case, needs no decoding.
        if bytes.allSatisfy({ $0 < 0x80 }) { return nil }
        var iterator = bytes.makeIterator()
        var decoder = UTF8()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return nil
            case .error: return "\(name) is not valid UTF-8"
            }
        }
    }
}

/// An attribute or extension name, resolved once, to look up in many events (`EventCheck.attribute`).
public struct AttributeKey: Sendable, Hashable {
    enum Field: Sendable, Hashable {
        case id, source, specversion, type, datacontenttype, dataschema, subject, time, `extension`
    }

    let field: Field
    /// The name's UTF-8 bytes.
    public let name: [UInt8]

    public init(_ name: String) {
        self.name = Array(name.utf8)
        switch name {
        case "id": field = .id
        case "source": field = .source
        case "specversion": field = .specversion
        case "type": field = .type
        case "datacontenttype": field = .datacontenttype
        case "dataschema": field = .dataschema
        case "subject": field = .subject
        case "time": field = .time
        default: field = .extension
        }
    }
}
