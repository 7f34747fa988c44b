import Dispatch
import PlexusPluginSDK
import RaftCore

#if canImport(Glibc)
    import Glibc
#endif

/// The writer of a `StreamLog`: the only code that changes the stream's files, one cycle at a time on the
/// instance's writer pool.
///
/// Each cycle takes everything queued. Runs of entries are written in order (one gather write per 128 entries
/// or `maxWriteBytes`) and synced once (`fsync: always`), then made visible and reported to the Raft group; a
/// truncation or a snapshot first finishes the entries before it. Then queued commits and trims are applied
/// with one rewrite of the state file. While a cycle's sync runs, new work queues up for the next one: that
/// is the group commit.
extension StreamLog {
    /// The writer's view of one segment it appends to during a cycle.
    struct Tail {
        let file: OpenFile
        let header: SegmentHeader
        /// Created in this cycle (not yet visible).
        let isNew: Bool
        /// Bytes written or buffered.
        var size: Int
        var nextIndex: UInt64
        var nextOffset: UInt64
        var chain: UInt32
        var term: UInt64
        var newest: UInt64
        /// Positions of the entries added in this cycle, and which of them are control entries.
        var added: [UInt32] = []
        var addedControls: [Int] = []

        init(_ segment: Segment, isNew: Bool) {
            file = segment.file
            header = segment.header
            self.isNew = isNew
            size = segment.size
            nextIndex = segment.nextIndex
            nextOffset = segment.endOffset
            chain = segment.lastChain
            term = segment.lastTerm
            newest = segment.newestAppendTime
        }
    }

    var syncs: Bool { settings.fsync != .never }

    /// One writer cycle, on a pool thread (`WriterPool`), never two at once for a stream: takes everything
    /// queued, writes it, syncs per the policy, then submits the next cycle if work came meanwhile, asks to be
    /// woken for an interval sync it owes, or, once the stream stops, syncs and signals `finished`.
    func cycle() {
        let (work, stopping) = queue.withLock { q -> ([Work], Bool) in
            let work = q.work
            q.work = []
            return (work, q.stopping)
        }
        var clock = self.clock.withLock { $0 }
        let interval = DispatchTimeInterval.milliseconds(settings.fsyncIntervalMs)
        if !work.isEmpty { run(work, dirty: &clock.dirty) }
        // A fenced stream syncs nothing again: a sync that succeeds after one failed proves nothing.
        if clock.dirty && failure == nil && (stopping || DispatchTime.now() >= clock.lastSync + interval) {
            syncActive()
            clock.dirty = false
            clock.lastSync = .now()
        }
        self.clock.withLock { $0 = clock }
        enum Next { case again, idle, exit, wake(DispatchTime) }
        let next = queue.withLock { q -> Next in
            // Work that came meanwhile, or a stop the cycle did not see yet: one more cycle.
            if !q.work.isEmpty || (q.stopping && !stopping) { return .again }
            if q.stopping {
                q.exited = true
                return .exit
            }
            q.scheduled = false
            return clock.dirty ? .wake(clock.lastSync + interval) : .idle
        }
        switch next {
        case .again: writers.submit(self)
        case .exit: finished.signal()
        case .wake(let deadline): writers.wake(self, at: deadline)
        case .idle: break
        }
    }

    /// Carries out queued work in order: runs of entries written together, truncations and snapshots between
    /// them, then commits and trims with one state file rewrite.
    private func run(_ work: [Work], dirty: inout Bool) {
        var entries: [WireEntry] = []
        var batches = 0
        var others: [Work] = []
        var ok = failure == nil
        for item in work {
            switch item {
            case .entries(let truncateFrom, let batch):
                if let truncateFrom {
                    if ok && !entries.isEmpty { ok = write(entries, batches: batches) }
                    (entries, batches) = ([], 0)
                    if ok { ok = truncate(from: truncateFrom) }
                }
                entries += batch
                batches += 1
            case .snapshot(let request):
                if ok && !entries.isEmpty { ok = write(entries, batches: batches) }
                (entries, batches) = ([], 0)
                if ok { ok = install(request) }
            case .commit, .trim:
                others.append(item)
            }
        }
        if ok && !entries.isEmpty {
            ok = write(entries, batches: batches)
            if ok && settings.fsync == .interval { dirty = true }
        }
        if !others.isEmpty { apply(others) }
    }

