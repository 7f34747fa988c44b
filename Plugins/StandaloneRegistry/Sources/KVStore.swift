import Dispatch
import Foundation
import PlexusPluginSDK
import Synchronization

/// The registry's metadata store for one node: keys with versions, store-wide revisions, compare-and-swap,
/// listing by prefix, and watches that replay a bounded history, all durable in `kv.log` (see `KVLog`).
///
/// A change is applied in memory under one lock (so revisions and versions are assigned in one order), then
/// queued for the log. The I/O queue writes what is queued in one append and one fsync, then, in revision
/// order, notifies the watches and calls the writers' completions. Watches therefore only see durable changes,
/// and see them in revision order, never twice (each watch remembers the last revision it was sent).
final class KVStore: Sendable {
    /// The longest key, in UTF-8 bytes.
    static let maxKeyBytes = 1024
    /// The largest value.
    static let maxValueBytes = 1 << 20

    struct Limits: Sendable {
        /// Changes kept for watches that resume from a revision.
        var historyChanges: Int
        /// Bytes of values kept in that history, at most (the oldest changes go first).
        var historyBytes: Int
    }

    private struct Pending {
        var record: KVLog.Record
        var change: KVChange
        var completion: (@Sendable (Result<KVWrite, PluginError>) -> Void)?
        var result: KVWrite
    }

    private struct State {
        var keys: [String: KVEntry] = [:]
        var revision: UInt64 = 0
        /// The newest revision no longer in `history` (0: none dropped).
        var compacted: UInt64 = 0
        /// The newest revision on disk and announced to watches.
        var durable: UInt64 = 0
        var history: [KVChange] = []
        var historyStart = 0
        var historyBytes = 0
        var pending: [Pending] = []
        var watches: [UInt64: KVWatch] = [:]
        var stopped = false

        var kept: ArraySlice<KVChange> { history[historyStart...] }

        mutating func remember(_ change: KVChange, limits: Limits) {
            history.append(change)
            historyBytes += change.entry.value.count + change.entry.key.utf8.count
            while history.count - historyStart > limits.historyChanges
                || (historyBytes > limits.historyBytes && history.count - historyStart > 1)
            {
                let dropped = history[historyStart]
                historyBytes -= dropped.entry.value.count + dropped.entry.key.utf8.count
                compacted = dropped.revision
                historyStart += 1
            }
            if historyStart > 4096 {
                history.removeFirst(historyStart)
                historyStart = 0
            }
        }
    }

    let limits: Limits
    private let log: KVLog
    private let state: Mutex<State>
    private let io = DispatchQueue(label: "plexus.standalone-registry.kv-io")
    private let nextWatchID = Atomic<UInt64>(1)

    /// Opens (or creates) the store in `directory` and replays its log.
    /// - Throws: `PluginError` (`PX_ERR_IO`, `PX_ERR_CORRUPTION`) naming the file.
    init(directory: String, limits: Limits) throws {
        self.limits = limits
        log = KVLog(directory: directory)
        var s = State()
        for record in try log.open() {
            switch record {
            case .header(let revision, let compacted):
                s.revision = max(s.revision, revision)
                s.compacted = max(s.compacted, compacted)
            case .key(let entry):
                s.keys[entry.key] = entry
            case .history(let change):
                s.remember(change, limits: limits)
            case .put(let entry):
                // A compaction may have covered a change appended after it was taken: apply each once.
                guard entry.modRevision > s.revision else { continue }
                s.keys[entry.key] = entry
                s.revision = entry.modRevision
                s.remember(.put(entry), limits: limits)
            case .delete(let key, let revision):
                guard revision > s.revision else { continue }
                s.keys[key] = nil
                s.revision = revision
                s.remember(
                    .delete(KVEntry(key: key, value: [], version: 0, createRevision: 0, modRevision: revision)),
                    limits: limits)
            }
        }
        if s.compacted == 0, let first = s.kept.first, first.revision > 1 { s.compacted = first.revision - 1 }
        s.durable = s.revision
        state = Mutex(s)
    }

    // MARK: Reads

    func get(_ key: String) throws -> KVRead {
        try Self.check(key: key)
        return state.withLock { KVRead(entry: $0.keys[key], revision: $0.revision) }
    }

