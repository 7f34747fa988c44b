import StorageIO

/// One record of the bookie's journal: an added entry (with its payload and the writer's LAC), a fence, or a
/// ledger's deletion.
///
/// ```
/// u32 magic "LJRN"  u32 payload length  u8 kind  3 zero bytes  u64 ledger  i64 entry  i64 LAC
/// u32 CRC-32C of the 36 bytes before it and the payload      payload
/// ```
public struct JournalRecord: Sendable, Equatable {
    public enum Kind: UInt8, Sendable {
        case entry = 1
        case fence = 2
        case deleteLedger = 3
    }

    public static let magic: UInt32 = 0x4C4A_524E
    public static let headerSize = 40

    public var kind: Kind
    public var ledger: UInt64
    public var entry: Int64
    public var lastAddConfirmed: Int64
    public var payload: [UInt8]

    public init(kind: Kind, ledger: UInt64, entry: Int64 = -1, lastAddConfirmed: Int64 = -1, payload: [UInt8] = []) {
        self.kind = kind
        self.ledger = ledger
        self.entry = entry
        self.lastAddConfirmed = lastAddConfirmed
        self.payload = payload
    }

    /// The record's bytes, header and payload.
    public func encoded() -> [UInt8] {
        var writer = ByteWriter(capacity: Self.headerSize + payload.count)
        writer.u32(Self.magic)
        writer.u32(UInt32(payload.count))
        writer.u8(kind.rawValue)
        writer.u8(0)
        writer.u8(0)
        writer.u8(0)
        writer.u64(ledger)
        writer.i64(entry)
        writer.i64(lastAddConfirmed)
        let crc = CRC32C.checksum(payload, seed: CRC32C.checksum(writer.bytes))
        writer.u32(crc)
        writer.raw(payload)
        return writer.bytes
    }

    /// What decoding a record at some position found.
    public enum Decoded: Equatable {
        /// A whole, valid record and its size in bytes.
        case record(JournalRecord, size: Int)
        /// The bytes end inside the record (a torn write).
        case truncated
        /// The bytes are not a valid record; why.
        case invalid(String)
    }

    /// Decodes the record at the start of `raw`.
    public static func decode(_ raw: UnsafeRawBufferPointer) -> Decoded {
        guard raw.count >= headerSize else { return .truncated }
        guard raw.loadLittleEndian(UInt32.self, at: 0) == magic else { return .invalid("no record magic") }
        let length = Int(raw.loadLittleEndian(UInt32.self, at: 4))
        guard let kind = Kind(rawValue: raw[8]) else { return .invalid("unknown record kind \(raw[8])") }
        guard raw.count >= headerSize + length else { return .truncated }
        let header = UnsafeRawBufferPointer(rebasing: raw[0..<36])
        let payload = UnsafeRawBufferPointer(rebasing: raw[headerSize..<(headerSize + length)])
        let crc = CRC32C.checksum(payload, seed: CRC32C.checksum(header))
        guard crc == raw.loadLittleEndian(UInt32.self, at: 36) else { return .invalid("the record's CRC is wrong") }
        let record = JournalRecord(
            kind: kind, ledger: raw.loadLittleEndian(UInt64.self, at: 12),
            entry: raw.loadLittleEndian(Int64.self, at: 20), lastAddConfirmed: raw.loadLittleEndian(Int64.self, at: 28),
            payload: Array(payload))
        return .record(record, size: headerSize + length)
    }
}
