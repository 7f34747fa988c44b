import Foundation
import PlexusClient
import Testing

/// Corruption on a minority (the Jepsen NATS 2.12.1 scenario): a member whose log lost acknowledged entries
/// to damage on disk (a flipped bit, a truncated segment) must not help elect a leader that lacks them.
///
/// Each test makes the dangerous configuration on purpose: one follower (`behind`) is down while the leader
/// and the other follower (`damaged`) commit and acknowledge entries; then `damaged` loses those entries to
/// damage and the leader goes down. `behind` and `damaged` alone now have equal logs, so without the rule
/// either would vote for the other and the new leader would overwrite what was acknowledged once the old
/// leader came back. With it (raft-log README, "Damage on a minority"), `damaged` recovers with
/// `repairOnStart: truncate`, cuts its log at the first bad record, and neither votes nor stands until it
/// has the lost entries again: no leader until the old one returns, which is elected and fills `damaged` in;
/// every acknowledged event is then committed on every replica at its offset (`RaftLogChecker`).
@Suite("raft-log corruption on a minority", .serialized, .timeLimit(.minutes(3)))
struct RaftClusterCorruptionTests {
    static let stream = RaftClusterTests.stream

    enum Damage {
        /// One bit flipped in the body of the first entry `behind` lacks (a checksum failure mid-log).
        case flippedBit
        /// The segment holding that entry cut in its middle, and every later segment gone.
        case truncatedSegment
    }

    /// Runs the scenario with `damage`; returns nothing, records issues.
    static func scenario(_ damage: Damage, name: String) async throws {
        // Small segments, so the damaged entry is mid-log for one kind and a segment's cut for the other.
        try await RaftCluster.run(raftValues: ["repairOnStart": "truncate", "segmentBytes": "65536"]) { cluster in
            let workload = RaftClusterTests.load(cluster)
            let (leader, _) = try await RaftClusterTests.warmUp(cluster, workload, count: 300)
            let others = cluster.ids.filter { $0 != leader }
            let (damaged, behind) = (others[0], others[1])

            try cluster.kill(behind)
            await RaftClusterTests.expectProgress(
                workload, "the leader and \(damaged) without \(behind)", more: 600, within: .seconds(45))
            await workload.stop()
            // Let every commit reach `damaged` and its commit hint (written about once a second).
            try await Task.sleep(for: .milliseconds(1500))
            let behindLog = try RaftSegmentReader.read(directory: try cluster.streamDirectory(behind, stream))
            let firstMissing = behindLog.lastIndex + 1

            #expect(try await cluster.stop(damaged), "\(damaged) stops on SIGTERM")
            let directory = try cluster.streamDirectory(damaged, stream)
            switch damage {
            case .flippedBit: try flipBit(in: directory, at: firstMissing)
            case .truncatedSegment: try truncateSegment(in: directory, at: firstMissing)
            }
            try cluster.kill(leader)

            // `behind` lacks the entries, `damaged` lost them: their logs end alike.
            try await cluster.start([damaged, behind])
            let cut = try RaftSegmentReader.read(directory: directory)
            #expect(cut.problems.isEmpty && cut.lastIndex < firstMissing, "\(damaged) cut its log: \(cut.problems)")
            let marker = directory.appendingPathComponent("recovering")
            #expect(FileManager.default.fileExists(atPath: marker.path), "\(damaged) keeps a recovering marker")
            let watchUntil = ContinuousClock.now + .seconds(4)
            var leaders: Set<String> = []
            var recovering: UInt64 = 0
            while ContinuousClock.now < watchUntil {
                let (statuses, _) = await cluster.streamStatuses(stream, of: [damaged, behind])
                for (id, status) in statuses where status.role == "leader" { leaders.insert(id) }
                recovering = max(recovering, statuses[damaged]?.recoveringUntil ?? 0)
                try await Task.sleep(for: .milliseconds(200))
            }
            let elected = "\(damaged) (lost entries from \(firstMissing)) and \(behind) elected \(leaders.sorted())"
            #expect(leaders.isEmpty, "\(elected) without the old leader")
            #expect(recovering >= firstMissing, "\(damaged) reports recoveringUntil \(recovering)")

            // The old leader returns: it is elected, and `damaged` gets back what it lost.
            try await cluster.start(leader)
            let report = try await RaftClusterTests.finish(cluster, workload, name)
            #expect(report.failures.isEmpty)
            #expect(!FileManager.default.fileExists(atPath: marker.path), "the marker goes once \(damaged) caught up")
            let (statuses, _) = await cluster.streamStatuses(stream, of: [damaged])
            #expect(statuses[damaged]?.recoveringUntil == 0, "\(damaged) votes again")
        }
    }

