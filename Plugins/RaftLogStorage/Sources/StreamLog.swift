import Dispatch
import Foundation
import PlexusPluginSDK
import RaftCore
import Synchronization

/// The log of one stream on this node: a directory of segment files and a `state` file, written by one
/// writer cycle at a time on the instance's writer pool (`WriterPool`). Its Raft group (`RaftStream`) decides
/// what goes in it.
///
/// Entries (the group's, with their term, index and offset already chosen), truncations, snapshots,
/// committed offsets and trims are queued and carried out by writer cycles (`LogWriter.swift`): each drains
/// everything queued, writes it, syncs once and only then tells the group (`onPersisted`): group commit. Reads run on a shared reader queue and see only committed events (`publishCommit`).
///
/// - Important: Every method may be called from any thread. Completions run on a writer pool thread or a reader
///   thread, never under a lock of this class.
public final class StreamLog: Sendable {
    let name: String
    let directory: String
    let settings: Settings
    let statistics: Statistics
    let readers: DispatchQueue
    let writers: WriterPool
    let report: @Sendable (PlexusPluginSDK.Host.LogLevel, String) -> Void

    /// What the writer has written, and how much of it is committed.
    struct Visible {
        /// Oldest first; the last one takes appends. Never empty.
        var segments: [Segment]
        var state: StreamState
        var options: StreamOptions
        /// The Raft commit index, as the group last published it.
        var commitIndex: UInt64 = 0
        /// The offset after the last committed event written here: what readers see.
        var committedEnd: UInt64
        /// The last index whose entry on disk is the group's: a queued truncation makes the entries after it
        /// stale until they are rewritten.
        var validThrough = UInt64.max
        /// Truncations queued and not done yet: `validThrough` holds until they are.
        var pendingTruncations = 0
        /// Snapshot installs queued and not done: the whole log is stale until they are.
        var pendingInstalls = 0

        var nextOffset: UInt64 { committedEnd }
        var writtenEnd: UInt64 { segments[segments.count - 1].endOffset }
        var lastIndex: UInt64 { segments[segments.count - 1].lastIndex }
        var firstOffset: UInt64 { max(state.trimmedBefore, segments[0].header.baseOffset) }
        var sizeBytes: Int { segments.reduce(0) { $0 + $1.size } }

        /// The segment holding `index`, if one does.
        func segment(holding index: UInt64) -> Int? {
            guard index >= segments[0].header.baseIndex, index <= lastIndex else { return nil }
            var low = 0
            var high = segments.count - 1
            while low < high {
                let middle = (low + high + 1) / 2
                if segments[middle].header.baseIndex <= index { low = middle } else { high = middle - 1 }
            }
            return low
        }

        /// The offset the next event takes after the entry at `index` (written here, or the snapshot point).
        func offset(after index: UInt64) -> UInt64 {
            guard let number = segment(holding: index) else {
                return index < segments[0].header.baseIndex ? segments[0].header.baseOffset : writtenEnd
            }
            let segment = segments[number]
            return segment.offset(after: Int(index - segment.header.baseIndex))
        }

        mutating func updateCommittedEnd() {
            guard pendingInstalls == 0 else { return }
            committedEnd = max(committedEnd, offset(after: min(commitIndex, lastIndex, validThrough)))
        }
    }

    enum Work: Sendable {
        /// Remove the entries from `truncateFrom` on (uncommitted ones a new leader replaced), then write these.
        case entries(truncateFrom: UInt64?, [WireEntry])
        /// Discard the log; it starts after the snapshot point.
        case snapshot(SnapshotRequest)
        case commit(group: String, offset: UInt64, completion: @Sendable (Result<Void, PluginError>) -> Void)
        case trim(before: UInt64, completion: @Sendable (Result<Void, PluginError>) -> Void)
    }

    /// What callers hand the writer.
    struct Queue {
        var work: [Work] = []
        /// A writer cycle is submitted to the pool or running: work queued meanwhile is taken by it or by the
        /// cycle it submits next.
        var scheduled = false
        var stopping = false
        /// The last cycle ran (after `stop`): nothing is submitted any more.
        var exited = false
        /// Set when a write or sync failed: the stream is fenced (takes no writes, acknowledges nothing) until
        /// `recover` lifts it.
        var failure: Fence?
    }

