/// Little-endian encoding helpers for the journal, entry logs, checkpoint and metadata formats.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 64) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ value: UInt8) { bytes.append(value) }
    mutating func u32(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ value: UInt64) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func i64(_ value: Int64) { u64(UInt64(bitPattern: value)) }
    mutating func raw(_ value: [UInt8]) { bytes.append(contentsOf: value) }
    mutating func blob(_ value: [UInt8]) {
        u32(UInt32(value.count))
        bytes.append(contentsOf: value)
    }
    mutating func text(_ value: String) { blob(Array(value.utf8)) }
}

/// Reads what `ByteWriter` wrote, refusing to read past the end.
struct ByteReader {
    let bytes: [UInt8]
    var position = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - position }

    struct Short: Error {}

    mutating func take(_ count: Int) throws(Short) -> ArraySlice<UInt8> {
        guard count >= 0, count <= remaining else { throw Short() }
        defer { position += count }
        return bytes[position..<(position + count)]
    }

    mutating func u8() throws(Short) -> UInt8 { try take(1).first! }
    mutating func u32() throws(Short) -> UInt32 { UInt32(littleEndianBytes: try take(4)) }
    mutating func u64() throws(Short) -> UInt64 { UInt64(littleEndianBytes: try take(8)) }
    mutating func i64() throws(Short) -> Int64 { Int64(bitPattern: try u64()) }
    mutating func blob() throws(Short) -> [UInt8] { Array(try take(Int(try u32()))) }
    mutating func text() throws(Short) -> String { String(decoding: try blob(), as: UTF8.self) }
}

extension FixedWidthInteger {
    /// The integer whose little-endian bytes are `bytes` (exactly `MemoryLayout<Self>.size` of them).
    init(littleEndianBytes bytes: ArraySlice<UInt8>) {
        var value: Self = 0
        for (shift, byte) in bytes.enumerated() { value |= Self(truncatingIfNeeded: byte) << (shift * 8) }
        self = value
    }
}

extension UnsafeRawBufferPointer {
    /// A little-endian integer at `offset` (unaligned).
    func loadLittleEndian<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
