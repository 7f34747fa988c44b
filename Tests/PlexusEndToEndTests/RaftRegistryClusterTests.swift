import Foundation
import PlexusBench
import PlexusClient
import PlexusCore
import PlexusKernel
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Issue 14, "Clusters": three `plexus serve` nodes with the etcd registry (a real etcd on 127.0.0.1) and
/// raft-log's `members: registry`, no `peers` list anywhere, form one raft-log cluster; `plexus cluster status`
/// lists the three nodes and the stream's leader; a consumer group's committed offset, replicated through the
/// registry's metadata store, is where the group resumes on another node after the leader is killed.
@Suite("raft-log cluster formed through the etcd registry", .serialized, .timeLimit(.minutes(3)))
struct RaftRegistryClusterTests {
    static let ids = ["a", "b", "c"]
    static let topic = "orders"

    /// One etcd member on free loopback ports, killed and removed by `stop()`.
    final class Etcd {
        let process: Process
        let clientPort: Int
        let directory: URL

        init(in parent: URL) throws {
            let binary = ["/usr/bin/etcd", "/usr/local/bin/etcd"].first {
                FileManager.default.isExecutableFile(atPath: $0)
            }
            guard let binary else {
                throw SetupError(description: "etcd is not installed: run scripts/etcd-deps (Debian's etcd-server)")
            }
            let ports = try LoopbackPorts.free(2)
            clientPort = ports[0]
            directory = parent.appendingPathComponent("etcd")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            process = try Command.launch(
                URL(fileURLWithPath: binary),
                [
                    "--name", "m0", "--data-dir", directory.appendingPathComponent("data").path,
                    "--listen-client-urls", "http://127.0.0.1:\(ports[0])",
                    "--advertise-client-urls", "http://127.0.0.1:\(ports[0])",
                    "--listen-peer-urls", "http://127.0.0.1:\(ports[1])",
                    "--initial-advertise-peer-urls", "http://127.0.0.1:\(ports[1])",
                    "--initial-cluster", "m0=http://127.0.0.1:\(ports[1])", "--initial-cluster-state", "new",
                    "--heartbeat-interval", "25", "--election-timeout", "250", "--log-level", "error",
                ], in: directory, stdout: directory.appendingPathComponent("etcd.out"),
                stderr: directory.appendingPathComponent("etcd.err"))
        }

