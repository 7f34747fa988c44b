import Foundation
import PlexusClient
import PlexusCore
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The fault tests' independent segment reader and replica checker, against logs that today's single-member
/// raft-log writes on a real node: a clean log passes, every kind of violation the checker knows is caught
/// in a mutated copy, and torn tails and corruption are classified as raft-log's own recovery treats them.
@Suite("raft-log checker", .serialized, .timeLimit(.minutes(2)))
struct RaftLogCheckerTests {
    static let stream = "faults"

    @Test("the independent CRC-32C: the standard check value, and seeding continues a checksum")
    func crc() {
        #expect(IndependentCRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        let a = Array("raft-log ".utf8)
        let b = Array("chained".utf8)
        #expect(IndependentCRC32C.checksum(b, seed: IndependentCRC32C.checksum(a)) == IndependentCRC32C.checksum(a + b))
        #expect(RaftSegmentReader.escape("a/b c") == "a%2Fb%20c")
        #expect(RaftSegmentReader.escape(".x.y") == "%2Ex.y")
    }

    /// One node with raft-log (single member) as its default storage, 4 KiB segments, TCP on `port`.
    struct SoloNode {
        let directory: TestDirectory
        let port: Int
        let data: URL
        var manifests: URL
        var process: NodeProcess?
        var starts = 0

        init() throws {
            directory = try TestDirectory()
            port = try TCPReconnectionTests.freePort()
            data = try directory.subdirectory("data")
            manifests = try directory.shippedManifests(
                intervalMs: 60_000, tcpValues: ["port": "\(port)"], raftValues: ["segmentBytes": "4096"])
        }

        var streamDirectory: URL { RaftSegmentReader.streamDirectory(data: data, stream: RaftLogCheckerTests.stream) }

        mutating func start() async throws -> NodeProcess {
            starts += 1
            let node = try await NodeProcess.start(
                manifests: manifests, data: data, in: try directory.subdirectory("run-\(starts)"),
                extraArguments: ["--default-storage", "raft-log"])
            process = node
            return node
        }

        /// SIGTERM and a graceful stop.
        func stop() async throws {
            let stopped = try await process?.signal(SIGTERM, waitingUpTo: .seconds(15)) ?? true
            #expect(stopped, "the node stops on SIGTERM")
        }

        func finish() {
            process?.kill()
            directory.remove()
        }

        /// Publishes `count` acknowledged events through the workload's publishers; returns its ledger.
        func publish(_ count: Int, publishers: Int = 4) async throws -> PublishLedger {
            let workload = ClusterWorkload(
                ports: ["solo": port],
                configuration: .init(
                    topic: RaftLogCheckerTests.stream, publishersPerNode: publishers, maxEvents: count,
                    duration: .seconds(60)))
            // Bounded by the count: a few seconds here, a minute at most on a loaded machine.
            let enough = await workload.waitForAcknowledged(count, timeout: .seconds(65))
            await workload.stop()
            #expect(enough, "acknowledged: \(workload.ledger.summary)")
            return workload.ledger
        }
    }