    /// Why a stream is fenced: a write or sync of its log failed. Whatever was not durable then is
    /// discarded by `recover`, never synced again and acknowledged (a failed `fdatasync` may have dropped the
    /// dirty pages while the page cache still shows them).
    struct Fence: Sendable, Equatable {
        var reason: String
        /// The disk was full (`ENOSPC`, `EDQUOT`): the storage's probe lifts the fence once space returns.
        var outOfSpace: Bool

        init(_ error: any Error) {
            reason = "\(error)"
            let code = (error as? IOFailure)?.code
            outOfSpace = code == ENOSPC || code == EDQUOT
        }

        init(reason: String, outOfSpace: Bool) {
            self.reason = reason
            self.outOfSpace = outOfSpace
        }

        /// The refusal of a write to a fenced stream, saying how it recovers.
        func refusal(stream name: String) -> PluginError {
            PluginError(
                PX_ERR_IO,
                "raft-log: stream '\(name)' is fenced after a failed write and takes no writes: \(reason). It "
                    + (outOfSpace ? "recovers by itself once the disk has space again, or with " : "recovers with ")
                    + "`plexus plugin call raft-log recover \(name)` once the cause is cleared")
        }
    }

    let visible: Mutex<Visible>
    let queue: Mutex<Queue>
    let finished = DispatchSemaphore(value: 0)
    /// The writer's own clock for interval syncs; only a cycle touches it (cycles never overlap).
    struct WriterClock {
        var dirty = false
        var lastSync = DispatchTime.now()
    }
    let clock = Mutex(WriterClock())

    /// What the writer tells the Raft group: the entries up to `(index, term)` are written (and synced under
    /// `fsync: always`); and the log was compacted (retention, trim) to start after a new snapshot point.
    struct Listener: Sendable {
        var persisted: @Sendable (_ index: UInt64, _ term: UInt64) -> Void
        var compacted: @Sendable () -> Void
        /// A write or sync failed: the log takes no more writes until a restart.
        var failed: @Sendable (_ fence: Fence) -> Void
    }
    let listener = Mutex<Listener?>(nil)

    /// Recovers (or creates) the stream in `directory`; its writer cycles run on `writers`.
    /// - Throws: `PluginError` from `Recovery`.
    init(
        name: String, directory: String, settings: Settings, statistics: Statistics, readers: DispatchQueue,
        writers: WriterPool, report: @escaping @Sendable (PlexusPluginSDK.Host.LogLevel, String) -> Void
    ) throws {
        self.name = name
        self.directory = directory
        self.settings = settings
        self.statistics = statistics
        self.readers = readers
        self.writers = writers
        self.report = report
        let (segments, state) = try Recovery(
            name: name, directory: directory, settings: settings, report: { report(.warning, "raft-log: \($0)") }
        ).run()
        let visible = Visible(
            segments: segments, state: state, options: StreamOptions(),
            committedEnd: max(state.trimmedBefore, segments[0].header.baseOffset))
        self.visible = Mutex(visible)
        self.queue = Mutex(Queue())
    }

    /// Lets the writer cycles run, reporting to `listener`.
    func start(_ listener: Listener) {
        self.listener.withLock { $0 = listener }
    }

    func setOptions(_ options: StreamOptions) { visible.withLock { $0.options = options } }

    // MARK: Calls from the kernel

    /// Queues the group's log changes, in the order the group made them.
    func enqueue(_ change: RaftNode.LogChange) {
        let work: Work
        switch change {
        case .append(let truncateFrom, let entries):
            work = .entries(truncateFrom: truncateFrom, entries)
            if let truncateFrom {
                visible.withLock {
                    $0.validThrough = min($0.validThrough, truncateFrom - 1)
                    $0.pendingTruncations += 1
                }
            }
        case .installSnapshot(let request):
            work = .snapshot(request)
            visible.withLock { $0.pendingInstalls += 1 }
        }
        do { try enqueue { _ in work } } catch {
            report(.warning, "raft-log: stream '\(name)': a log change was not queued: \(error)")
        }
    }

    /// Makes the entries up to `index` readable as they are written.
    func publishCommit(_ index: UInt64) {
        visible.withLock { v in
            guard index > v.commitIndex else { return }
            v.commitIndex = index
            v.updateCommittedEnd()
        }
    }

    /// Queues a committed offset; `completion` runs once the state file holding it is durable.
    func commitOffset(
        group: String, offset: UInt64, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    )
        throws
    {
        guard offset != UInt64.max else {
            throw PluginError.invalidArgument("raft-log: PX_OFFSET_NONE cannot be committed")
        }
        try enqueue { _ in .commit(group: group, offset: offset, completion: completion) }
    }

