import Foundation
import LedgerCore
import PlexusPluginSDK
import StorageIO
import Synchronization

/// One stream of ledger-storage: an ordered list of ledgers, the last one open for writing by this node.
///
/// Offset `o` is entry `o - firstOffset` of the ledger whose range holds it. Appends go to the open ledger
/// through a `LedgerWriter` (one entry per event); a batch completes when its last entry completed, so when
/// every entry before it did too. Reads see the closed ledgers whole and the open one up to its LAC: never
/// an entry whose add has not completed. The open ledger is closed and a new one started (a roll) when it
/// passes `ledgerRollBytes` or `ledgerRollMs`, at an append with no add in flight.
///
/// A writer that fails (a bookie lost with no replacement, say) fails its adds not yet completed; the next
/// append then heals the stream: it recovers the failed ledger (fencing it and closing it at its last entry
/// that reached a quorum) and opens a new one on the bookies available, at most once a second. Until a heal
/// succeeds, appends fail with `PX_ERR_UNAVAILABLE` naming both failures.
public final class LedgerStream: Sendable {
    struct State {
        var metadata: StreamMetadata
        var metadataVersion: UInt64
        /// The writer of the last ledger of `metadata` (open).
        var writer: LedgerWriter
        var openedAt: Date
        /// Payload bytes appended to the open ledger.
        var openBytes: UInt64 = 0
        var options: StreamOptions
        var deleted = false
        /// The last attempt to heal a failed writer, and why it failed.
        var heal: (at: ContinuousClock.Instant, error: String)?

        /// Appends go to `writer`'s ledger from now on (just opened: empty and new).
        mutating func use(_ writer: LedgerWriter) {
            self.writer = writer
            openedAt = Date()
            openBytes = 0
        }
    }

    /// Creates a ledger and lists it as the open one after the last of `metadata` (its first offset where the
    /// stream ends); returns its entry in the list and its writer.
    private static func openLedger(_ metadata: inout StreamMetadata, context: StorageContext) throws(LedgerError)
        -> (StreamMetadata.LedgerRef, LedgerWriter)
    {
        let next = metadata.ledgers.last?.endOffset ?? metadata.trimmedBefore
        let (created, writer) = try context.createLedger()
        let ledger = StreamMetadata.LedgerRef(
            id: created.id, firstOffset: next, lastEntry: -1, closed: false, bytes: 0, closedMilliseconds: 0)
        metadata.ledgers.append(ledger)
        return (ledger, writer)
    }

    let name: String
    let context: StorageContext
    private let state: Mutex<State>

    private init(name: String, context: StorageContext, state: State) {
        self.name = name
        self.context = context
        self.state = Mutex(state)
    }

    /// Opens a stream: creates its metadata and first ledger, or recovers every ledger its metadata lists as
    /// not closed (fencing it, so that an earlier writer can add nothing more, and closing it at its last
    /// entry) and opens a new ledger after them.
    static func open(name: String, options: StreamOptions, context: StorageContext) throws -> LedgerStream {
        let store = context.store
        let key = MetadataKeys.stream(name)
        do {
            var stored = try store.wait { store.get(key, completion: $0) }
            var metadata =
                try stored.map { try StreamMetadata.decode($0.value, key: key) } ?? StreamMetadata()
            var version = stored?.version ?? 0
            // Recover what an earlier process left open.
            var kept: [StreamMetadata.LedgerRef] = []
            for var ledger in metadata.ledgers {
                if !ledger.closed {
                    guard try recover(&ledger, context: context) else {
                        context.deleteLedger(ledger.id)  // empty: nothing to keep
                        continue
                    }
                }
                kept.append(ledger)
            }
            metadata.ledgers = kept
            let (_, writer) = try openLedger(&metadata, context: context)
            version = try store.wait {
                store.put(
                    key, metadata.encoded(), expected: stored == nil ? .absent : .exactly(version), completion: $0)
            }
            stored = nil
            return LedgerStream(
                name: name, context: context,
                state: State(
                    metadata: metadata, metadataVersion: version, writer: writer, openedAt: Date(), options: options))
        } catch let error as LedgerError {
            throw error.pluginError
        }
    }

    /// Recovers a ledger left open (by an earlier process, or by this node's writer after it failed): fences
    /// it and closes it at its last entry; false when it holds no entry.
    private static func recover(_ ledger: inout StreamMetadata.LedgerRef, context: StorageContext) throws(LedgerError)
        -> Bool
    {
        let recovered = try context.ledgers.recover(ledger.id)
        ledger.lastEntry = recovered.lastEntry
        ledger.closed = true
        ledger.closedMilliseconds = UInt64(Date().timeIntervalSince1970 * 1000)
        ledger.bytes = try context.payloadBytes(ledger: ledger.id, through: recovered.lastEntry)
        return recovered.lastEntry >= 0
    }