    @Test("a real single-member log passes: dense offsets, chains across segments, every acknowledgement")
    func realLogPasses() async throws {
        var node = try SoloNode()
        defer { node.finish() }
        _ = try await node.start()
        let ledger = try await node.publish(1500)
        try await node.stop()

        let log = try RaftSegmentReader.read(directory: node.streamDirectory)
        let snapshot = ledger.snapshot
        #expect(log.problems.isEmpty, "\(log.problems)")
        #expect(log.tornTail == nil)
        #expect(log.files.count >= 5, "4 KiB segments: \(log.files.count) files")
        #expect(log.entries.map(\.index) == Array(1...UInt64(log.entries.count)))
        #expect(log.entries.allSatisfy { $0.isEvent && $0.term == 1 && $0.offset == $0.index - 1 })
        #expect(snapshot.acknowledged.count >= 1500 && snapshot.acknowledged.count == snapshot.published.count)
        #expect(log.entries.count == snapshot.published.count, "every event sent was stored once")

        let replica = ReplicaState(log: log, commitIndex: log.lastIndex, commitChain: nil, nextOffset: nil)
        let report = RaftLogChecker.check(["solo": replica], ledger: snapshot)
        #expect(report.failures.isEmpty, "\(report)")
        #expect(report.committedEvents == snapshot.acknowledged.count)
        // Two identical replicas agree, including the reported chain and next offset.
        let last = try #require(log.entries.last)
        let reported = ReplicaState(
            log: log, commitIndex: last.index, commitChain: last.chain, nextOffset: last.offset + 1)
        #expect(RaftLogChecker.check(["a": reported, "b": reported], ledger: snapshot).failures.isEmpty)

        // The checker is not blind: each mutation is reported under its kind.
        func kinds(_ replicas: [String: ReplicaState], _ ledger: LedgerSnapshot = snapshot) -> Set<String> {
            Set(
                RaftLogChecker.check(replicas, ledger: ledger).failures.compactMap {
                    $0.split(separator: "]").first.map { String($0.dropFirst()) }
                })
        }
        let (someID, someOffset) = try #require(snapshot.acknowledged.first { $0.value > 10 })
        var phantom = snapshot
        phantom.published.remove(someID)
        #expect(kinds(["solo": replica], phantom) == ["phantom"])
        var moved = snapshot
        moved.acknowledged[someID] = someOffset - 1
        #expect(kinds(["solo": replica], moved) == ["ack-moved", "ack-unique"])
        var beyond = snapshot
        beyond.acknowledged[someID] = UInt64(log.entries.count)
        #expect(kinds(["solo": replica], beyond) == ["ack-missing"])

        var changed = log
        changed.entries[log.entries.count / 2].appendTime += 1
        #expect(kinds(["a": replica, "b": ReplicaState(log: changed, commitIndex: log.lastIndex)]) == ["identical"])
        var gap = log
        gap.entries.remove(at: 100)
        #expect(kinds(["solo": ReplicaState(log: gap, commitIndex: log.lastIndex)]).contains("dense"))
        var twice = log
        twice.entries[200].eventID = log.entries[199].eventID
        let twiceReplica = ["solo": ReplicaState(log: twice, commitIndex: log.lastIndex)]
        #expect(!kinds(twiceReplica).contains("duplicate"), "at-least-once: duplicates are counted, not failed")
        #expect(
            RaftLogChecker.check(twiceReplica, ledger: snapshot).duplicates == [log.entries[199].eventID!: [199, 200]])
        #expect(
            Set(
                RaftLogChecker.check(twiceReplica, ledger: snapshot, allowDuplicates: false).failures.map {
                    String($0.prefix(11))
                }
            ).contains("[duplicate]"))
        var wrongChain = reported
        wrongChain.commitChain = last.chain ^ 1
        #expect(kinds(["solo": wrongChain]) == ["commit"])
        var wrongNext = reported
        wrongNext.nextOffset = last.offset
        #expect(kinds(["solo": wrongNext]) == ["commit"])
        #expect(kinds(["solo": ReplicaState(log: log, commitIndex: log.lastIndex + 5)]).contains("commit"))
        // Only committed entries must agree: a replica that commits less is compared up to its commit index.
        #expect(
            kinds(["a": replica, "b": ReplicaState(log: changed, commitIndex: 100)], Self.only(snapshot, below: 90))
                .isEmpty)
    }

    /// The ledger with only the acknowledgements of offsets below `offset`.
    static func only(_ ledger: LedgerSnapshot, below offset: UInt64) -> LedgerSnapshot {
        var result = ledger
        result.acknowledged = ledger.acknowledged.filter { $0.value < offset }
        return result
    }

    @Test("torn tails and corruption: the reader classifies them as recovery does, and the node agrees")
    func damage() async throws {
        var node = try SoloNode()
        defer { node.finish() }
        _ = try await node.start()
        let ledger = try await node.publish(400, publishers: 2)
        try await node.stop()
        let directory = node.streamDirectory
        let intact = try RaftSegmentReader.read(directory: directory)
        try #require(intact.problems.isEmpty && intact.files.count >= 3)

        // A crash in the middle of the last entry: a torn tail, which a restart cuts.
        let cut = try LogDamage.truncateMidEntry(directory)
        #expect(cut == intact.lastIndex)
        let torn = try RaftSegmentReader.read(directory: directory)
        #expect(torn.problems.isEmpty, "\(torn.problems)")
        #expect(torn.tornTail != nil && torn.lastIndex == cut - 1, "\(String(describing: torn.tornTail))")
        let restarted = try await node.start()
        #expect(try await restarted.raftLogState().state == .active)
        let client = try await PlexusClient.connect(ClientConfiguration(port: node.port, reconnect: false))
        let next = try await client.publish(
            topic: Self.stream, CloudEvent(id: "after-torn", source: "/faults", type: "io.plexus.fault"))
        await client.close()
        #expect(next == cut - 1, "appends continue right after the last whole entry")
        try await node.stop()
        let recovered = try RaftSegmentReader.read(directory: directory)
        #expect(recovered.problems.isEmpty && recovered.tornTail == nil)
        #expect(recovered.lastIndex == cut && recovered.entries.last?.eventID == "after-torn")
        var snapshot = ledger.snapshot
        snapshot.published.insert("after-torn")
        snapshot.acknowledged = snapshot.acknowledged.filter { $0.value < cut - 1 }
        snapshot.acknowledged["after-torn"] = cut - 1
        let report = RaftLogChecker.check(
            ["solo": ReplicaState(log: recovered, commitIndex: recovered.lastIndex)], ledger: snapshot)
        #expect(report.failures.isEmpty, "\(report)")

        // A flipped byte in the middle of the first segment: corruption, which refuses the start.
        let flip = try LogDamage.flipByteMidSegment(directory)
        let corrupt = try RaftSegmentReader.read(directory: directory)
        #expect(corrupt.tornTail == nil)
        #expect(corrupt.lastIndex == flip.index - 1, "the reader stops before the damaged entry")
        let problem = try #require(corrupt.problems.first)
        #expect(
            problem.contains(URL(fileURLWithPath: flip.path).lastPathComponent) && problem.contains("body CRC")
                && problem.contains("byte \(flip.entryPosition)"), "\(problem)")
        let refused = try await node.start()
        let state = try await refused.raftLogState()
        #expect(state.state == .failed)
        let error = state.lastError ?? ""
        #expect(error.contains("PX_ERR_CORRUPTION") && error.contains(flip.path), "\(error)")
        #expect(error.contains("byte \(flip.entryPosition)"), "names the damaged entry's byte: \(error)")
        #expect(error.contains("repairOnStart: truncate"), "\(error)")
        try await node.stop()

        // repairOnStart: truncate cuts the log before the damaged entry.
        node.manifests = try node.directory.shippedManifests(
            intervalMs: 60_000, tcpValues: ["port": "\(node.port)"],
            raftValues: ["segmentBytes": "4096", "repairOnStart": "truncate"], name: "manifests-repair")
        let repaired = try await node.start()
        #expect(try await repaired.raftLogState().state == .active)
        try await node.stop()
        let after = try RaftSegmentReader.read(directory: directory)
        #expect(after.problems.isEmpty && after.tornTail == nil)
        #expect(after.lastIndex == flip.index - 1, "the log ends before the damaged entry")
    }
}