    func fetchOffset(group: String) -> UInt64? { visible.withLock { $0.state.committed[group] } }

    /// Every group's committed offset.
    func committedOffsets() -> [GroupOffset] {
        visible.withLock { v in v.state.committed.map { GroupOffset(group: $0.key, offset: $0.value) } }
    }

    /// Queues the removal of a group's committed offset; `completion` runs once the state file without it is
    /// durable. (`PX_OFFSET_NONE` in a queued commit means "forget", which a caller cannot commit.)
    func deleteOffset(group: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws {
        try enqueue { _ in .commit(group: group, offset: UInt64.max, completion: completion) }
    }

    /// Queues a trim; `completion` runs once the new first offset is durable.
    /// - Throws: `PX_ERR_OUT_OF_RANGE` past the end of the stream (counting queued appends).
    func trim(before offset: UInt64, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws {
        let end = visible.withLock { $0.committedEnd }
        guard offset <= end else {
            throw PluginError(
                PX_ERR_OUT_OF_RANGE,
                "raft-log: cannot trim stream '\(name)' before \(offset), past its end (next offset \(end))")
        }
        try enqueue { _ in .trim(before: offset, completion: completion) }
    }

    func info() -> StreamInfo {
        visible.withLock {
            StreamInfo(firstOffset: $0.firstOffset, nextOffset: $0.nextOffset, sizeBytes: UInt64($0.sizeBytes))
        }
    }

    var sizeBytes: Int { visible.withLock { $0.sizeBytes } }

    /// Why the stream takes no writes, if it does not.
    var failure: Fence? { queue.withLock { $0.failure } }

    /// Adds work made by `make` (under the queue lock, so offsets follow call order) and submits a writer cycle
    /// unless one is pending.
    private func enqueue(_ make: (inout Queue) throws -> Work) throws {
        let submit = try queue.withLock { q -> Bool in
            if let failure = q.failure { throw failure.refusal(stream: name) }
            guard !q.stopping else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log: stream '\(name)' is stopped") }
            q.work.append(try make(&q))
            defer { q.scheduled = true }
            return !q.scheduled
        }
        if submit { writers.submit(self) }
    }

    /// An interval sync is due: runs a cycle unless one is pending or the writer is done.
    func wakeForSync() {
        let submit = queue.withLock { q -> Bool in
            // A fenced stream syncs nothing again: what was not durable when it failed is discarded by `recover`.
            guard !q.scheduled && !q.exited && q.failure == nil else { return false }
            q.scheduled = true
            return true
        }
        if submit { writers.submit(self) }
    }

    // MARK: Reads

    /// One contiguous run of entries in one file.
    struct Span: Sendable {
        var file: OpenFile
        var start: Int
        var length: Int
        var firstOffset: UInt64
        var count: Int
    }

    /// Reads up to `maxRecords` events (about `maxBytes`, 0 = no limit, at least one) from `offset`, and lends
    /// them: the entries are read from disk into one buffer, checked, and `px_event`s laid over their bodies in
    /// place (`EventCodec.layOut`); the batch retains the buffer. Past the `pread`, nothing is copied.
    /// - Throws: `PX_ERR_OUT_OF_RANGE` before the first retained offset or past the end.
    func readBatch(
        from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
    ) throws {
        let spans = try visible.withLock { v in try plan(v, from: offset, maxRecords: maxRecords, maxBytes: maxBytes) }
        guard !spans.isEmpty else {
            return completion(.success(LentRecordBatch(records: 0, nextOffset: offset) { _ in }))
        }
        readers.async { [self] in
            do {
                completion(.success(try load(spans, from: offset)))
            } catch let error as PluginError {
                if error.status == PX_ERR_CORRUPTION.status { fenceForDamage(error.message) }
                completion(.failure(error))
            } catch {
                completion(.failure(PluginError(PX_ERR_IO, "raft-log: stream '\(name)': \(error)")))
            }
        }
    }

    private func plan(_ v: Visible, from offset: UInt64, maxRecords: Int, maxBytes: Int) throws -> [Span] {
        guard offset >= v.firstOffset else {
            throw PluginError(
                PX_ERR_OUT_OF_RANGE,
                "raft-log: offset \(offset) of stream '\(name)' is before its first retained offset \(v.firstOffset)")
        }
        let next = v.nextOffset
        guard offset <= next else {
            throw PluginError(
                PX_ERR_OUT_OF_RANGE,
                "raft-log: offset \(offset) of stream '\(name)' is past its end (next offset \(next))")
        }
        var spans: [Span] = []
        var wanted = min(UInt64(maxRecords), next - offset)
        var bytes = 0
        var current = offset
        // The last segment starting at or before the offset.
        var low = 0
        var high = v.segments.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if v.segments[middle].header.baseOffset <= offset { low = middle } else { high = middle - 1 }
        }
        var index = low
        while wanted > 0 && index < v.segments.count {
            let segment = v.segments[index]
            index += 1
            guard current < segment.endOffset else { continue }
            var ordinal = segment.ordinal(ofOffset: current)
            // The next control entry at or after `ordinal`: it is read through and skipped.
            var nextControl = segment.controls.firstIndex { $0 >= ordinal } ?? segment.controls.count
            let start = Int(segment.positions[ordinal])
            var events = 0
            var end = start
            var stoppedByBytes = false
            while UInt64(events) < wanted && ordinal < segment.positions.count {
                let entryEnd =
                    ordinal + 1 < segment.positions.count ? Int(segment.positions[ordinal + 1]) : segment.size
                let isControl = nextControl < segment.controls.count && segment.controls[nextControl] == ordinal
                if isControl {
                    nextControl += 1
                } else {
                    if maxBytes > 0 && (bytes > 0 || events > 0) && bytes + (entryEnd - end) > maxBytes {
                        stoppedByBytes = true
                        break
                    }
                    events += 1
                }
                bytes += entryEnd - end
                end = entryEnd
                ordinal += 1
            }
            guard events > 0 else { break }
            spans.append(
                Span(file: segment.file, start: start, length: end - start, firstOffset: current, count: events))
            current += UInt64(events)
            wanted -= UInt64(events)
            if stoppedByBytes { break }
        }
        return spans
    }

    /// Reads the spans into one buffer, checks every entry, and lays the events out over it.
    private func load(_ spans: [Span], from offset: UInt64) throws -> LentRecordBatch {
        let buffer = ReadBuffer(count: spans.reduce(0) { $0 + $1.length })
        var bodies: [(range: Range<Int>, offset: UInt64, appendTime: UInt64)] = []
        var extensionCount = 0
        var position = 0
        for span in spans {
            do {
                try span.file.read(count: span.length, at: span.start, into: buffer.bytes.baseAddress! + position)
            } catch let failure as IOFailure {
                throw PluginError(PX_ERR_IO, "raft-log: stream '\(name)': \(failure)")
            }
            let raw = UnsafeRawBufferPointer(rebasing: buffer.bytes[position..<(position + span.length)])
            extensionCount += try check(raw, of: span, at: position, into: &bodies)
            position += span.length
        }
        return try LentRecordBatch(
            records: bodies.count, events: bodies.count, extensions: extensionCount,
            nextOffset: offset + UInt64(bodies.count)
        ) { builder in
            builder.retain(buffer)
            for body in bodies {
                let event = builder.makeEvent()
                let raw = UnsafeRawBufferPointer(rebasing: buffer.bytes[body.range])
                do {
                    try EventCodec.layOut(raw, into: event) { builder.makeExtensions($0) }
                } catch {
                    throw PluginError(
                        PX_ERR_CORRUPTION, "raft-log: stream '\(name)': the event at offset \(body.offset): \(error)")
                }
                builder.append(offset: body.offset, appendTime: body.appendTime, event: event)
            }
        }
    }

    /// Checks each entry of one span read into `raw` (headers, CRCs, offsets, event bodies) and notes where the
    /// event bodies are in the read buffer, where `raw` starts at `origin`; returns the number of extensions
    /// they hold.
    private func check(
        _ raw: UnsafeRawBufferPointer, of span: Span, at origin: Int,
        into bodies: inout [(range: Range<Int>, offset: UInt64, appendTime: UInt64)]
    ) throws -> Int {
        var extensions = 0
        var position = 0
        var offset = span.firstOffset
        while position < raw.count {
            func corrupt(_ reason: String) -> PluginError {
                PluginError(
                    PX_ERR_CORRUPTION,
                    "raft-log: stream '\(name)': the entry at byte \(span.start + position) of \(span.file.path) "
                        + "(offset \(offset)) is corrupt: \(reason); the stream is fenced until `plexus plugin call "
                        + "raft-log recover \(name)` has recovery check the log")
            }
            let rest = UnsafeRawBufferPointer(rebasing: raw[position...])
            guard let header = EntryHeader.decode(rest) else { throw corrupt("wrong magic or header CRC") }
            let bodyStart = position + LogFormat.entryHeaderSize
            let end = bodyStart + Int(header.bodyLength)
            guard end <= raw.count else { throw corrupt("it is longer than the index says") }
            let body = UnsafeRawBufferPointer(rebasing: raw[bodyStart..<end])
            guard CRC32C.checksum(body) == header.bodyCRC else { throw corrupt("wrong body CRC") }
            guard header.offset == offset else { throw corrupt("it holds offset \(header.offset)") }
            position = end
            guard header.kind == LogFormat.Kind.event.rawValue else { continue }
            do {
                extensions += try EventCodec.check(body)
            } catch {
                throw corrupt("\(error)")
            }
            bodies.append(((origin + bodyStart)..<(origin + end), offset, header.appendTime))
            offset += 1
        }
        return extensions
    }

    /// Bytes read from the log, immutable once read: what a lent batch's events point into.
    final class ReadBuffer: @unchecked Sendable {
        // Safe: filled by the reader that made it before any batch points into it; only read afterwards.
        let bytes: UnsafeMutableRawBufferPointer

        init(count: Int) { bytes = .allocate(byteCount: max(count, 1), alignment: 8) }

        deinit { bytes.deallocate() }
    }

    // MARK: Entries for replication

    /// Up to `maxCount` whole entries (about `maxBytes`, at least one) from `index`, read from disk and checked;
    /// `nil` when this log does not hold `index` (compacted, or not written yet) or the read fails.
    func entries(from index: UInt64, maxCount: Int, maxBytes: Int) -> [WireEntry]? {
        let span = visible.withLock { v -> (file: OpenFile, start: Int, length: Int)? in
            guard let number = v.segment(holding: index) else { return nil }
            let segment = v.segments[number]
            var ordinal = Int(index - segment.header.baseIndex)
            let start = Int(segment.positions[ordinal])
            var end = start
            var count = 0
            while ordinal < segment.positions.count && count < maxCount {
                let entryEnd =
                    ordinal + 1 < segment.positions.count ? Int(segment.positions[ordinal + 1]) : segment.size
                if count > 0 && entryEnd - start > maxBytes { break }
                end = entryEnd
                count += 1
                ordinal += 1
            }
            return (segment.file, start, end - start)
        }
        guard let span, let bytes = try? span.file.read(count: span.length, at: span.start) else { return nil }
        var entries: [WireEntry] = []
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            var position = 0
            while position < raw.count {
                guard let header = EntryHeader.decode(UnsafeRawBufferPointer(rebasing: raw[position...])) else {
                    return false
                }
                let bodyStart = position + LogFormat.entryHeaderSize
                let end = bodyStart + Int(header.bodyLength)
                guard end <= raw.count else { return false }
                let body = UnsafeRawBufferPointer(rebasing: raw[bodyStart..<end])
                guard CRC32C.checksum(body) == header.bodyCRC else { return false }
                entries.append(
                    WireEntry(
                        term: header.term, index: header.index, offset: header.offset, appendTime: header.appendTime,
                        kind: header.kind, bodyCRC: header.bodyCRC, body: Array(body)))
                position = end
            }
            return true
        }
        if !ok {
            fenceForDamage("an entry from index \(index) failed its checks while read for replication")
            return nil
        }
        return entries
    }

