import PlexusABI

/// A borrowed CloudEvent: a view over a `px_event` the kernel lends for one call, read in place.
///
/// Nothing is copied to make a view. The attributes are the caller's UTF-8 bytes (`Text`), turned into a
/// `String` only when asked (`Text.string`); the extensions are iterated straight from the caller's `px_kv`
/// array; `data` is the caller's bytes. `copy()` makes the owned `CloudEvent` for an event kept in that form.
///
/// Only the fields the event's `struct_size` covers are read; the others (an older, smaller `px_event`) read
/// as absent: empty for a required attribute, `nil` for an optional one, no extensions, empty data. A span
/// whose length is not positive (a `size_t` above `Int.max` arrives negative) reads as empty.
///
/// - Important: A view, and every `Text`, buffer and extension it hands out, is valid only during the call
///   that lent the event (for a storage plugin, the `append` call). Copy what you keep, before returning:
///   the bytes (`Text.bytes`, `data`) into your own buffer, or the whole event with `copy()`. Never keep a
///   view or a pointer taken from it, nor hand one to another thread that may outlive the call.
public struct EventView {
    /// The borrowed event.
    public let pointer: UnsafePointer<px_event>
    /// Its fields, those beyond `struct_size` zeroed (a copy of the struct, not of the bytes it points at).
    private let fields: px_event

    /// A view over `event`.
    /// - Important: Valid only while `event` and everything it points at are; see the type's documentation.
    public init(_ event: UnsafePointer<px_event>) {
        pointer = event
        fields = px_event(fieldsOf: event)
    }

    /// UTF-8 text borrowed from the event: its bytes, and a `String` made on demand.
    ///
    /// - Important: Valid only as long as the view it came from.
    public struct Text: Equatable, CustomStringConvertible {
        /// The UTF-8 bytes; `count` 0 for an empty (or absent required) attribute.
        public let bytes: UnsafeRawBufferPointer

        init(_ text: px_str) {
            if let ptr = text.ptr, text.len > 0 {
                bytes = UnsafeRawBufferPointer(start: ptr, count: text.len)
            } else {
                bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            }
        }

        /// The text, absent if `ptr` is NULL.
        static func optional(_ text: px_str) -> Text? { text.ptr == nil ? nil : Text(text) }

        /// The number of UTF-8 bytes.
        public var count: Int { bytes.count }

        /// Whether the text is empty.
        public var isEmpty: Bool { bytes.isEmpty }

        /// A `String` of the text, invalid UTF-8 replaced (this allocates and copies).
        public var string: String { String(decoding: bytes, as: UTF8.self) }

        public var description: String { string }

        /// Whether the bytes are those of `other`'s UTF-8 form, compared without making a `String`.
        public static func == (text: Text, other: String) -> Bool {
            var copy = other
            return copy.withUTF8 { other in
                other.count == text.count && (other.isEmpty || text.bytes.elementsEqual(UnsafeRawBufferPointer(other)))
            }
        }

        public static func == (lhs: Text, rhs: Text) -> Bool { lhs.bytes.elementsEqual(rhs.bytes) }
    }

    /// `id` (required).
    public var id: Text { Text(fields.id) }
    /// `source` (required).
    public var source: Text { Text(fields.source) }
    /// `specversion` (required; `"1.0"`).
    public var specversion: Text { Text(fields.specversion) }
    /// `type` (required).
    public var type: Text { Text(fields.type) }
    /// `datacontenttype`, `nil` when absent.
    public var datacontenttype: Text? { Text.optional(fields.datacontenttype) }
    /// `dataschema`, `nil` when absent.
    public var dataschema: Text? { Text.optional(fields.dataschema) }
    /// `subject`, `nil` when absent.
    public var subject: Text? { Text.optional(fields.subject) }
    /// `time` (RFC 3339), `nil` when absent.
    public var time: Text? { Text.optional(fields.time) }

