import Foundation
import PlexusBench
import Testing

@testable import RaftBenchKit

/// The repository's plexus build (release preferred, then debug) with the raft-log and tcp-protocol plugins,
/// or nil when it has not been built.
func builtPlexus() -> PlexusInstallation? {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().path
    for configuration in ["release", "debug"] {
        let directory = "\(root)/.build/\(configuration)"
        let needed = ["plexus", "libRaftLogStorage.so", "libTCPProtocol.so"].map { "\(directory)/\($0)" }
        if needed.allSatisfy({ FileManager.default.fileExists(atPath: $0) }) {
            return PlexusInstallation(
                plexus: directory + "/plexus", pluginDirectory: directory, manifestDirectory: root + "/plugin-manifests"
            )
        }
    }
    return nil
}

/// A single-member node from the repository's build: it starts, takes publishes, survives kill -9 and starts
/// again on the same ports and data, and the paced writer of the failover test runs against it.
@Suite("plexus node", .serialized)
struct PlexusNodeTests {
    @Test(
        "kill -9 and restart on the same data and ports; counters; the paced writer's first acknowledgement",
        .enabled(if: builtPlexus() != nil, "plexus is not built; swift build in the repository root builds it"))
    func restart() async throws {
        let installation = try #require(builtPlexus())
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raftbench-node-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cluster = try await PlexusCluster.single(installation: installation, directory: directory)
        defer { cluster.stop() }
        let node = cluster.nodes[0]
        try await cluster.prime(stream: "t", through: node)
        #expect(try await node.counter("appends") == 1)

        let writer = PacedWriter(topic: "t", payload: benchPayload(size: 1024), rate: 200, window: 8)
        try await writer.connect(to: node.id, port: node.tcpPort)
        writer.watch(from: MonotonicClock.nanoseconds())
        #expect(await writer.firstAcknowledgement(timeout: .seconds(10)) != nil)

        node.kill9()
        #expect(!node.isRunning)
        try await Task.sleep(for: .milliseconds(300))
        let killedAt = MonotonicClock.nanoseconds()
        writer.watch(from: killedAt)
        try await node.start()
        // The writer's client reconnects on its own; its writes are acknowledged again.
        let acknowledged = await writer.firstAcknowledgement(timeout: .seconds(20))
        #expect(acknowledged.map { $0 > killedAt } == true, "last error: \(writer.counts.lastError ?? "none")")
        await writer.stop()
        #expect(writer.counts.acknowledged > 0)
        // The restarted instance counts the writes it took since it started.
        #expect(try await node.counter("appends") >= 1)
    }
}

/// Whether the built plexus ships raft-log's replicated mode.
func builtReplicatedPlexus() -> Bool {
    guard let installation = builtPlexus() else { return false }
    return (try? PlexusCluster.requireReplication(installation)) != nil
}

/// Three members from the repository's build: the leader is found, one failover is timed, the restarted
/// member catches up, and the replicas agree.
@Suite("plexus cluster", .serialized)
struct PlexusClusterTests {
    @Test(
        "three members: leader, one kill -9 timed, catch-up, replicas agree",
        .enabled(if: builtReplicatedPlexus(), "plexus with raft-log's replicated mode is not built"))
    func failover() async throws {
        let installation = try #require(builtPlexus())
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raftbench-cluster-\(getpid())")
            .path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cluster = try await PlexusCluster.replicated(installation: installation, directory: directory)
        defer { cluster.stop() }
        let summary = try await FailoverTest(kills: 1, rate: 100, payloadSize: 256).run(
            cluster: cluster, stream: "f", progress: { _ in })
        #expect(summary.samples.count == 1)
        #expect(summary.noRecovery == 0, "\(summary)")
        #expect(summary.samples.first?.killed != summary.samples.first?.writerNode)
        let check = await cluster.checkReplicas(stream: "f", acknowledged: 1)
        #expect(check.hasPrefix("plexus replicas agree"), "\(check)")
    }
}