    /// The chained CRC after the entry at `index`, when this log holds it (or it is the snapshot point).
    func chain(at index: UInt64) -> UInt32? {
        let found = visible.withLock { v -> (OpenFile, Int)?? in
            if index == v.segments[0].header.baseIndex - 1 { return .some(nil) }
            guard let number = v.segment(holding: index) else { return nil }
            let segment = v.segments[number]
            return .some((segment.file, Int(segment.positions[Int(index - segment.header.baseIndex)])))
        }
        guard let found else { return nil }
        guard let (file, position) = found else { return visible.withLock { $0.segments[0].header.baseChain } }
        guard let bytes = try? file.read(count: LogFormat.entryHeaderSize, at: position) else { return nil }
        return bytes.withUnsafeBytes { EntryHeader.decode($0)?.chain }
    }

    /// Where the retained log starts: the snapshot a follower behind it installs.
    func snapshotPoint() -> (index: UInt64, term: UInt64, nextOffset: UInt64, chain: UInt32) {
        visible.withLock {
            let header = $0.segments[0].header
            return (header.baseIndex - 1, header.baseTerm, header.baseOffset, header.baseChain)
        }
    }

    // MARK: Recovering from a fence

    /// Damage found while running (a checksum failed on a read): the stream fences itself, so that it neither
    /// serves nor replicates the damaged range and its group takes no further part (a leader stops
    /// heartbeating: the others elect another). `recover` then has recovery check the files: it refuses the
    /// damage, or with `repairOnStart: truncate` cuts the log there and marks the member as recovering.
    func fenceForDamage(_ reason: String) {
        let fence = Fence(reason: "damage found on read: \(reason)", outOfSpace: false)
        let first = queue.withLock { q -> Bool in
            guard q.failure == nil else { return false }
            q.failure = fence
            return true
        }
        guard first else { return }
        report(.error, "raft-log: stream '\(name)' is fenced: \(fence.reason)")
        // Not on this thread: a replication read runs under the group's lock, which the listener takes.
        let listener = listener.withLock { $0 }
        DispatchQueue.global().async { listener?.failed(fence) }
    }

