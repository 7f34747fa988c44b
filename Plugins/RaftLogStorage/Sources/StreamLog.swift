import RaftCore
import Dispatch
import Foundation
import PlexusPluginSDK
import Synchronization

/// One stream: a directory of segment files and a `state` file, one writer thread, and the handle the kernel
/// holds (`RaftLogStorage.StreamHandle`).
///
/// Appends, commits and trims are queued and carried out by the writer thread (`LogWriter.swift`), which
/// drains everything queued, writes it, syncs once and only then completes it: group commit. Reads run on a
/// shared reader queue against what the writer has made visible (durable under the fsync policy).
///
/// - Important: Every method may be called from any thread. Completions run on the writer thread or a reader
///   thread, never under a lock of this class.
public final class StreamLog: Sendable {
    let name: String
    let directory: String
    let settings: Settings
    let statistics: Statistics
    let readers: DispatchQueue
    let report: @Sendable (PlexusPluginSDK.Host.LogLevel, String) -> Void

    /// What readers see: only entries the writer made visible.
    struct Visible {
        /// Oldest first; the last one takes appends. Never empty.
        var segments: [Segment]
        var state: StreamState
        var options: StreamOptions

        var nextOffset: UInt64 { segments[segments.count - 1].endOffset }
        var firstOffset: UInt64 { max(state.trimmedBefore, segments[0].header.baseOffset) }
        var sizeBytes: Int { segments.reduce(0) { $0 + $1.size } }
    }

    /// One body ready to be written: encoded, and checksummed, by the appending thread.
    struct EncodedEvent: Sendable {
        var body: [UInt8]
        var crc: UInt32
    }

    enum Work: Sendable {
        case append(first: UInt64, events: [EncodedEvent], completion: @Sendable (Result<UInt64, PluginError>) -> Void)
        case commit(group: String, offset: UInt64, completion: @Sendable (Result<Void, PluginError>) -> Void)
        case trim(before: UInt64, completion: @Sendable (Result<Void, PluginError>) -> Void)
    }

    /// What callers hand the writer.
    struct Queue {
        var work: [Work] = []
        /// The offset the next appended event gets: past every queued batch.
        var reservedNext: UInt64
        /// The writer is (about to be) waiting for `wake`.
        var idle = false
        var stopping = false
        /// Set when a write or sync failed: the stream takes no more writes until a restart recovers it.
        var failure: String?
    }

    let visible: Mutex<Visible>
    let queue: Mutex<Queue>
    let wake = DispatchSemaphore(value: 0)
    let finished = DispatchSemaphore(value: 0)

    /// Recovers (or creates) the stream in `directory` and starts its writer thread.
    /// - Throws: `PluginError` from `Recovery`.
    init(
        name: String, directory: String, settings: Settings, statistics: Statistics, readers: DispatchQueue,
        report: @escaping @Sendable (PlexusPluginSDK.Host.LogLevel, String) -> Void
    ) throws {
        self.name = name
        self.directory = directory
        self.settings = settings
        self.statistics = statistics
        self.readers = readers
        self.report = report
        let (segments, state) = try Recovery(
            name: name, directory: directory, settings: settings, report: { report(.warning, "raft-log: \($0)") }
        ).run()
        let visible = Visible(segments: segments, state: state, options: StreamOptions())
        self.visible = Mutex(visible)
        self.queue = Mutex(Queue(reservedNext: visible.nextOffset))
        let thread = Thread { [self] in runWriter() }
        thread.name = "raft-log writer"
        thread.start()
    }

    func setOptions(_ options: StreamOptions) { visible.withLock { $0.options = options } }

    // MARK: Calls from the kernel