    /// Writes entries after the last one, syncs per the policy, makes them visible and reports them.
    ///
    /// The bodies are written from the arrays the append encoded them into (`EventCodec.encode`): each group
    /// of entries goes out in one gather write (`pwritev`) of their headers, built here, and their bodies, so
    /// an event's bytes are copied once between the kernel's buffer and the file.
    /// - Returns: whether they were written.
    private func write(_ entries: [WireEntry], batches: Int) -> Bool {
        var tails = [visible.withLock { Tail($0.segments[$0.segments.count - 1], isNew: false) }]
        let headers = UnsafeMutableRawBufferPointer.allocate(
            byteCount: Self.groupEntries * LogFormat.entryHeaderSize, alignment: 8)
        defer { headers.deallocate() }
        // The entries written by the next gather write: `entries[groupFirst..<groupFirst + groupCount]`, whose
        // headers are in `headers`, to be written at `groupStart` of the last tail's file.
        var groupFirst = 0
        var groupCount = 0
        var groupBytes = 0
        var groupStart = tails[0].size
        func flush() throws {
            guard groupCount > 0 else { return }
            try Self.withVectors(headers, entries[groupFirst..<(groupFirst + groupCount)]) { vectors in
                try tails[tails.count - 1].file.write(vectors: &vectors, at: groupStart)
            }
            groupStart += groupBytes
            groupFirst += groupCount
            groupCount = 0
            groupBytes = 0
        }
        do {
            for (number, entry) in entries.enumerated() {
                let tail = tails[tails.count - 1]
                guard entry.index == tail.nextIndex, entry.offset == tail.nextOffset else {
                    throw PluginError(
                        PX_ERR_INTERNAL,
                        "raft-log: stream '\(name)': entry \(entry.index) (offset \(entry.offset)) does not follow "
                            + "the log (next index \(tail.nextIndex), offset \(tail.nextOffset))")
                }
                let length = LogFormat.entryHeaderSize + entry.body.count
                if tail.size > LogFormat.segmentHeaderSize && tail.size + length > settings.segmentBytes {
                    try flush()
                    if syncs {
                        try tail.file.syncData()
                        statistics.synced()
                    }
                    let header = SegmentHeader(
                        baseIndex: tail.nextIndex, baseOffset: tail.nextOffset, baseChain: tail.chain,
                        baseTerm: tail.term)
                    let segment = try Segment.create(directory: directory, header: header, sync: syncs)
                    tails.append(Tail(segment, isNew: true))
                    groupStart = segment.size
                }
                if groupCount == Self.groupEntries { try flush() }
                groupFirst = number - groupCount
                var header = EntryHeader(
                    bodyLength: UInt32(entry.body.count), term: entry.term, index: entry.index, offset: entry.offset,
                    appendTime: entry.appendTime, kind: entry.kind, bodyCRC: entry.bodyCRC)
                let last = tails.count - 1
                let chain = header.write(
                    into: headers, at: groupCount * LogFormat.entryHeaderSize, previousChain: tails[last].chain)
                groupCount += 1
                groupBytes += length
                if entry.kind != LogFormat.Kind.event.rawValue {
                    tails[last].addedControls.append(Int(tails[last].nextIndex - tails[last].header.baseIndex))
                } else {
                    tails[last].nextOffset += 1
                }
                tails[last].added.append(UInt32(tails[last].size))
                tails[last].size += length
                tails[last].chain = chain
                tails[last].nextIndex += 1
                tails[last].term = entry.term
                tails[last].newest = max(tails[last].newest, entry.appendTime)
                if groupBytes >= settings.maxWriteBytes { try flush() }
            }
            try flush()
            if settings.fsync == .always {
                try tails[tails.count - 1].file.syncData()
                statistics.synced(groupCommitOf: batches)
            }
        } catch {
            failWrites(error)
            return false
        }
        publish(tails)
        let events = entries.reduce(0) { $0 + ($1.kind == LogFormat.Kind.event.rawValue ? 1 : 0) }
        statistics.appended(events: events, batches: batches)
        // Before the report, which completes appends: whoever appended sees the retention that append caused
        // (of entries committed before it).
        enforceRetention()
        let last = entries[entries.count - 1]
        listener.withLock { $0 }?.persisted(last.index, last.term)
        return true
    }

