import PlexusPluginSDK

/// The payload of one ledger entry: one event and the time it was appended.
///
/// ```
/// u8 format (1)  u64 append time (Unix ns)  u8 present optional attributes: 1 datacontenttype, 2 dataschema,
/// 4 subject, 8 time
/// id, source, specversion, type, then the present optional attributes: each u32 length + UTF-8
/// u32 extension count, then each key and value as u32 length + UTF-8      u32 data length + data
/// ```
enum EntryCodec {
    static let format: UInt8 = 1

    /// The payload of a borrowed event: its bytes copied once.
    static func encode(_ event: EventView, appendTime: UInt64) -> [UInt8] {
        let optional = [event.datacontenttype, event.dataschema, event.subject, event.time]
        var size = 1 + 8 + 1 + 4 * 6 + event.data.count
        size += event.id.count + event.source.count + event.specversion.count + event.type.count
        for text in optional { if let text { size += 4 + text.count } }
        for (key, value) in event.extensions { size += 8 + key.count + value.count }
        var out: [UInt8] = []
        out.reserveCapacity(size)
        func put(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { out.append(contentsOf: $0) } }
        func put(_ bytes: UnsafeRawBufferPointer) {
            put(UInt32(bytes.count))
            out.append(contentsOf: bytes)
        }
        out.append(format)
        withUnsafeBytes(of: appendTime.littleEndian) { out.append(contentsOf: $0) }
        var present: UInt8 = 0
        for (bit, text) in optional.enumerated() where text != nil { present |= 1 << UInt8(bit) }
        out.append(present)
        for text in [event.id, event.source, event.specversion, event.type] { put(text.bytes) }
        for text in optional { if let text { put(text.bytes) } }
        put(UInt32(event.extensions.count))
        for (key, value) in event.extensions {
            put(key.bytes)
            put(value.bytes)
        }
        put(event.data)
        return out
    }

    /// A payload's event and append time.
    /// - Throws: `PluginError` (`PX_ERR_INTERNAL`) naming where the bytes stop making sense.
    static func decode(_ payload: [UInt8], offset: UInt64) throws -> StoredRecord {
        var position = 0
        func fail(_ why: String) -> PluginError {
            PluginError(PX_ERR_INTERNAL, "ledger-storage: the entry at offset \(offset) does not decode: \(why)")
        }
        func take(_ count: Int) throws -> ArraySlice<UInt8> {
            guard count >= 0, count <= payload.count - position else { throw fail("it ends early at byte \(position)") }
            defer { position += count }
            return payload[position..<(position + count)]
        }
        func u32() throws -> Int {
            var value: UInt32 = 0
            for (shift, byte) in try take(4).enumerated() { value |= UInt32(byte) << (shift * 8) }
            return Int(value)
        }
        func text() throws -> String { String(decoding: try take(try u32()), as: UTF8.self) }
        guard try take(1).first == format else { throw fail("unknown entry format") }
        var appendTime: UInt64 = 0
        for (shift, byte) in try take(8).enumerated() { appendTime |= UInt64(byte) << (shift * 8) }
        let present = try take(1).first!
        let id = try text()
        let source = try text()
        let specversion = try text()
        let type = try text()
        var optional: [String?] = []
        for bit in 0..<4 { optional.append(present & (1 << UInt8(bit)) != 0 ? try text() : nil) }
        var extensions: [(key: String, value: String)] = []
        for _ in 0..<(try u32()) { extensions.append((try text(), try text())) }
        let data = Array(try take(try u32()))
        guard position == payload.count else { throw fail("\(payload.count - position) bytes follow the event") }
        let event = CloudEvent(
            id: id, source: source, specversion: specversion, type: type, datacontenttype: optional[0],
            dataschema: optional[1], subject: optional[2], time: optional[3], extensions: extensions, data: data)
        return StoredRecord(offset: offset, appendTimeNanoseconds: appendTime, event: event)
    }
}
