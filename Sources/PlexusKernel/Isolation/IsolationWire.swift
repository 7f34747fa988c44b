import PlexusABI
import PlexusCore

/// The framing the kernel and a `plexus plugin-host` child speak over their Unix socket pair
/// (`isolation: process`).
///
/// Every message is one frame, little-endian throughout:
///
///     u32 length   bytes that follow (13 ... `IsolationWire.maxFrame`)
///     u8  kind     1 request (a reply is owed), 2 reply, 3 notice (no reply)
///     u32 op       what the message is (`IsolationOp`); a reply repeats its request's op
///     u64 id       correlation id: a reply carries the id of the request it answers; 0 in a notice
///     ...          the payload, a sequence of fields in the order the op defines
///
/// Payload fields: `u8`, `u32`, `i32`, `u64`, `f64` (IEEE bits as u64), `bytes` (u32 length, then the bytes),
/// `text` (as bytes, UTF-8), `optional text` (u8 0 absent / 1 present, then text), an event (`px_event`: id,
/// source, specversion, type as text; datacontenttype, dataschema, subject, time as optional text; u32
/// extension count, each key and value as text; data as bytes) and a record (u64 offset, u64 append time, the
/// event). Every reply payload begins with `i32 status` and the error `text`.
///
/// A file descriptor (`listen`) travels beside the frame that announces it, as `SCM_RIGHTS` ancillary data on
/// the first byte of that frame.
///
/// The decoder refuses malformed input with an `IsolationWireError`, never by trapping: a length outside the
/// bounds, an unknown kind, a field running past the end of its frame, bytes left over after the last field.
enum IsolationWire {
    /// The largest frame either side accepts (64 MiB): more than the largest publish batch the kernel takes.
    static let maxFrame = 64 << 20
    /// kind + op + id.
    static let headerBytes = 13
}

/// A frame that could not be decoded, with what was wrong.
struct IsolationWireError: Error, CustomStringConvertible, Equatable {
    var description: String
    init(_ description: String) { self.description = description }
}

/// What a message is. Requests from the kernel to the child are below 100, from the child to the kernel 100
/// and up.
enum IsolationOp: UInt32, Sendable {
    // Kernel → child.
    case hello = 1
    case create = 2
    case start = 3
    case stop = 4
    case destroy = 5
    case health = 6
    case openStream = 10
    case closeStream = 11
    case append = 12
    case read = 13
    case commitOffset = 14
    case fetchOffset = 15
    case trim = 16
    case streamInfo = 17
    case deliver = 30
    case timerFired = 31
    case watchEvent = 32
    /// A change under a prefix a child watches through `kv_watch` (ABI 1.4).
    case kvWatchEvent = 33
    /// The completion of a child's `registry_keepalive` or `kv_*` call, after its request was answered (ABI 1.4).
    case hostCompletion = 34
    // Child → kernel.
    case log = 100
    case counterAdd = 101
    case gaugeSet = 102
    case histogramRecord = 103
    case publish = 104
    case subscribe = 105
    case unsubscribe = 106
    case ack = 107
    case nack = 108
    case timerStart = 109
    case timerCancel = 110
    case storageRead = 111
    case metricCreate = 112
    case metricRecord = 113
    case listen = 114
    case registryRegister = 115
    case registryDeregister = 116
    case registryLookup = 117
    case registryWatch = 118
    case registryUnwatch = 119
    // Child → kernel, ABI 1.4: answered at once with the kernel's synchronous status; the completion follows as a
    // `hostCompletion` notice carrying the token the child chose.
    case registryKeepAlive = 120
    case kvGet = 121
    case kvPut = 122
    case kvDelete = 123
    case kvList = 124
    case kvWatch = 125
    case kvUnwatch = 126
}

/// One decoded frame.
struct IsolationFrame: Sendable, Equatable {
    enum Kind: UInt8, Sendable {
        case request = 1
        case reply = 2
        case notice = 3
    }

    var kind: Kind
    var op: IsolationOp
    var id: UInt64
    var payload: [UInt8]

