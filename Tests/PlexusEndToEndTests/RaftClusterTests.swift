import Foundation
import Testing

/// The three-node fault scenarios of issue 6: a `RaftCluster` (three `plexus serve` nodes, raft-log
/// replicating every stream, a fault proxy on every directed link) under an acknowledged write load
/// (`ClusterWorkload`, publishers on every node), one fault per test, then everything healed, the cluster
/// settled and its logs checked from disk by `RaftLogChecker`: every acknowledged event committed at its
/// offset on every replica, the replicas identical up to the commit index (headers, body CRCs, chained CRCs),
/// offsets dense, no phantom event (an event committed twice is counted, not failed: raft-log is
/// at-least-once); and a follower serves the same events to a subscriber.
///
/// They need raft-log's replicated mode and fail with a message saying so on a build without it
/// (`RaftCluster.requireReplication`); run them alone with `swift test --filter RaftClusterTests`.
@Suite("raft-log cluster faults", .serialized, .timeLimit(.minutes(3)))
struct RaftClusterTests {
    static let stream = "faults"

    /// Starts publishers on every node of the cluster.
    static func load(
        _ cluster: RaftCluster, maxEvents: Int = 100_000, duration: Duration = .seconds(90), pace: Duration = .zero
    ) -> ClusterWorkload {
        ClusterWorkload(
            ports: cluster.members.mapValues(\.tcpPort),
            configuration: .init(
                topic: stream, publishersPerNode: 2, maxEvents: maxEvents, duration: duration, pace: pace))
    }

    /// Waits for the stream's leader and a first `count` acknowledgements.
    static func warmUp(_ cluster: RaftCluster, _ workload: ClusterWorkload, count: Int = 300) async throws -> (
        leader: String, term: UInt64
    ) {
        _ = try await cluster.waitForLeader(stream)
        let warm = await workload.waitForAcknowledged(count, timeout: .seconds(20))
        try #require(warm, "the healthy cluster acknowledges \(count) events: \(workload.ledger.summary)")
        return try await cluster.waitForLeader(stream)
    }