        /// Waits until etcd answers `/health`.
        func waitHealthy() async throws {
            let healthy = try await eventually(.seconds(20)) {
                let answer = try await Command.run(
                    URL(fileURLWithPath: "/usr/bin/curl"), ["-s", "-m", "1", "http://127.0.0.1:\(clientPort)/health"],
                    in: directory, timeout: .seconds(5))
                return answer.stdout.contains(#""health":"true""#)
            }
            if healthy { return }
            throw SetupError(description: "etcd on 127.0.0.1:\(clientPort) not healthy within 20 s")
        }

        func stop() {
            if process.isRunning {
                Glibc.kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }
    }

    /// The shipped manifests with etcd-registry (on `etcd`) instead of standalone-registry, and raft-log taking
    /// its members from the registry.
    static func manifests(
        _ directory: TestDirectory, id: String, etcdPort: Int, raftPort: Int, tcpPort: Int, prefix: String,
        expectMembers: Int
    ) throws -> URL {
        let raftValues = [
            "nodeId": id, "listen": "127.0.0.1:\(raftPort)", "members": "registry",
            "expectMembers": "\(expectMembers)",
            "clusterSecret": "test-fixture-cluster-secret", "fsync": "always",
        ]
        let manifests = try directory.shippedManifests(
            intervalMs: 60_000, tcpValues: ["port": "\(tcpPort)", "node": id], raftValues: raftValues,
            name: "\(id)/manifests")
        try useEtcdRegistry(in: manifests, etcdPort: etcdPort, prefix: prefix)
        return manifests
    }

    /// Replaces standalone-registry in a node's manifest directory by etcd-registry on `etcdPort` with `prefix`.
    static func useEtcdRegistry(in manifests: URL, etcdPort: Int, prefix: String) throws {
        try FileManager.default.removeItem(at: manifests.appendingPathComponent("standalone-registry.yaml"))
        var etcd = try String(
            contentsOf: Repository.root.appendingPathComponent("Plugins/EtcdRegistry/etcd-registry.yaml"),
            encoding: .utf8)
        etcd = etcd.replacingOccurrences(
            of: "\ndeadlines:",
            with: "\n  values:\n    endpoints: [\"127.0.0.1:\(etcdPort)\"]\n    prefix: \(prefix)\ndeadlines:")
        let manifest = try ManifestParser.parse(etcd, path: "etcd-registry.yaml")
        guard manifest.config["prefix"] == .string(prefix) else {
            throw SetupError(description: "could not set the etcd-registry values:\n\(etcd)")
        }
        try etcd.write(to: manifests.appendingPathComponent("etcd-registry.yaml"), atomically: true, encoding: .utf8)
    }

    /// `plexus cluster status --json` of a node, decoded.
    static func clusterStatus(_ node: NodeProcess) async throws -> ClusterStatusReport {
        let result = try await node.cli(["cluster", "status", "--json"])
        try #require(result.status == 0, "plexus cluster status failed: \(result.stderr)")
        return try JSONDecoder().decode(ClusterStatusReport.self, from: Data(result.stdout.utf8))
    }

    /// Starts etcd in a new test directory, runs `body` with its client port, and kills everything `body`
    /// started (the nodes it put in `nodes`) and etcd whatever happens; the directory stays when it failed.
    static func withEtcd(
        _ name: String, _ body: (TestDirectory, Int, inout [String: NodeProcess]) async throws -> Void
    ) async throws {
        await ClusterGate.shared.acquire()
        let directory = try TestDirectory()
        var nodes: [String: NodeProcess] = [:]
        do {
            let etcd = try Etcd(in: directory.url)
            defer {
                for node in nodes.values { node.kill() }
                etcd.stop()
            }
            try await etcd.waitHealthy()
            try await body(directory, etcd.clientPort, &nodes)
        } catch {
            print("\(name): logs kept in \(directory.url.path)")
            await ClusterGate.shared.release()
            throw error
        }
        directory.remove()
        await ClusterGate.shared.release()
    }

    /// Launches one node per id side by side (each raft-log waits for the others at its first start) and
    /// waits until each serves; returns each node's TCP port.
    static func launch(
        _ ids: [String], expectMembers: Int, in directory: TestDirectory, etcdPort: Int, prefix: String,
        nodes: inout [String: NodeProcess]
    ) async throws -> [String: Int] {
        let ports = try LoopbackPorts.free(2 * ids.count)
        var tcpPorts: [String: Int] = [:]
        var launched: [(String, NodeProcess.Launched)] = []
        for (index, id) in ids.enumerated() {
            tcpPorts[id] = ports[2 * index + 1]
            let manifests = try Self.manifests(
                directory, id: id, etcdPort: etcdPort, raftPort: ports[2 * index], tcpPort: ports[2 * index + 1],
                prefix: prefix, expectMembers: expectMembers)
            launched.append(
                (
                    id,
                    try NodeProcess.launch(
                        manifests: manifests, data: try directory.subdirectory("\(id)/data"),
                        in: try directory.subdirectory("\(id)/run-1"),
                        extraArguments: ["--default-storage", "raft-log", "--node-id", id])
                ))
        }
        for (id, pending) in launched {
            do {
                nodes[id] = try await pending.ready()
            } catch {
                for (_, other) in launched where other.process.isRunning {
                    Glibc.kill(other.process.processIdentifier, SIGKILL)
                }
                throw error
            }
        }
        return tcpPorts
    }

    @Test("three nodes with no peers lists form a cluster; a group resumes at its committed offset after failover")
    func formsAndFailsOver() async throws {
        try await Self.withEtcd("raft registry cluster") { directory, etcdPort, nodes in
            try await formAndFailOver(directory, etcdPort: etcdPort, nodes: &nodes)
        }
    }

    @Test("a malformed member in the registry stops raft-log's start with a message naming it")
    func malformedMember() async throws {
        try await Self.withEtcd("raft registry malformed member") { directory, etcdPort, nodes in
            let prefix = "plexus-test-\(UUID().uuidString.prefix(8).lowercased())"
            // Another writer's instance of the raft-log service whose address is no host:port, sorted first.
            let record = #"{"address":"nowhere","instanceId":"0bad","metadata":{},"service":"raft-log","ttlMs":0}"#
            let key = Data("\(prefix)/services/raft-log/0bad".utf8).base64EncodedString()
            let value = Data(record.utf8).base64EncodedString()
            let put = #"{"key":"\#(key)","value":"\#(value)"}"#
            let answer = try await Command.run(
                URL(fileURLWithPath: "/usr/bin/curl"),
                ["-s", "-m", "5", "-X", "POST", "http://127.0.0.1:\(etcdPort)/v3/kv/put", "-d", put],
                in: directory.url, timeout: .seconds(10))
            try #require(answer.stdout.contains("revision"), "etcd took the put: \(answer.stdout) \(answer.stderr)")
            _ = try await Self.launch(
                ["a"], expectMembers: 2, in: directory, etcdPort: etcdPort, prefix: prefix, nodes: &nodes)
            let state = try await nodes["a"]!.raftLogState()
            #expect(state.state == .failed, "raft-log refuses to start: \(state.state.rawValue)")
            #expect(
                state.lastError?.contains("the registry lists member '0bad' at 'nowhere', not an id and a host:port")
                    == true, "\(state.lastError ?? "no error")")
        }
    }

