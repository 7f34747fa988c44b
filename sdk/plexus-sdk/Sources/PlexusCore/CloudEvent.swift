import PlexusABI

extension px_status_code {
    /// The code as the `px_status` that ABI functions return.
    public var status: px_status { px_status(bitPattern: rawValue) }
}

/// A CloudEvents 1.0 event in owned Swift values: the copy a kernel, client or plugin keeps of a borrowed
/// `px_event`.
///
/// The owned counterpart of `px_event`: every attribute is a `String`, `data` an array. Building one copies
/// every byte of the event, so the hot paths avoid it: a storage plugin reads the borrowed `EventView` the SDK
/// hands it and calls `copy()` only for an event it keeps in this form; `CEventBatch` lays `CloudEvent`s out
/// as C events to lend them across the ABI.
///
/// Optional attributes are `nil` when absent; a present attribute may be empty. `Equatable` compares every
/// attribute, the extensions in order, and the data.
public struct CloudEvent: Sendable, Equatable {
    /// `id`: identifies the event within its `source`; required, non-empty.
    public var id: String
    /// `source`: a URI reference naming the context the event happened in; required, non-empty.
    public var source: String
    /// `specversion`: the CloudEvents version, `"1.0"`.
    public var specversion: String
    /// `type`: what happened, such as `com.example.order.created`; required, non-empty.
    public var type: String
    /// `datacontenttype`: the media type of `data`, such as `application/json`.
    public var datacontenttype: String?
    /// `dataschema`: a URI of the schema `data` adheres to.
    public var dataschema: String?
    /// `subject`: what the event is about within its source.
    public var subject: String?
    /// `time`: when it happened, as RFC 3339 text.
    public var time: String?
    /// Extension attributes in their canonical string form, in the order given: names are 1 to 20 lowercase
    /// letters or digits (`invalidReason` checks them).
    public var extensions: [(key: String, value: String)]
    /// The payload.
    public var data: [UInt8]

    /// An event from its attributes; `specversion` defaults to `"1.0"`.
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

    /// Copies a borrowed C event.
    ///
    /// Only the first `struct_size` bytes of `event` are read. A field that does not fit entirely within them
    /// (an older, smaller `px_event`) is treated as absent: `""` for a required attribute, `nil` for an
    /// optional one, no extensions, empty data. A string or byte span whose pointer is NULL or whose length
    /// is not positive (a `size_t` above `Int.max` arrives negative) is never read; see `px_str.string`.
    /// - Parameter event: a `px_event` with at least `struct_size` readable bytes.
    public init(copying event: UnsafePointer<px_event>) {
        let e = px_event(fieldsOf: event)
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
        data = e.data.bytes
    }

    /// Where each field of `px_event` ends, in bytes from the start, ascending.
    fileprivate static let eventFieldEnds: [Int] = {
        func end<T>(_ path: KeyPath<px_event, T>) -> Int? {
            MemoryLayout<px_event>.offset(of: path).map { $0 + MemoryLayout<T>.size }
        }
        let ends = [
            end(\.struct_size), end(\.reserved), end(\.id), end(\.source), end(\.specversion), end(\.type),
            end(\.datacontenttype), end(\.dataschema), end(\.subject), end(\.time), end(\.extensions),
            end(\.extension_count), end(\.data),
        ]
        return ends.compactMap { $0 }.sorted()
    }()

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

    /// The reason this event is not a valid CloudEvents 1.0 event, or `nil`: the required attributes, the
    /// extension names, and the value constraints of `CloudEventRules`.
    public var invalidReason: String? {
        if id.isEmpty { return "attribute 'id' is required and must not be empty" }
        if source.isEmpty { return "attribute 'source' is required and must not be empty" }
        if specversion != "1.0" { return "attribute 'specversion' must be \"1.0\", found \"\(specversion)\"" }
        if type.isEmpty { return "attribute 'type' is required and must not be empty" }
        for (key, _) in extensions {
            guard !key.isEmpty, key.count <= 20, key.allSatisfy({ $0.isASCII && ($0.isLowercase || $0.isNumber) })
            else {
                return "extension name '\(key)' must be 1 to 20 lowercase letters or digits"
            }
        }
        return CloudEventRules.problem(self)?.message
    }

    /// Lends the event as a `px_event` for the duration of `body`.
    ///
    /// The layout is `CEventBatch`'s: absent attributes are `{NULL, 0}`, present strings (even empty) are not.
    /// - Important: The pointer and everything it reaches are valid only inside `body`.
    public func withCEvent<R>(_ body: (UnsafePointer<px_event>) throws -> R) rethrows -> R {
        let batch = CEventBatch([self])
        return try withExtendedLifetime(batch) { try body(batch.event(at: 0)) }
    }

    public static func == (lhs: CloudEvent, rhs: CloudEvent) -> Bool {
        lhs.id == rhs.id && lhs.source == rhs.source && lhs.specversion == rhs.specversion && lhs.type == rhs.type
            && lhs.datacontenttype == rhs.datacontenttype && lhs.dataschema == rhs.dataschema
            && lhs.subject == rhs.subject && lhs.time == rhs.time && lhs.data == rhs.data
            && lhs.extensions.map(\.key) == rhs.extensions.map(\.key)
            && lhs.extensions.map(\.value) == rhs.extensions.map(\.value)
    }
}

extension px_event {
    /// The fields of a borrowed event that its `struct_size` covers whole; the others zero, which the ABI
    /// reads as absent (an older, smaller `px_event`). Copies the struct only, never the bytes it points at.
    /// - Parameter event: a `px_event` with at least `struct_size` readable bytes.
    public init(fieldsOf event: UnsafePointer<px_event>) {
        let size = Int(UnsafeRawPointer(event).load(as: UInt32.self))
        if size >= MemoryLayout<px_event>.size {
            self = event.pointee
            return
        }
        // Copy the fields that fit whole; the rest stay zero.
        let usable = CloudEvent.eventFieldEnds.last { $0 <= size } ?? 0
        var partial = px_event()
        withUnsafeMutableBytes(of: &partial) {
            $0.copyMemory(from: UnsafeRawBufferPointer(start: event, count: usable))
        }
        self = partial
    }
}

extension px_str {
    /// The text, decoded as UTF-8 (invalid sequences replaced); "" when absent, when `len` is not positive
    /// (a `size_t` above `Int.max` arrives negative), or when `ptr` is NULL whatever `len` says.
    public var string: String {
        guard let ptr, len > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: ptr, count: len), as: UTF8.self)
    }

    /// The text, or `nil` when absent: `ptr` is NULL (whatever `len` says). A non-NULL `ptr` with a length
    /// that is not positive is present and empty.
    public var optionalString: String? { ptr == nil ? nil : string }
}

extension px_bytes {
    /// A copy of the bytes; empty when `ptr` is NULL or `len` is not positive (a `size_t` above `Int.max`
    /// arrives negative).
    public var bytes: [UInt8] {
        guard let ptr, len > 0 else { return [] }
        return Array(UnsafeBufferPointer(start: ptr, count: len))
    }
}

/// Lends `s` as a `px_str` for the duration of `body`.
public func withPXStr<R>(_ s: String, _ body: (px_str) throws -> R) rethrows -> R {
    var copy = s
    return try copy.withUTF8 { buffer in
        try body(
            px_str(ptr: UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: CChar.self), len: buffer.count))
    }
}
