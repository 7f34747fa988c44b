import Synchronization
import Testing

@testable import LedgerCore

/// An in-memory `KeyValueBackend` with the registry's semantics (per-key versions from 1, a delete of an absent
/// key without condition is `.notFound`), and a switch that makes every call fail as unreachable.
final class MemoryKeyValue: KeyValueBackend {
    private let keys = Mutex<[String: KeyValueRecord]>([:])
    private let down = Mutex(false)

    var name: String { "an in-memory store" }

    var unreachable: Bool {
        get { down.withLock { $0 } }
        set { down.withLock { $0 = newValue } }
    }

    private var outage: KeyValueFailure { KeyValueFailure(.unavailable, "connection refused") }

    func get(_ key: String, completion: @escaping @Sendable (Result<KeyValueRecord?, KeyValueFailure>) -> Void) {
        if unreachable { return completion(.failure(outage)) }
        completion(.success(keys.withLock { $0[key] }))
    }

    func put(
        _ key: String, _ value: [UInt8], expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<UInt64, KeyValueFailure>) -> Void
    ) {
        if unreachable { return completion(.failure(outage)) }
        completion(
            keys.withLock { keys in
                let current = keys[key]?.version ?? 0
                guard Self.admits(expected, current) else {
                    return .failure(KeyValueFailure(.conflict(currentVersion: current), "condition failed"))
                }
                keys[key] = KeyValueRecord(key: key, value: value, version: current + 1)
                return .success(current + 1)
            })
    }

    func delete(
        _ key: String, expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<Void, KeyValueFailure>) -> Void
    ) {
        if unreachable { return completion(.failure(outage)) }
        completion(
            keys.withLock { keys in
                let current = keys[key]?.version ?? 0
                if current == 0 && expected == .any { return .failure(KeyValueFailure(.notFound, "no such key")) }
                guard Self.admits(expected, current) else {
                    return .failure(KeyValueFailure(.conflict(currentVersion: current), "condition failed"))
                }
                keys[key] = nil
                return .success(())
            })
    }

    func list(prefix: String, completion: @escaping @Sendable (Result<[KeyValueRecord], KeyValueFailure>) -> Void) {
        if unreachable { return completion(.failure(outage)) }
        // Deliberately unsorted: the store sorts.
        completion(.success(keys.withLock { Array($0.values.filter { $0.key.hasPrefix(prefix) }) }))
    }

    static func admits(_ expected: ExpectedVersion, _ current: UInt64) -> Bool {
        switch expected {
        case .any: return true
        case .absent: return current == 0
        case .exactly(let version): return current == version
        }
    }
}

