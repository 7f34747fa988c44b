import Foundation
import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#endif

/// The metadata store's file, `<data_dir>/kv.log`: an append-only log of records, each
/// `[u32 payload length][u32 CRC-32 of the payload][payload]` (little-endian), fsynced before the changes it
/// holds are acknowledged. Appending one record per change costs one write and one fsync per group of
/// changes, whatever the size of the store; rewriting a whole file per change (as `registry.json` is) would
/// cost the whole store per change.
///
/// When the log holds many more records than the store needs, it is compacted: a new file (a header, the
/// live keys, the kept history) is written beside it, fsynced and renamed over it, and the directory fsynced,
/// so a crash leaves the old log or the new one. A torn last record (a crash mid-append: its change was never
/// acknowledged) is cut off when the log is opened.
final class KVLog: @unchecked Sendable {
    // Safe: every method after `init` runs on the store's one serial I/O queue.

    enum Record: Equatable {
        /// A change (put), applied to the keys and the history.
        case put(KVEntry)
        /// A change (delete), applied to the keys and the history.
        case delete(key: String, revision: UInt64)
        /// A live key as of a compaction (keys only).
        case key(KVEntry)
        /// A kept change as of a compaction (history only).
        case history(KVChange)
        /// The store's revision and the newest revision no longer in the history, as of a compaction.
        case header(revision: UInt64, compacted: UInt64)
    }

    let directory: String
    var path: String { directory + "/kv.log" }
    var temporaryPath: String { directory + "/kv.log.tmp" }
    private var fd: Int32 = -1
    /// Records in the file now (for deciding when to compact).
    private(set) var records = 0

    init(directory: String) {
        self.directory = directory
    }

    deinit {
        if fd >= 0 { close(fd) }
    }