    func list(prefix: String) -> KVList {
        state.withLock { s in
            let entries = s.keys.values.filter { $0.key.utf8.starts(with: prefix.utf8) }
                .sorted { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }
            return KVList(entries: entries, revision: s.revision)
        }
    }

    /// The store's revision now.
    var revision: UInt64 { state.withLock { $0.revision } }

    // MARK: Writes

    func put(
        _ key: String, _ value: [UInt8], expected: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        try Self.check(key: key)
        guard value.count <= Self.maxValueBytes else {
            throw PluginError.invalidArgument(
                "standalone-registry: the value of key '\(key)' has \(value.count) bytes; at most \(Self.maxValueBytes)"
            )
        }
        let conflict = try state.withLock { s -> PluginError? in
            try Self.open(s)
            let current = s.keys[key]
            guard expected.admits(current: current?.version ?? 0) else {
                return .kvConflict(key: key, currentVersion: current?.version ?? 0, revision: s.revision)
            }
            s.revision += 1
            let entry = KVEntry(
                key: key, value: value, version: (current?.version ?? 0) + 1,
                createRevision: current?.createRevision ?? s.revision, modRevision: s.revision)
            s.keys[key] = entry
            s.remember(.put(entry), limits: limits)
            s.pending.append(
                Pending(
                    record: .put(entry), change: .put(entry), completion: completion,
                    result: KVWrite(version: entry.version, revision: entry.modRevision)))
            return nil
        }
        if let conflict { return completion(.failure(conflict)) }
        flush()
    }

    func delete(
        _ key: String, expected: KVVersion, completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        try Self.check(key: key)
        let conflict = try state.withLock { s -> PluginError? in
            try Self.open(s)
            guard let current = s.keys[key] else {
                if case .exactly = expected {
                    return .kvConflict(key: key, currentVersion: 0, revision: s.revision)
                }
                throw PluginError(PX_ERR_NOT_FOUND, "standalone-registry: key '\(key)' is absent")
            }
            guard expected.admits(current: current.version) else {
                return .kvConflict(key: key, currentVersion: current.version, revision: s.revision)
            }
            s.revision += 1
            s.keys[key] = nil
            let tombstone = KVEntry(key: key, value: [], version: 0, createRevision: 0, modRevision: s.revision)
            s.remember(.delete(tombstone), limits: limits)
            s.pending.append(
                Pending(
                    record: .delete(key: key, revision: s.revision), change: .delete(tombstone),
                    completion: completion, result: KVWrite(version: 0, revision: s.revision)))
            return nil
        }
        if let conflict { return completion(.failure(conflict)) }
        flush()
    }

    /// Writes what is queued (one append, one fsync), then notifies watches and completes the writers, in
    /// revision order; compacts the log when it has grown well past what the store needs.
    private func flush() {
        io.async { [self] in
            let batch = state.withLock { s -> [Pending] in
                defer { s.pending.removeAll() }
                return s.pending
            }
            guard !batch.isEmpty else { return }
            var failure: PluginError?
            do {
                try log.append(batch.map(\.record))
            } catch let error as PluginError {
                failure = error
            } catch {
                failure = PluginError(PX_ERR_IO, "standalone-registry: \(error)")
            }
            // The changes are live in memory either way: watches see them; a writer whose change may not be on
            // disk hears PX_ERR_IO.
            state.withLock { s in
                for item in batch {
                    for watch in s.watches.values { watch.offer(item.change) }
                }
                s.durable = max(s.durable, batch.last?.result.revision ?? 0)
            }
            for item in batch {
                if let failure { item.completion?(.failure(failure)) } else { item.completion?(.success(item.result)) }
            }
            compactIfNeeded()
        }
    }

    /// On the I/O queue: rewrites the log as a header, the live keys and the kept history when it holds more
    /// than twice the records those need (and at least 1,000 more).
    private func compactIfNeeded() {
        let needed = state.withLock { $0.keys.count + ($0.history.count - $0.historyStart) + 1 }
        guard log.records > 2 * needed && log.records > needed + 1000 else { return }
        let snapshot = state.withLock { s -> [KVLog.Record] in
            var records: [KVLog.Record] = [.header(revision: s.revision, compacted: s.compacted)]
            records += s.keys.values.sorted { $0.modRevision < $1.modRevision }.map { .key($0) }
            records += s.kept.map { .history($0) }
            return records
        }
        // A failed compaction leaves the old log in use; the next flush tries again.
        try? log.rewrite(snapshot)
    }

