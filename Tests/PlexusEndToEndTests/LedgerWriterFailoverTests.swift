import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 15, "Fencing and recovery", across real processes: three bookie-only nodes and two writer nodes whose
/// ledger-storage keeps its metadata in a real etcd (through the etcd registry's metadata store) and stripes
/// every ledger over the three bookies (E 3, Qw 2, Qa 2, `ownBookieInEnsembles: false`: a writer's crash takes
/// no replica with it). A topic written through one writer is then opened through the other, which recovers the
/// first writer's open ledger: fences it on the bookies, finds its last entry, closes it, and appends after it.
///
/// - kill -9 of the writer's node: the other node recovers the ledger; the checker finds every acknowledged event
///   at its offset, the offsets dense, nothing unpublished or twice.
/// - a zombie writer (SIGSTOP while it publishes, SIGCONT after the other node took the stream over): its adds
///   fail with "fenced"; no event it had acknowledged is lost, and none of its later adds is acknowledged or
///   visible.
@Suite("ledger-storage writer failover through etcd", .serialized, .timeLimit(.minutes(4)))
struct LedgerWriterFailoverTests {
    /// The three bookie-only nodes, started and ready (kept in `nodes`); returns the `bookies` setting naming them.
    static func startBookies(
        _ directory: TestDirectory, nodes: inout [String: NodeProcess]
    ) async throws -> String {
        let bookies = try await LedgerCluster.startBookies(["b1", "b2", "b3"], in: directory, intervalMs: 60_000)
        for bookie in bookies { nodes[bookie.id] = bookie.node }
        return LedgerCluster.setting(bookies)
    }