    /// Expects `more` acknowledgements within `timeout`: the cluster makes progress.
    static func expectProgress(
        _ workload: ClusterWorkload, _ what: String, more: Int = 200, within timeout: Duration = .seconds(15),
        sourceLocation: SourceLocation = #_sourceLocation
    ) async {
        let progressed = await workload.waitForProgress(more, timeout: timeout)
        #expect(
            progressed, "\(what): \(more) more acknowledgements within \(timeout); \(workload.ledger.summary)",
            sourceLocation: sourceLocation)
    }

    /// The end of every scenario: stop the load, heal every link, resume and start every node, wait until
    /// the cluster settles, check the replicas from disk, and read the committed events back through a
    /// follower (when there are at most `readBackLimit`).
    @discardableResult
    static func finish(
        _ cluster: RaftCluster, _ workload: ClusterWorkload, readBackLimit: UInt64 = 100_000, _ name: String,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> CheckReport {
        await workload.stop()
        cluster.healAll()
        for id in cluster.ids where try cluster.member(id).paused { try cluster.resume(id) }
        try await cluster.start(cluster.ids.filter { !cluster.members[$0]!.isRunning })
        let statuses = try await cluster.settle(stream)
        #expect(statuses.count == cluster.ids.count, "every node holds the stream", sourceLocation: sourceLocation)
        let ledger = workload.ledger.snapshot
        let report = try cluster.check(stream, statuses: statuses, ledger: ledger, sourceLocation: sourceLocation)
        print("\(name): \(report.description.prefix(300)); \(workload.ledger.summary)")

        if let (follower, status) = statuses.first(where: { $0.value.role == "follower" }),
            status.nextOffset <= readBackLimit
        {
            let log = try RaftSegmentReader.read(directory: try cluster.streamDirectory(follower, stream))
            let committed = Dictionary(
                RaftLogChecker.committedEvents(ReplicaState(log: log, commitIndex: status.commitIndex)).map {
                    ($0.offset, $0.eventID ?? "")
                }
            ) { first, _ in first }
            let read = try await cluster.readThroughSubscription(follower, stream: stream, count: status.nextOffset)
            let differing = read.first { committed[$0.key] != $0.value }.map { "; offset \($0.key) differs" } ?? ""
            #expect(
                read == committed,
                "a subscriber of follower \(follower) reads \(read.count) events, its log commits \(committed.count)\(differing)",
                sourceLocation: sourceLocation)
        }
        return report
    }

    @Test("kill -9 of the leader during a write load: a new leader takes over, nothing acknowledged is lost")
    func killLeader() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (leader, term) = try await Self.warmUp(cluster, workload)
            try cluster.kill(leader)
            let (next, nextTerm) = try await cluster.waitForLeader(Self.stream, timeout: .seconds(10))
            #expect(next != leader && nextTerm > term, "\(next) leads in term \(nextTerm) after \(leader) in \(term)")
            await Self.expectProgress(workload, "the two survivors accept writes")
            try await cluster.start(leader)
            await Self.expectProgress(workload, "with the old leader back")
            try await Self.finish(cluster, workload, "kill leader")
        }
    }

    @Test("kill -9 of a follower: the leader keeps its term and commits with the other; the follower catches up")
    func killFollower() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (leader, term) = try await Self.warmUp(cluster, workload)
            let follower = try #require(cluster.ids.first { $0 != leader })
            try cluster.kill(follower)
            await Self.expectProgress(workload, "leader and one follower accept writes", more: 400)
            let after = try await cluster.waitForLeader(Self.stream)
            #expect(after.leader == leader && after.term == term, "losing a follower changes no leadership: \(after)")
            try await cluster.start(follower)
            await Self.expectProgress(workload, "with the follower back")
            try await Self.finish(cluster, workload, "kill follower")
        }
    }

    @Test("SIGSTOP of the leader for 3 s: the others elect a leader; the old one steps down after SIGCONT")
    func pauseLeader() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (leader, term) = try await Self.warmUp(cluster, workload)
            let others = cluster.ids.filter { $0 != leader }
            try cluster.pause(leader)
            try await Task.sleep(for: .seconds(3))
            let (next, nextTerm) = try await cluster.waitForLeader(Self.stream, among: others, timeout: .seconds(5))
            #expect(next != leader && nextTerm > term, "\(next) leads in term \(nextTerm) while \(leader) is stopped")
            try cluster.resume(leader)
            let after = try await cluster.waitForLeader(Self.stream, timeout: .seconds(10))
            #expect(after.leader != leader && after.term >= nextTerm, "the resumed node does not lead: \(after)")
            await Self.expectProgress(workload, "after the pause")
            try await Self.finish(cluster, workload, "pause leader")
        }
    }

    @Test("SIGSTOP of a follower for 3 s: writes go on under the same leader and term, the follower catches up")
    func pauseFollower() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (leader, term) = try await Self.warmUp(cluster, workload)
            let follower = try #require(cluster.ids.first { $0 != leader })
            try cluster.pause(follower)
            let paused = ContinuousClock.now
            await Self.expectProgress(workload, "while a follower is stopped", more: 100, within: .seconds(3))
            try await Task.sleep(until: paused + .seconds(3))
            try cluster.resume(follower)
            await Self.expectProgress(workload, "after the pause")
            // Pre-vote: the resumed follower, whose election timer ran out while it was stopped, does not
            // disturb a leader the others still hear from.
            let after = try await cluster.waitForLeader(Self.stream)
            #expect(after.leader == leader && after.term == term, "the leadership is unchanged: \(after)")
            try await Self.finish(cluster, workload, "pause follower")
        }
    }

    @Test("the leader cut off from both others: the majority elects a leader and goes on; the old one steps down")
    func isolateLeader() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (leader, term) = try await Self.warmUp(cluster, workload)
            let others = cluster.ids.filter { $0 != leader }
            try cluster.isolate(leader)
            let (next, nextTerm) = try await cluster.waitForLeader(Self.stream, among: others, timeout: .seconds(10))
            #expect(next != leader && nextTerm > term, "\(next) leads in term \(nextTerm) on the majority side")
            await Self.expectProgress(workload, "the majority accepts writes")
            // Check-quorum: a leader that hears from no majority steps down instead of serving stale reads.
            let deadline = ContinuousClock.now + .seconds(5)
            var role = "leader"
            while role == "leader" && ContinuousClock.now < deadline {
                if case .success(let status) = await cluster.status(leader),
                    let stream = status.streams.first(where: { $0.stream == Self.stream })
                {
                    role = stream.role
                }
                if role == "leader" { try await Task.sleep(for: .milliseconds(200)) }
            }
            #expect(role != "leader", "the isolated old leader \(leader) stepped down (role \(role))")
            try await Self.finish(cluster, workload, "isolate leader")
        }
    }

    @Test("kill -9 of every node at once, then all started again: a leader in a later term, nothing lost")
    func restartAll() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (_, term) = try await Self.warmUp(cluster, workload)
            for id in cluster.ids { try cluster.kill(id) }
            let before = workload.ledger.acknowledgedCount
            try await cluster.start(cluster.ids)
            let (_, nextTerm) = try await cluster.waitForLeader(Self.stream, timeout: .seconds(20))
            #expect(nextTerm > term, "terms are durable: term \(nextTerm) after \(term)")
            await Self.expectProgress(
                workload, "after the restart (acknowledged \(before) before)", within: .seconds(20))
            try await Self.finish(cluster, workload, "restart all")
        }
    }

    @Test("a follower's last segment cut mid-entry while it is down: it recovers the torn tail and refetches")
    func tornTailOnFollower() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (leader, _) = try await Self.warmUp(cluster, workload, count: 500)
            let follower = try #require(cluster.ids.first { $0 != leader })
            try cluster.kill(follower)
            let cut = try cluster.truncateMidEntry(follower, Self.stream)
            let torn = try RaftSegmentReader.read(directory: try cluster.streamDirectory(follower, Self.stream))
            try #require(torn.tornTail != nil && torn.problems.isEmpty && torn.lastIndex == cut - 1)
            try await cluster.start(follower)  // throws unless raft-log starts
            await Self.expectProgress(workload, "with the repaired follower back")
            let report = try await Self.finish(cluster, workload, "torn tail")
            #expect(UInt64(report.committedEntries) >= cut, "the entry cut on \(follower) is committed everywhere")
        }
    }

    @Test("a flipped byte mid-segment on a stopped follower: refused with PX_ERR_CORRUPTION; repaired by truncate")
    func corruptionOnFollower() async throws {
        try await RaftCluster.run { cluster in
            let workload = Self.load(cluster)
            let (leader, _) = try await Self.warmUp(cluster, workload, count: 900)
            let follower = try #require(cluster.ids.first { $0 != leader })
            #expect(try await cluster.stop(follower), "\(follower) stops on SIGTERM")
            let flip = try cluster.flipByteMidSegment(follower, Self.stream)

            let error = try await cluster.startExpectingRaftLogFailure(follower)
            #expect(error.contains("PX_ERR_CORRUPTION"), "\(error)")
            #expect(error.contains(flip.path) && error.contains("byte \(flip.entryPosition)"), "\(error)")
            #expect(error.contains("repairOnStart: truncate"), "says how to repair: \(error)")
            await Self.expectProgress(workload, "the two healthy nodes go on")
            #expect(try await cluster.stop(follower), "\(follower) without raft-log stops on SIGTERM")

            try cluster.reconfigure(follower, raftValues: ["repairOnStart": "truncate"])
            try await cluster.start(follower)
            let repaired = try RaftSegmentReader.read(directory: try cluster.streamDirectory(follower, Self.stream))
            #expect(repaired.problems.isEmpty, "\(repaired.problems)")
            try await Self.finish(cluster, workload, "corrupt follower")
            let refetched = try RaftSegmentReader.read(directory: try cluster.streamDirectory(follower, Self.stream))
            #expect(refetched.lastIndex > flip.index, "\(follower) refetched the entries after the damaged one")
        }
    }
}