    /// Lifts the fence a failed write or sync put up, without a restart: discards what the failed cycle wrote
    /// past the durable log (segment files it created, the tail of the active segment beyond what was synced),
    /// syncs that, recovers the log from disk again (`Recovery`, every entry checked) and takes writes again.
    /// The caller (`RaftStream.recover`) rebuilds the Raft group over the recovered log.
    /// - Returns: false when the stream is not fenced.
    /// - Throws: `PluginError` when the writer has not finished its last cycle yet (retry), the stream stops,
    ///   or the disk still fails: the stream stays fenced.
    func recover() throws -> Bool {
        let fenced = try queue.withLock { q -> Bool in
            guard q.failure != nil else { return false }
            guard !q.stopping else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log: stream '\(name)' is stopped") }
            // While fenced nothing is queued and no interval sync is woken, so an idle writer stays idle.
            guard !q.scheduled else {
                throw PluginError(
                    PX_ERR_UNAVAILABLE, "raft-log: stream '\(name)': its writer is finishing a cycle; retry")
            }
            return true
        }
        guard fenced else { return false }
        let durable = visible.withLock { $0.segments }
        let last = durable[durable.count - 1]
        do {
            // Newest first, so that an interruption leaves a prefix of the log.
            for entry in try Files.list(directory).sorted().reversed() {
                guard let base = Segment.baseIndex(fileName: entry), base > last.header.baseIndex else { continue }
                try Files.remove(directory + "/" + entry)
            }
            if Files.exists(last.file.path) {
                try last.file.truncate(to: last.size)
                if syncs { try last.file.syncData() }
            }
            if syncs { try Files.syncDirectory(directory) }
        } catch {
            throw PluginError(
                PX_ERR_IO, "raft-log: stream '\(name)' stays fenced: its unsynced tail cannot be discarded: \(error)")
        }
        let (segments, state) = try Recovery(
            name: name, directory: directory, settings: settings,
            report: { [report] in report(.warning, "raft-log: \($0)") }
        ).run()
        visible.withLock { v in
            v.segments = segments
            v.state = state
            v.validThrough = .max
            v.pendingTruncations = 0
            v.pendingInstalls = 0
            v.committedEnd = max(
                min(v.committedEnd, segments[segments.count - 1].endOffset),
                max(state.trimmedBefore, segments[0].header.baseOffset))
            v.updateCommittedEnd()
        }
        clock.withLock { $0 = WriterClock() }
        queue.withLock { q in
            q.failure = nil
            q.work = []
        }
        return true
    }

    /// Whether the stream's disk takes a write again: 1 MiB written to a temporary file (removed by recovery
    /// if left behind), synced and removed.
    func probeSpace() -> Bool {
        let path = directory + "/space-probe.tmp"
        defer { try? Files.remove(path) }
        do {
            try Files.remove(path)
            let file = try OpenFile(path: path, create: true)
            try file.write([UInt8](repeating: 0, count: 1 << 20), at: 0)
            try file.syncData()
            return true
        } catch {
            return false
        }
    }

    // MARK: Stopping

    /// Asks the writer to finish what is queued, sync and stop; waits until `deadline`.
    /// - Returns: whether the writer finished in time.
    func stop(deadline: DispatchTime) -> Bool {
        let (alreadyStopping, submit) = queue.withLock { q -> (Bool, Bool) in
            guard !q.stopping else { return (true, false) }
            q.stopping = true
            defer { q.scheduled = true }
            return (false, !q.scheduled)
        }
        guard !alreadyStopping else { return true }
        if submit { writers.submit(self) }
        return finished.wait(timeout: deadline) == .success
    }
}
