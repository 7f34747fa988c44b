import Dispatch
import PlexusPluginSDK

/// The writer thread of a `StreamLog`: the only code that changes the stream's files.
///
/// Each cycle takes everything queued, writes all the appends in order (one `pwrite` per `maxWriteBytes`),
/// syncs once (`fsync: always`), makes the entries visible, enforces retention and completes every batch;
/// then applies queued commits and trims with one rewrite of the state file. While a cycle's sync runs, new
/// work queues up for the next one: that is the group commit.
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
        /// Positions of the events added in this cycle.
        var added: [UInt32] = []

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

    /// The term stage 1 writes: a single member that never holds an election.
    static let singleMemberTerm: UInt64 = 1

    var syncs: Bool { settings.fsync != .never }

    func runWriter() {
        var dirty = false
        var lastSync = DispatchTime.now()
        let interval = DispatchTimeInterval.milliseconds(settings.fsyncIntervalMs)
        while true {
            let (work, stopping) = queue.withLock { q -> ([Work], Bool) in
                let work = q.work
                q.work = []
                if work.isEmpty && !q.stopping { q.idle = true }
                return (work, q.stopping)
            }
            if work.isEmpty {
                if stopping {
                    if dirty { syncActive() }
                    finished.signal()
                    return
                }
                if dirty {
                    if wake.wait(timeout: lastSync + interval) == .timedOut {
                        syncActive()
                        dirty = false
                        lastSync = .now()
                    }
                } else {
                    wake.wait()
                }
                continue
            }
            var appends: [(first: UInt64, events: [EncodedEvent], completion: AppendCompletion)] = []
            var others: [Work] = []
            for item in work {
                if case .append(let first, let events, let completion) = item {
                    appends.append((first, events, completion))
                } else {
                    others.append(item)
                }
            }
            if !appends.isEmpty && write(appends) && settings.fsync == .interval { dirty = true }
            if !others.isEmpty { apply(others) }
            if dirty && DispatchTime.now() >= lastSync + interval {
                syncActive()
                dirty = false
                lastSync = .now()
            }
        }
    }

    typealias AppendCompletion = @Sendable (Result<UInt64, PluginError>) -> Void

    /// Writes a cycle's appends, syncs per the policy, makes them visible and completes them.
    /// - Returns: whether they were written.
    private func write(_ appends: [(first: UInt64, events: [EncodedEvent], completion: AppendCompletion)]) -> Bool {
        let now = Files.now()
        var tails = [visible.withLock { Tail($0.segments[$0.segments.count - 1], isNew: false) }]
        var buffer: [UInt8] = []
        buffer.reserveCapacity(min(settings.maxWriteBytes, appends.reduce(0) { $0 + $1.events.count * 1100 }))
        var bufferStart = tails[0].size
        var events = 0
        func flush() throws {
            guard !buffer.isEmpty else { return }
            try tails[tails.count - 1].file.write(buffer, at: bufferStart)
            bufferStart += buffer.count
            buffer.removeAll(keepingCapacity: true)
        }
        do {
            for append in appends {
                guard append.first == tails[tails.count - 1].nextOffset else {
                    throw PluginError(
                        PX_ERR_INTERNAL,
                        "raft-log: stream '\(name)': a batch reserved offset \(append.first) but the log is at "
                            + "\(tails[tails.count - 1].nextOffset)")
                }
                for event in append.events {
                    let length = LogFormat.entryHeaderSize + event.body.count
                    let tail = tails[tails.count - 1]
                    if tail.size > LogFormat.segmentHeaderSize && tail.size + length > settings.segmentBytes {
                        try flush()
                        if syncs {
                            try tail.file.syncData()
                            statistics.synced()
                        }
                        let header = SegmentHeader(
                            baseIndex: tail.nextIndex, baseOffset: tail.nextOffset, baseChain: tail.chain)
                        let segment = try Segment.create(directory: directory, header: header, sync: syncs)
                        tails.append(Tail(segment, isNew: true))
                        bufferStart = segment.size
                    }
                    let position = buffer.count
                    buffer.append(contentsOf: repeatElement(0, count: LogFormat.entryHeaderSize))
                    buffer.append(contentsOf: event.body)
                    var header = EntryHeader(
                        bodyLength: UInt32(event.body.count), term: Self.singleMemberTerm,
                        index: tails[tails.count - 1].nextIndex, offset: tails[tails.count - 1].nextOffset,
                        appendTime: now, kind: LogFormat.Kind.event.rawValue, bodyCRC: event.crc)
                    let chain = buffer.withUnsafeMutableBytes {
                        header.write(into: $0, at: position, previousChain: tails[tails.count - 1].chain)
                    }
                    tails[tails.count - 1].added.append(UInt32(tails[tails.count - 1].size))
                    tails[tails.count - 1].size += length
                    tails[tails.count - 1].chain = chain
                    tails[tails.count - 1].nextIndex += 1
                    tails[tails.count - 1].nextOffset += 1
                    tails[tails.count - 1].term = Self.singleMemberTerm
                    tails[tails.count - 1].newest = now
                    events += 1
                    if buffer.count >= settings.maxWriteBytes { try flush() }
                }
            }
            try flush()
            if settings.fsync == .always {
                try tails[tails.count - 1].file.syncData()
                statistics.synced(groupCommitOf: appends.count)
            }
        } catch {
            failWrites(error, completing: appends.map(\.completion))
            return false
        }
        publish(tails)
        statistics.appended(events: events, batches: appends.count)
        // Before the completions, so that whoever appended sees the retention that append caused.
        enforceRetention()
        for append in appends { append.completion(.success(append.first)) }
        return true
    }

    /// Makes a cycle's entries visible to readers.
    private func publish(_ tails: [Tail]) {
        visible.withLock { v in
            for tail in tails {
                if tail.isNew {
                    var segment = Segment(file: tail.file, header: tail.header)
                    segment.positions = tail.added
                    segment.size = tail.size
                    segment.nextIndex = tail.nextIndex
                    segment.lastChain = tail.chain
                    segment.lastTerm = tail.term
                    segment.newestAppendTime = tail.newest
                    v.segments.append(segment)
                } else {
                    let last = v.segments.count - 1
                    v.segments[last].positions.append(contentsOf: tail.added)
                    v.segments[last].size = tail.size
                    v.segments[last].nextIndex = tail.nextIndex
                    v.segments[last].lastChain = tail.chain
                    v.segments[last].lastTerm = tail.term
                    v.segments[last].newestAppendTime = tail.newest
                }
            }
        }
    }

    /// After a failed write or sync nothing on disk past the visible log can be trusted (a failed
    /// `fdatasync` may have dropped dirty pages): the stream refuses writes until a restart recovers it, and
    /// every queued call fails.
    private func failWrites(_ error: any Error, completing completions: [AppendCompletion]) {
        let message = "\(error)"
        report(.error, "raft-log: stream '\(name)': a write failed, the stream takes no more writes: \(message)")
        let pending = queue.withLock { q -> [Work] in
            q.failure = message
            defer { q.work = [] }
            return q.work
        }
        let failure = PluginError(PX_ERR_IO, "raft-log: stream '\(name)': \(message)")
        for completion in completions { completion(.failure(failure)) }
        for item in pending {
            switch item {
            case .append(_, _, let completion): completion(.failure(failure))
            case .commit(_, _, let completion), .trim(_, let completion): completion(.failure(failure))
            }
        }
    }

    /// Applies commits and trims with one durable rewrite of the state file, then drops trimmed segments.
    private func apply(_ work: [Work]) {
        let (old, next) = visible.withLock { ($0.state, $0.nextOffset) }
        var state = old
        var results: [(completion: @Sendable (Result<Void, PluginError>) -> Void, error: PluginError?)] = []
        for item in work {
            switch item {
            case .commit(let group, let offset, let completion):
                state.committed[group] = offset
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
            case .append:
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
                    baseIndex: active.nextIndex, baseOffset: active.endOffset, baseChain: active.lastChain)
                var segment = try Segment.create(directory: directory, header: header, sync: syncs)
                segment.lastTerm = active.lastTerm
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
            while count < v.segments.count - 1 && condition(v.segments[count], total) {
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
    }

    /// Syncs the active segment (interval flushes and the last flush at stop).
    private func syncActive() {
        let file = visible.withLock { $0.segments[$0.segments.count - 1].file }
        do {
            try file.syncData()
            statistics.synced()
        } catch {
            failWrites(error, completing: [])
        }
    }
}
