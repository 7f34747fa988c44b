import Foundation
import Testing

/// The cluster harness itself, where it does not need replication: the `status` decoding and the leader and
/// settle decisions on synthetic views, and the process, port, fault, workload and damage handling on three
/// independent single-member nodes (`RaftCluster.run(replicated: false)`).
@Suite("raft cluster harness", .serialized, .timeLimit(.minutes(4)))
struct RaftClusterHarnessTests {
    /// The example of the raft-log contract, "Operations".
    static let contractExample = """
        {"node":"a","streams":[{"stream":"orders","role":"leader","term":3,"leader":"a","commitIndex":120,
          "lastIndex":120,"firstIndex":1,"nextOffset":117,"commitChain":305419896,
          "peers":[{"id":"b","match":120,"next":121,"lag":0,"inflight":0,"learner":false,"active":true}]}]}
        """

    static func view(
        _ role: String, term: UInt64 = 3, leader: String = "a", commit: UInt64 = 120, last: UInt64 = 120,
        peers: [StreamStatus.Peer]? = nil
    ) -> StreamStatus {
        StreamStatus(
            stream: "s", role: role, term: term, leader: leader, commitIndex: commit, lastIndex: last, firstIndex: 1,
            nextOffset: 117, commitChain: 1, peers: peers)
    }

    @Test("status JSON of the contract decodes")
    func decodesStatus() throws {
        let status = try JSONDecoder().decode(RaftStatus.self, from: Data(Self.contractExample.utf8))
        #expect(status.node == "a")
        let stream = try #require(status.streams.first)
        #expect(stream.stream == "orders" && stream.role == "leader" && stream.term == 3 && stream.leader == "a")
        #expect(stream.commitIndex == 120 && stream.lastIndex == 120 && stream.firstIndex == 1)
        #expect(stream.nextOffset == 117 && stream.commitChain == 305_419_896)
        #expect(stream.peers?.first?.id == "b" && stream.peers?.first?.match == 120)
    }

    @Test("a leader is agreed only when every node names it in the highest term and it leads")
    func agreedLeader() {
        let nodes = ["a", "b", "c"]
        let agreed = ["a": Self.view("leader"), "b": Self.view("follower"), "c": Self.view("follower")]
        #expect(RaftCluster.agreedLeader(agreed, among: nodes)! == ("a", 3))
        var lagging = agreed
        lagging["c"] = Self.view("follower", term: 2, leader: "c")
        #expect(RaftCluster.agreedLeader(lagging, among: nodes) == nil, "c is still in an older term")
        var unknown = agreed
        unknown["b"] = Self.view("follower", leader: "")
        #expect(RaftCluster.agreedLeader(unknown, among: nodes) == nil, "b knows no leader yet")
        var missing = agreed
        missing["c"] = nil
        #expect(RaftCluster.agreedLeader(missing, among: nodes) == nil, "c did not answer")
        #expect(RaftCluster.agreedLeader(missing, among: ["a", "b"])! == ("a", 3), "c is not asked")
        let deposed = ["b": Self.view("follower", term: 4, leader: "a"), "c": Self.view("candidate", term: 4)]
        #expect(RaftCluster.agreedLeader(deposed, among: ["b", "c"]) == nil, "the named leader is not among them")
        var notLeading = agreed
        notLeading["a"] = Self.view("follower")
        #expect(RaftCluster.agreedLeader(notLeading, among: nodes) == nil, "a does not see itself as leader")
    }

    @Test("settled: one leader, every log ends at the leader's last index and is committed there")
    func settled() {
        let nodes = ["a", "b", "c"]
        let peers = [StreamStatus.Peer(id: "b", match: 120), StreamStatus.Peer(id: "c", match: 120)]
        let settled = [
            "a": Self.view("leader", peers: peers), "b": Self.view("follower"), "c": Self.view("follower"),
        ]
        #expect(RaftCluster.settledEnd(settled, nodes: nodes) == 120)
        var behind = settled
        behind["c"] = Self.view("follower", commit: 118, last: 120)
        #expect(RaftCluster.settledEnd(behind, nodes: nodes) == nil, "c has not learnt the commit")
        var short = settled
        short["b"] = Self.view("follower", commit: 110, last: 110)
        #expect(RaftCluster.settledEnd(short, nodes: nodes) == nil, "b lacks entries")
        var longer = settled
        longer["b"] = Self.view("follower", commit: 120, last: 125)
        #expect(RaftCluster.settledEnd(longer, nodes: nodes) == nil, "b holds an uncommitted suffix")
        var unmatched = settled
        unmatched["a"] = Self.view("leader", peers: [peers[0], StreamStatus.Peer(id: "c", match: 100)])
        #expect(RaftCluster.settledEnd(unmatched, nodes: nodes) == nil, "the leader has not matched c")
        var twoLeaders = settled
        twoLeaders["c"] = Self.view("leader", term: 2, leader: "c")
        #expect(RaftCluster.settledEnd(twoLeaders, nodes: nodes) == nil)
    }