    /// After the writer failed: recovers its ledger and opens a new one (see the type's comment).
    private func heal(_ s: inout State, failure: LedgerError) throws {
        if let last = s.heal, ContinuousClock.now - last.at < .seconds(1) {
            throw PluginError(
                PX_ERR_UNAVAILABLE,
                "ledger-storage: stream '\(name)': its ledger failed (\(failure.message)) and recovering it failed "
                    + "(\(last.error)); tried again within a second")
        }
        var metadata = s.metadata
        let index = metadata.ledgers.count - 1
        let failed = metadata.ledgers[index].id
        do throws(LedgerError) {
            s.writer.close()
            var dropped: [UInt64] = []
            if try !Self.recover(&metadata.ledgers[index], context: context) {
                dropped.append(metadata.ledgers.remove(at: index).id)
            }
            let (created, writer) = try Self.openLedger(&metadata, context: context)
            try save(&s, metadata)
            s.use(writer)
            s.heal = nil
            for ledger in dropped { context.deleteLedger(ledger) }
            context.log(
                .warning,
                "ledger-storage: stream '\(name)': ledger \(failed) failed (\(failure.message)); recovered and closed "
                    + "at offset \(created.firstOffset), appends go on in ledger \(created.id)")
        } catch {
            s.heal = (ContinuousClock.now, error.message)
            throw PluginError(
                PX_ERR_UNAVAILABLE,
                "ledger-storage: stream '\(name)': its ledger failed (\(failure.message)) and recovering it failed "
                    + "(\(error.message)); tried again at the next append, at most once a second")
        }
    }

    func setOptions(_ options: StreamOptions) { state.withLock { $0.options = options } }

    /// The offset after the last completed entry, and the first retained offset.
    private static func extent(_ s: State) -> (first: UInt64, end: UInt64) {
        let open = s.metadata.ledgers.last!
        let end = open.firstOffset + UInt64(s.writer.lastAddConfirmed + 1)
        let first = max(s.metadata.trimmedBefore, s.metadata.ledgers.first!.firstOffset)
        return (min(first, end), end)
    }

    /// Appends a batch: one entry per event, the batch's entries consecutive in the open ledger.
    func append(
        _ events: EventBatchView, maxEventBytes: Int,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        let now = Files.now()
        var payloads: [[UInt8]] = []
        payloads.reserveCapacity(events.count)
        for (index, event) in events.enumerated() {
            let payload = EntryCodec.encode(event, appendTime: now)
            guard payload.count <= maxEventBytes else {
                throw PluginError.invalidArgument(
                    "ledger-storage: event \(index) (id '\(event.id)') is \(payload.count) bytes as stored, more than "
                        + "maxEventBytes (\(maxEventBytes))")
            }
            payloads.append(payload)
        }
        try state.withLock { s in
            guard !s.deleted else {
                throw PluginError(PX_ERR_NOT_FOUND, "ledger-storage: stream '\(name)' was deleted")
            }
            if let failure = s.writer.failure { try heal(&s, failure: failure) }
            try rollIfDue(&s)
            let open = s.metadata.ledgers.last!
            guard !payloads.isEmpty else {
                let assigned = open.firstOffset + UInt64(s.writer.lastAddConfirmed + 1 + Int64(s.writer.pendingCount))
                completion(.success(assigned))
                return
            }
            let batch = BatchCompletion(count: payloads.count, completion: completion)
            for payload in payloads {
                s.openBytes += UInt64(payload.count)
                s.writer.append(payload) { result in
                    batch.entryDone(result.map { open.firstOffset + UInt64($0) })
                }
            }
        }
    }

    /// Closes the open ledger and starts another when it is over its size or age and nothing is in flight;
    /// then applies retention to the closed ledgers.
    private func rollIfDue(_ s: inout State) throws {
        let rollBytes = UInt64(context.settings.ledgerRollBytes)
        let age = Date().timeIntervalSince(s.openedAt) * 1000
        guard s.writer.pendingCount == 0, s.writer.lastAddConfirmed >= 0,
            s.openBytes >= rollBytes || age >= Double(context.settings.ledgerRollMs)
        else { return }
        do throws(LedgerError) {
            var metadata = s.metadata
            let index = metadata.ledgers.count - 1
            s.writer.close()
            let closed = try context.ledgers.close(metadata.ledgers[index].id, lastEntry: s.writer.lastAddConfirmed)
            metadata.ledgers[index].lastEntry = closed.lastEntry
            metadata.ledgers[index].closed = true
            metadata.ledgers[index].bytes = s.openBytes
            metadata.ledgers[index].closedMilliseconds = UInt64(Date().timeIntervalSince1970 * 1000)
            let (_, writer) = try Self.openLedger(&metadata, context: context)
            let dropped = Self.retention(&metadata, options: s.options)
            try save(&s, metadata)
            s.use(writer)
            for ledger in dropped { context.deleteLedger(ledger) }
        } catch {
            throw error.pluginError
        }
    }

