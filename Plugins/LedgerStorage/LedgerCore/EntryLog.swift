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
/// Records are gathered in a write buffer of `writeBufferBytes` and written with one `pwrite` when it fills,
/// when the file rolls and before a sync (BookKeeper's buffered entry logger): one system call per few hundred
/// entries instead of one each. Reads of an entry still in the buffer are served from it. A crash loses at most
/// the buffer, whose entries the journal still holds (a checkpoint syncs the entry logs, buffer included, before
/// it lets journal files go).
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
    /// Records of the current file not yet written: they lie from file offset `bufferStart` to `currentOffset`.
    private var buffer: [UInt8] = []
    private var bufferStart = 0
    let writeBufferBytes: Int
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
    init(directory: String, maxFileBytes: Int, writeBufferBytes: Int = 256 << 10) throws(LedgerError) {
        self.directory = directory
        self.maxFileBytes = maxFileBytes
        self.writeBufferBytes = writeBufferBytes
        buffer.reserveCapacity(writeBufferBytes)
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

    /// Appends an entry (buffered, not synced) and returns where it lies.
    func add(ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: [UInt8]) throws(LedgerError)
        -> EntryLocation
    {
        if currentOffset > 0 && currentOffset + Self.headerSize + payload.count > maxFileBytes {
            try writeBuffer()
            let next = current + 1
            let file = try Self.create(path(next), directory: directory)
            current = next
            currentFile = file
            currentOffset = 0
            bufferStart = 0
            files[next] = file
        }
        // Written before the record is added, not after: a write that fails (a full disk) then leaves the
        // buffer as it was, without the refused record, and it never grows past one record over its size.
        if !buffer.isEmpty && buffer.count + Self.headerSize + payload.count > writeBufferBytes { try writeBuffer() }
        var writer = ByteWriter(capacity: Self.headerSize + payload.count)
        writer.u32(Self.magic)
        writer.u32(UInt32(payload.count))
        writer.u64(ledger)
        writer.i64(entry)
        writer.i64(lastAddConfirmed)
        writer.u32(CRC32C.checksum(payload, seed: CRC32C.checksum(writer.bytes)))
        buffer.append(contentsOf: writer.bytes)
        buffer.append(contentsOf: payload)
        let location = EntryLocation(log: current, offset: UInt64(currentOffset), length: UInt32(payload.count))
        currentOffset += Self.headerSize + payload.count
        unsynced.insert(current)
        return location
    }

    /// Writes the buffered records to the current file.
    private func writeBuffer() throws(LedgerError) {
        guard !buffer.isEmpty else { return }
        do {
            try currentFile.write(buffer, at: bufferStart)
        } catch {
            throw LedgerError(.io, "entry logs: \(error)")
        }
        bufferStart = currentOffset
        buffer.removeAll(keepingCapacity: true)
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
        let start = Int(location.offset)
        do {
            if location.log == current && start >= bufferStart {
                guard start + size <= currentOffset else { throw LedgerError(.io, "beyond the end of the buffer") }
                bytes = Array(buffer[(start - bufferStart)..<(start - bufferStart + size)])
            } else {
                bytes = try file.read(count: size, at: start)
            }
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
        try Self.sync(try takeUnsynced())
    }

    /// Writes the buffer and hands over the files written since their last sync, which count as synced from
    /// now on: the caller syncs them (`sync`), outside the bookie's lock so that adds go on meanwhile, and gives
    /// them back (`markUnsynced`) if that fails.
    func takeUnsynced() throws(LedgerError) -> [(number: UInt64, file: OpenFile)] {
        try writeBuffer()
        defer { unsynced = [] }
        return try unsynced.sorted().map { number throws(LedgerError) in (number, try open(number)) }
    }

    /// Files whose sync failed: synced again by the next `syncAll` or `takeUnsynced`.
    func markUnsynced(_ numbers: [UInt64]) { unsynced.formUnion(numbers.filter { files[$0] != nil }) }

    /// `fdatasync`s each file.
    static func sync(_ files: [(number: UInt64, file: OpenFile)]) throws(LedgerError) {
        for (_, file) in files {
            do {
                try file.syncData()
            } catch {
                throw LedgerError(.io, "entry logs: \(error)")
            }
        }
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