    /// Queues a batch; `completion` gets its first offset once it is durable under the fsync policy.
    /// - Throws: `PluginError` when the stream is stopped or failed, or an event is too large.
    func append(_ events: [CloudEvent], completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void) throws {
        var encoded: [EncodedEvent] = []
        encoded.reserveCapacity(events.count)
        for (index, event) in events.enumerated() {
            let body = EventCodec.encode(event)
            guard body.count <= settings.maxEventBytes else {
                throw PluginError.invalidArgument(
                    "raft-log: event \(index) (id '\(event.id)') encodes to \(body.count) bytes, more than "
                        + "maxEventBytes (\(settings.maxEventBytes))")
            }
            encoded.append(EncodedEvent(body: body, crc: CRC32C.checksum(body)))
        }
        try enqueue { q in
            let first = q.reservedNext
            q.reservedNext += UInt64(encoded.count)
            return .append(first: first, events: encoded, completion: completion)
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

    /// Queues a trim; `completion` runs once the new first offset is durable.
    /// - Throws: `PX_ERR_OUT_OF_RANGE` past the end of the stream (counting queued appends).
    func trim(before offset: UInt64, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws {
        try enqueue { q in
            guard offset <= q.reservedNext else {
                throw PluginError(
                    PX_ERR_OUT_OF_RANGE,
                    "raft-log: cannot trim stream '\(name)' before \(offset), past its end (next offset "
                        + "\(q.reservedNext))")
            }
            return .trim(before: offset, completion: completion)
        }
    }

    func info() -> StreamInfo {
        visible.withLock {
            StreamInfo(firstOffset: $0.firstOffset, nextOffset: $0.nextOffset, sizeBytes: UInt64($0.sizeBytes))
        }
    }

    var sizeBytes: Int { visible.withLock { $0.sizeBytes } }

    /// Why the stream takes no writes, if it does not.
    var failure: String? { queue.withLock { $0.failure } }

    /// Adds work made by `make` (under the queue lock, so offsets follow call order) and wakes the writer.
    private func enqueue(_ make: (inout Queue) throws -> Work) throws {
        let wasIdle = try queue.withLock { q -> Bool in
            if let failure = q.failure {
                throw PluginError(PX_ERR_IO, "raft-log: stream '\(name)' takes no writes until restarted: \(failure)")
            }
            guard !q.stopping else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log: stream '\(name)' is stopped") }
            q.work.append(try make(&q))
            defer { q.idle = false }
            return q.idle
        }
        if wasIdle { wake.signal() }
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

    /// Reads up to `maxRecords` events (about `maxBytes`, 0 = no limit, at least one) from `offset`.
    /// - Throws: `PX_ERR_OUT_OF_RANGE` before the first retained offset or past the end.
    func read(
        from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<ReadResult, PluginError>) -> Void
    ) throws {
        let spans = try visible.withLock { v in try plan(v, from: offset, maxRecords: maxRecords, maxBytes: maxBytes) }
        guard !spans.isEmpty else { return completion(.success(([], offset))) }
        readers.async { [self] in
            do {
                var records: [StoredRecord] = []
                for span in spans { try load(span, into: &records) }
                completion(.success((records, offset + UInt64(records.count))))
            } catch let error as PluginError {
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
        var wanted = UInt64(min(UInt64(maxRecords), next - offset))
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
            let local = Int(current - segment.header.baseOffset)
            let start = Int(segment.positions[local])
            var count = 0
            var end = start
            while count < Int(wanted) && local + count < segment.positions.count {
                let entryEnd =
                    local + count + 1 < segment.positions.count
                    ? Int(segment.positions[local + count + 1]) : segment.size
                if maxBytes > 0 && (bytes > 0 || count > 0) && bytes + (entryEnd - end) > maxBytes { break }
                bytes += entryEnd - end
                end = entryEnd
                count += 1
            }
            guard count > 0 else { break }
            spans.append(
                Span(file: segment.file, start: start, length: end - start, firstOffset: current, count: count))
            current += UInt64(count)
            wanted -= UInt64(count)
            if local + count < segment.positions.count { break }  // stopped by the byte limit
        }
        return spans
    }

    /// Reads one span and checks each entry as it decodes it.
    private func load(_ span: Span, into records: inout [StoredRecord]) throws {
        let bytes: [UInt8]
        do {
            bytes = try span.file.read(count: span.length, at: span.start)
        } catch let failure as IOFailure {
            throw PluginError(PX_ERR_IO, "raft-log: stream '\(name)': \(failure)")
        }
        try bytes.withUnsafeBytes { raw in
            var position = 0
            var offset = span.firstOffset
            while position < raw.count {
                func corrupt(_ reason: String) -> PluginError {
                    PluginError(
                        PX_ERR_CORRUPTION,
                        "raft-log: stream '\(name)': the entry at byte \(span.start + position) of \(span.file.path) "
                            + "(offset \(offset)) is corrupt: \(reason); restart the node to have recovery check the "
                            + "log")
                }
                let rest = UnsafeRawBufferPointer(rebasing: raw[position...])
                guard let header = EntryHeader.decode(rest) else { throw corrupt("wrong magic or header CRC") }
                let end = position + LogFormat.entryHeaderSize + Int(header.bodyLength)
                guard end <= raw.count else { throw corrupt("it is longer than the index says") }
                let body = UnsafeRawBufferPointer(rebasing: raw[(position + LogFormat.entryHeaderSize)..<end])
                guard CRC32C.checksum(body) == header.bodyCRC else { throw corrupt("wrong body CRC") }
                guard header.offset == offset else { throw corrupt("it holds offset \(header.offset)") }
                let event: CloudEvent
                do {
                    event = try EventCodec.decode(body)
                } catch {
                    throw corrupt("\(error)")
                }
                records.append(StoredRecord(offset: offset, appendTimeNanoseconds: header.appendTime, event: event))
                offset += 1
                position = end
            }
        }
    }

    // MARK: Stopping

    /// Asks the writer to finish what is queued, sync and exit; waits until `deadline`.
    /// - Returns: whether the writer finished in time.
    func stop(deadline: DispatchTime) -> Bool {
        let alreadyStopping = queue.withLock { q -> Bool in
            defer { q.stopping = true }
            return q.stopping
        }
        guard !alreadyStopping else { return true }
        wake.signal()
        return finished.wait(timeout: deadline) == .success
    }
}
