import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// ledger-storage across four `plexus serve` processes: three bookie-only nodes (`bookieListen`) and a writer
/// node whose topic is striped with E 3, Qw 2, Qa 2 over its own bookie and two of the three others. One bookie
/// process in the ledger's ensemble is killed with SIGKILL while producers publish with acknowledgements: the
/// writer replaces it with the spare (an ensemble change), publishing goes on without a failed publish, and a
/// checker reads the topic back: every acknowledged event at its offset, in order, the offsets dense, nothing
/// twice.
@Suite("ledger-storage bookie cluster", .serialized, .timeLimit(.minutes(3)))
struct LedgerBookieClusterTests {
    @Test("kill -9 of an ensemble bookie mid-load: the writer changes ensemble, nothing acknowledged is lost")
    func killBookie() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        // Three bookie-only nodes on ports of their choice.
        let bookies = try await LedgerCluster.startBookies(["b1", "b2", "b3"], in: directory, intervalMs: 1000)
        defer { for bookie in bookies { bookie.node.kill() } }
        let list = LedgerCluster.setting(bookies)
        let writerManifests = try directory.shippedManifests(
            intervalMs: 1000,
            ledgerValues: [
                "bookieId": "w", "bookies": list, "ensembleSize": "3", "writeQuorum": "2", "ackQuorum": "2",
                "bookieTimeoutMs": "2000",
            ], name: "manifests-w")
        let writer = try await NodeProcess.start(
            manifests: writerManifests, data: try directory.subdirectory("data-w"),
            in: try directory.subdirectory("run-w"), extraArguments: ["--default-storage", "ledger-storage"])
        defer { writer.kill() }
        let port = try await writer.tcpPort()
        let client = try await PlexusClient.connect(ClientConfiguration(port: port, name: "cluster", reconnect: false))

        let topic = "ledger-cluster"
        let acknowledged = Acknowledged()
        let control = PublishControl()
        let publishing = LedgerCluster.publish(
            client, topic: topic, publishers: 4, source: "/ledger-cluster", type: "io.plexus.cluster",
            acknowledged: acknowledged, control: control)
        func awaitAcknowledged(_ count: Int) async throws {
            try await LedgerCluster.awaitAcknowledged(count, acknowledged, control)
        }
        try await awaitAcknowledged(400)
        // The topic's ledger is on the writer's bookie and two of the three others: the two whose journals took
        // most records (other streams of the writer, such as the heartbeat's, have ledgers too, but few entries).
        var records: [UInt64] = []
        for bookie in bookies { records.append(try await bookie.journalRecords()) }
        let ranked = bookies.indices.sorted { records[$0] > records[$1] }
        let inEnsemble = Array(ranked.prefix(2))
        let spare = ranked[2]
        try #require(records[inEnsemble[1]] >= 200, "two remote bookies hold the topic's entries: \(records)")
        let victim = bookies[inEnsemble[0]]
        let beforeKill = acknowledged.count
        victim.node.kill()  // SIGKILL, with publishes in flight
        try await awaitAcknowledged(beforeKill + 600)
        control.stop()
        await publishing.value
        await client.close(timeout: .milliseconds(100))

        #expect(control.failures.isEmpty, "publishes failed: \(control.failures.prefix(3))")
        #expect(
            acknowledged.count >= beforeKill + 600,
            "publishing went on after bookie \(victim.id) was killed: \(acknowledged.count - beforeKill) acknowledged since"
        )
        // The spare took the dead bookie's place: it is in the new fragment and received hundreds of entries.
        let spareRecords = try await bookies[spare].journalRecords()
        #expect(
            spareRecords >= records[spare] + 200,
            "the spare bookie \(bookies[spare].id) went from \(records[spare]) to \(spareRecords) journal records")
        let acked = acknowledged.events
        let highest = try #require(acked.keys.max())
        let reader = try await PlexusClient.connect(ClientConfiguration(port: port, name: "check", reconnect: false))
        let received = try await readBack(reader, topic: topic, through: highest)
        await reader.close()
        let (missing, changed) = acknowledged.compare(with: received)
        #expect(missing.isEmpty, "acknowledged offsets missing: \(missing.prefix(20))")
        #expect(changed.isEmpty, "acknowledged offsets holding another event: \(changed.prefix(20))")
        #expect((0...highest).allSatisfy { received[$0] != nil }, "the offsets are dense from 0 to \(highest)")
        let ids = received.values.map(\.id)
        #expect(Set(ids).count == ids.count, "an event is visible twice")
        // Per publisher, the events are stored in the order they were published.
        for publisher in 0..<4 {
            let sequences = received.sorted { $0.key < $1.key }.compactMap { entry -> Int? in
                let parts = entry.value.id.split(separator: "-")
                guard parts.count == 3, parts[0] == "p\(publisher)" else { return nil }
                return Int(parts[1])
            }
            #expect(sequences == sequences.sorted(), "publisher \(publisher)'s events are out of order")
        }
    }
}

/// Tells publishers to stop and collects their failures.
final class PublishControl: Sendable {
    private let state = Mutex<(stopped: Bool, failures: [String])>((false, []))

    var stopped: Bool { state.withLock { $0.stopped } }
    var failures: [String] { state.withLock { $0.failures } }

    func stop() { state.withLock { $0.stopped = true } }
    func fail(_ reason: String) { state.withLock { $0.failures.append(reason) } }
}