    /// Drops the oldest closed ledgers beyond the stream's retention (bytes, then age); returns their ids.
    private static func retention(_ metadata: inout StreamMetadata, options: StreamOptions) -> [UInt64] {
        var dropped: [UInt64] = []
        let now = UInt64(Date().timeIntervalSince1970 * 1000)
        func total() -> UInt64 { metadata.ledgers.reduce(0) { $0 + $1.bytes } }
        while let oldest = metadata.ledgers.first, oldest.closed, metadata.ledgers.count > 1 {
            let overBytes = options.retentionBytes > 0 && total() > options.retentionBytes
            let overAge =
                options.retentionMilliseconds > 0 && oldest.closedMilliseconds + options.retentionMilliseconds < now
            guard overBytes || overAge else { break }
            metadata.ledgers.removeFirst()
            metadata.trimmedBefore = max(metadata.trimmedBefore, oldest.endOffset)
            dropped.append(oldest.id)
        }
        return dropped
    }

    /// Writes the stream's metadata by compare-and-swap and keeps it.
    private func save(_ s: inout State, _ metadata: StreamMetadata) throws(LedgerError) {
        let store = context.store
        let key = MetadataKeys.stream(name)
        let version = s.metadataVersion
        s.metadataVersion = try store.wait {
            store.put(key, metadata.encoded(), expected: .exactly(version), completion: $0)
        }
        s.metadata = metadata
    }

    /// Reads up to `maxRecords` records from `offset`: closed ledgers whole, the open one up to its LAC. The
    /// entries of one ledger are read at once (pipelined to their bookies, this node's preferred).
    func read(from offset: UInt64, maxRecords: Int, maxBytes: Int) throws -> ReadResult {
        let (ledgers, first, end, openReader) = try state.withLock { s in
            guard !s.deleted else {
                throw PluginError(PX_ERR_NOT_FOUND, "ledger-storage: stream '\(name)' was deleted")
            }
            let (first, end) = Self.extent(s)
            let open = s.metadata.ledgers.last!
            let reader = LedgerReader(
                ledger: open.id, fragments: s.writer.fragments, config: s.writer.config,
                preferred: context.bookie.id)
            return (s.metadata.ledgers, first, end, reader)
        }
        guard offset >= first else {
            throw PluginError(
                PX_ERR_OUT_OF_RANGE,
                "ledger-storage: offset \(offset) of stream '\(name)' is before its first retained offset \(first)")
        }
        guard offset <= end else {
            throw PluginError(
                PX_ERR_OUT_OF_RANGE,
                "ledger-storage: offset \(offset) of stream '\(name)' is past its end (next offset \(end))")
        }
        var records: [StoredRecord] = []
        var bytes = 0
        var at = offset
        reading: while at < end && records.count < maxRecords {
            guard let index = ledgers.lastIndex(where: { $0.firstOffset <= at }) else { break }
            let ledger = ledgers[index]
            let stop = min(end, index + 1 < ledgers.count ? ledgers[index + 1].firstOffset : end)
            let count = min(UInt64(maxRecords - records.count), stop - at, 256)
            guard count > 0 else { break }
            let firstEntry = Int64(at - ledger.firstOffset)
            let lastEntry = firstEntry + Int64(count) - 1
            let entries: [StoredEntry]
            do throws(LedgerError) {
                if ledger.closed {
                    do {
                        let reader = try context.reader(ledger.id)
                        entries = try waitFor { reader.read(firstEntry, through: lastEntry, completion: $0) }
                    } catch {
                        // Its fragments may have moved (re-replication): read the metadata again, once.
                        let reader = try context.reader(ledger.id, refresh: true)
                        entries = try waitFor { reader.read(firstEntry, through: lastEntry, completion: $0) }
                    }
                } else {
                    entries = try waitFor { openReader.read(firstEntry, through: lastEntry, completion: $0) }
                }
            } catch {
                throw error.pluginError
            }
            for stored in entries {
                if maxBytes > 0 && !records.isEmpty && bytes + stored.payload.count > maxBytes { break reading }
                bytes += stored.payload.count
                records.append(try EntryCodec.decode(stored.payload, offset: at))
                at += 1
            }
        }
        return (records, at)
    }

