import StorageIO
import Synchronization

/// Where an entry lies: its entry log, the byte offset of its record there, and the payload's length.
public struct EntryLocation: Sendable, Equatable {
    public var log: UInt64
    public var offset: UInt64
    public var length: UInt32
}

/// The bookie's entry logs: numbered files into which the entries of every ledger are appended interleaved, in
/// the order they arrive (BookKeeper's "entry logger"). Written without a sync per entry (the journal makes an
/// add durable); `syncAll` makes them durable before a checkpoint lets the journal go.
///
/// ```
/// u32 magic "LENT"  u32 payload length  u64 ledger  i64 entry  i64 LAC
/// u32 CRC-32C of the 32 bytes before it and the payload      payload
/// ```
///
/// A new file is started on open (a restarted bookie never appends to a file a crash may have torn) and when
/// the current one passes `maxFileBytes`. Old files are only read, and removed by garbage collection.
///
/// - Important: Not thread-safe: the bookie calls it under its lock.
final class EntryLogger {
    static let magic: UInt32 = 0x4C45_4E54
    static let headerSize = 36

    let directory: String
    let maxFileBytes: Int
    private(set) var current: UInt64
    private var currentFile: OpenFile
    private var currentOffset = 0
    /// Open files by number, the current one included (readers share the descriptors).
    private var files: [UInt64: OpenFile] = [:]
    /// Files written since their last sync.
    private var unsynced: Set<UInt64> = []

    static func fileName(_ number: UInt64) -> String { "entrylog-" + hex16(number) + ".log" }

    static func number(of name: String) -> UInt64? {
        guard name.hasPrefix("entrylog-"), name.hasSuffix(".log"), name.count == 9 + 16 + 4 else { return nil }
        return UInt64(name.dropFirst(9).prefix(16), radix: 16)
    }

    func path(_ number: UInt64) -> String { directory + "/" + Self.fileName(number) }

    /// Opens the entry logs of `directory`, starting a new file numbered after every existing one.
    init(directory: String, maxFileBytes: Int) throws(LedgerError) {
        self.directory = directory
        self.maxFileBytes = maxFileBytes
        let existing: [String]
        do {
            existing = try Files.list(directory)
        } catch {
            throw LedgerError(.io, "entry logs: \(error)")
        }
        let next = (existing.compactMap(Self.number(of:)).max() ?? 0) + 1
        current = next
        currentFile = try Self.create(directory + "/" + Self.fileName(next), directory: directory)
        files[next] = currentFile
    }

    private static func create(_ path: String, directory: String) throws(LedgerError) -> OpenFile {
        do {
            let file = try OpenFile(path: path, create: true)
            try Files.syncDirectory(directory)
            return file
        } catch {
            throw LedgerError(.io, "entry logs: cannot create \(path): \(error)")
        }
    }

    /// The numbers of every entry-log file on disk.
    func existingNumbers() throws(LedgerError) -> [UInt64] {
        do {
            return try Files.list(directory).compactMap(Self.number(of:)).sorted()
        } catch {
            throw LedgerError(.io, "entry logs: \(error)")
        }
    }

    /// Appends an entry (not synced) and returns where it lies.
    func add(ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: [UInt8]) throws(LedgerError)
        -> EntryLocation
    {
        if currentOffset > 0 && currentOffset + Self.headerSize + payload.count > maxFileBytes {
            let next = current + 1
            let file = try Self.create(path(next), directory: directory)
            current = next
            currentFile = file
            currentOffset = 0
            files[next] = file
        }
        var writer = ByteWriter(capacity: Self.headerSize + payload.count)
        writer.u32(Self.magic)
        writer.u32(UInt32(payload.count))
        writer.u64(ledger)
        writer.i64(entry)
        writer.i64(lastAddConfirmed)
        writer.u32(CRC32C.checksum(payload, seed: CRC32C.checksum(writer.bytes)))
        writer.raw(payload)
        do {
            try currentFile.write(writer.bytes, at: currentOffset)
        } catch {
            throw LedgerError(.io, "entry logs: \(error)")
        }
        let location = EntryLocation(log: current, offset: UInt64(currentOffset), length: UInt32(payload.count))
        currentOffset += writer.bytes.count
        unsynced.insert(current)
        return location
    }

    /// Reads and checks the entry at `location`.
    /// - Throws: `.corrupt` naming the file and byte offset when the record is not the entry asked for or fails
    ///   its CRC; `.io` when the file cannot be read.
    func read(_ location: EntryLocation, ledger: UInt64, entry: Int64) throws(LedgerError) -> (
        payload: [UInt8], lastAddConfirmed: Int64
    ) {
        let file = try open(location.log)
        let size = Self.headerSize + Int(location.length)
        let bytes: [UInt8]
        do {
            bytes = try file.read(count: size, at: Int(location.offset))
        } catch {
            throw LedgerError(
                .corrupt,
                "entry log \(file.path) byte \(location.offset): cannot read entry \(entry) of ledger \(ledger) "
                    + "(\(size) bytes): \(error)")
        }
        func corrupt(_ why: String) -> LedgerError {
            LedgerError(
                .corrupt,
                "entry log \(file.path) byte \(location.offset): entry \(entry) of ledger \(ledger) is corrupt: \(why)"
            )
        }
        let decoded: Result<(payload: [UInt8], lastAddConfirmed: Int64), LedgerError> = bytes.withUnsafeBytes { raw in
            guard raw.loadLittleEndian(UInt32.self, at: 0) == Self.magic else {
                return .failure(corrupt("no entry magic"))
            }
            guard raw.loadLittleEndian(UInt32.self, at: 4) == location.length,
                raw.loadLittleEndian(UInt64.self, at: 8) == ledger, raw.loadLittleEndian(Int64.self, at: 16) == entry
            else { return .failure(corrupt("the record's header names another entry")) }
            let payload = UnsafeRawBufferPointer(rebasing: raw[Self.headerSize...])
            let crc = CRC32C.checksum(payload, seed: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<32])))
            guard crc == raw.loadLittleEndian(UInt32.self, at: 32) else { return .failure(corrupt("the CRC is wrong")) }
            return .success((Array(payload), raw.loadLittleEndian(Int64.self, at: 24)))
        }
        return try decoded.get()
    }

    private func open(_ number: UInt64) throws(LedgerError) -> OpenFile {
        if let file = files[number] { return file }
        do {
            let file = try OpenFile(path: path(number))
            files[number] = file
            return file
        } catch {
            throw LedgerError(.io, "entry logs: \(error)")
        }
    }

    /// Makes every file written since its last sync durable.
    func syncAll() throws(LedgerError) {
        for number in unsynced.sorted() {
            do {
                try open(number).syncData()
            } catch {
                throw LedgerError(.io, "entry logs: \(error)")
            }
        }
        unsynced = []
    }

    /// Removes entry-log file `number` (never the current one).
    func remove(_ number: UInt64) throws(LedgerError) {
        guard number != current else { return }
        files[number] = nil
        unsynced.remove(number)
        do {
            try Files.remove(path(number))
        } catch {
            throw LedgerError(.io, "entry logs: \(error)")
        }
    }
}