    /// Reads every record (cutting off a torn tail) and opens the file for appending.
    /// - Throws: `PX_ERR_IO` when the file cannot be read or opened, `PX_ERR_CORRUPTION` when a record in the
    ///   middle fails its check.
    func open() throws -> [Record] {
        var data = Data()
        if FileManager.default.fileExists(atPath: path) {
            do {
                data = try Data(contentsOf: URL(fileURLWithPath: path))
            } catch {
                throw PluginError(PX_ERR_IO, "standalone-registry: cannot read \(path): \(error.localizedDescription)")
            }
        }
        let bytes = [UInt8](data)
        var records: [Record] = []
        var offset = 0
        var valid = 0
        while offset + 8 <= bytes.count {
            let length = Int(Self.u32(bytes, offset))
            let crc = Self.u32(bytes, offset + 4)
            guard offset + 8 + length <= bytes.count else { break }  // torn tail
            let payload = bytes[(offset + 8)..<(offset + 8 + length)]
            guard CRC32.checksum(payload) == crc else {
                // A bad record followed by more records is damage, not a torn append.
                if offset + 8 + length < bytes.count {
                    throw PluginError(
                        PX_ERR_CORRUPTION,
                        "standalone-registry: \(path) has a damaged record at byte \(offset); move the file away to "
                            + "start the metadata store empty")
                }
                break
            }
            guard let record = Self.decode(Array(payload)) else {
                throw PluginError(
                    PX_ERR_CORRUPTION, "standalone-registry: \(path) has an unreadable record at byte \(offset)")
            }
            records.append(record)
            offset += 8 + length
            valid = offset
        }
        fd = Glibc.open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Self.failure("open \(path)") }
        if valid < bytes.count {
            guard ftruncate(fd, off_t(valid)) == 0, fsync(fd) == 0 else { throw Self.failure("truncate \(path)") }
        }
        guard lseek(fd, off_t(valid), SEEK_SET) >= 0 else { throw Self.failure("seek \(path)") }
        self.records = records.count
        return records
    }

    /// Appends records and fsyncs them.
    /// - Throws: `PX_ERR_IO` naming the step that failed.
    func append(_ batch: [Record]) throws {
        guard !batch.isEmpty else { return }
        var bytes: [UInt8] = []
        for record in batch { Self.frame(record, into: &bytes) }
        try Self.writeAll(fd, bytes, path)
        guard fsync(fd) == 0 else { throw Self.failure("fsync \(path)") }
        records += batch.count
    }

    /// Replaces the log with `records` (a compaction), atomically.
    /// - Throws: `PX_ERR_IO` naming the step that failed; the old log then stays in use.
    func rewrite(_ snapshot: [Record]) throws {
        var bytes: [UInt8] = []
        for record in snapshot { Self.frame(record, into: &bytes) }
        let temporary = Glibc.open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard temporary >= 0 else { throw Self.failure("open \(temporaryPath)") }
        do {
            try Self.writeAll(temporary, bytes, temporaryPath)
            guard fsync(temporary) == 0 else { throw Self.failure("fsync \(temporaryPath)") }
        } catch {
            close(temporary)
            throw error
        }
        guard rename(temporaryPath, path) == 0 else {
            close(temporary)
            throw Self.failure("rename \(temporaryPath) to \(path)")
        }
        // Appends go to the new file from now on (its descriptor is already at its end).
        close(fd)
        fd = temporary
        records = snapshot.count
        // The rename itself is durable only once the directory is.
        let directoryFD = Glibc.open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard directoryFD >= 0 else { throw Self.failure("open \(directory)") }
        defer { close(directoryFD) }
        guard fsync(directoryFD) == 0 else { throw Self.failure("fsync \(directory)") }
    }

    // MARK: Encoding

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) throws {
        try bytes.withUnsafeBytes { raw in
            var done = 0
            while done < raw.count {
                let n = write(fd, raw.baseAddress! + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    throw failure("write \(path)")
                }
                done += n
            }
        }
    }

    static func frame(_ record: Record, into bytes: inout [UInt8]) {
        var payload: [UInt8] = []
        encode(record, into: &payload)
        put32(UInt32(payload.count), &bytes)
        put32(CRC32.checksum(payload[...]), &bytes)
        bytes += payload
    }

    private static func encode(_ record: Record, into p: inout [UInt8]) {
        func entry(_ e: KVEntry) {
            put64(e.modRevision, &p)
            put64(e.version, &p)
            put64(e.createRevision, &p)
            text(e.key)
            put32(UInt32(e.value.count), &p)
            p += e.value
        }
        func text(_ s: String) {
            put32(UInt32(s.utf8.count), &p)
            p += Array(s.utf8)
        }
        switch record {
        case .put(let e):
            p.append(1)
            entry(e)
        case .delete(let key, let revision):
            p.append(2)
            put64(revision, &p)
            text(key)
        case .key(let e):
            p.append(3)
            entry(e)
        case .history(.put(let e)):
            p.append(4)
            entry(e)
        case .history(.delete(let e)):
            p.append(5)
            put64(e.modRevision, &p)
            text(e.key)
        case .header(let revision, let compacted):
            p.append(6)
            put64(revision, &p)
            put64(compacted, &p)
        }
    }

    static func decode(_ p: [UInt8]) -> Record? {
        var at = 1
        func u64() -> UInt64? {
            guard at + 8 <= p.count else { return nil }
            defer { at += 8 }
            return Self.u64(p, at)
        }
        func bytes() -> [UInt8]? {
            guard at + 4 <= p.count else { return nil }
            let n = Int(Self.u32(p, at))
            at += 4
            guard at + n <= p.count else { return nil }
            defer { at += n }
            return Array(p[at..<(at + n)])
        }
        func entry() -> KVEntry? {
            guard let rev = u64(), let version = u64(), let create = u64(), let key = bytes(), let value = bytes()
            else { return nil }
            return KVEntry(
                key: String(decoding: key, as: UTF8.self), value: value, version: version, createRevision: create,
                modRevision: rev)
        }
        guard let kind = p.first else { return nil }
        switch kind {
        case 1: return entry().map { .put($0) }
        case 2, 5:
            guard let rev = u64(), let key = bytes() else { return nil }
            let name = String(decoding: key, as: UTF8.self)
            if kind == 2 { return .delete(key: name, revision: rev) }
            return .history(.delete(KVEntry(key: name, value: [], version: 0, createRevision: 0, modRevision: rev)))
        case 3: return entry().map { .key($0) }
        case 4: return entry().map { .history(.put($0)) }
        case 6:
            guard let rev = u64(), let compacted = u64() else { return nil }
            return .header(revision: rev, compacted: compacted)
        default: return nil
        }
    }

    private static func put32(_ v: UInt32, _ b: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) { b.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
    }

    private static func put64(_ v: UInt64, _ b: inout [UInt8]) {
        for shift in stride(from: 0, to: 64, by: 8) { b.append(UInt8(truncatingIfNeeded: v >> UInt64(shift))) }
    }

    private static func u32(_ b: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(b[at + $1]) << UInt32($1 * 8) }
    }

    private static func u64(_ b: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(b[at + $1]) << UInt64($1 * 8) }
    }

    private static func failure(_ step: String) -> PluginError {
        PluginError(PX_ERR_IO, "standalone-registry: \(step): \(String(cString: strerror(errno)))")
    }
}

/// CRC-32 (IEEE 802.3, reflected), for the log's record checks.
enum CRC32 {
    private static let table: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
