import Synchronization

/// The metadata store the connector host offers (`kv_*`, ABI 1.4), in memory: keys with versions and
/// store-wide revisions, as the registry's store promises them. It outlives the instances of one run, as a
/// node's registry outlives a connector's restart, so that a source can keep its position there.
final class KVStore: Sendable {
    struct Entry: Sendable, Equatable {
        var key: String
        var value: [UInt8]
        var version: UInt64
        var createRevision: UInt64
        var modRevision: UInt64
    }

    /// Why a write did not happen.
    enum WriteFailure: Error, Equatable {
        /// The version condition failed: the key's current version (0: absent) and the store's revision.
        case conflict(current: UInt64, revision: UInt64)
        case notFound
    }

    /// `PX_KV_ANY_VERSION`.
    static let anyVersion = UInt64.max

    private struct State {
        var entries: [String: Entry] = [:]
        var revision: UInt64 = 0
        /// Every change in order: the entry after a put, or (version 0) a delete.
        var history: [(kind: UInt32, entry: Entry)] = []
        var watches: [UInt64: Watch] = [:]
        var nextWatch: UInt64 = 1
    }

    struct Watch: Sendable {
        let prefix: String
        let notify: @Sendable (UInt32, Entry) -> Void
    }

    private let state = Mutex(State())

    /// The key's entry and the store's revision.
    func get(_ key: String) -> (Entry?, UInt64) { state.withLock { ($0.entries[key], $0.revision) } }

    /// Entries under `prefix` in byte order of their keys, and the store's revision.
    func list(prefix: String) -> ([Entry], UInt64) {
        state.withLock { s in
            let found = s.entries.values.filter { $0.key.utf8.starts(with: prefix.utf8) }
            return (found.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }, s.revision)
        }
    }

    /// Puts `value` under `key` if its version is `expected` (`anyVersion`: unconditionally; 0: only if absent).
    /// - Returns: the key's new version and the change's revision.
    func put(_ key: String, _ value: [UInt8], expected: UInt64) -> Result<(UInt64, UInt64), WriteFailure> {
        let (result, notify) = state.withLock { s -> (Result<(UInt64, UInt64), WriteFailure>, [@Sendable () -> Void]) in
            let current = s.entries[key]
            if expected != Self.anyVersion, (current?.version ?? 0) != expected {
                return (.failure(.conflict(current: current?.version ?? 0, revision: s.revision)), [])
            }
            s.revision += 1
            let entry = Entry(
                key: key, value: value, version: (current?.version ?? 0) + 1,
                createRevision: current?.createRevision ?? s.revision, modRevision: s.revision)
            s.entries[key] = entry
            s.history.append((1, entry))
            let calls = s.watches.values.filter { key.utf8.starts(with: $0.prefix.utf8) }.map {
                w -> @Sendable () -> Void in
                { w.notify(1, entry) }
            }
            return (.success((entry.version, s.revision)), calls)
        }
        for call in notify { call() }
        return result
    }

    /// Deletes `key` if its version is `expected` (`anyVersion`: whatever it is; absent is `notFound`).
    /// - Returns: the change's revision.
    func delete(_ key: String, expected: UInt64) -> Result<UInt64, WriteFailure> {
        let (result, notify) = state.withLock { s -> (Result<UInt64, WriteFailure>, [@Sendable () -> Void]) in
            guard let current = s.entries[key] else {
                if expected == Self.anyVersion { return (.failure(.notFound), []) }
                return (.failure(.conflict(current: 0, revision: s.revision)), [])
            }
            if expected != Self.anyVersion, current.version != expected {
                return (.failure(.conflict(current: current.version, revision: s.revision)), [])
            }
            s.revision += 1
            s.entries[key] = nil
            let gone = Entry(
                key: key, value: [], version: 0, createRevision: current.createRevision, modRevision: s.revision)
            s.history.append((2, gone))
            let calls = s.watches.values.filter { key.utf8.starts(with: $0.prefix.utf8) }.map {
                w -> @Sendable () -> Void in
                { w.notify(2, gone) }
            }
            return (.success(s.revision), calls)
        }
        for call in notify { call() }
        return result
    }

    /// Watches `prefix`: first every change from `fromRevision` (0: none), then live ones.
    func watch(prefix: String, fromRevision: UInt64, notify: @escaping @Sendable (UInt32, Entry) -> Void) -> UInt64 {
        let (id, replay) = state.withLock { s -> (UInt64, [(kind: UInt32, entry: Entry)]) in
            let replay =
                fromRevision == 0
                ? []
                : s.history.filter {
                    $0.entry.modRevision >= fromRevision && $0.entry.key.utf8.starts(with: prefix.utf8)
                }
            let id = s.nextWatch
            s.nextWatch += 1
            s.watches[id] = Watch(prefix: prefix, notify: notify)
            return (id, replay)
        }
        for (kind, entry) in replay { notify(kind, entry) }
        return id
    }

    func unwatch(_ id: UInt64) -> Bool { state.withLock { $0.watches.removeValue(forKey: id) != nil } }

    /// Every key and its value as text, for reports.
    var keys: [String] { state.withLock { $0.entries.keys.sorted() } }
}
