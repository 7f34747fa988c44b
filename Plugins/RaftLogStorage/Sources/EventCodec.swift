import PlexusPluginSDK

/// An entry body: one CloudEvent in a compact binary form.
///
/// ```
/// u8 codec version (1)   u8 present optional attributes: 1 datacontenttype, 2 dataschema, 4 subject, 8 time
/// id, source, specversion, type, then the present optional attributes in that order: each u32 length + UTF-8
/// u32 extension count, then each key and value as u32 length + UTF-8
/// u32 data length + data
/// ```
enum EventCodec {
    static let version: UInt8 = 1

    /// The body of `event`.
    static func encode(_ event: CloudEvent) -> [UInt8] {
        var size = 2 + 4 * 6 + event.data.count
        for text in [event.id, event.source, event.specversion, event.type] { size += text.utf8.count }
        for text in [event.datacontenttype, event.dataschema, event.subject, event.time] {
            if let text { size += 4 + text.utf8.count }
        }
        for (key, value) in event.extensions { size += 8 + key.utf8.count + value.utf8.count }

        var bytes: [UInt8] = []
        bytes.reserveCapacity(size)
        var present: UInt8 = 0
        for (bit, text) in [event.datacontenttype, event.dataschema, event.subject, event.time].enumerated()
        where text != nil {
            present |= 1 << UInt8(bit)
        }
        bytes.append(version)
        bytes.append(present)
        func append(_ length: Int) {
            withUnsafeBytes(of: UInt32(length).littleEndian) { bytes.append(contentsOf: $0) }
        }
        func append(_ text: String) {
            append(text.utf8.count)
            bytes.append(contentsOf: text.utf8)
        }
        for text in [event.id, event.source, event.specversion, event.type] { append(text) }
        for text in [event.datacontenttype, event.dataschema, event.subject, event.time] {
            if let text { append(text) }
        }
        append(event.extensions.count)
        for (key, value) in event.extensions {
            append(key)
            append(value)
        }
        append(event.data.count)
        bytes.append(contentsOf: event.data)
        return bytes
    }

    /// Decodes a body written by `encode`.
    /// - Throws: `LogFormatError` when the bytes are not one.
    static func decode(_ raw: UnsafeRawBufferPointer) throws -> CloudEvent {
        var reader = Reader(raw: raw)
        let codec = try reader.byte()
        guard codec == version else { throw LogFormatError("unknown event codec version \(codec)") }
        let present = try reader.byte()
        let id = try reader.string()
        let source = try reader.string()
        let specversion = try reader.string()
        let type = try reader.string()
        var optional: [String?] = []
        for bit in 0..<4 { optional.append(present & (1 << UInt8(bit)) != 0 ? try reader.string() : nil) }
        let extensionCount = try reader.length()
        var extensions: [(key: String, value: String)] = []
        extensions.reserveCapacity(extensionCount)
        for _ in 0..<extensionCount { extensions.append((try reader.string(), try reader.string())) }
        let data = try reader.bytes(try reader.length())
        guard reader.position == raw.count else {
            throw LogFormatError("\(raw.count - reader.position) bytes follow the event")
        }
        return CloudEvent(
            id: id, source: source, specversion: specversion, type: type, datacontenttype: optional[0],
            dataschema: optional[1], subject: optional[2], time: optional[3], extensions: extensions, data: data)
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

        mutating func byte() throws -> UInt8 { try take(1)[0] }

        mutating func length() throws -> Int { Int(try take(4).loadLE(UInt32.self, at: 0)) }

        mutating func string() throws -> String { String(decoding: try take(try length()), as: UTF8.self) }

        mutating func bytes(_ count: Int) throws -> [UInt8] { Array(try take(count)) }
    }
}
