import NIOCore
import PlexusABI
import PlexusCore

/// Where one field lies inside `WireEvents.bytes`; `offset < 0` marks an absent optional attribute.
public struct Span: Sendable, Equatable {
    public var offset: Int
    public var length: Int

    public static let absent = Span(offset: -1, length: 0)
    public var isPresent: Bool { offset >= 0 }
}

/// Where the fields of one encoded event lie inside `WireEvents.bytes`.
public struct EventLayout: Sendable, Equatable {
    public var id, source, specversion, type: Span
    public var datacontenttype, dataschema, subject, time: Span
    /// The event's extensions are `extensionSpans[2*i]` (name) and `extensionSpans[2*i + 1]` (value) for
    /// `i` in `firstExtension..<firstExtension + extensionCount`.
    public var firstExtension: Int
    public var extensionCount: Int
    public var data: Span
}

/// Events in their wire encoding, with the position of every field: what a `PUBLISH` or `DELIVER` frame
/// carries. The bytes are never copied into Swift strings on the way from the socket to the kernel:
/// `withCEvents` lays `px_event`s over them.
public struct WireEvents: Sendable, Equatable {
    /// The encoded events back to back; spans are offsets from `bytes.readerIndex`.
    public private(set) var bytes: ByteBuffer
    public private(set) var layouts: [EventLayout]
    public private(set) var extensionSpans: [Span]

    public var count: Int { layouts.count }

    public static func == (lhs: WireEvents, rhs: WireEvents) -> Bool { lhs.bytes == rhs.bytes }

    /// Presence bits of the optional attributes, in the order they follow the required ones.
    static let hasDataContentType: UInt8 = 1 << 0
    static let hasDataSchema: UInt8 = 1 << 1
    static let hasSubject: UInt8 = 1 << 2
    static let hasTime: UInt8 = 1 << 3

    /// Encodes events.
    /// - Throws: `WireError` (invalid argument) when a string exceeds 65,535 bytes or there are more than
    ///   65,535 extensions.
    public init(_ events: [CloudEvent], allocator: ByteBufferAllocator = ByteBufferAllocator()) throws {
        var buffer = allocator.buffer(capacity: events.reduce(0) { $0 + 64 + $1.data.count })
        for event in events { try buffer.writeWireEvent(event) }
        try self.init(parsing: &buffer, count: events.count)
    }

    /// Reads `count` events from `buffer`, validating their structure and UTF-8; advances the reader index
    /// past them.
    /// - Throws: `WireError` (malformed frame, not fatal) when the bytes are not `count` well-formed events.
    public init(parsing buffer: inout ByteBuffer, count: Int) throws {
        var layouts: [EventLayout] = []
        layouts.reserveCapacity(min(count, 4096))
        var extensionSpans: [Span] = []
        let consumed = try buffer.withUnsafeReadableBytes { raw -> Int in
            var cursor = WireCursor(raw)
            for index in 0..<count {
                do {
                    layouts.append(try cursor.readEventLayout(extensions: &extensionSpans))
                } catch let error as WireError {
                    throw WireError(
                        error.status, "event \(index): \(error.message)", frameType: error.frameType,
                        frameID: error.frameID, fatal: error.fatal)
                }
            }
            return cursor.position
        }
        // Slice before moving on: `getSlice` only reaches readable bytes, so it cannot look back behind the
        // reader index.
        self.bytes = buffer.readSlice(length: consumed) ?? ByteBuffer()
        self.layouts = layouts
        self.extensionSpans = extensionSpans
    }

    /// Decodes event `index` into Swift values.
    public func cloudEvent(at index: Int) -> CloudEvent {
        let layout = layouts[index]
        return bytes.withUnsafeReadableBytes { raw in
            func string(_ span: Span) -> String {
                String(
                    decoding: UnsafeRawBufferPointer(rebasing: raw[span.offset..<span.offset + span.length]),
                    as: UTF8.self)
            }
            func optional(_ span: Span) -> String? { span.isPresent ? string(span) : nil }
            var extensions: [(key: String, value: String)] = []
            extensions.reserveCapacity(layout.extensionCount)
            for i in layout.firstExtension..<layout.firstExtension + layout.extensionCount {
                extensions.append((string(extensionSpans[2 * i]), string(extensionSpans[2 * i + 1])))
            }
            return CloudEvent(
                id: string(layout.id), source: string(layout.source), specversion: string(layout.specversion),
                type: string(layout.type), datacontenttype: optional(layout.datacontenttype),
                dataschema: optional(layout.dataschema), subject: optional(layout.subject), time: optional(layout.time),
                extensions: extensions,
                data: Array(raw[layout.data.offset..<layout.data.offset + layout.data.length]))
        }
    }

    /// Every event decoded into Swift values.
    public var cloudEvents: [CloudEvent] { (0..<count).map(cloudEvent(at:)) }

