#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The disk's group-commit ceiling: how many events per second a log could make durable if it did nothing but
/// write each group commit with one `pwrite` and then call `fdatasync`, on the same disk, with the same bytes
/// per sync as the log under test.
///
/// The baseline of `make bench-raft-local` (in-process) and `make bench-raft` (over TCP): a storage plugin with
/// `fsync: always` cannot beat it, so plugin over ceiling says how much of the disk the plugin uses.
public struct GroupCommitCeiling: Sendable {
    /// What one run of the loop measured.
    public struct Measurement: Sendable, Equatable {
        /// Events made durable per second: syncs per second × `eventsPerSync`.
        public var eventsPerSecond: Double
        /// The mean time of one `fdatasync`, in microseconds.
        public var fsyncMicros: Double
        /// How many `fdatasync`s the loop made.
        public var syncs: Int
    }

    /// Why the loop could not run.
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Events per `fdatasync` (at least 1).
    public var eventsPerSync: Int
    /// Bytes of one event as stored (header and body).
    public var entryBytes: Int

    /// - Parameters:
    ///   - eventsPerSync: The log's average group commit, in events (rounded by the caller; at least 1).
    ///   - entryBytes: One event's size on disk.
    public init(eventsPerSync: Int, entryBytes: Int) {
        self.eventsPerSync = max(1, eventsPerSync)
        self.entryBytes = max(1, entryBytes)
    }

    /// Appends `eventsPerSync × entryBytes` bytes with one `pwrite`, then `fdatasync`s, for `seconds`, to a
    /// new file at `path` that is removed afterwards.
    ///
    /// - Throws: ``Failure`` naming the call and the file when a write or a sync fails.
    /// - Important: Blocks the calling thread for `seconds`.
    public func measure(path: String, seconds: Double) throws -> Measurement {
        let fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw Failure(description: "cannot create \(path): \(String(cString: strerror(errno)))") }
        defer {
            close(fd)
            unlink(path)
        }
        let chunk = [UInt8](repeating: 0xA5, count: eventsPerSync * entryBytes)
        var position = 0
        var syncs = 0
        var syncNanos: UInt64 = 0
        let start = MonotonicClock.nanoseconds()
        let end = start + UInt64(seconds * 1e9)
        while MonotonicClock.nanoseconds() < end {
            let written = chunk.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(position)) }
            guard written == chunk.count else {
                throw Failure(description: "pwrite \(path) failed: \(String(cString: strerror(errno)))")
            }
            position += written
            let before = MonotonicClock.nanoseconds()
            guard fdatasync(fd) == 0 else {
                throw Failure(description: "fdatasync \(path) failed: \(String(cString: strerror(errno)))")
            }
            syncNanos += MonotonicClock.nanoseconds() - before
            syncs += 1
        }
        let elapsed = Double(MonotonicClock.nanoseconds() - start) / 1e9
        return Measurement(
            eventsPerSecond: Double(syncs * eventsPerSync) / elapsed,
            fsyncMicros: syncs > 0 ? Double(syncNanos) / Double(syncs) / 1e3 : 0, syncs: syncs)
    }
}
