import RaftCore

/// The on-disk layout of a raft-log segment: a 64-byte file header, then entries, each a 56-byte header and
/// its body. All integers are little-endian. `Plugins/RaftLogStorage/README.md` draws both headers.
enum LogFormat {
    /// `"PXRL"` as the first four bytes of a segment file.
    static let segmentMagic: UInt32 = 0x4C52_5850
    /// `"PXRE"` as the first four bytes of an entry.
    static let entryMagic: UInt32 = 0x4552_5850
    static let version: UInt16 = 1
    static let segmentHeaderSize = 64
    static let entryHeaderSize = 56
    /// The bytes of an entry header the chained CRC covers (everything before the chain field).
    static let chainedHeaderBytes = 48
    /// The bytes of an entry header its own CRC covers (everything before the header CRC).
    static let checkedHeaderBytes = 52

    /// What an entry carries (`RaftCore.EntryKind`): an event, or a control entry (a leader's no-op, a
    /// membership) that takes an index but no offset.
    typealias Kind = EntryKind
}

/// A segment file's header: where its entries start in the log.
///
/// ```
/// 0  u32 magic "PXRL"   4 u16 version   6 u16 header size (64)
/// 8  u64 base index (Raft index of the first entry)   16 u64 base offset (stream offset of the first event)
/// 24 u32 base chain (the chained CRC before the first entry)
/// 28 u64 base term (the term of the entry before the first one, 0 for the first segment)
/// 36..<60 zero   60 u32 CRC-32C of bytes 0..<60
/// ```
struct SegmentHeader: Equatable {
    var baseIndex: UInt64
    var baseOffset: UInt64
    var baseChain: UInt32
    var baseTerm: UInt64 = 0

    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: LogFormat.segmentHeaderSize)
        bytes.withUnsafeMutableBytes { raw in
            raw.storeBytes(of: LogFormat.segmentMagic.littleEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: LogFormat.version.littleEndian, toByteOffset: 4, as: UInt16.self)
            raw.storeBytes(of: UInt16(LogFormat.segmentHeaderSize).littleEndian, toByteOffset: 6, as: UInt16.self)
            raw.storeBytes(of: baseIndex.littleEndian, toByteOffset: 8, as: UInt64.self)
            raw.storeBytes(of: baseOffset.littleEndian, toByteOffset: 16, as: UInt64.self)
            raw.storeBytes(of: baseChain.littleEndian, toByteOffset: 24, as: UInt32.self)
            raw.storeBytes(of: baseTerm.littleEndian, toByteOffset: 28, as: UInt64.self)
            let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60]))
            raw.storeBytes(of: crc.littleEndian, toByteOffset: 60, as: UInt32.self)
        }
        return bytes
    }

    /// Decodes a header, or says what is wrong with it.
    static func decode(_ raw: UnsafeRawBufferPointer) -> Result<SegmentHeader, LogFormatError> {
        guard raw.count >= LogFormat.segmentHeaderSize else {
            return .failure(.init("the segment header is cut short (\(raw.count) of 64 bytes)"))
        }
        guard raw.loadLE(UInt32.self, at: 0) == LogFormat.segmentMagic else {
            return .failure(.init("no segment magic"))
        }
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60]))
        guard raw.loadLE(UInt32.self, at: 60) == crc else { return .failure(.init("the segment header CRC is wrong")) }
        let version = raw.loadLE(UInt16.self, at: 4)
        guard version == LogFormat.version else {
            return .failure(.init("format version \(version), this plugin reads \(LogFormat.version)"))
        }
        guard raw.loadLE(UInt16.self, at: 6) == UInt16(LogFormat.segmentHeaderSize) else {
            return .failure(.init("unexpected segment header size \(raw.loadLE(UInt16.self, at: 6))"))
        }
        return .success(
            SegmentHeader(
                baseIndex: raw.loadLE(UInt64.self, at: 8), baseOffset: raw.loadLE(UInt64.self, at: 16),
                baseChain: raw.loadLE(UInt32.self, at: 24), baseTerm: raw.loadLE(UInt64.self, at: 28)))
    }
}

