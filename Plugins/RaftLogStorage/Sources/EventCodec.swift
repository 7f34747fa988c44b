import PlexusPluginSDK

/// An entry body: one CloudEvent in a compact binary form.
///
/// ```
/// u8 codec version (1)   u8 present optional attributes: 1 datacontenttype, 2 dataschema, 4 subject, 8 time
/// id, source, specversion, type, then the present optional attributes in that order: each u32 length + UTF-8
/// u32 extension count, then each key and value as u32 length + UTF-8
/// u32 data length + data
/// ```
///
/// Every text and the data lie whole in the body, so a read lays a `px_event` over the body in place
/// (`layOut`) instead of decoding it into owned values: the bytes are copied once on append (`encode`, from
/// the kernel's borrowed event) and not at all on read (past the `pread` into the read buffer).
enum EventCodec {
    static let version: UInt8 = 1

    /// The body of a borrowed event: its bytes copied once, straight into the body.
    static func encode(_ event: EventView) -> [UInt8] {
        let optional = (event.datacontenttype, event.dataschema, event.subject, event.time)
        let extensions = event.extensions
        var size = 2 + 4 * 6 + event.data.count
        size += event.id.count + event.source.count + event.specversion.count + event.type.count
        for text in [optional.0, optional.1, optional.2, optional.3] {
            if let text { size += 4 + text.count }
        }
        for (key, value) in extensions { size += 8 + key.count + value.count }

        return [UInt8](unsafeUninitializedCapacity: size) { buffer, initialized in
            let out = UnsafeMutableRawBufferPointer(buffer)
            var position = 0
            func put(_ bytes: UnsafeRawBufferPointer) {
                guard !bytes.isEmpty else { return }
                UnsafeMutableRawBufferPointer(rebasing: out[position..<(position + bytes.count)]).copyMemory(
                    from: bytes)
                position += bytes.count
            }
            func put(_ length: Int) {
                out.storeBytes(of: UInt32(length).littleEndian, toByteOffset: position, as: UInt32.self)
                position += 4
            }
            func put(_ text: EventView.Text) {
                put(text.count)
                put(text.bytes)
            }
            var present: UInt8 = 0
            if optional.0 != nil { present |= 1 }
            if optional.1 != nil { present |= 2 }
            if optional.2 != nil { present |= 4 }
            if optional.3 != nil { present |= 8 }
            out[0] = version
            out[1] = present
            position = 2
            put(event.id)
            put(event.source)
            put(event.specversion)
            put(event.type)
            for text in [optional.0, optional.1, optional.2, optional.3] {
                if let text { put(text) }
            }
            put(extensions.count)
            for (key, value) in extensions {
                put(key)
                put(value)
            }
            put(event.data.count)
            put(event.data)
            precondition(position == size, "EventCodec: encoded \(position) bytes of \(size)")
            initialized = size
        }
    }

    /// Checks that `raw` is a body written by `encode` and counts its extensions, copying nothing.
    /// - Throws: `LogFormatError` when the bytes are not one.
    /// - Returns: the number of extensions.
    static func check(_ raw: UnsafeRawBufferPointer) throws -> Int {
        var reader = Reader(raw: raw)
        let present = try reader.header()
        for _ in 0..<4 { _ = try reader.text() }
        for bit in 0..<4 where present & (1 << UInt8(bit)) != 0 { _ = try reader.text() }
        let extensionCount = try reader.length()
        for _ in 0..<extensionCount {
            _ = try reader.text()
            _ = try reader.text()
        }
        _ = try reader.take(try reader.length())
        try reader.finish()
        return extensionCount
    }

    /// Lays a `px_event` over a body in place: every text and the data point into `raw`, which must outlive
    /// the event (a lent batch retains the read buffer). Absent optional attributes are `{NULL, 0}`, as are
    /// empty data and no extensions.
    /// - Parameters:
    ///   - event: a `px_event` with `struct_size` set, to fill.
    ///   - pairs: where the extensions go, `extensionCount` of them (see `check`).
    /// - Throws: `LogFormatError` when the bytes are not a body.
    static func layOut(
        _ raw: UnsafeRawBufferPointer, into event: UnsafeMutablePointer<px_event>,
        pairs: (Int) -> UnsafeMutableBufferPointer<px_kv>
    ) throws {
        var reader = Reader(raw: raw)
        let present = try reader.header()
        event.pointee.id = try reader.text()
        event.pointee.source = try reader.text()
        event.pointee.specversion = try reader.text()
        event.pointee.type = try reader.text()
        func optional(_ bit: UInt8) throws -> px_str {
            present & bit != 0 ? try reader.text() : px_str(ptr: nil, len: 0)
        }
        event.pointee.datacontenttype = try optional(1)
        event.pointee.dataschema = try optional(2)
        event.pointee.subject = try optional(4)
        event.pointee.time = try optional(8)
        let extensionCount = try reader.length()
        if extensionCount > 0 {
            let kv = pairs(extensionCount)
            for index in 0..<extensionCount { kv[index] = px_kv(key: try reader.text(), value: try reader.text()) }
            event.pointee.extensions = UnsafePointer(kv.baseAddress)
            event.pointee.extension_count = extensionCount
        }
        let data = try reader.take(try reader.length())
        if !data.isEmpty {
            event.pointee.data = px_bytes(ptr: data.baseAddress!.assumingMemoryBound(to: UInt8.self), len: data.count)
        }
        try reader.finish()
    }

    /// Reads a body front to back, refusing to read past its end.
    private struct Reader {
        let raw: UnsafeRawBufferPointer
        var position = 0

        mutating func take(_ count: Int) throws -> UnsafeRawBufferPointer {
            guard count >= 0, count <= raw.count - position else {
                throw LogFormatError("the event body ends early (needs \(count) bytes at byte \(position))")
            }
            defer { position += count }
            return UnsafeRawBufferPointer(rebasing: raw[position..<(position + count)])
        }

        /// The codec version (checked) and the bits of the present optional attributes (only the four defined
        /// ones: `encode` sets no other, so another is damage, not an attribute to skip).
        mutating func header() throws -> UInt8 {
            let codec = try take(1)[0]
            guard codec == version else { throw LogFormatError("unknown event codec version \(codec)") }
            let present = try take(1)[0]
            guard present & 0xF0 == 0 else {
                throw LogFormatError("undefined optional-attribute bits \(present & 0xF0) in the event body")
            }
            return present
        }

        mutating func length() throws -> Int { Int(try take(4).loadLE(UInt32.self, at: 0)) }

        /// A text in place: never NULL, even when empty (a present attribute stays present).
        mutating func text() throws -> px_str {
            let length = try length()
            let start = raw.baseAddress! + position
            _ = try take(length)
            return px_str(ptr: start.assumingMemoryBound(to: CChar.self), len: length)
        }

        func finish() throws {
            guard position == raw.count else { throw LogFormatError("\(raw.count - position) bytes follow the event") }
        }
    }
}
