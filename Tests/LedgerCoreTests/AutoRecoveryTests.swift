import Synchronization
import Testing

@testable import LedgerCore

/// Autorecovery with in-memory bookies and metadata: a lost bookie's entries copied per striping to a
/// replacement, the fragment's ensemble changed by compare-and-swap (retried when a writer changes the
/// metadata meanwhile), nothing changed when no replacement exists.
@Suite("Autorecovery")
struct AutoRecoveryTests {
    /// Four bookies, a metadata store over an in-memory key-value backend, and a manager resolving the bookies.
    struct Cluster {
        let bookies: [FakeBookie]
        let store: HookedStore
        let manager: LedgerManager

        init(bookies count: Int) {
            let bookies = (0..<count).map { FakeBookie("b\($0)") }
            self.bookies = bookies
            store = HookedStore(KeyValueMetadataStore(backend: MemoryKeyValue()))
            manager = LedgerManager(store: store, prefix: "ledgers") { id in bookies.first { $0.id == id } }
        }

        func bookie(_ id: String) -> FakeBookie { bookies.first { $0.id == id }! }
    }

    static let quorum = try! QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)

    static func payload(_ ledger: UInt64, _ entry: Int64) -> [UInt8] { Array("ledger-\(ledger)-entry-\(entry)".utf8) }

    /// Every entry of `metadata`, per its fragments, is on the Qw bookies of its write set, all in `live`, and
    /// reads back with its payload.
    static func expectFullyReplicated(
        _ metadata: LedgerMetadata, _ cluster: Cluster, live: Set<String>,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        for (index, fragment) in metadata.fragments.enumerated() {
            let last =
                index + 1 < metadata.fragments.count ? metadata.fragments[index + 1].firstEntry - 1 : metadata.lastEntry
            guard last >= fragment.firstEntry else { continue }
            for entry in fragment.firstEntry...last {
                for position in metadata.quorum.writeSet(entry) {
                    let id = fragment.ensemble[position]
                    #expect(live.contains(id), "entry \(entry) names \(id)", sourceLocation: sourceLocation)
                    #expect(
                        cluster.bookie(id).stored(metadata.id).contains(entry), "entry \(entry) missing on \(id)",
                        sourceLocation: sourceLocation)
                }
                let reader = LedgerReader(
                    ledger: metadata.id, ensemble: try cluster.manager.resolve(fragment.ensemble),
                    config: metadata.quorum)
                let read = try waitFor { reader.read(entry, completion: $0) }
                #expect(read.payload == payload(metadata.id, entry), sourceLocation: sourceLocation)
            }
        }
    }

    @Test("E=3 Qw=2 Qa=2 on 4 bookies, one lost: its entries are copied to the fourth, the metadata names it")
    func replacesLostBookie() throws {
        let cluster = Cluster(bookies: 4)
        let (created, writer) = try cluster.manager.create(ensemble: ["b0", "b1", "b2"], quorum: Self.quorum)
        for entry in 0..<10 {
            writer.append(Self.payload(created.id, Int64(entry))) { _ in }
        }
        #expect(writer.lastAddConfirmed == 9)
        _ = try cluster.manager.close(created.id, lastEntry: 9)
        // b1 (position 1) held the entries with 1 in their write set: e mod 3 is 0 or 1.
        #expect(cluster.bookie("b1").stored(created.id) == [0, 1, 3, 4, 6, 7, 9])
        cluster.bookie("b1").state.withLock { $0.entries = [:] }  // lost, with its disk

        let live: Set<String> = ["b0", "b2", "b3"]
        let report = try AutoRecovery(ledgers: cluster.manager).run(live: live)
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(
            report.replicated == [
                .init(ledger: created.id, firstEntry: 0, lost: "b1", replacement: "b3", entries: 7)
            ])
        let (metadata, _) = try cluster.manager.read(created.id)
        #expect(metadata.fragments.map(\.ensemble) == [["b0", "b3", "b2"]])
        #expect(metadata.state == .closed && metadata.lastEntry == 9)
        #expect(cluster.bookie("b3").adds.allSatisfy { $0.recovery }, "copies are recovery adds")
        try Self.expectFullyReplicated(metadata, cluster, live: live)

        // A second run finds nothing to do.
        let again = try AutoRecovery(ledgers: cluster.manager).run(live: live)
        #expect(again.replicated.isEmpty && again.problems.isEmpty && again.ledgersChecked == 1)
    }

    @Test("a writer changing the metadata during the repair: the compare-and-swap fails, is retried, keeps both")
    func conflictRetried() throws {
        let cluster = Cluster(bookies: 4)
        // An OPEN ledger after an ensemble change: entries 0...5 on [b0, b1, b2], 6... on [b0, b2, b3].
        let (created, _) = try cluster.manager.create(ensemble: ["b0", "b1", "b2"], quorum: Self.quorum)
        var (metadata, version) = try cluster.manager.read(created.id)
        metadata.fragments.append(.init(firstEntry: 6, ensemble: ["b0", "b2", "b3"]))
        _ = try waitFor {
            cluster.store.put(
                cluster.manager.key(created.id), metadata.encoded(), expected: .exactly(version), completion: $0)
        }
        for entry in Int64(0)...8 {
            let ensemble = entry < 6 ? ["b0", "b1", "b2"] : ["b0", "b2", "b3"]
            for position in Self.quorum.writeSet(entry) {
                cluster.bookie(ensemble[position]).put(
                    created.id, entry, lac: entry - 1, Self.payload(created.id, entry))
            }
        }
        // Its writer closes the ledger at entry 8 just before autorecovery's compare-and-swap lands.
        let key = cluster.manager.key(created.id)
        let manager = cluster.manager
        cluster.store.beforeNextPut(to: key) {
            _ = try? manager.close(created.id, lastEntry: 8)
        }
        let live: Set<String> = ["b0", "b2", "b3"]
        let report = try AutoRecovery(ledgers: cluster.manager).run(live: live)
        #expect(report.problems.isEmpty, "\(report.problems)")
        #expect(report.replicated.map(\.replacement) == ["b3"] && report.replicated.first?.entries == 4)
        #expect(cluster.store.conflicts(on: key) == 1, "the first compare-and-swap failed and was retried")
        (metadata, version) = try cluster.manager.read(created.id)
        #expect(metadata.state == .closed && metadata.lastEntry == 8, "the writer's close is kept")
        #expect(metadata.fragments.map(\.ensemble) == [["b0", "b3", "b2"], ["b0", "b2", "b3"]])
        try Self.expectFullyReplicated(metadata, cluster, live: live)
    }

    @Test("the open fragment of an OPEN ledger is its writer's: autorecovery leaves it")
    func leavesOpenFragment() throws {
        let cluster = Cluster(bookies: 4)
        let (created, writer) = try cluster.manager.create(ensemble: ["b0", "b1", "b2"], quorum: Self.quorum)
        writer.append(Self.payload(created.id, 0)) { _ in }
        let report = try AutoRecovery(ledgers: cluster.manager).run(live: ["b0", "b2", "b3"])
        #expect(report.replicated.isEmpty && report.problems.isEmpty && report.ledgersChecked == 1)
        #expect(try cluster.manager.read(created.id).0.fragments.map(\.ensemble) == [["b0", "b1", "b2"]])
    }

    @Test("no live bookie outside the ensemble: reported, metadata and bookies unchanged")
    func noReplacement() throws {
        let cluster = Cluster(bookies: 3)
        let (created, writer) = try cluster.manager.create(ensemble: ["b0", "b1", "b2"], quorum: Self.quorum)
        for entry in 0..<4 { writer.append(Self.payload(created.id, Int64(entry))) { _ in } }
        _ = try cluster.manager.close(created.id, lastEntry: 3)
        let before = try cluster.manager.read(created.id)
        let addsBefore = cluster.bookies.map { $0.adds.count }

        let report = try AutoRecovery(ledgers: cluster.manager).run(live: ["b0", "b2"])
        #expect(report.replicated.isEmpty)
        #expect(report.problems.count == 1)
        #expect(report.problems.first?.lost == "b1" && report.problems.first?.ledger == created.id)
        #expect(report.problems.first?.reason.contains("no live bookie outside its ensemble") == true)
        let after = try cluster.manager.read(created.id)
        #expect(after.0 == before.0 && after.version == before.version, "metadata unchanged")
        #expect(cluster.bookies.map { $0.adds.count } == addsBefore, "nothing copied")
    }

    @Test("an entry no live bookie holds: reported, the fragment keeps naming the lost bookie")
    func missingReplica() throws {
        let cluster = Cluster(bookies: 4)
        let (created, writer) = try cluster.manager.create(ensemble: ["b0", "b1", "b2"], quorum: Self.quorum)
        for entry in 0..<3 { writer.append(Self.payload(created.id, Int64(entry))) { _ in } }
        _ = try cluster.manager.close(created.id, lastEntry: 2)
        // Entry 0 is on b0 and b1: b1 is lost and b0 lost its copy.
        cluster.bookie("b0").state.withLock { $0.entries[created.id]?[0] = nil }
        let report = try AutoRecovery(ledgers: cluster.manager).run(live: ["b0", "b2", "b3"])
        #expect(report.replicated.isEmpty)
        #expect(report.problems.first?.reason.contains("entry 0") == true, "\(report.problems)")
        #expect(try cluster.manager.read(created.id).0.fragments.map(\.ensemble) == [["b0", "b1", "b2"]])
    }
}