    /// The payload bytes; empty when there are none.
    public var data: UnsafeRawBufferPointer {
        guard let ptr = fields.data.ptr, fields.data.len > 0 else {
            return UnsafeRawBufferPointer(start: nil, count: 0)
        }
        return UnsafeRawBufferPointer(start: ptr, count: fields.data.len)
    }

    /// The extension attributes, in the order the event lists them, read in place (iterating allocates
    /// nothing).
    public var extensions: Extensions { Extensions(fields) }

    /// The extensions of a borrowed event: a random-access collection of `(key, value)` text pairs.
    ///
    /// - Important: Valid only as long as the view it came from.
    public struct Extensions: RandomAccessCollection {
        private let base: UnsafePointer<px_kv>?
        public let endIndex: Int
        public var startIndex: Int { 0 }

        init(_ event: px_event) {
            if let base = event.extensions, event.extension_count > 0 {
                self.base = base
                endIndex = event.extension_count
            } else {
                base = nil
                endIndex = 0
            }
        }

        public subscript(position: Int) -> (key: Text, value: Text) {
            precondition(position >= 0 && position < endIndex, "EventView.Extensions: index out of range")
            let pair = base![position]
            return (Text(pair.key), Text(pair.value))
        }

        /// The value of the first extension named `name`, if any.
        public func value(of name: String) -> Text? { first { $0.key == name }?.value }
    }

    /// The bytes of the event's attributes, extension keys and values, and data: what copying them takes.
    public var byteCount: Int {
        var total = id.count + source.count + specversion.count + type.count + data.count
        total += (datacontenttype?.count ?? 0) + (dataschema?.count ?? 0) + (subject?.count ?? 0)
        total += time?.count ?? 0
        for (key, value) in extensions { total += key.count + value.count }
        return total
    }

    /// An owned copy of the event, to keep after the call.
    public func copy() -> CloudEvent { CloudEvent(copying: pointer) }
}

/// A borrowed batch of events: a view over the `const px_event *const *` array of an append, whose elements
/// are `EventView`s.
///
/// - Important: Valid only during the call that lent the batch, like every `EventView` it makes; see
///   `EventView`. Copy what you keep before returning.
public struct EventBatchView: RandomAccessCollection {
    private let base: UnsafePointer<UnsafePointer<px_event>?>?
    public let endIndex: Int
    public var startIndex: Int { 0 }

    /// A view over `count` event pointers, none of them NULL (the SDK checks an append's array before it
    /// makes the view).
    /// - Important: Valid only while the array and the events are; see the type's documentation.
    public init(_ events: UnsafePointer<UnsafePointer<px_event>?>?, count: Int) {
        precondition(count == 0 || events != nil, "EventBatchView: \(count) events but no array")
        base = count > 0 ? events : nil
        endIndex = Swift.max(count, 0)
    }

    /// A view over a buffer of event pointers, none of them NULL.
    /// - Important: Valid only while the buffer and the events are.
    public init(_ events: UnsafeBufferPointer<UnsafePointer<px_event>?>) {
        self.init(events.baseAddress, count: events.count)
    }

    public subscript(position: Int) -> EventView {
        precondition(position >= 0 && position < endIndex, "EventBatchView: index out of range")
        return EventView(base![position]!)
    }

    /// Runs `body` with the `const px_event *const *` array the view reads.
    /// - Important: Valid only while the view is.
    func withPointers<R>(_ body: (UnsafeBufferPointer<UnsafePointer<px_event>?>) -> R) -> R {
        body(UnsafeBufferPointer(start: base, count: endIndex))
    }

    /// Owned copies of every event.
    public func copy() -> [CloudEvent] { map { $0.copy() } }

    /// Lends `events` as a borrowed batch for the duration of `body`, laid out in C memory as the kernel lends
    /// them (for tests, and for a plugin calling its own storage code).
    /// - Important: The view is valid only inside `body`.
    public static func withBorrowed<R>(_ events: [CloudEvent], _ body: (EventBatchView) throws -> R) rethrows -> R {
        let batch = CEventBatch(events)
        return try withExtendedLifetime(batch) { try body(EventBatchView(batch.pointers)) }
    }
}
