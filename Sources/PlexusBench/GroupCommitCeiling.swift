#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The disk's group-commit ceiling: how many events per second a log could make durable if it did nothing but
/// write each group commit with one `pwrite` and then call `fdatasync`, on the same disk.
///
/// The baseline of `make bench-raft-local` (in-process) and `make bench-raft` (over TCP): a storage plugin with
/// `fsync: always` cannot beat it, so plugin over ceiling says how much of the disk the plugin uses. The
/// benchmarks measure it independently of the plugin, with ``best(window:entryBytes:path:seconds:)``: the
/// raw loop at its best grouping for the same in-flight window (with `C` appends in flight a group commit
/// can cover at most `C`), so a plugin that groups poorly shows as a low ratio instead of lowering its own
/// baseline.
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

    /// The groupings ``best(window:entryBytes:path:seconds:)`` tries for a window of `window` events in
    /// flight: `window` itself and the powers of two below it, largest first, at most `limit` of them.
    public static func groupings(window: Int, limit: Int = 4) -> [Int] {
        let window = max(1, window)
        var candidates = [window]
        var power = 1
        while power * 2 < window { power *= 2 }
        while power >= 1 && candidates.count < max(1, limit) {
            if power != window { candidates.append(power) }
            power /= 2
        }
        return candidates
    }

    /// The ceiling for a closed loop of `window` events in flight, measured on its own: the raw loop at each
    /// of ``groupings(window:limit:)`` for an equal share of `seconds` (at least 0.2 s each), and the best.
    ///
    /// - Returns: The grouping (events per fdatasync) that made the most events durable per second, with its
    ///   measurement.
    /// - Throws: ``Failure`` when a write or a sync fails.
    /// - Important: Blocks the calling thread for about `seconds`.
    public static func best(window: Int, entryBytes: Int, path: String, seconds: Double) throws
        -> (grouping: Int, measurement: Measurement)
    {
        let candidates = groupings(window: window)
        let share = max(0.2, seconds / Double(candidates.count))
        func measure(_ grouping: Int) throws -> Measurement {
            try GroupCommitCeiling(eventsPerSync: grouping, entryBytes: entryBytes).measure(path: path, seconds: share)
        }
        var best = (grouping: candidates[0], measurement: try measure(candidates[0]))
        for grouping in candidates.dropFirst() {
            let measured = try measure(grouping)
            if measured.eventsPerSecond > best.measurement.eventsPerSecond { best = (grouping, measured) }
        }
        return best
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
