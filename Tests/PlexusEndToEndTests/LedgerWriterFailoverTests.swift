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
    /// The bookie-only nodes `ids`, started side by side and ready; returns the `bookies` setting naming them.
    /// - Parameter ports: the bookie port of each id (absent: any free port); a bookie started again on its
    ///   port keeps its place in the writers' `bookies` lists.
    static func startBookies(
        _ directory: TestDirectory, nodes: inout [String: NodeProcess], ids: [String] = ["b1", "b2", "b3"],
        ports: [String: Int] = [:]
    ) async throws -> String {
        var launched: [(String, NodeProcess.Launched)] = []
        for id in ids {
            let manifests = try directory.shippedManifests(
                intervalMs: 60_000, ledgerValues: ["bookieId": id, "bookieListen": "127.0.0.1:\(ports[id] ?? 0)"],
                name: "\(id)/manifests")
            launched.append(
                (
                    id,
                    try NodeProcess.launch(
                        manifests: manifests, data: try directory.subdirectory("\(id)/data"),
                        in: try directory.subdirectory("\(id)/run"))
                ))
        }
        var list: [String] = []
        for (id, pending) in launched {
            let node = try await pending.ready()
            nodes[id] = node
            let answer = try await node.call("ledger-storage", "bookie-port")
            let port = try #require(Int(answer.output), "bookie-port of \(id): '\(answer.stdout)' \(answer.stderr)")
            list.append("\(id)=127.0.0.1:\(port)")
        }
        return list.joined(separator: ",")
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

    /// Six producers publishing batches of 1-3 acknowledged events through `client` until a publish fails
    /// (the node died, stopped or refused): what was attempted and what was acknowledged, by offset.
    static func publish(_ client: PlexusClient, topic: String, attempted: Published, acknowledged: Acknowledged)
        -> Task<Void, Never>
    {
        Task {
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<6 {
                    group.addTask {
                        var sequence = 0
                        while !Task.isCancelled {
                            let batch = (0..<(1 + sequence % 3)).map { i in
                                CloudEvent(
                                    id: "p\(publisher)-\(sequence)-\(i)", source: "/ledger-failover",
                                    type: "io.plexus.failover", data: Array("event \(publisher)/\(sequence)/\(i)".utf8))
                            }
                            sequence += 1
                            attempted.add(batch)
                            guard let first = try? await client.publish(topic: topic, batch) else { return }
                            acknowledged.add(batch, first: first)
                        }
                    }
                }
            }
        }
    }

    /// Waits until `acknowledged` holds `count` events (bounded: 60 s).
    static func waitFor(_ count: Int, _ acknowledged: Acknowledged) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while acknowledged.count < count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        try #require(acknowledged.count >= count, "only \(acknowledged.count) events acknowledged in 60 s")
    }

    /// Reads `topic` through `reader` and checks it against what was acknowledged and published: every
    /// acknowledged event at its offset, the offsets dense, nothing unpublished, nothing twice.
    static func check(
        _ reader: PlexusClient, topic: String, acknowledged: [Acknowledged], published: Published
    ) async throws -> UInt64 {
        let all = Acknowledged()
        for part in acknowledged { for (offset, event) in part.events { all.add([event], first: offset) } }
        let highest = try #require(all.events.keys.max(), "nothing was acknowledged")
        let received = try await readBack(reader, topic: topic, through: highest, settle: .milliseconds(300))
        let (missing, changed) = all.compare(with: received)
        #expect(missing.isEmpty, "acknowledged offsets missing after the failover: \(missing.prefix(20))")
        #expect(changed.isEmpty, "acknowledged offsets holding another event: \(changed.prefix(20))")
        let end = (received.keys.max() ?? 0) + 1
        #expect((0..<end).allSatisfy { received[$0] != nil }, "the visible offsets are dense from 0 to \(end)")
        let known = published.events
        let unpublished = received.filter { known[$0.value.id] != $0.value }.keys.sorted()
        #expect(unpublished.isEmpty, "visible events nobody published: offsets \(unpublished.prefix(20))")
        let ids = received.values.map(\.id)
        #expect(Set(ids).count == ids.count, "an event is visible twice")
        return end
    }

    @Test("kill -9 of the writer's node: another node recovers its ledger and every acknowledged event is there")
    func writerKilled() async throws {
        try await RaftRegistryClusterTests.withEtcd("ledger writer killed") { directory, etcdPort, nodes in
            let bookies = try await Self.startBookies(directory, nodes: &nodes)
            let prefix = "/plexus-ledger-kill"
            let first = try await Self.startWriter(
                "w1", directory, etcdPort: etcdPort, prefix: prefix, bookies: bookies)
            nodes["w1"] = first
            let second = try await Self.startWriter(
                "w2", directory, etcdPort: etcdPort, prefix: prefix, bookies: bookies)
            nodes["w2"] = second
            let topic = "ledger-failover"
            let client = try await PlexusClient.connect(
                ClientConfiguration(port: try await first.tcpPort(), name: "w1", reconnect: false))
            let acknowledged = Acknowledged()
            let published = Published()
            let publishing = Self.publish(client, topic: topic, attempted: published, acknowledged: acknowledged)
            try await Self.waitFor(1000, acknowledged)
            first.kill()  // SIGKILL, with publishes in flight
            await publishing.value
            await client.close(timeout: .milliseconds(100))

            let reader = try await PlexusClient.connect(
                ClientConfiguration(port: try await second.tcpPort(), name: "w2", reconnect: false))
            let end = try await Self.check(reader, topic: topic, acknowledged: [acknowledged], published: published)
            // The other node writes on after the recovered end.
            let next = try await reader.publish(topic: topic, CloudEvent(id: "after", source: "/w2", type: "t"))
            #expect(next >= end, "the next offset \(next) follows the recovered end \(end)")
            await reader.close()
        }
    }

    @Test("a zombie writer stopped and resumed after another node took the stream over: its adds fail, fenced")
    func zombieWriter() async throws {
        try await RaftRegistryClusterTests.withEtcd("ledger zombie writer") { directory, etcdPort, nodes in
            let bookies = try await Self.startBookies(directory, nodes: &nodes)
            let prefix = "/plexus-ledger-zombie"
            let zombie = try await Self.startWriter(
                "w1", directory, etcdPort: etcdPort, prefix: prefix, bookies: bookies)
            nodes["w1"] = zombie
            let second = try await Self.startWriter(
                "w2", directory, etcdPort: etcdPort, prefix: prefix, bookies: bookies)
            nodes["w2"] = second
            let topic = "ledger-zombie"
            let client = try await PlexusClient.connect(
                ClientConfiguration(port: try await zombie.tcpPort(), name: "zombie", reconnect: false))
            let acknowledgedByZombie = Acknowledged()
            let published = Published()
            let publishing = Self.publish(
                client, topic: topic, attempted: published, acknowledged: acknowledgedByZombie)
            try await Self.waitFor(500, acknowledgedByZombie)
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
            _ = try await Self.check(
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