    @Test("a flipped bit on a follower: it cuts its log, neither votes nor stands until refetched, nothing lost")
    func flippedBitOnFollower() async throws {
        try await Self.scenario(.flippedBit, name: "flipped bit on a minority")
    }

    @Test("a truncated segment on a follower: it cuts its log, neither votes nor stands until refetched")
    func truncatedSegmentOnFollower() async throws {
        try await Self.scenario(.truncatedSegment, name: "truncated segment on a minority")
    }

    @Test("damage found while the leader runs: it fences the stream and steps down; `recover` cuts and refetches")
    func damageFoundOnTheRunningLeader() async throws {
        try await RaftCluster.run(raftValues: ["repairOnStart": "truncate"]) { cluster in
            let workload = RaftClusterTests.load(cluster)
            let (leader, term) = try await RaftClusterTests.warmUp(cluster, workload, count: 600)
            let others = cluster.ids.filter { $0 != leader }
            // One bit of a committed entry, in place under the running node (its page cache sees it).
            let directory = try cluster.streamDirectory(leader, Self.stream)
            let log = try RaftSegmentReader.read(directory: directory)
            let victim = try #require(log.entries.first { $0.isEvent && $0.index > 10 && $0.bodyLength > 0 })
            let handle = try FileHandle(forUpdating: directory.appendingPathComponent(victim.file))
            let position = UInt64(victim.position + RaftSegmentReader.entryHeaderSize + Int(victim.bodyLength) / 2)
            try handle.seek(toOffset: position)
            var byte = try #require(try handle.read(upToCount: 1)?.first)
            byte ^= 0x08
            try handle.seek(toOffset: position)
            try handle.write(contentsOf: [byte])
            try handle.close()

            // A subscriber reading from the start makes the leader read the damaged entry.
            let reader = try await PlexusClient.connect(
                ClientConfiguration(port: try cluster.member(leader).tcpPort, name: "damage-reader", reconnect: false))
            let subscription = try await reader.subscribe(
                topic: Self.stream, options: SubscribeOptions(group: "damage", start: .earliest, credits: 1000))
            let reading = Task { for await delivery in subscription { delivery.ack() } }
            try await Task.sleep(for: .seconds(2))
            reading.cancel()
            await reader.close(timeout: .milliseconds(500))
            let (next, nextTerm) = try await cluster.waitForLeader(Self.stream, among: others, timeout: .seconds(20))
            #expect(next != leader && nextTerm > term, "the others elected \(next) in term \(nextTerm)")
            let health = try await cluster.member(leader).process!.list().first { $0.name == "raft-log" }?.health
            #expect(health?.contains("degraded") == true && health?.contains("damage") == true, "\(health ?? "")")
            await RaftClusterTests.expectProgress(workload, "the two others without the damaged leader")

            let recovered = try await cluster.member(leader).process!.call("raft-log", "recover", [Self.stream])
            #expect(recovered.output.contains("recovered"), "recover: \(recovered.output) \(recovered.stderr)")
            let report = try await RaftClusterTests.finish(cluster, workload, "damage found on the running leader")
            #expect(report.failures.isEmpty)
            let repaired = try RaftSegmentReader.read(directory: directory)
            #expect(repaired.problems.isEmpty && repaired.lastIndex > victim.index, "\(repaired.problems)")
        }
    }

    /// Flips one bit in the middle of the body of the entry with Raft index `index`.
    static func flipBit(in directory: URL, at index: UInt64) throws {
        let log = try RaftSegmentReader.read(directory: directory)
        let entry = try #require(log.entry(at: index), "no entry \(index) in \(directory.lastPathComponent)")
        try #require(entry.bodyLength > 0 && entry.index < log.lastIndex, "entry \(index) is not mid-log")
        let url = directory.appendingPathComponent(entry.file)
        var bytes = try Data(contentsOf: url)
        bytes[entry.position + RaftSegmentReader.entryHeaderSize + Int(entry.bodyLength) / 2] ^= 0x10
        try bytes.write(to: url)
    }

    /// Cuts the segment holding entry `index` in the middle of that entry and removes every later segment.
    static func truncateSegment(in directory: URL, at index: UInt64) throws {
        let log = try RaftSegmentReader.read(directory: directory)
        let entry = try #require(log.entry(at: index), "no entry \(index) in \(directory.lastPathComponent)")
        for file in log.files where file > entry.file {
            try FileManager.default.removeItem(at: directory.appendingPathComponent(file))
        }
        let handle = try FileHandle(forWritingTo: directory.appendingPathComponent(entry.file))
        defer { try? handle.close() }
        try handle.truncate(atOffset: UInt64(entry.position + RaftSegmentReader.entryHeaderSize / 2))
    }
}