    /// The most entries one gather write takes: two buffers each (header, body), well under `IOV_MAX`, and a
    /// bounded depth for `withVectors`.
    static let groupEntries = 128

    /// The `iovec`s of `entries` as they lie on disk: each one's header (from `headers`, in order) followed by
    /// its body, read where the body's array keeps it (each array is lent for the nested calls' duration).
    private static func withVectors(
        _ headers: UnsafeMutableRawBufferPointer, _ entries: ArraySlice<WireEntry>,
        _ body: (inout [iovec]) throws -> Void
    ) throws {
        var vectors: [iovec] = []
        vectors.reserveCapacity(entries.count * 2)
        func lend(_ rest: ArraySlice<WireEntry>) throws {
            guard let entry = rest.first else { return try body(&vectors) }
            try entry.body.withUnsafeBytes { bytes in
                let number = vectors.count / 2
                vectors.append(
                    iovec(
                        iov_base: headers.baseAddress! + number * LogFormat.entryHeaderSize,
                        iov_len: LogFormat.entryHeaderSize))
                vectors.append(
                    iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count))
                try lend(rest.dropFirst())
            }
        }
        try lend(entries)
    }

    /// Makes a cycle's entries visible (to replication; to readers as they are committed).
    private func publish(_ tails: [Tail]) {
        visible.withLock { v in
            for tail in tails {
                if tail.isNew {
                    var segment = Segment(file: tail.file, header: tail.header)
                    segment.positions = tail.added
                    segment.controls = tail.addedControls
                    segment.size = tail.size
                    segment.nextIndex = tail.nextIndex
                    segment.lastChain = tail.chain
                    segment.lastTerm = tail.term
                    segment.newestAppendTime = tail.newest
                    v.segments.append(segment)
                } else {
                    let last = v.segments.count - 1
                    v.segments[last].positions.append(contentsOf: tail.added)
                    v.segments[last].controls.append(contentsOf: tail.addedControls)
                    v.segments[last].size = tail.size
                    v.segments[last].nextIndex = tail.nextIndex
                    v.segments[last].lastChain = tail.chain
                    v.segments[last].lastTerm = tail.term
                    v.segments[last].newestAppendTime = tail.newest
                }
            }
            v.updateCommittedEnd()
        }
    }

    /// Removes the entries from `index` on: never committed ones (Raft replaces only those), so readers
    /// never saw them.
    private func truncate(from index: UInt64) -> Bool {
        let (segments, number) = visible.withLock { ($0.segments, $0.segment(holding: index)) }
        // Once done, what is on disk is the group's again (but for truncations queued after this one).
        defer {
            visible.withLock { v in
                v.pendingTruncations -= 1
                if v.pendingTruncations == 0 { v.validThrough = .max }
                v.updateCommittedEnd()
            }
        }
        guard let number else { return true }  // nothing written from there
        let segment = segments[number]
        let ordinal = Int(index - segment.header.baseIndex)
        do {
            // What the log ends with after the cut: the entry before `index`.
            var chain = segment.header.baseChain
            var term = segment.header.baseTerm
            if ordinal > 0 {
                let bytes = try segment.file.read(
                    count: LogFormat.entryHeaderSize, at: Int(segment.positions[ordinal - 1]))
                guard let header = bytes.withUnsafeBytes({ EntryHeader.decode($0) }) else {
                    throw PluginError(PX_ERR_CORRUPTION, "the entry before index \(index) is unreadable")
                }
                chain = header.chain
                term = header.term
            }
            let keepWhole = ordinal == 0 && number > 0
            // Newest first, so that a crash between removals leaves a log that is still a prefix.
            for later in segments[(keepWhole ? number : number + 1)...].reversed() { try Files.remove(later.file.path) }
            if !keepWhole {
                try segment.file.truncate(to: Int(segment.positions[ordinal]))
                if syncs { try segment.file.syncData() }
            }
            if syncs { try Files.syncDirectory(directory) }
            visible.withLock { v in
                v.segments.removeSubrange((keepWhole ? number : number + 1)...)
                guard !keepWhole else { return }
                let last = v.segments.count - 1
                v.segments[last].positions.removeSubrange(ordinal...)
                v.segments[last].controls.removeAll { $0 >= ordinal }
                v.segments[last].size = Int(segment.positions[ordinal])
                v.segments[last].nextIndex = index
                v.segments[last].lastChain = chain
                v.segments[last].lastTerm = term
            }
            report(.info, "raft-log: stream '\(name)': removed the uncommitted entries from index \(index) on")
            return true
        } catch {
            failWrites(error)
            return false
        }
    }

    /// Replaces the whole log by an empty one that starts after the snapshot point.
    private func install(_ snapshot: SnapshotRequest) -> Bool {
        let old = visible.withLock { $0.segments }
        do {
            let header = SegmentHeader(
                baseIndex: snapshot.index + 1, baseOffset: snapshot.nextOffset, baseChain: snapshot.chain,
                baseTerm: snapshot.indexTerm)
            // Newest first, so that a crash part way leaves a prefix of the old log (or nothing), never a log
            // with a gap; the leader sends the snapshot again.
            for segment in old.reversed() { try Files.remove(segment.file.path) }
            if syncs { try Files.syncDirectory(directory) }
            let segment = try Segment.create(directory: directory, header: header, sync: syncs)
            visible.withLock { v in
                v.segments = [segment]
                v.commitIndex = max(v.commitIndex, snapshot.index)
                v.committedEnd = snapshot.nextOffset
                v.pendingInstalls -= 1
            }
            report(
                .info,
                "raft-log: stream '\(name)': installed the leader's snapshot: the log now starts at index "
                    + "\(snapshot.index + 1), offset \(snapshot.nextOffset)")
            let listener = listener.withLock { $0 }
            listener?.compacted()
            listener?.persisted(snapshot.index, snapshot.indexTerm)
            return true
        } catch {
            failWrites(error)
            return false
        }
    }

    /// After a failed write or sync nothing on disk past the visible log can be trusted (a failed
    /// `fdatasync` may have dropped dirty pages): the stream is fenced, every queued call fails, and nothing
    /// written by this cycle is reported or synced again. `recover` lifts the fence.
    private func failWrites(_ error: any Error) {
        let fence = Fence(error)
        let message = fence.reason
        report(.error, "raft-log: stream '\(name)': a write failed, the stream is fenced (takes no writes): \(message)")
        let pending = queue.withLock { q -> [Work] in
            q.failure = fence
            defer { q.work = [] }
            return q.work
        }
        let failure = PluginError(PX_ERR_IO, "raft-log: stream '\(name)': \(message)")
        listener.withLock { $0 }?.failed(fence)
        for item in pending {
            switch item {
            case .entries, .snapshot: break
            case .commit(_, _, let completion), .trim(_, let completion): completion(.failure(failure))
            }
        }
    }

    /// Applies commits and trims with one durable rewrite of the state file, then drops trimmed segments.
    private func apply(_ work: [Work]) {
        let (old, next) = visible.withLock { ($0.state, $0.committedEnd) }
        var state = old
        var results: [(completion: @Sendable (Result<Void, PluginError>) -> Void, error: PluginError?)] = []
        for item in work {
            switch item {
            case .commit(let group, let offset, let completion):
                // PX_OFFSET_NONE: the group's offset is deleted (`deleteOffset`).
                state.committed[group] = offset == UInt64.max ? nil : offset
                results.append((completion, nil))
            case .trim(let before, let completion):
                if before > next {
                    // Only when appends before it failed.
                    results.append(
                        (
                            completion,
                            PluginError(
                                PX_ERR_OUT_OF_RANGE,
                                "raft-log: cannot trim stream '\(name)' before \(before), past its end (\(next))")
                        ))
                } else {
                    state.trimmedBefore = max(state.trimmedBefore, before)
                    results.append((completion, nil))
                }
            case .entries, .snapshot:
                break
            }
        }
        if state != old {
            do {
                try Files.replace(
                    directory + "/" + StreamState.fileName, with: state.encoded(), directory: directory, sync: syncs)
                visible.withLock { $0.state = state }
            } catch {
                let failure = PluginError(
                    PX_ERR_IO, "raft-log: stream '\(name)': cannot write its state file: \(error)")
                for index in results.indices where results[index].error == nil { results[index].error = failure }
            }
        }
        if state.trimmedBefore > old.trimmedBefore { dropTrimmed(below: state.trimmedBefore) }
        for (completion, error) in results { completion(error.map { .failure($0) } ?? .success(())) }
    }

    /// Drops the segments wholly below `offset`; when that is every event, first rolls to an empty segment.
    private func dropTrimmed(below offset: UInt64) {
        let active = visible.withLock { $0.segments[$0.segments.count - 1] }
        if !active.isEmpty && active.endOffset <= offset {
            do {
                let header = SegmentHeader(
                    baseIndex: active.nextIndex, baseOffset: active.endOffset, baseChain: active.lastChain,
                    baseTerm: active.lastTerm)
                let segment = try Segment.create(directory: directory, header: header, sync: syncs)
                visible.withLock { $0.segments.append(segment) }
            } catch {
                report(.warning, "raft-log: stream '\(name)': cannot start a new segment after a trim: \(error)")
            }
        }
        drop { segment, _ in segment.endOffset <= offset }
    }

    /// Drops old segments by the stream's retention: by age (its newest event is older than `retentionMs`)
    /// and by size (while the stream holds more than `retentionBytes`). The active segment always stays.
    private func enforceRetention() {
        let options = visible.withLock { $0.options }
        guard options.retentionBytes > 0 || options.retentionMilliseconds > 0 else { return }
        let now = Files.now()
        let (window, overflow) = options.retentionMilliseconds.multipliedReportingOverflow(by: 1_000_000)
        let cutoff = options.retentionMilliseconds == 0 || overflow || window > now ? 0 : now - window
        drop { segment, remainingBytes in
            segment.newestAppendTime < cutoff
                || (options.retentionBytes > 0 && UInt64(remainingBytes) > options.retentionBytes)
        }
    }

    /// Removes segments from the front while `condition(segment, bytes the stream holds)` holds, never the
    /// last one; deletes their files (a reader still holding one finishes on its open descriptor).
    private func drop(while condition: (Segment, Int) -> Bool) {
        let dropped = visible.withLock { v -> [Segment] in
            var total = v.sizeBytes
            var count = 0
            // Only committed entries leave: a follower behind them gets the snapshot point instead.
            while count < v.segments.count - 1 && v.segments[count].lastIndex <= v.commitIndex
                && condition(v.segments[count], total)
            {
                total -= v.segments[count].size
                count += 1
            }
            defer { v.segments.removeFirst(count) }
            return Array(v.segments.prefix(count))
        }
        guard !dropped.isEmpty else { return }
        do {
            for segment in dropped { try Files.remove(segment.file.path) }
            if syncs { try Files.syncDirectory(directory) }
        } catch {
            report(.warning, "raft-log: stream '\(name)': cannot delete a dropped segment: \(error)")
        }
        statistics.dropped(segments: dropped.count)
        listener.withLock { $0 }?.compacted()
    }

    /// Syncs the active segment (interval flushes and the last flush at stop).
    private func syncActive() {
        let file = visible.withLock { $0.segments[$0.segments.count - 1].file }
        do {
            try file.syncData()
            statistics.synced()
        } catch {
            failWrites(error)
        }
    }
}