    // MARK: Watches

    func watch(prefix: String, from: UInt64, handler: @escaping @Sendable (KVChange) -> Void) throws -> UInt64 {
        let id = nextWatchID.wrappingAdd(1, ordering: .relaxed).oldValue
        try state.withLock { s in
            try Self.open(s)
            if from > 0 && from <= s.compacted {
                throw PluginError(
                    PX_ERR_OUT_OF_RANGE,
                    "standalone-registry: changes before revision \(s.compacted + 1) are no longer kept (asked from "
                        + "\(from)); list the keys and watch from the listing's revision + 1")
            }
            let watch = KVWatch(id: id, prefix: prefix, from: from == 0 ? s.durable + 1 : from)
            // Replay what is durable; newer changes reach the watch when they are.
            for change in s.kept where change.revision <= s.durable { watch.offer(change) }
            watch.skip(through: s.durable)
            s.watches[id] = watch
            watch.start(handler)
        }
        return id
    }

    func unwatch(_ id: UInt64) throws {
        guard let watch = state.withLock({ $0.watches.removeValue(forKey: id) }) else {
            throw PluginError(PX_ERR_NOT_FOUND, "standalone-registry: no metadata watch \(id)")
        }
        watch.end()
    }

    /// Ends every watch and waits for the writes queued (and their completions).
    func stop() {
        let watches = state.withLock { s in
            s.stopped = true
            defer { s.watches.removeAll() }
            return Array(s.watches.values)
        }
        for watch in watches { watch.end() }
        io.sync {}
    }

    // MARK: Checks

    private static func open(_ s: State) throws {
        if s.stopped { throw PluginError(PX_ERR_UNAVAILABLE, "standalone-registry: the metadata store is stopping") }
    }

    static func check(key: String) throws {
        let length = key.utf8.count
        guard length >= 1 && length <= maxKeyBytes else {
            throw PluginError.invalidArgument(
                "standalone-registry: a key has 1 to \(maxKeyBytes) bytes of UTF-8; this one has \(length)")
        }
    }
}

/// One metadata watch: changes under its prefix from its first revision, each once, in revision order, on its
/// own serial queue.
final class KVWatch: Sendable {
    let id: UInt64
    let prefix: String
    private let from: UInt64
    /// The newest revision queued to the handler.
    private let sent: Mutex<UInt64>
    private let handler = Mutex<(@Sendable (KVChange) -> Void)?>(nil)
    private let queue: DispatchQueue
    private let active = Atomic<Bool>(true)
    private static let current = DispatchSpecificKey<UInt64>()

    init(id: UInt64, prefix: String, from: UInt64) {
        self.id = id
        self.prefix = prefix
        self.from = from
        sent = Mutex(from &- 1)
        queue = DispatchQueue(label: "plexus.standalone-registry.kv-watch.\(id)")
        queue.setSpecific(key: Self.current, value: id)
        // Held until `start`: replayed changes wait behind it.
        queue.suspend()
    }

    /// Queues a change if it is under the prefix and newer than the last one queued. Call in revision order.
    func offer(_ change: KVChange) {
        guard change.revision >= from, change.entry.key.utf8.starts(with: prefix.utf8) else { return }
        let fresh = sent.withLock { sent -> Bool in
            guard change.revision > sent else { return false }
            sent = change.revision
            return true
        }
        guard fresh else { return }
        queue.async { [self] in
            guard active.load(ordering: .acquiring), let handler = handler.withLock({ $0 }) else { return }
            handler(change)
        }
    }

    /// Marks revisions up to `revision` as sent (they were replayed, or precede the watch).
    func skip(through revision: UInt64) {
        sent.withLock { $0 = max($0, revision) }
    }

    /// Sets the handler and lets queued changes run.
    func start(_ handler: @escaping @Sendable (KVChange) -> Void) {
        self.handler.withLock { $0 = handler }
        queue.resume()
    }

    /// Stops the watch; when it returns the handler is not running (unless called from it) and will not run.
    func end() {
        active.store(false, ordering: .releasing)
        if DispatchQueue.getSpecific(key: Self.current) != id { queue.sync {} }
    }
}