/// `KeyValueMetadataStore` (the ledger metadata over the registry's metadata store), bookie membership and
/// the autorecovery lease, over an in-memory backend. The same store against the real standalone registry and
/// etcd is tested in `Tests/PlexusKernelTests/LedgerRegistryMetadataTests.swift`.
@Suite("Ledger metadata over a key-value store")
struct KeyValueMetadataStoreTests {
    static func value(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test("create-only, compare-and-swap, conflicts naming the key, deletes, listing by prefix in byte order")
    func semantics() throws {
        let store = KeyValueMetadataStore(backend: MemoryKeyValue())
        #expect(try waitFor { store.put("ledgers/a", Self.value("1"), expected: .absent, completion: $0) } == 1)
        let again = outcome { store.put("ledgers/a", Self.value("x"), expected: .absent, completion: $0) }
        guard case .failure(let conflict) = again else { Issue.record("create-only succeeded twice"); return }
        #expect(conflict.code == .conflict && conflict.message.contains("'ledgers/a'"))
        #expect(conflict.message.contains("version is now 1"), "\(conflict.message)")
        #expect(try waitFor { store.put("ledgers/a", Self.value("2"), expected: .exactly(1), completion: $0) } == 2)
        let stale = outcome { store.put("ledgers/a", Self.value("3"), expected: .exactly(1), completion: $0) }
        #expect((try? stale.get()) == nil && (stale.failureCode == .conflict))
        #expect(
            try waitFor { store.get("ledgers/a", completion: $0) } == VersionedValue(value: Self.value("2"), version: 2)
        )
        #expect(try waitFor { store.get("ledgers/none", completion: $0) } == nil)
        #expect(try waitFor { store.put("ledgers/a", Self.value("4"), expected: .any, completion: $0) } == 3)

        for key in ["ledgers/b/2", "ledgers/b/10", "ledgers/b/1", "ledgers/c", "other/b/1"] {
            _ = try waitFor { store.put(key, Self.value(key), expected: .any, completion: $0) }
        }
        let listed = try waitFor { store.list(prefix: "ledgers/b/", completion: $0) }
        #expect(listed.map(\.key) == ["ledgers/b/1", "ledgers/b/10", "ledgers/b/2"])

        // Deletes: absent with .any succeeds (as in the file store); a condition on an absent key conflicts.
        try waitFor { store.delete("ledgers/none", expected: .any, completion: $0) }
        #expect(
            outcome { store.delete("ledgers/none", expected: .exactly(1), completion: $0) }.failureCode == .conflict)
        #expect(outcome { store.delete("ledgers/a", expected: .exactly(2), completion: $0) }.failureCode == .conflict)
        try waitFor { store.delete("ledgers/a", expected: .exactly(3), completion: $0) }
        #expect(try waitFor { store.get("ledgers/a", completion: $0) } == nil)
    }

    @Test("an unreachable store is an I/O error; a conditional write's is of unknown outcome")
    func unreachable() throws {
        let backend = MemoryKeyValue()
        let store = KeyValueMetadataStore(backend: backend)
        backend.unreachable = true
        let read = outcome { store.get("ledgers/a", completion: $0) }
        #expect(read.failureCode == .io && read.failureMessage.contains("in-memory store"))
        let write = outcome { store.put("ledgers/a", [1], expected: .absent, completion: $0) }
        #expect(write.failureCode == .io && write.failureMessage.contains("outcome is unknown"), "\(write)")
        let plain = outcome { store.put("ledgers/a", [1], expected: .any, completion: $0) }
        #expect(plain.failureCode == .io && !plain.failureMessage.contains("outcome is unknown"))
    }

    @Test("the ledger manager allocates ids and closes ledgers over it as over the file store")
    func ledgerManager() throws {
        let store = KeyValueMetadataStore(backend: MemoryKeyValue())
        let bookie = FakeBookie("b0")
        let manager = LedgerManager(store: store, prefix: "ledgers") { $0 == "b0" ? bookie : nil }
        let quorum = try QuorumConfig(ensembleSize: 1, writeQuorum: 1, ackQuorum: 1)
        let (first, _) = try manager.create(ensemble: ["b0"], quorum: quorum)
        let (second, _) = try manager.create(ensemble: ["b0"], quorum: quorum)
        #expect(first.id == 1 && second.id == 2)
        _ = try manager.close(first.id, lastEntry: -1)
        #expect(throws: LedgerError.self) { try manager.close(first.id, lastEntry: 0) }
        #expect(try manager.read(first.id).0.state == .closed)
    }

    @Test("bookie membership: heartbeats listed, stale ones not available, removal")
    func membership() throws {
        let store = KeyValueMetadataStore(backend: MemoryKeyValue())
        let membership = BookieMembership(store: store, prefix: "ledgers", staleAfterMilliseconds: 1000)
        try membership.heartbeat(id: "node a", address: "127.0.0.1:3181", now: 10_000)
        try membership.heartbeat(id: "b", address: "", now: 10_500)
        #expect(membership.key("node a") == "ledgers/bookies/node%20a")
        #expect(try membership.members().map(\.id) == ["b", "node a"])
        #expect(try membership.available(now: 11_000).map(\.id) == ["b", "node a"])
        #expect(try membership.available(now: 11_200).map(\.id) == ["b"], "a's heartbeat is 1.2 s old")
        try membership.heartbeat(id: "node a", address: "127.0.0.1:3181", now: 11_200)
        #expect(try membership.available(now: 11_400).map(\.address) == ["", "127.0.0.1:3181"])
        try membership.remove(id: "b")
        #expect(try membership.members().map(\.id) == ["node a"])
    }

    @Test("the autorecovery lease: one holder at a time, renewed by its holder, taken over once expired")
    func lease() throws {
        let store = KeyValueMetadataStore(backend: MemoryKeyValue())
        let a = MetadataLease(store: store, key: "ledgers/autorecovery/lock", owner: "a", durationMilliseconds: 1000)
        let b = MetadataLease(store: store, key: "ledgers/autorecovery/lock", owner: "b", durationMilliseconds: 1000)
        #expect(try a.acquire(now: 1000))
        #expect(try !b.acquire(now: 1500), "a holds it until 2000")
        #expect(try a.acquire(now: 1800), "a renews until 2800")
        #expect(try !b.acquire(now: 2500))
        #expect(try b.acquire(now: 2900), "a's lease expired")
        #expect(try !a.acquire(now: 3000))
        try a.release()  // not a's: nothing happens
        #expect(try !a.acquire(now: 3000))
        try b.release()
        #expect(try a.acquire(now: 3000), "released: free at once")
    }
}

extension Result where Failure == LedgerError {
    var failureCode: LedgerError.Code? {
        if case .failure(let error) = self { return error.code }
        return nil
    }

    var failureMessage: String {
        if case .failure(let error) = self { return error.message }
        return ""
    }
}
