import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// A bookie lost where no ensemble change can route around it, across real processes:
///
/// - No spare: a writer striping over exactly three bookies (E 3, Qw 2, Qa 2) loses one to SIGKILL. Its
///   adds fail, and so does every publish while the bookie is down (the stream cannot recover its ledger to a
///   quorum nor start another on three bookies). Once the bookie is back on its port, the stream heals at the
///   next publish, on the same node, without a restart: it recovers the failed ledger, opens a new one and
///   acknowledges again. Nothing acknowledged is lost.
/// - The writer's node and one of its bookies killed at once (metadata in etcd): the other node opens the
///   topic, and its recovery re-replicates the ledger's tail to the spare in place of the dead bookie. Every
///   acknowledged event is there.
@Suite("ledger-storage bookie loss", .serialized, .timeLimit(.minutes(3)))
struct LedgerBookieLossTests {
    @Test("a bookie lost with no spare: publishes fail while it is down, the stream heals when it is back")
    func healsWhenBookieReturns() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        var nodes: [NodeProcess] = []
        defer { for node in nodes { node.kill() } }
        var bookies = try await LedgerCluster.startBookies(
            ["b1", "b2", "b3"], in: directory, intervalMs: LedgerDiskFaultTests.intervalMs)
        nodes += bookies.map(\.node)
        let writer = try await LedgerDiskFaultTests.startWriter(directory, bookies: bookies)
        nodes.append(writer)
        let topic = "ledger-heal"
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: try await writer.tcpPort(), name: "heal", reconnect: false))
        let acknowledged = Acknowledged()
        let published = Published()
        let control = PublishControl()
        let publishing = LedgerCluster.publish(
            client, topic: topic, publishers: 4, source: "/ledger-heal", type: "io.plexus.heal",
            attempted: published, acknowledged: acknowledged, control: control)
        try await LedgerCluster.awaitAcknowledged(300, acknowledged, control)
        try #require(acknowledged.count >= 300, "only \(acknowledged.count) acknowledged: \(control.failures)")

        // Every bookie is in the ensemble: with one gone the writer has no replacement, and its publishes fail.
        bookies[1].node.kill()
        await publishing.value
        #expect(!control.failures.isEmpty, "the publishers stop at a failed publish")
        let during = CloudEvent(id: "during", source: "/ledger-heal", type: "io.plexus.heal")
        published.add([during])
        do {
            let offset = try await client.publish(topic: topic, during)
            Issue.record("a publish was acknowledged (offset \(offset)) with one of three bookies down and no spare")
        } catch {
            #expect("\(error)".contains("recovering it failed"), "the refusal names the heal that failed: \(error)")
        }

        // The bookie comes back on its port and data: the next publishes heal the stream on the same node.
        bookies[1].node = try await LedgerCluster.restart(
            bookies[1], in: directory, intervalMs: LedgerDiskFaultTests.intervalMs, run: "run2")
        nodes.append(bookies[1].node)
        var healed: UInt64?
        var lastError = ""
        let deadline = ContinuousClock.now + .seconds(30)
        var attempt = 0
        while healed == nil && ContinuousClock.now < deadline {
            let event = CloudEvent(id: "after-\(attempt)", source: "/ledger-heal", type: "io.plexus.heal")
            attempt += 1
            published.add([event])
            do {
                let offset = try await client.publish(topic: topic, event)
                acknowledged.add([event], first: offset)
                healed = offset
            } catch {
                lastError = "\(error)"
                try await Task.sleep(for: .milliseconds(250))
            }
        }
        try #require(healed != nil, "no publish acknowledged within 30 s of the bookie's return: \(lastError)")
        for n in 0..<50 {
            let event = CloudEvent(id: "healed-\(n)", source: "/ledger-heal", type: "io.plexus.heal")
            published.add([event])
            acknowledged.add([event], first: try await client.publish(topic: topic, event))
        }
        #expect(writer.stderr.contains("recovered and closed"), "the heal is logged: \(writer.stderr.suffix(2000))")
        try await LedgerCluster.check(client, topic: topic, acknowledged: [acknowledged], published: published)
        await client.close()
    }

    @Test("kill -9 of the writer's node and one of its bookies: the other node recovers the ledger onto the spare")
    func writerAndBookieKilled() async throws {
        try await RaftRegistryClusterTests.withEtcd("ledger writer and bookie killed") { directory, etcdPort, nodes in
            let bookies = try await LedgerCluster.startBookies(
                ["b1", "b2", "b3", "b4"], in: directory, intervalMs: 60_000)
            for bookie in bookies { nodes[bookie.id] = bookie.node }
            let setting = LedgerCluster.setting(bookies)
            let run = try await LedgerWriterFailoverTests.startPublishing(
                directory, etcdPort: etcdPort, prefix: "/plexus-ledger-writer-bookie", bookies: setting,
                topic: "ledger-writer-bookie", clientName: "w1", count: 1000, nodes: &nodes)
            // The bookie of the topic's ensemble that took the most entries dies with the writer.
            let (order, records) = try await LedgerDiskFaultTests.ranked(bookies)
            run.first.kill()
            bookies[order[0]].node.kill()
            try await LedgerWriterFailoverTests.checkThroughSecond(run, topic: "ledger-writer-bookie")
            let spare = bookies[order[3]]
            #expect(
                try await spare.journalRecords() > records[order[3]],
                "the spare \(spare.id) took the recovered tail or the next ledger's entries")
        }
    }
}