    /// A writer node: ledger metadata in etcd (under `prefix`), ledgers on the three bookies of `bookies`.
    static func startWriter(
        _ id: String, _ directory: TestDirectory, etcdPort: Int, prefix: String, bookies: String
    ) async throws -> NodeProcess {
        let manifests = try directory.shippedManifests(
            intervalMs: 60_000,
            ledgerValues: [
                "bookieId": id, "bookies": bookies, "ensembleSize": "3", "writeQuorum": "2", "ackQuorum": "2",
                "ownBookieInEnsembles": "false", "metadata": "registry", "bookieTimeoutMs": "2000",
            ], name: "\(id)/manifests")
        try RaftRegistryClusterTests.useEtcdRegistry(in: manifests, etcdPort: etcdPort, prefix: prefix)
        return try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("\(id)/data"),
            in: try directory.subdirectory("\(id)/run"),
            extraArguments: ["--default-storage", "ledger-storage", "--node-id", id])
    }

    /// Six producers publishing acknowledged batches through `client` until a publish fails (the node died,
    /// stopped or refused): what was attempted and what was acknowledged, by offset.
    static func publish(_ client: PlexusClient, topic: String, attempted: Published, acknowledged: Acknowledged)
        -> Task<Void, Never>
    {
        LedgerCluster.publish(
            client, topic: topic, publishers: 6, source: "/ledger-failover", type: "io.plexus.failover",
            attempted: attempted, acknowledged: acknowledged, control: PublishControl())
    }

    /// Waits until `acknowledged` holds `count` events (bounded: 60 s).
    static func waitFor(_ count: Int, _ acknowledged: Acknowledged) async throws {
        try await LedgerCluster.awaitAcknowledged(count, acknowledged, PublishControl())
        try #require(acknowledged.count >= count, "only \(acknowledged.count) events acknowledged in 60 s")
    }

    /// Two writer nodes started, and `topic` published to through the first until `count` events are acknowledged.
    struct Publishing {
        let first: NodeProcess
        let second: NodeProcess
        let client: PlexusClient
        let acknowledged: Acknowledged
        let published: Published
        let task: Task<Void, Never>
    }

    /// Starts writers `w1` and `w2` over `bookies` (their metadata under `prefix` in etcd, both kept in `nodes`)
    /// and publishes to `topic` through `w1` (the client named `clientName`) until `count` are acknowledged.
    static func startPublishing(
        _ directory: TestDirectory, etcdPort: Int, prefix: String, bookies: String, topic: String,
        clientName: String, count: Int, nodes: inout [String: NodeProcess]
    ) async throws -> Publishing {
        let first = try await startWriter("w1", directory, etcdPort: etcdPort, prefix: prefix, bookies: bookies)
        nodes["w1"] = first
        let second = try await startWriter("w2", directory, etcdPort: etcdPort, prefix: prefix, bookies: bookies)
        nodes["w2"] = second
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: try await first.tcpPort(), name: clientName, reconnect: false))
        let acknowledged = Acknowledged()
        let published = Published()
        let task = publish(client, topic: topic, attempted: published, acknowledged: acknowledged)
        let started = Publishing(
            first: first, second: second, client: client, acknowledged: acknowledged, published: published,
            task: task)
        try await waitFor(count, acknowledged)
        return started
    }

    /// Once the first writer is gone: opens `topic` through the second, which recovers the first one's ledger,
    /// checks it against what the first acknowledged, and publishes after the recovered end.
    static func checkThroughSecond(_ run: Publishing, topic: String) async throws {
        await run.task.value
        await run.client.close(timeout: .milliseconds(100))
        let reader = try await PlexusClient.connect(
            ClientConfiguration(port: try await run.second.tcpPort(), name: "w2", reconnect: false))
        let (end, _) = try await LedgerCluster.check(
            reader, topic: topic, acknowledged: [run.acknowledged], published: run.published)
        let next = try await reader.publish(topic: topic, CloudEvent(id: "after", source: "/w2", type: "t"))
        #expect(next >= end, "the next offset \(next) follows the recovered end \(end)")
        await reader.close()
    }

    @Test("kill -9 of the writer's node: another node recovers its ledger and every acknowledged event is there")
    func writerKilled() async throws {
        try await RaftRegistryClusterTests.withEtcd("ledger writer killed") { directory, etcdPort, nodes in
            let bookies = try await Self.startBookies(directory, nodes: &nodes)
            let run = try await Self.startPublishing(
                directory, etcdPort: etcdPort, prefix: "/plexus-ledger-kill", bookies: bookies,
                topic: "ledger-failover", clientName: "w1", count: 1000, nodes: &nodes)
            run.first.kill()  // SIGKILL, with publishes in flight
            try await Self.checkThroughSecond(run, topic: "ledger-failover")
        }
    }

    @Test("a zombie writer stopped and resumed after another node took the stream over: its adds fail, fenced")
    func zombieWriter() async throws {
        try await RaftRegistryClusterTests.withEtcd("ledger zombie writer") { directory, etcdPort, nodes in
            let bookies = try await Self.startBookies(directory, nodes: &nodes)
            let topic = "ledger-zombie"
            let run = try await Self.startPublishing(
                directory, etcdPort: etcdPort, prefix: "/plexus-ledger-zombie", bookies: bookies, topic: topic,
                clientName: "zombie", count: 500, nodes: &nodes)
            let (zombie, second, client, published) = (run.first, run.second, run.client, run.published)
            let (acknowledgedByZombie, publishing) = (run.acknowledged, run.task)
            Glibc.kill(zombie.process.processIdentifier, SIGSTOP)

            // The other node takes the stream over (recovery fences the zombie's ledger) and writes to it.
            let other = try await PlexusClient.connect(
                ClientConfiguration(port: try await second.tcpPort(), name: "w2", reconnect: false))
            let acknowledgedByOther = Acknowledged()
            for n in 0..<20 {
                let event = CloudEvent(id: "w2-\(n)", source: "/w2", type: "t", data: Array("w2 \(n)".utf8))
                published.add([event])
                acknowledgedByOther.add([event], first: try await other.publish(topic: topic, event))
            }

            // The zombie wakes up: every add it still makes is refused by the fenced bookies.
            Glibc.kill(zombie.process.processIdentifier, SIGCONT)
            let stopped = Task {
                await publishing.value
                return true
            }
            let ended = await Self.finished(stopped, within: .seconds(30))
            publishing.cancel()
            #expect(ended, "the zombie kept publishing for 30 s after it was fenced")
            do {
                let offset = try await client.publish(
                    topic: topic, CloudEvent(id: "zombie-late", source: "/z", type: "t"))
                Issue.record("the fenced writer acknowledged a publish at offset \(offset)")
            } catch {
                #expect("\(error)".contains("fenced"), "the zombie's publish failed, but not as fenced: \(error)")
            }
            await client.close(timeout: .milliseconds(100))

            // Everything either writer acknowledged is there, at its offset, once; nothing else.
            try await LedgerCluster.check(
                other, topic: topic, acknowledged: [acknowledgedByZombie, acknowledgedByOther], published: published)
            await other.close()
        }
    }

    /// Whether `task` finished within `timeout`.
    static func finished(_ task: Task<Bool, Never>, within timeout: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await task.value }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}