    @Test("three single-member nodes: kill -9, SIGSTOP and restarts on the same ports under the workload")
    func processes() async throws {
        try await RaftCluster.run(replicated: false) { cluster in
            #expect(Set(cluster.members.values.map(\.tcpPort)).count == 3)
            #expect(cluster.proxies.count == 6)
            for (link, proxy) in cluster.proxies {
                #expect(proxy.target == cluster.members[link.to]!.raftPort && proxy.name == "\(link)")
            }
            let workload = RaftClusterTests.load(cluster, maxEvents: 100_000, duration: .seconds(60))
            #expect(await workload.waitForAcknowledged(600, timeout: .seconds(20)), "\(workload.ledger.summary)")
            // Every node takes part before the faults (on a loaded machine a node's publishers may connect late).
            try await Self.expectGrowth(workload, via: "a", from: 0)
            try await Self.expectGrowth(workload, via: "b", from: 0)
            try await Self.expectGrowth(workload, via: "c", from: 0)

            // kill -9 and a restart on the same data directory and ports: a's publishers reconnect.
            try cluster.kill("a")
            #expect(!cluster.live.contains("a"))
            let viaA = workload.ledger.acknowledgedVia["a", default: 0]
            try await Task.sleep(for: .milliseconds(500))
            try await cluster.start("a")
            #expect(try cluster.member("a").starts == 2)
            try await Self.expectGrowth(workload, via: "a", from: viaA)

            // SIGSTOP: nothing is acknowledged through b while it is stopped; its batches time out.
            try cluster.pause("b")
            #expect(cluster.live == ["a", "c"])
            try await Task.sleep(for: .milliseconds(500))
            let stoppedAt = workload.ledger.acknowledgedVia["b", default: 0]
            try await Task.sleep(for: .milliseconds(3_000))
            #expect(workload.ledger.acknowledgedVia["b", default: 0] == stoppedAt, "b acknowledged while stopped")
            #expect(workload.ledger.timeoutCount > 0, "b's publishers time out: \(workload.ledger.summary)")
            try cluster.resume("b")
            try await Self.expectGrowth(workload, via: "b", from: stoppedAt)
            await workload.stop()

            // Every node's log holds exactly what it acknowledged, read from disk and through a subscription.
            for id in cluster.ids {
                let log = try RaftSegmentReader.read(
                    directory: try cluster.streamDirectory(id, RaftClusterTests.stream))
                let replica = ReplicaState(log: log, commitIndex: log.lastIndex)
                let report = RaftLogChecker.check([id: replica], ledger: workload.ledger.snapshot(via: id))
                #expect(report.failures.isEmpty, "\(id): \(report)")
                #expect(report.acknowledged > 100, "\(id): \(report)")
            }
            let cLog = try RaftSegmentReader.read(directory: try cluster.streamDirectory("c", RaftClusterTests.stream))
            let read = try await cluster.readThroughSubscription(
                "c", stream: RaftClusterTests.stream, count: UInt64(cLog.entries.count))
            #expect(read == Dictionary(uniqueKeysWithValues: cLog.entries.map { ($0.offset, $0.eventID ?? "") }))

            // Damage while stopped: a torn tail is recovered; corruption refuses the start until truncate.
            try cluster.kill("b")
            let cut = try cluster.truncateMidEntry("b", RaftClusterTests.stream)
            try await cluster.start("b")
            #expect(try await cluster.stop("b"), "b stops gracefully")
            let bLog = try RaftSegmentReader.read(directory: try cluster.streamDirectory("b", RaftClusterTests.stream))
            #expect(bLog.lastIndex == cut - 1 && bLog.tornTail == nil && bLog.problems.isEmpty)

            #expect(try await cluster.stop("c"))
            let flip = try cluster.flipByteMidSegment("c", RaftClusterTests.stream)
            let error = try await cluster.startExpectingRaftLogFailure("c")
            #expect(error.contains("PX_ERR_CORRUPTION") && error.contains(flip.path), "\(error)")
            #expect(try await cluster.stop("c"))
            try cluster.reconfigure("c", raftValues: ["repairOnStart": "truncate"])
            try await cluster.start("c")
            let repaired = try RaftSegmentReader.read(
                directory: try cluster.streamDirectory("c", RaftClusterTests.stream))
            #expect(repaired.lastIndex == flip.index - 1 && repaired.problems.isEmpty)
        }
    }

    /// Expects acknowledgements through `node` to grow past `from` within 15 s.
    static func expectGrowth(
        _ workload: ClusterWorkload, via node: String, from: Int, sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let deadline = ContinuousClock.now + .seconds(15)
        while workload.ledger.acknowledgedVia[node, default: 0] < from + 50 && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(
            workload.ledger.acknowledgedVia[node, default: 0] >= from + 50,
            "acknowledgements through \(node) resume: \(workload.ledger.summary)", sourceLocation: sourceLocation)
    }
}
