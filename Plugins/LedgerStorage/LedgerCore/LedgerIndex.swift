import StorageIO

/// What a bookie keeps per ledger: where each entry lies, its fence, its tail.
struct LedgerRecord: Sendable, Equatable {
    var entries: [Int64: EntryLocation] = [:]
    var fenced = false
    var deleted = false
    var lastEntry: Int64 = -1
    var lastAddConfirmed: Int64 = -1

    /// Records where `entry` lies and moves the tail. Call it in place (`ledgers[id, default: ...].add(...)`):
    /// a copy of the record taken out of the index and written back would copy `entries` on every add.
    mutating func add(_ entry: Int64, at location: EntryLocation, lastAddConfirmed lac: Int64) {
        entries[entry] = location
        lastEntry = max(lastEntry, entry)
        lastAddConfirmed = max(lastAddConfirmed, lac)
    }
}

/// The bookie's index, (ledger, entry) → (entry log, offset), with each ledger's fence and tail; and its
/// checkpoint file, which holds the whole index with the journal file replay starts from.
///
/// ```
/// u32 magic "LCKP"  u32 version 1  u64 first journal file to replay  u32 ledger count
/// per ledger: u64 id  u8 flags (1 fenced, 2 deleted)  i64 last entry  i64 LAC  u32 entry count
///             per entry: i64 entry  u64 log  u64 offset  u32 length
/// u32 CRC-32C of everything before it
/// ```
struct LedgerIndex: Sendable, Equatable {
    static let magic: UInt32 = 0x4C43_4B50
    static let fileName = "checkpoint"

    var ledgers: [UInt64: LedgerRecord] = [:]

    /// Entry-log files some live entry lies in.
    var referencedLogs: Set<UInt64> {
        var logs: Set<UInt64> = []
        for record in ledgers.values where !record.deleted {
            for location in record.entries.values { logs.insert(location.log) }
        }
        return logs
    }

    func encoded(replayFrom journal: UInt64) -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + ledgers.count * 64)
        writer.u32(Self.magic)
        writer.u32(1)
        writer.u64(journal)
        writer.u32(UInt32(ledgers.count))
        for (id, record) in ledgers.sorted(by: { $0.key < $1.key }) {
            writer.u64(id)
            writer.u8((record.fenced ? 1 : 0) | (record.deleted ? 2 : 0))
            writer.i64(record.lastEntry)
            writer.i64(record.lastAddConfirmed)
            writer.u32(UInt32(record.entries.count))
            for (entry, location) in record.entries.sorted(by: { $0.key < $1.key }) {
                writer.i64(entry)
                writer.u64(location.log)
                writer.u64(location.offset)
                writer.u32(location.length)
            }
        }
        writer.u32(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }

    /// Decodes a checkpoint file's bytes.
    /// - Throws: `.corrupt` naming `path` and the byte where decoding failed.
    static func decode(_ bytes: [UInt8], path: String) throws(LedgerError) -> (LedgerIndex, replayFrom: UInt64) {
        guard bytes.count >= 4 else { throw LedgerError(.corrupt, "checkpoint \(path) byte 0: too short") }
        let stored = UInt32(littleEndianBytes: bytes[(bytes.count - 4)...])
        guard CRC32C.checksum(Array(bytes[..<(bytes.count - 4)])) == stored else {
            throw LedgerError(.corrupt, "checkpoint \(path) byte \(bytes.count - 4): the CRC is wrong")
        }
        var reader = ByteReader(Array(bytes[..<(bytes.count - 4)]))
        do {
            guard try reader.u32() == magic, try reader.u32() == 1 else {
                throw LedgerError(.corrupt, "checkpoint \(path) byte 0: not a version 1 checkpoint")
            }
            let replayFrom = try reader.u64()
            var index = LedgerIndex()
            for _ in 0..<(try reader.u32()) {
                let id = try reader.u64()
                let flags = try reader.u8()
                var record = LedgerRecord(fenced: flags & 1 != 0, deleted: flags & 2 != 0)
                record.lastEntry = try reader.i64()
                record.lastAddConfirmed = try reader.i64()
                for _ in 0..<(try reader.u32()) {
                    let entry = try reader.i64()
                    record.entries[entry] = EntryLocation(
                        log: try reader.u64(), offset: try reader.u64(), length: try reader.u32())
                }
                index.ledgers[id] = record
            }
            return (index, replayFrom)
        } catch is ByteReader.Short {
            throw LedgerError(.corrupt, "checkpoint \(path) byte \(reader.position): ends early")
        } catch let error as LedgerError {
            throw error
        } catch {
            throw LedgerError(.corrupt, "checkpoint \(path): \(error)")
        }
    }
}
