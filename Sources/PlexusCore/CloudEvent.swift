import PlexusABI

extension px_status_code {
    /// The code as the `px_status` that ABI functions return.
    public var status: px_status { px_status(bitPattern: rawValue) }
}

/// A CloudEvents 1.0 event owned by the kernel: the copy it keeps of a borrowed `px_event`.
public struct CloudEvent: Sendable, Equatable {
    public var id: String
    public var source: String
    public var specversion: String
    public var type: String
    public var datacontenttype: String?
    public var dataschema: String?
    public var subject: String?
    public var time: String?
    public var extensions: [(key: String, value: String)]
    public var data: [UInt8]

    public init(
        id: String, source: String, specversion: String = "1.0", type: String, datacontenttype: String? = nil,
        dataschema: String? = nil, subject: String? = nil, time: String? = nil,
        extensions: [(key: String, value: String)] = [], data: [UInt8] = []
    ) {
        self.id = id
        self.source = source
        self.specversion = specversion
        self.type = type
        self.datacontenttype = datacontenttype
        self.dataschema = dataschema
        self.subject = subject
        self.time = time
        self.extensions = extensions
        self.data = data
    }

    /// Copies a borrowed C event. Fields past the struct's `struct_size` are treated as absent.
    public init(copying event: UnsafePointer<px_event>) {
        let e = event.pointee
        id = e.id.string
        source = e.source.string
        specversion = e.specversion.string
        type = e.type.string
        datacontenttype = e.datacontenttype.optionalString
        dataschema = e.dataschema.optionalString
        subject = e.subject.optionalString
        time = e.time.optionalString
        if let ext = e.extensions, e.extension_count > 0 {
            extensions = (0..<e.extension_count).map { (ext[$0].key.string, ext[$0].value.string) }
        } else {
            extensions = []
        }
        data = e.data.ptr.map { Array(UnsafeBufferPointer(start: $0, count: e.data.len)) } ?? []
    }

    /// The value of an attribute or extension by its CloudEvents name.
    public func attribute(_ name: String) -> String? {
        switch name {
        case "id": return id
        case "source": return source
        case "specversion": return specversion
        case "type": return type
        case "datacontenttype": return datacontenttype
        case "dataschema": return dataschema
        case "subject": return subject
        case "time": return time
        default: return extensions.first { $0.key == name }?.value
        }
    }

    /// The reason this event is not a valid CloudEvents 1.0 event, or `nil`.
    public var invalidReason: String? {
        if id.isEmpty { return "attribute 'id' is required and must not be empty" }
        if source.isEmpty { return "attribute 'source' is required and must not be empty" }
        if specversion != "1.0" { return "attribute 'specversion' must be \"1.0\", found \"\(specversion)\"" }
        if type.isEmpty { return "attribute 'type' is required and must not be empty" }
        for (key, _) in extensions {
            guard !key.isEmpty, key.count <= 20, key.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber) }) else {
                return "extension name '\(key)' must be 1 to 20 lowercase letters or digits"
            }
        }
        return nil
    }

    /// Lends the event as a `px_event` for the duration of `body`.
    public func withCEvent<R>(_ body: (UnsafePointer<px_event>) throws -> R) rethrows -> R {
        // Every string is laid out in one buffer so that all the borrowed pointers live together.
        var arena: [UInt8] = []
        var spans: [(Int, Int)] = []
        func add(_ s: String?) {
            guard let s else {
                spans.append((-1, 0))
                return
            }
            spans.append((arena.count, s.utf8.count))
            arena.append(contentsOf: s.utf8)
        }
        for s in [id, source, specversion, type, datacontenttype, dataschema, subject, time] { add(s) }
        for (k, v) in extensions {
            add(k)
            add(v)
        }
        return try arena.withUnsafeBufferPointer { bytes in
            func str(_ i: Int) -> px_str {
                let (offset, length) = spans[i]
                guard offset >= 0, let base = bytes.baseAddress else { return px_str(ptr: nil, len: 0) }
                return px_str(ptr: UnsafeRawPointer(base + offset).assumingMemoryBound(to: CChar.self), len: length)
            }
            let kvs = (0..<extensions.count).map { px_kv(key: str(8 + 2 * $0), value: str(9 + 2 * $0)) }
            return try kvs.withUnsafeBufferPointer { kvBuffer in
                try data.withUnsafeBufferPointer { dataBuffer in
                    var e = px_event()
                    e.struct_size = UInt32(MemoryLayout<px_event>.size)
                    e.id = str(0)
                    e.source = str(1)
                    e.specversion = str(2)
                    e.type = str(3)
                    e.datacontenttype = str(4)
                    e.dataschema = str(5)
                    e.subject = str(6)
                    e.time = str(7)
                    e.extensions = kvBuffer.baseAddress
                    e.extension_count = kvBuffer.count
                    e.data = px_bytes(ptr: dataBuffer.baseAddress, len: dataBuffer.count)
                    return try withUnsafePointer(to: &e) { try body($0) }
                }
            }
        }
    }

    public static func == (lhs: CloudEvent, rhs: CloudEvent) -> Bool {
        lhs.id == rhs.id && lhs.source == rhs.source && lhs.specversion == rhs.specversion && lhs.type == rhs.type
            && lhs.datacontenttype == rhs.datacontenttype && lhs.dataschema == rhs.dataschema
            && lhs.subject == rhs.subject && lhs.time == rhs.time && lhs.data == rhs.data
            && lhs.extensions.map(\.key) == rhs.extensions.map(\.key)
            && lhs.extensions.map(\.value) == rhs.extensions.map(\.value)
    }
}

extension px_str {
    /// The text, decoded as UTF-8 (invalid sequences replaced); "" when absent.
    public var string: String {
        guard let ptr, len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: len), as: UTF8.self)
    }

    /// The text, or `nil` when absent (`{NULL, 0}`).
    public var optionalString: String? { ptr == nil ? nil : string }
}

/// Lends `s` as a `px_str` for the duration of `body`.
public func withPXStr<R>(_ s: String, _ body: (px_str) throws -> R) rethrows -> R {
    var copy = s
    return try copy.withUTF8 { buffer in
        try body(px_str(ptr: UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: CChar.self), len: buffer.count))
    }
}