    private func formAndFailOver(_ directory: TestDirectory, etcdPort: Int, nodes: inout [String: NodeProcess])
        async throws
    {
        let prefix = "plexus-test-\(UUID().uuidString.prefix(8).lowercased())"
        let tcpPorts = try await Self.launch(
            Self.ids, expectMembers: 3, in: directory, etcdPort: etcdPort, prefix: prefix, nodes: &nodes)
        for id in Self.ids {
            let state = try await nodes[id]!.raftLogState()
            try #require(state.state == .active, "raft-log on \(id): \(state.state.rawValue) \(state.lastError ?? "")")
        }

        // Publish with acknowledgements through one node (a follower forwards to the leader).
        let publisher = try await PlexusClient.connect(
            ClientConfiguration(port: tcpPorts["a"]!, name: "publisher", reconnect: false))
        var acknowledged: [UInt64] = []
        for sequence in 0..<20 {
            let event = CloudEvent(
                id: "e\(sequence)", source: "/cluster", type: "io.plexus.cluster", data: Array("event \(sequence)".utf8)
            )
            acknowledged.append(try await publisher.publish(topic: Self.topic, event))
        }
        await publisher.close(timeout: .milliseconds(100))
        #expect(acknowledged == Array(0..<20), "20 acknowledged publishes at dense offsets: \(acknowledged)")

        // Every node registered itself; the stream has a leader among them and three voters.
        var status = try await Self.clusterStatus(nodes["a"]!)
        let deadline = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < deadline,
            status.nodes.filter({ $0.health == "up" }).count < 3
                || !(status.streams.contains { $0.stream == Self.topic && !$0.leader.isEmpty })
        {
            try await Task.sleep(for: .milliseconds(200))
            status = try await Self.clusterStatus(nodes["a"]!)
        }
        #expect(status.registry == "etcd-registry")
        // raft-log's nodeId is the node id, so the stream's voters are the registered nodes.
        #expect(status.nodes.map(\.id) == Self.ids, "\(status)")
        #expect(status.nodes.allSatisfy { $0.health == "up" && $0.protocols["tcp-protocol"] != nil }, "\(status)")
        let stream = try #require(status.streams.first { $0.stream == Self.topic }, "\(status)")
        #expect(stream.voters.sorted() == Self.ids, "raft-log members from the registry: \(stream)")
        let leader = try #require(Self.ids.first { $0 == stream.leader }, "a leader among the members: \(stream)")
        let table = try await nodes["a"]!.cli(["cluster", "status"])
        #expect(
            table.status == 0 && table.stdout.contains("127.0.0.1:") && table.stdout.contains(leader),
            "\(table.stdout)")

        // A consumer group on the leader acknowledges the first 10 events; its offset is committed.
        let consumer = try await PlexusClient.connect(
            ClientConfiguration(port: tcpPorts[leader]!, name: "consumer", reconnect: false))
        let deliveries = try await consumer.subscribe(
            topic: Self.topic, options: SubscribeOptions(group: "billing", start: .earliest, credits: 1))
        var acked: [UInt64] = []
        for await delivery in deliveries {
            acked.append(delivery.offset)
            delivery.ack()
            if acked.count == 10 { break }
        }
        #expect(acked == Array(0..<10))
        let committedBy = ContinuousClock.now + .seconds(10)
        var committed: UInt64?
        while ContinuousClock.now < committedBy, committed != 10 {
            try await Task.sleep(for: .milliseconds(100))
            let described = try await nodes[leader]!.cli(["topic", "describe", Self.topic, "--json"])
            struct Topic: Decodable {
                struct Group: Decodable {
                    var group: String
                    var committed: UInt64?
                }
                var groups: [Group]
            }
            committed =
                (try? JSONDecoder().decode(Topic.self, from: Data(described.stdout.utf8)))?.groups.first {
                    $0.group == "billing"
                }?.committed
        }
        #expect(committed == 10, "the group's committed offset on the leader")
        await consumer.close(timeout: .milliseconds(100))
        try await Task.sleep(for: .milliseconds(300))

        // kill -9 of the leader: the group resumes at offset 10 on another node.
        nodes[leader]!.kill()
        let survivor = Self.ids.first { $0 != leader }!
        let resumed = try await PlexusClient.connect(
            ClientConfiguration(port: tcpPorts[survivor]!, name: "consumer", reconnect: false))
        let again = try await resumed.subscribe(
            topic: Self.topic, options: SubscribeOptions(group: "billing", start: .earliest, credits: 1))
        let first = Mutex<UInt64?>(nil)
        let reader = Task {
            for await delivery in again {
                first.withLock { $0 = $0 ?? delivery.offset }
                delivery.ack()
                break
            }
        }
        let resumeBy = ContinuousClock.now + .seconds(15)
        while ContinuousClock.now < resumeBy, first.withLock({ $0 }) == nil {
            try await Task.sleep(for: .milliseconds(50))
        }
        reader.cancel()
        await resumed.close(timeout: .milliseconds(100))
        #expect(first.withLock { $0 } == 10, "the group resumes at its committed offset on \(survivor)")

        // The two others elect a new leader and take appends; the killed node shows as missing once its lease ends.
        let after = try await PlexusClient.connect(
            ClientConfiguration(port: tcpPorts[survivor]!, name: "publisher", reconnect: false))
        let offset = try await after.publish(
            topic: Self.topic, CloudEvent(id: "after", source: "/cluster", type: "io.plexus.cluster", data: []))
        await after.close(timeout: .milliseconds(100))
        #expect(offset == 20, "an append after the failover continues the log")
    }
}