    /// The frame's bytes, length prefix included.
    func encoded() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(4 + IsolationWire.headerBytes + payload.count)
        WireWriter.appendU32(&out, UInt32(IsolationWire.headerBytes + payload.count))
        out.append(kind.rawValue)
        WireWriter.appendU32(&out, op.rawValue)
        WireWriter.appendU64(&out, id)
        out.append(contentsOf: payload)
        return out
    }
}

/// Splits a byte stream into frames; bytes may arrive split anywhere.
struct IsolationFrameDecoder {
    private var buffer: [UInt8] = []
    private var start = 0

    /// Adds bytes read from the socket.
    mutating func append(_ bytes: UnsafeRawBufferPointer) {
        if start > 0, start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        } else if start > 1 << 20 {
            buffer.removeFirst(start)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    mutating func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// The next whole frame, `nil` when more bytes are needed.
    /// - Throws: `IsolationWireError` for a length outside the bounds, an unknown kind or op; the stream is
    ///   then unusable.
    mutating func next() throws -> IsolationFrame? {
        let available = buffer.count - start
        guard available >= 4 else { return nil }
        let length = Int(
            UInt32(buffer[start]) | UInt32(buffer[start + 1]) << 8 | UInt32(buffer[start + 2]) << 16
                | UInt32(buffer[start + 3]) << 24)
        guard length >= IsolationWire.headerBytes, length <= IsolationWire.maxFrame else {
            throw IsolationWireError(
                "frame length \(length) is outside \(IsolationWire.headerBytes)...\(IsolationWire.maxFrame)")
        }
        guard available >= 4 + length else { return nil }
        let body = start + 4
        guard let kind = IsolationFrame.Kind(rawValue: buffer[body]) else {
            throw IsolationWireError("unknown frame kind \(buffer[body])")
        }
        var reader = WireReader(buffer[(body + 1)..<(body + 13)])
        let rawOp = try reader.u32()
        guard let op = IsolationOp(rawValue: rawOp) else { throw IsolationWireError("unknown op \(rawOp)") }
        let id = try reader.u64()
        let payload = Array(buffer[(body + IsolationWire.headerBytes)..<(body + length)])
        start = body + length
        return IsolationFrame(kind: kind, op: op, id: id, payload: payload)
    }
}

/// Appends payload fields.
struct WireWriter {
    var bytes: [UInt8] = []

    static func appendU32(_ out: inout [UInt8], _ value: UInt32) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }

