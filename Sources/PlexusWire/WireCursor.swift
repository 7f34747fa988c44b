/// Reads protocol values from raw bytes with bounds checks; every failure is a `WireError` (malformed
/// frame, not fatal: the frame's length was already trusted).
struct WireCursor {
    let raw: UnsafeRawBufferPointer
    private(set) var position = 0

    init(_ raw: UnsafeRawBufferPointer) { self.raw = raw }

    var remaining: Int { raw.count - position }

    private func malformed(_ message: String) -> WireError { WireError(.malformedFrame, message, fatal: false) }

    mutating func skip(_ count: Int, _ what: String) throws -> Int {
        guard count >= 0, count <= remaining else {
            throw malformed("\(what) needs \(count) bytes, \(remaining) left")
        }
        defer { position += count }
        return position
    }

    mutating func u8(_ what: String) throws -> UInt8 {
        raw[try skip(1, what)]
    }

    mutating func u16(_ what: String) throws -> UInt16 {
        let at = try skip(2, what)
        return UInt16(raw[at]) << 8 | UInt16(raw[at + 1])
    }

    mutating func u32(_ what: String) throws -> UInt32 {
        let at = try skip(4, what)
        var value: UInt32 = 0
        for i in 0..<4 { value = value << 8 | UInt32(raw[at + i]) }
        return value
    }

    mutating func u64(_ what: String) throws -> UInt64 {
        let at = try skip(8, what)
        var value: UInt64 = 0
        for i in 0..<8 { value = value << 8 | UInt64(raw[at + i]) }
        return value
    }

    /// A u16-length string, validated as UTF-8; returns where it lies.
    mutating func stringSpan(_ what: String) throws -> Span {
        let length = Int(try u16("the length of \(what)"))
        let at = try skip(length, what)
        guard Self.isValidUTF8(UnsafeRawBufferPointer(rebasing: raw[at..<at + length])) else {
            throw malformed("\(what) is not valid UTF-8")
        }
        return Span(offset: at, length: length)
    }

    mutating func string(_ what: String) throws -> String {
        let span = try stringSpan(what)
        return String(
            decoding: UnsafeRawBufferPointer(rebasing: raw[span.offset..<span.offset + span.length]), as: UTF8.self)
    }

    /// A u32-length byte string; returns where it lies.
    mutating func bytesSpan(_ what: String) throws -> Span {
        let length = Int(try u32("the length of \(what)"))
        return Span(offset: try skip(length, what), length: length)
    }

    mutating func readEventLayout(extensions: inout [Span]) throws -> EventLayout {
        let presence = try u8("the presence bits")
        guard presence & 0xF0 == 0 else { throw malformed("unknown presence bits 0x\(String(presence, radix: 16))") }
        let id = try stringSpan("id")
        let source = try stringSpan("source")
        let specversion = try stringSpan("specversion")
        let type = try stringSpan("type")
        func optional(_ bit: UInt8, _ what: String) throws -> Span {
            presence & bit != 0 ? try stringSpan(what) : .absent
        }
        let datacontenttype = try optional(WireEvents.hasDataContentType, "datacontenttype")
        let dataschema = try optional(WireEvents.hasDataSchema, "dataschema")
        let subject = try optional(WireEvents.hasSubject, "subject")
        let time = try optional(WireEvents.hasTime, "time")
        let extensionCount = Int(try u16("the extension count"))
        let first = extensions.count / 2
        for _ in 0..<extensionCount {
            extensions.append(try stringSpan("an extension name"))
            extensions.append(try stringSpan("an extension value"))
        }
        let data = try bytesSpan("data")
        return EventLayout(
            id: id, source: source, specversion: specversion, type: type, datacontenttype: datacontenttype,
            dataschema: dataschema, subject: subject, time: time, firstExtension: first,
            extensionCount: extensionCount, data: data)
    }

    /// Whether `bytes` are well-formed UTF-8; ASCII, the common case, is checked eight bytes at a time.
    static func isValidUTF8(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var i = 0
        let count = bytes.count
        while i + 8 <= count {
            if bytes.loadUnaligned(fromByteOffset: i, as: UInt64.self) & 0x8080_8080_8080_8080 != 0 { break }
            i += 8
        }
        while i < count, bytes[i] < 0x80 { i += 1 }
        if i == count { return true }
        return String(validating: UnsafeRawBufferPointer(rebasing: bytes[i...]), as: UTF8.self) != nil
    }
}