/// A metadata store that runs a test's action just before one chosen put reaches the store underneath (a
/// concurrent writer), and counts the conflicts each key saw.
final class HookedStore: MetadataStore {
    let base: any MetadataStore
    private let hooks = Mutex<[String: @Sendable () -> Void]>([:])
    private let conflictCounts = Mutex<[String: Int]>([:])

    init(_ base: any MetadataStore) { self.base = base }

    func beforeNextPut(to key: String, _ action: @escaping @Sendable () -> Void) {
        hooks.withLock { $0[key] = action }
    }

    func conflicts(on key: String) -> Int { conflictCounts.withLock { $0[key] ?? 0 } }

    func get(_ key: String, completion: @escaping @Sendable (Result<VersionedValue?, LedgerError>) -> Void) {
        base.get(key, completion: completion)
    }

    func put(
        _ key: String, _ value: [UInt8], expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<UInt64, LedgerError>) -> Void
    ) {
        if let hook = hooks.withLock({ $0.removeValue(forKey: key) }) { hook() }
        base.put(key, value, expected: expected) { [self] result in
            if case .failure(let error) = result, error.code == .conflict {
                conflictCounts.withLock { $0[key, default: 0] += 1 }
            }
            completion(result)
        }
    }

    func delete(
        _ key: String, expected: ExpectedVersion, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        base.delete(key, expected: expected, completion: completion)
    }

    func list(
        prefix: String,
        completion: @escaping @Sendable (Result<[(key: String, value: VersionedValue)], LedgerError>) -> Void
    ) {
        base.list(prefix: prefix, completion: completion)
    }
}