    /// Lends the events as C `px_event`s pointing into `bytes`, for a call such as `px_host_api.publish`.
    ///
    /// Absent attributes are `{NULL, 0}`; present ones (even empty) point into the buffer.
    /// - Important: The pointers are valid only inside `body`.
    public func withCEvents<R>(_ body: (UnsafePointer<UnsafePointer<px_event>?>, Int) throws -> R) rethrows -> R {
        let n = max(count, 1)
        let events = UnsafeMutablePointer<px_event>.allocate(capacity: n)
        let pointers = UnsafeMutablePointer<UnsafePointer<px_event>?>.allocate(capacity: n)
        let kvs = UnsafeMutablePointer<px_kv>.allocate(capacity: max(extensionSpans.count / 2, 1))
        defer {
            events.deallocate()
            pointers.deallocate()
            kvs.deallocate()
        }
        return try bytes.withUnsafeReadableBytes { raw in
            // A present empty string needs a non-NULL pointer: any address inside (or at the end of) the buffer.
            let base = raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!
            func str(_ span: Span) -> px_str {
                guard span.isPresent else { return px_str(ptr: nil, len: 0) }
                return px_str(ptr: (base + span.offset).assumingMemoryBound(to: CChar.self), len: span.length)
            }
            for i in 0..<extensionSpans.count / 2 {
                kvs[i] = px_kv(key: str(extensionSpans[2 * i]), value: str(extensionSpans[2 * i + 1]))
            }
            for (index, layout) in layouts.enumerated() {
                var event = px_event()
                event.struct_size = UInt32(MemoryLayout<px_event>.size)
                event.id = str(layout.id)
                event.source = str(layout.source)
                event.specversion = str(layout.specversion)
                event.type = str(layout.type)
                event.datacontenttype = str(layout.datacontenttype)
                event.dataschema = str(layout.dataschema)
                event.subject = str(layout.subject)
                event.time = str(layout.time)
                event.extensions = layout.extensionCount > 0 ? UnsafePointer(kvs + layout.firstExtension) : nil
                event.extension_count = layout.extensionCount
                event.data =
                    layout.data.length > 0
                    ? px_bytes(
                        ptr: (base + layout.data.offset).assumingMemoryBound(to: UInt8.self), len: layout.data.length)
                    : px_bytes(ptr: nil, len: 0)
                events[index] = event
                pointers[index] = UnsafePointer(events + index)
            }
            return try body(pointers, count)
        }
    }
}

extension ByteBuffer {
    /// Writes a protocol string: a u16 length, then UTF-8.
    /// - Throws: `WireError` (invalid argument) above 65,535 bytes.
    @discardableResult
    public mutating func writeWireString(_ s: String) throws -> Int {
        let length = s.utf8.count
        guard length <= Int(UInt16.max) else {
            throw WireError(.invalidArgument, "a string of \(length) bytes exceeds 65535", fatal: false)
        }
        return writeInteger(UInt16(length)) + writeString(s)
    }

    /// Writes one event in the wire encoding (docs/protocols/tcp.md, "Events").
    public mutating func writeWireEvent(_ event: CloudEvent) throws {
        var presence: UInt8 = 0
        if event.datacontenttype != nil { presence |= WireEvents.hasDataContentType }
        if event.dataschema != nil { presence |= WireEvents.hasDataSchema }
        if event.subject != nil { presence |= WireEvents.hasSubject }
        if event.time != nil { presence |= WireEvents.hasTime }
        writeInteger(presence)
        for s in [event.id, event.source, event.specversion, event.type] { try writeWireString(s) }
        for s in [event.datacontenttype, event.dataschema, event.subject, event.time] {
            if let s { try writeWireString(s) }
        }
        guard event.extensions.count <= Int(UInt16.max) else {
            throw WireError(.invalidArgument, "\(event.extensions.count) extensions exceed 65535", fatal: false)
        }
        writeInteger(UInt16(event.extensions.count))
        for (key, value) in event.extensions {
            try writeWireString(key)
            try writeWireString(value)
        }
        guard event.data.count <= Int(UInt32.max) else {
            throw WireError(.invalidArgument, "data of \(event.data.count) bytes exceeds 4 GiB", fatal: false)
        }
        writeInteger(UInt32(event.data.count))
        writeBytes(event.data)
    }

    /// Writes a borrowed C event in the wire encoding, without going through Swift strings.
    /// - Throws: `WireError` (invalid argument) when a string exceeds 65,535 bytes.
    public mutating func writeWireEvent(_ event: UnsafePointer<px_event>) throws {
        let e = event.pointee
        func present(_ s: px_str) -> Bool { s.ptr != nil }
        var presence: UInt8 = 0
        if present(e.datacontenttype) { presence |= WireEvents.hasDataContentType }
        if present(e.dataschema) { presence |= WireEvents.hasDataSchema }
        if present(e.subject) { presence |= WireEvents.hasSubject }
        if present(e.time) { presence |= WireEvents.hasTime }
        writeInteger(presence)
        func put(_ s: px_str) throws {
            let length = s.ptr == nil ? 0 : max(s.len, 0)
            guard length <= Int(UInt16.max) else {
                throw WireError(.invalidArgument, "a string of \(length) bytes exceeds 65535", fatal: false)
            }
            writeInteger(UInt16(length))
            if let ptr = s.ptr, length > 0 { writeBytes(UnsafeRawBufferPointer(start: ptr, count: length)) }
        }
        for s in [e.id, e.source, e.specversion, e.type] { try put(s) }
        for s in [e.datacontenttype, e.dataschema, e.subject, e.time] where present(s) { try put(s) }
        let extensionCount = e.extensions == nil ? 0 : max(e.extension_count, 0)
        guard extensionCount <= Int(UInt16.max) else {
            throw WireError(.invalidArgument, "\(extensionCount) extensions exceed 65535", fatal: false)
        }
        writeInteger(UInt16(extensionCount))
        if let kvs = e.extensions {
            for i in 0..<extensionCount {
                try put(kvs[i].key)
                try put(kvs[i].value)
            }
        }
        let dataLength = e.data.ptr == nil ? 0 : max(e.data.len, 0)
        guard dataLength <= Int(UInt32.max) else {
            throw WireError(.invalidArgument, "data of \(dataLength) bytes exceeds 4 GiB", fatal: false)
        }
        writeInteger(UInt32(dataLength))
        if let ptr = e.data.ptr, dataLength > 0 { writeBytes(UnsafeRawBufferPointer(start: ptr, count: dataLength)) }
    }
}