    static func appendU64(_ out: inout [UInt8], _ value: UInt64) {
        withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) }
    }

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { Self.appendU32(&bytes, value) }
    mutating func i32(_ value: Int32) { Self.appendU32(&bytes, UInt32(bitPattern: value)) }
    mutating func u64(_ value: UInt64) { Self.appendU64(&bytes, value) }
    mutating func f64(_ value: Double) { Self.appendU64(&bytes, value.bitPattern) }

    mutating func raw(_ pointer: UnsafeRawPointer?, _ count: Int) {
        u32(UInt32(truncatingIfNeeded: count))
        if let pointer, count > 0 { bytes.append(contentsOf: UnsafeRawBufferPointer(start: pointer, count: count)) }
    }

    mutating func data(_ value: [UInt8]) {
        u32(UInt32(truncatingIfNeeded: value.count))
        bytes.append(contentsOf: value)
    }

    mutating func text(_ value: String) { data(Array(value.utf8)) }
    mutating func text(_ value: px_str) { raw(value.ptr, value.ptr == nil ? 0 : value.len) }

    mutating func optionalText(_ value: px_str) {
        guard value.ptr != nil else { return u8(0) }
        u8(1)
        text(value)
    }

    mutating func optionalText(_ value: String?) {
        guard let value else { return u8(0) }
        u8(1)
        text(value)
    }

    mutating func kvs(_ pairs: UnsafePointer<px_kv>?, _ count: Int) {
        guard let pairs else { return u32(0) }
        u32(UInt32(truncatingIfNeeded: count))
        for index in 0..<count {
            text(pairs[index].key)
            text(pairs[index].value)
        }
    }

    mutating func kvs(_ pairs: [(key: String, value: String)]) {
        u32(UInt32(truncatingIfNeeded: pairs.count))
        for pair in pairs {
            text(pair.key)
            text(pair.value)
        }
    }

    /// A borrowed C event.
    mutating func event(_ e: px_event) {
        text(e.id)
        text(e.source)
        text(e.specversion)
        text(e.type)
        optionalText(e.datacontenttype)
        optionalText(e.dataschema)
        optionalText(e.subject)
        optionalText(e.time)
        kvs(e.extensions, e.extension_count)
        raw(e.data.ptr, e.data.ptr == nil ? 0 : e.data.len)
    }

    mutating func events(_ events: UnsafePointer<UnsafePointer<px_event>?>?, _ count: Int) {
        guard let events else { return u32(0) }
        u32(UInt32(truncatingIfNeeded: count))
        for index in 0..<count {
            if let event = events[index] { self.event(event.pointee) } else { self.event(px_event()) }
        }
    }

    mutating func records(_ records: UnsafePointer<UnsafePointer<px_record>?>?, _ count: Int) {
        guard let records else { return u32(0) }
        u32(UInt32(truncatingIfNeeded: count))
        for index in 0..<count {
            let record = records[index]?.pointee ?? px_record()
            u64(record.offset)
            u64(record.append_time_ns)
            event(record.event?.pointee ?? px_event())
        }
    }

    /// A borrowed metadata entry (`px_kv_entry`): key, value, version, create and mod revisions.
    mutating func kvEntry(_ e: px_kv_entry) {
        text(e.key)
        raw(e.value.ptr, e.value.ptr == nil ? 0 : e.value.len)
        u64(e.version)
        u64(e.create_revision)
        u64(e.mod_revision)
    }

    /// Borrowed metadata entries, as `px_kv_list_done_fn` hands them over.
    mutating func kvEntries(_ entries: UnsafePointer<UnsafePointer<px_kv_entry>?>?, _ count: Int) {
        guard let entries else { return u32(0) }
        u32(UInt32(truncatingIfNeeded: count))
        for index in 0..<count { kvEntry(entries[index]?.pointee ?? px_kv_entry()) }
    }

    /// The status and error text every reply begins with.
    mutating func outcome(_ status: px_status, _ error: String) {
        i32(status)
        text(error)
    }
}

/// Reads payload fields, refusing any that runs past the end.
struct WireReader {
    private let bytes: ArraySlice<UInt8>
    private var position: Int

    init(_ bytes: ArraySlice<UInt8>) {
        self.bytes = bytes
        position = bytes.startIndex
    }

    init(_ bytes: [UInt8]) { self.init(bytes[...]) }

    var isAtEnd: Bool { position == bytes.endIndex }

