import PlexusPluginSDK
import Synchronization

/// One stream of `MemoryStorage`: its records, offsets and committed group offsets under one lock.
///
/// Each record points at its event in the immutable batch it was appended with (`CopiedEventBatch`); the batch
/// is freed once no record and no lent read refers to it.
public final class MemoryStream: Sendable {
    struct Entry {
        /// The batch holding the event, and the event's place in it.
        var batch: CopiedEventBatch
        var index: Int
        var appendTime: UInt64
        var size: Int
    }

    struct State {
        var options: StreamOptions
        /// Retained records; `entries[head...]` hold offsets `firstOffset ..< nextOffset`.
        var entries: [Entry] = []
        var head = 0
        var firstOffset: UInt64 = 0
        var sizeBytes = 0
        var committed: [String: UInt64] = [:]
        /// Deleted (`on_delete_stream`): the handle takes no more appends.
        var deleted = false

        var count: Int { entries.count - head }
        var nextOffset: UInt64 { firstOffset + UInt64(count) }

        /// Drops the oldest `n` records.
        mutating func dropFirst(_ n: Int) {
            guard n > 0 else { return }
            for index in head..<(head + n) { sizeBytes -= entries[index].size }
            head += n
            firstOffset += UInt64(n)
            // Reclaim the dropped prefix once it is most of the array: amortised O(1) per record.
            if head >= 1024 && head * 2 >= entries.count {
                entries.removeFirst(head)
                head = 0
            }
        }
    }

    let name: String
    private let state: Mutex<State>

    init(name: String, options: StreamOptions) {
        self.name = name
        self.state = Mutex(State(options: options))
    }

    func setOptions(_ options: StreamOptions) { state.withLock { $0.options = options } }

    /// Appends a batch after enforcing retention; returns the first offset.
    /// - Throws: `PX_ERR_RESOURCE_EXHAUSTED` when the stream would exceed `maxStreamBytes` even after retention.
    func append(_ batch: CopiedEventBatch?, sizes: [Int], now: UInt64, maxStreamBytes: Int) throws -> UInt64 {
        let batchBytes = sizes.reduce(0, +)
        return try state.withLock { s in
            guard !s.deleted else {
                throw PluginError(PX_ERR_NOT_FOUND, "memory-storage: stream '\(name)' was deleted")
            }
            let first = s.nextOffset
            guard let batch, batch.count > 0 else { return first }
            // Time retention: records older than retentionMs go now.
            var expired = 0
            if s.options.retentionMilliseconds > 0 {
                let (window, overflow) = s.options.retentionMilliseconds.multipliedReportingOverflow(by: 1_000_000)
                let cutoff = overflow || window > now ? 0 : now - window
                while expired < s.count && s.entries[s.head + expired].appendTime < cutoff { expired += 1 }
            }
            // Byte retention, counting the new batch: oldest first, always keeping the newest record.
            var projected = s.sizeBytes + batchBytes
            for index in (s.head)..<(s.head + expired) { projected -= s.entries[index].size }
            var evicted = expired
            let limit = s.options.retentionBytes
            if limit > 0 {
                // The new records may be evicted too, except the last one.
                var newIndex = 0
                while projected > limit {
                    if evicted < s.count {
                        projected -= s.entries[s.head + evicted].size
                        evicted += 1
                    } else if newIndex < sizes.count - 1 {
                        projected -= sizes[newIndex]
                        newIndex += 1
                        evicted += 1
                    } else {
                        break
                    }
                }
            }
            guard projected <= maxStreamBytes else {
                throw PluginError(
                    PX_ERR_RESOURCE_EXHAUSTED,
                    "memory-storage: stream '\(name)' holds \(s.sizeBytes) bytes; \(batchBytes) more would exceed "
                        + "maxStreamBytes (\(maxStreamBytes))")
            }
            for (index, size) in sizes.enumerated() {
                s.entries.append(Entry(batch: batch, index: index, appendTime: now, size: size))
            }
            s.sizeBytes += batchBytes
            s.dropFirst(evicted)
            return first
        }
    }

    /// Up to `maxRecords` records from `offset`, about `maxBytes` (0: no limit) but at least one, lent: the
    /// records point into the stored batches, which the lent batch retains.
    func read(from offset: UInt64, maxRecords: Int, maxBytes: Int) throws -> LentRecordBatch {
        try state.withLock { s in
            guard offset >= s.firstOffset else {
                throw PluginError(
                    PX_ERR_OUT_OF_RANGE,
                    "memory-storage: offset \(offset) of stream '\(name)' is before its first retained offset "
                        + "\(s.firstOffset)")
            }
            guard offset <= s.nextOffset else {
                throw PluginError(
                    PX_ERR_OUT_OF_RANGE,
                    "memory-storage: offset \(offset) of stream '\(name)' is past its end (next offset \(s.nextOffset))"
                )
            }
            // How many records the read takes, then the batch lending them.
            let start = s.head + Int(offset - s.firstOffset)
            var end = start
            var bytes = 0
            while end < s.entries.count && end - start < maxRecords {
                let size = s.entries[end].size
                if maxBytes > 0 && end > start && bytes + size > maxBytes { break }
                bytes += size
                end += 1
            }
            return LentRecordBatch(records: end - start, nextOffset: offset + UInt64(end - start)) { builder in
                for index in start..<end {
                    let entry = s.entries[index]
                    builder.retain(entry.batch)
                    builder.append(
                        offset: s.firstOffset + UInt64(index - s.head), appendTime: entry.appendTime,
                        event: entry.batch.event(at: entry.index))
                }
            }
        }
    }

    func commit(group: String, offset: UInt64) { state.withLock { $0.committed[group] = offset } }

    func committed(group: String) -> UInt64? { state.withLock { $0.committed[group] } }

    /// Every group's committed offset, by group name.
    func committedOffsets() -> [GroupOffset] {
        state.withLock { s in s.committed.map { GroupOffset(group: $0.key, offset: $0.value) } }
    }

    func forget(group: String) { _ = state.withLock { $0.committed.removeValue(forKey: group) } }

    /// Marks the stream deleted and lets go of its events and offsets (lent batches keep what they point into).
    func markDeleted() {
        state.withLock { s in
            s.deleted = true
            s.dropFirst(s.count)
            s.committed = [:]
        }
    }

    /// Discards records below `offset`.
    /// - Throws: `PX_ERR_OUT_OF_RANGE` past the end of the stream.
    func trim(before offset: UInt64) throws {
        try state.withLock { s in
            guard offset <= s.nextOffset else {
                throw PluginError(
                    PX_ERR_OUT_OF_RANGE,
                    "memory-storage: cannot trim stream '\(name)' before \(offset), past its end (next offset "
                        + "\(s.nextOffset))")
            }
            if offset > s.firstOffset { s.dropFirst(Int(offset - s.firstOffset)) }
        }
    }

    func info() -> StreamInfo {
        state.withLock {
            StreamInfo(firstOffset: $0.firstOffset, nextOffset: $0.nextOffset, sizeBytes: UInt64($0.sizeBytes))
        }
    }

}