    /// Discards the events below `offset`: the ledgers wholly below it are deleted (the open one never is).
    func trim(before offset: UInt64) throws {
        try state.withLock { s in
            let (_, end) = Self.extent(s)
            guard offset <= end else {
                throw PluginError(
                    PX_ERR_OUT_OF_RANGE,
                    "ledger-storage: cannot trim stream '\(name)' before \(offset), past its end (next offset \(end))")
            }
            guard offset > s.metadata.trimmedBefore else { return }
            var metadata = s.metadata
            metadata.trimmedBefore = offset
            var dropped: [UInt64] = []
            while let oldest = metadata.ledgers.first, oldest.closed, oldest.endOffset <= offset {
                metadata.ledgers.removeFirst()
                dropped.append(oldest.id)
            }
            do throws(LedgerError) {
                try save(&s, metadata)
            } catch {
                throw error.pluginError
            }
            for ledger in dropped { context.deleteLedger(ledger) }
        }
    }

    func info() -> StreamInfo {
        state.withLock { s in
            let (first, end) = Self.extent(s)
            let closed = s.metadata.ledgers.reduce(UInt64(0)) { $0 + $1.bytes }
            return StreamInfo(firstOffset: first, nextOffset: end, sizeBytes: closed + s.openBytes)
        }
    }

    /// Closes the open ledger at its LAC (a clean stop: the next open needs no recovery for it) once the adds
    /// in flight completed; if some are still in flight after `drain`, leaves it OPEN for the next open to
    /// recover (closing it earlier would hide entries whose adds complete afterwards).
    func closeLedger(drain: Duration = .seconds(5)) {
        state.withLock { s in
            guard !s.deleted else { return }
            s.writer.close()
            let deadline = ContinuousClock.now + drain
            while s.writer.pendingCount > 0 && ContinuousClock.now < deadline { usleep(1000) }
            // Still in flight: leave the ledger OPEN; the next open recovers it with whatever became durable.
            guard s.writer.pendingCount == 0 else {
                s.deleted = true
                return
            }
            let index = s.metadata.ledgers.count - 1
            guard
                let closed = try? context.ledgers.close(
                    s.metadata.ledgers[index].id, lastEntry: s.writer.lastAddConfirmed)
            else { return }
            var metadata = s.metadata
            metadata.ledgers[index].lastEntry = closed.lastEntry
            metadata.ledgers[index].closed = true
            metadata.ledgers[index].bytes = s.openBytes
            metadata.ledgers[index].closedMilliseconds = UInt64(Date().timeIntervalSince1970 * 1000)
            if closed.lastEntry < 0 {
                metadata.ledgers.removeLast()
                context.deleteLedger(closed.id)
            }
            try? save(&s, metadata)
            s.deleted = true  // stopping: the handle takes nothing more
        }
    }

    /// Deletes the stream: its ledgers, metadata and consumer offsets.
    func delete() throws {
        let store = context.store
        try state.withLock { s in
            s.deleted = true
            s.writer.close()
            do throws(LedgerError) {
                for ledger in s.metadata.ledgers { context.deleteLedger(ledger.id) }
                for (key, _) in try store.wait({ store.list(prefix: MetadataKeys.offsets(name), completion: $0) }) {
                    try store.wait { store.delete(key, expected: .any, completion: $0) }
                }
                try store.wait { store.delete(MetadataKeys.stream(name), expected: .any, completion: $0) }
            } catch {
                throw error.pluginError
            }
        }
    }
}

/// Completes an append batch once all its entries completed (in order, so the last one's completion means
/// every one did), with the first entry's offset, or with the first failure.
final class BatchCompletion: Sendable {
    private let state: Mutex<(remaining: Int, first: UInt64?, failed: Bool)>
    private let completion: @Sendable (Result<UInt64, PluginError>) -> Void

    init(count: Int, completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void) {
        state = Mutex((count, nil, false))
        self.completion = completion
    }

    func entryDone(_ result: Result<UInt64, LedgerError>) {
        let outcome: Result<UInt64, PluginError>? = state.withLock { s in
            guard !s.failed else { return nil }
            switch result {
            case .success(let offset):
                s.first = min(s.first ?? offset, offset)
                s.remaining -= 1
                return s.remaining == 0 ? .success(s.first!) : nil
            case .failure(let error):
                s.failed = true
                return .failure(error.pluginError)
            }
        }
        if let outcome { completion(outcome) }
    }
}