    private mutating func take(_ count: Int, _ what: String) throws -> ArraySlice<UInt8> {
        guard count >= 0, bytes.endIndex - position >= count else {
            throw IsolationWireError(
                "\(what) needs \(count) bytes but \(bytes.endIndex - position) remain at byte \(position - bytes.startIndex)"
            )
        }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    /// A little-endian integer, loaded in place (every call and completion reads several).
    private mutating func integer<T: FixedWidthInteger>(_ type: T.Type, _ what: String) throws -> T {
        let size = MemoryLayout<T>.size
        guard bytes.endIndex - position >= size else {
            throw IsolationWireError(
                "\(what) needs \(size) bytes but \(bytes.endIndex - position) remain at byte \(position - bytes.startIndex)"
            )
        }
        let offset = position - bytes.startIndex
        defer { position += size }
        return T(littleEndian: bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: T.self) })
    }

    mutating func u8() throws -> UInt8 { try integer(UInt8.self, "a u8") }

    mutating func u32() throws -> UInt32 { try integer(UInt32.self, "a u32") }

    mutating func i32() throws -> Int32 { Int32(bitPattern: try u32()) }

    mutating func u64() throws -> UInt64 { try integer(UInt64.self, "a u64") }

    mutating func f64() throws -> Double { Double(bitPattern: try u64()) }

    mutating func data() throws -> [UInt8] {
        let count = Int(try u32())
        return Array(try take(count, "a byte string"))
    }

    mutating func text() throws -> String { String(decoding: try data(), as: UTF8.self) }

    mutating func optionalText() throws -> String? {
        switch try u8() {
        case 0: return nil
        case 1: return try text()
        case let flag: throw IsolationWireError("optional text flag \(flag) is neither 0 nor 1")
        }
    }

    /// A count of items at least `minimumBytes` each: refused when the frame cannot hold that many.
    mutating func count(minimumBytes: Int) throws -> Int {
        let count = Int(try u32())
        guard count <= (bytes.endIndex - position) / max(minimumBytes, 1) else {
            throw IsolationWireError(
                "a count of \(count) items cannot fit in the \(bytes.endIndex - position) bytes left")
        }
        return count
    }

    mutating func kvs() throws -> [(key: String, value: String)] {
        try (0..<count(minimumBytes: 8)).map { _ in (try text(), try text()) }
    }

    mutating func event() throws -> CloudEvent {
        CloudEvent(
            id: try text(), source: try text(), specversion: try text(), type: try text(),
            datacontenttype: try optionalText(), dataschema: try optionalText(), subject: try optionalText(),
            time: try optionalText(), extensions: try kvs(), data: try data())
    }

    mutating func events() throws -> [CloudEvent] { try (0..<count(minimumBytes: 28)).map { _ in try event() } }

    mutating func records() throws -> [StoredRecord] {
        try (0..<count(minimumBytes: 44)).map { _ in
            StoredRecord(offset: try u64(), appendTimeNanoseconds: try u64(), event: try event())
        }
    }

    mutating func kvEntry() throws -> KVEntryWire {
        KVEntryWire(
            key: try text(), value: try data(), version: try u64(), createRevision: try u64(), modRevision: try u64())
    }

    mutating func kvEntries() throws -> [KVEntryWire] { try (0..<count(minimumBytes: 32)).map { _ in try kvEntry() } }

    /// The status and error text every reply begins with.
    mutating func outcome() throws -> (status: px_status, error: String) { (try i32(), try text()) }

    /// Refuses bytes left after the last field.
    func finish() throws {
        guard isAtEnd else {
            throw IsolationWireError("\(bytes.endIndex - position) bytes follow the last field")
        }
    }
}

/// A metadata entry (`px_kv_entry`, ABI 1.4) as it crosses the socket.
struct KVEntryWire: Equatable, Sendable {
    var key: String
    var value: [UInt8]
    var version: UInt64
    var createRevision: UInt64
    var modRevision: UInt64

    /// Lays entries out as C for one call: `body` gets the `const px_kv_entry *const *` array.
    static func withC<R>(_ entries: [KVEntryWire], _ body: (UnsafeBufferPointer<UnsafePointer<px_kv_entry>?>) -> R)
        -> R
    {
        let strings = CStringArena()
        defer { strings.free() }
        let structs = UnsafeMutablePointer<px_kv_entry>.allocate(capacity: max(entries.count, 1))
        defer { structs.deallocate() }
        let values = UnsafeMutablePointer<UInt8>.allocate(capacity: max(entries.reduce(0) { $0 + $1.value.count }, 1))
        defer { values.deallocate() }
        var pointers: [UnsafePointer<px_kv_entry>?] = []
        pointers.reserveCapacity(entries.count)
        var used = 0
        for (index, entry) in entries.enumerated() {
            let value = values + used
            entry.value.withUnsafeBufferPointer { bytes in
                if let base = bytes.baseAddress { value.update(from: base, count: bytes.count) }
            }
            used += entry.value.count
            (structs + index).initialize(
                to: px_kv_entry(
                    struct_size: UInt32(MemoryLayout<px_kv_entry>.size), reserved: 0, key: strings.str(entry.key),
                    value: px_bytes(ptr: UnsafePointer(value), len: entry.value.count), version: entry.version,
                    create_revision: entry.createRevision, mod_revision: entry.modRevision))
            pointers.append(UnsafePointer(structs + index))
        }
        return pointers.withUnsafeBufferPointer { body($0) }
    }
}