/// One entry's header.
///
/// ```
/// 0  u32 magic "PXRE"   4 u32 body length   8 u64 term   16 u64 index   24 u64 stream offset
/// 32 u64 append time (Unix ns)   40 u16 kind   42 u16 flags (0)   44 u32 CRC-32C of the body
/// 48 u32 chained CRC: CRC-32C of bytes 0..<48 seeded with the previous entry's chained CRC
/// 52 u32 CRC-32C of bytes 0..<52
/// ```
///
/// The chained CRC covers the body through its CRC at byte 44, so the writer checksums each body once (on
/// the appending thread) and still every entry's value depends on every entry before it in the segment chain.
struct EntryHeader: Equatable {
    var bodyLength: UInt32
    var term: UInt64
    var index: UInt64
    var offset: UInt64
    var appendTime: UInt64
    var kind: UInt16
    var flags: UInt16 = 0
    var bodyCRC: UInt32
    var chain: UInt32 = 0

    /// Writes the header at `position` of `buffer`, computing the chained CRC from `previousChain` and the
    /// header CRC; returns the new chain value.
    @discardableResult
    mutating func write(into buffer: UnsafeMutableRawBufferPointer, at position: Int, previousChain: UInt32)
        -> UInt32
    {
        let raw = UnsafeMutableRawBufferPointer(rebasing: buffer[position..<(position + LogFormat.entryHeaderSize)])
        raw.storeBytes(of: LogFormat.entryMagic.littleEndian, toByteOffset: 0, as: UInt32.self)
        raw.storeBytes(of: bodyLength.littleEndian, toByteOffset: 4, as: UInt32.self)
        raw.storeBytes(of: term.littleEndian, toByteOffset: 8, as: UInt64.self)
        raw.storeBytes(of: index.littleEndian, toByteOffset: 16, as: UInt64.self)
        raw.storeBytes(of: offset.littleEndian, toByteOffset: 24, as: UInt64.self)
        raw.storeBytes(of: appendTime.littleEndian, toByteOffset: 32, as: UInt64.self)
        raw.storeBytes(of: kind.littleEndian, toByteOffset: 40, as: UInt16.self)
        raw.storeBytes(of: flags.littleEndian, toByteOffset: 42, as: UInt16.self)
        raw.storeBytes(of: bodyCRC.littleEndian, toByteOffset: 44, as: UInt32.self)
        chain = CRC32C.checksum(
            UnsafeRawBufferPointer(rebasing: raw[0..<LogFormat.chainedHeaderBytes]), seed: previousChain)
        raw.storeBytes(of: chain.littleEndian, toByteOffset: 48, as: UInt32.self)
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<LogFormat.checkedHeaderBytes]))
        raw.storeBytes(of: crc.littleEndian, toByteOffset: 52, as: UInt32.self)
        return chain
    }

    /// Decodes the header at the start of `raw` when its magic and header CRC are right.
    static func decode(_ raw: UnsafeRawBufferPointer) -> EntryHeader? {
        guard raw.count >= LogFormat.entryHeaderSize, raw.loadLE(UInt32.self, at: 0) == LogFormat.entryMagic else {
            return nil
        }
        let crc = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<LogFormat.checkedHeaderBytes]))
        guard raw.loadLE(UInt32.self, at: 52) == crc else { return nil }
        return EntryHeader(
            bodyLength: raw.loadLE(UInt32.self, at: 4), term: raw.loadLE(UInt64.self, at: 8),
            index: raw.loadLE(UInt64.self, at: 16), offset: raw.loadLE(UInt64.self, at: 24),
            appendTime: raw.loadLE(UInt64.self, at: 32), kind: raw.loadLE(UInt16.self, at: 40),
            flags: raw.loadLE(UInt16.self, at: 42), bodyCRC: raw.loadLE(UInt32.self, at: 44),
            chain: raw.loadLE(UInt32.self, at: 48))
    }

    /// The chained CRC this header should carry after `previousChain`, recomputed from its bytes in `raw`.
    static func expectedChain(_ raw: UnsafeRawBufferPointer, previousChain: UInt32) -> UInt32 {
        CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<LogFormat.chainedHeaderBytes]), seed: previousChain)
    }
}

/// What is wrong with bytes that should be a header or an entry.
struct LogFormatError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension UnsafeRawBufferPointer {
    /// A little-endian integer at a byte offset, without alignment requirements.
    func loadLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}
