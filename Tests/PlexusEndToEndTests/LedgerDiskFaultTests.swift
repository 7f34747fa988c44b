import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Disk faults under real bookie processes: four bookie-only `plexus serve` nodes (so that one is a spare) and a
/// writer node striping a topic over three of them (E 3, Qw 2, Qa 2, `ownBookieInEnsembles: false`) under
/// acknowledged publishes.
///
/// - A full disk (the `FaultFS` shim failing every write and file creation under one ensemble bookie's directory
///   with ENOSPC), and EIO from every `fdatasync` there: that bookie refuses its adds and logs why, the writer
///   replaces it with the spare, no publish fails; the bookie keeps running, and restarts cleanly once the disk
///   works again.
/// - A torn journal tail: an ensemble bookie is killed with SIGKILL, half a record is appended to its newest
///   journal file (a write the crash cut short), and it is restarted on the same port: it logs the cut with the
///   file and byte.
///
/// After each, another bookie of the first ensemble is killed, so that every entry it shared with the faulted
/// bookie can be read only from the faulted one, and the checker reads the topic back through the writer: every
/// acknowledged event at its offset, the offsets dense, nothing unpublished or twice, nothing past what was
/// acknowledged.
@Suite("ledger-storage disk faults", .serialized, .timeLimit(.minutes(3)))
struct LedgerDiskFaultTests {
    static let intervalMs = 1000

    /// A writer node (its own bookie left out of ensembles) striping over `bookies`.
    static func startWriter(_ directory: TestDirectory, bookies: [LedgerCluster.Bookie]) async throws -> NodeProcess {
        let manifests = try directory.shippedManifests(
            intervalMs: intervalMs,
            ledgerValues: [
                "bookieId": "w", "bookies": LedgerCluster.setting(bookies), "ensembleSize": "3", "writeQuorum": "2",
                "ackQuorum": "2", "ownBookieInEnsembles": "false", "bookieTimeoutMs": "2000",
            ], name: "w/manifests")
        return try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("w/data"), in: try directory.subdirectory("w/run"),
            extraArguments: ["--default-storage", "ledger-storage"])
    }

    /// The bookies ranked by the journal records they took, most first: the topic's ensemble is the first three
    /// (the writer's other streams, such as the heartbeat's, have ledgers too, but few entries), the last is the
    /// spare; with their counts.
    static func ranked(_ bookies: [LedgerCluster.Bookie]) async throws -> (order: [Int], records: [UInt64]) {
        var records: [UInt64] = []
        for bookie in bookies { records.append(try await bookie.journalRecords()) }
        let order = bookies.indices.sorted { records[$0] > records[$1] }
        try #require(records[order[2]] >= 100, "three bookies hold the topic's entries: \(records)")
        return (order, records)
    }

    /// Kills `other` (a bookie of the first ensemble besides the faulted one), then checks the topic through
    /// the writer: what `other` shared with the faulted bookie now comes from the faulted one only.
    static func checkWithout(
        _ other: LedgerCluster.Bookie, writer: NodeProcess, topic: String, acknowledged: Acknowledged,
        published: Published
    ) async throws {
        other.node.kill()
        let reader = try await PlexusClient.connect(
            ClientConfiguration(port: try await writer.tcpPort(), name: "check", reconnect: false))
        let (end, received) = try await LedgerCluster.check(
            reader, topic: topic, acknowledged: [acknowledged], published: published)
        await reader.close()
        // Every publish completed (none failed, none in flight): nothing past the acknowledged ones is visible.
        #expect(
            received.count == acknowledged.count && end == UInt64(acknowledged.count),
            "\(received.count) events visible up to offset \(end), \(acknowledged.count) acknowledged")
    }

    /// A disk fault armed under one ensemble bookie's directory.
    struct Fault: Sendable, CustomTestStringConvertible {
        /// `FaultFS` rules.
        var rules: String
        /// The `strerror` text the shim's fault produces, which the bookie's log must give as the reason.
        var reason: String
        var testDescription: String

        static let diskFull = Fault(
            rules: "write ENOSPC\nopen ENOSPC\n", reason: "No space left on device",
            testDescription: "disk full (ENOSPC on writes and file creation)")
        static let syncFails = Fault(
            rules: "sync EIO\n", reason: "Input/output error", testDescription: "EIO from every fdatasync")
    }

    /// Four bookies, the writer over them, and four publishers on `topic` through a client of the writer, with
    /// 400 events acknowledged; the bookies ranked by what they took (`ranked`).
    struct Loaded {
        var bookies: [LedgerCluster.Bookie]
        let writer: NodeProcess
        let client: PlexusClient
        let topic: String
        let acknowledged = Acknowledged()
        let published = Published()
        let control = PublishControl()
        var publishing: Task<Void, Never>?
        var order: [Int] = []
        var records: [UInt64] = []

        /// Kills every node.
        func stop() {
            for bookie in bookies { bookie.node.kill() }
            writer.kill()
        }

        /// Stops the publishers and closes the client; none of them may have failed.
        func finishPublishing() async {
            control.stop()
            await publishing?.value
            await client.close(timeout: .milliseconds(100))
            #expect(control.failures.isEmpty, "publishes failed: \(control.failures.prefix(3))")
        }
    }

    static func startLoaded(
        _ directory: TestDirectory, topic: String, environment: (String) -> [String: String] = { _ in [:] }
    ) async throws -> Loaded {
        let bookies = try await LedgerCluster.startBookies(
            ["b1", "b2", "b3", "b4"], in: directory, intervalMs: intervalMs, environment: environment)
        let writer: NodeProcess
        do {
            writer = try await startWriter(directory, bookies: bookies)
        } catch {
            for bookie in bookies { bookie.node.kill() }
            throw error
        }
        var run = Loaded(
            bookies: bookies, writer: writer,
            client: try await PlexusClient.connect(
                ClientConfiguration(port: try await writer.tcpPort(), name: topic, reconnect: false)),
            topic: topic)
        run.publishing = LedgerCluster.publish(
            run.client, topic: topic, publishers: 4, source: "/\(topic)", type: "io.plexus.\(topic)",
            attempted: run.published, acknowledged: run.acknowledged, control: run.control)
        try await LedgerCluster.awaitAcknowledged(400, run.acknowledged, run.control)
        (run.order, run.records) = try await ranked(bookies)
        return run
    }

    @Test(
        "a bookie's disk fails: it refuses adds and says why, the writer moves to the spare, nothing is lost",
        arguments: [Fault.diskFull, Fault.syncFails])
    func diskFault(_ fault: Fault) async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        // One shim library; a control file per bookie, scoped to that bookie's directory.
        let library = try await FaultFS.make(
            in: try directory.subdirectory("shim"), root: directory.url.appendingPathComponent("none"))
        var shims: [String: FaultFS] = [:]
        for id in ["b1", "b2", "b3", "b4"] {
            let shim = FaultFS(
                library: library.library,
                control: try directory.subdirectory("shim").appendingPathComponent("\(id).control"),
                log: try directory.subdirectory("shim").appendingPathComponent("\(id).log"),
                root: LedgerCluster.Bookie.bookieDirectory(data: try directory.subdirectory("\(id)/data")))
            try shim.set("")
            shims[id] = shim
        }
        var run = try await Self.startLoaded(directory, topic: "ledger-disk-fault") { shims[$0]?.environment ?? [:] }
        defer { run.stop() }
        let (bookies, order, records, acknowledged, control) = (
            run.bookies, run.order, run.records, run.acknowledged, run.control
        )
        let victim = bookies[order[0]]
        let spare = bookies[order[3]]
        let shim = try #require(shims[victim.id])

        // The victim's disk fails: with ENOSPC every write and every file it creates under its bookie directory,
        // or with EIO every fdatasync (the write reached the page cache, the add must still not be acknowledged).
        try shim.set(fault.rules)
        let beforeFault = acknowledged.count
        try await LedgerCluster.awaitAcknowledged(beforeFault + 600, acknowledged, control)
        await run.finishPublishing()
        #expect(
            acknowledged.count >= beforeFault + 600,
            "publishing went on after \(victim.id)'s disk failed: \(acknowledged.count - beforeFault) acknowledged since"
        )
        #expect(shim.injected.contains { $0.hasSuffix(fault.reason) }, "the shim injected \(fault.reason)")
        let spareRecords = try await spare.journalRecords()
        #expect(
            spareRecords >= records[order[3]] + 200,
            "the spare \(spare.id) went from \(records[order[3]]) to \(spareRecords) journal records")
        // Not a crash: the victim runs, serves its operations, and its log says why it refused.
        #expect(victim.node.process.isRunning, "the bookie whose disk failed exited: \(victim.node.stderr)")
        #expect(try await victim.journalRecords() >= records[order[0]])
        let refusals = victim.node.stderr.split(separator: "\n").filter {
            $0.contains("bookie \(victim.id) refuses") && $0.contains(fault.reason)
        }
        #expect(!refusals.isEmpty, "the bookie logs why it refuses adds: \(victim.node.stderr.suffix(2000))")

        // The disk works again; the bookie restarts cleanly on the files it has.
        try shim.set("")
        #expect(try await victim.node.signal(SIGTERM, waitingUpTo: .seconds(20)), "the bookie stops on SIGTERM")
        let again = try await LedgerCluster.restart(victim, in: directory, intervalMs: Self.intervalMs, run: "run2")
        run.bookies[order[0]].node = again
        #expect(!again.stderr.contains("corrupt"), "the restarted bookie found damage: \(again.stderr.suffix(2000))")

        try await Self.checkWithout(
            bookies[order[1]], writer: run.writer, topic: run.topic, acknowledged: acknowledged,
            published: run.published)
    }

    @Test("a torn journal tail on a killed bookie: it restarts, cuts the tail (file and byte), nothing is lost")
    func tornJournalTail() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        var run = try await Self.startLoaded(directory, topic: "ledger-torn")
        defer { run.stop() }
        let (bookies, order, acknowledged) = (run.bookies, run.order, run.acknowledged)
        let victim = bookies[order[0]]
        victim.node.kill()  // SIGKILL, with adds in flight
        let beforeKill = acknowledged.count
        try await LedgerCluster.awaitAcknowledged(beforeKill + 400, acknowledged, run.control)
        await run.finishPublishing()

        // The crash cut a record short: half of one is at the end of the newest journal file.
        let journal = victim.bookieDirectory.appendingPathComponent("journal")
        let files = try FileManager.default.contentsOfDirectory(atPath: journal.path).filter { $0.hasSuffix(".jnl") }
            .sorted()
        let newest = journal.appendingPathComponent(try #require(files.last, "no journal file in \(journal.path)"))
        let record = try #require(
            try files.reversed().lazy.compactMap { try Self.firstRecord(journal.appendingPathComponent($0)) }.first,
            "no journal record in \(files)")
        let size = try #require(try FileManager.default.attributesOfItem(atPath: newest.path)[.size] as? Int)
        let handle = try FileHandle(forWritingTo: newest)
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(record.prefix(record.count / 2)))
        try handle.close()

        let again = try await LedgerCluster.restart(victim, in: directory, intervalMs: Self.intervalMs, run: "run2")
        run.bookies[order[0]].node = again
        let cut = again.stderr.split(separator: "\n").filter { $0.contains("cut a torn record") }
        #expect(
            cut.contains {
                $0.contains("(\(record.count / 2) bytes)") && $0.contains(newest.lastPathComponent)
                    && $0.contains("at byte \(size)")
            }, "the restarted bookie logs the cut, with the file and byte: \(cut)")
        let cutSize = try #require(try FileManager.default.attributesOfItem(atPath: newest.path)[.size] as? Int)
        #expect(
            cutSize == size, "the torn bytes were cut off \(newest.lastPathComponent): \(cutSize) bytes, not \(size)")

        try await Self.checkWithout(
            bookies[order[1]], writer: run.writer, topic: run.topic, acknowledged: acknowledged,
            published: run.published)
    }

    /// The bytes of the first journal record in `file` (header and payload), nil when it holds none whole.
    static func firstRecord(_ file: URL) throws -> [UInt8]? {
        let bytes = [UInt8](try Data(contentsOf: file))
        guard bytes.count >= 40 else { return nil }
        // u32 magic, u32 payload length (little-endian), 32 more bytes of header, then the payload.
        let length = (0..<4).reduce(0) { $0 | Int(bytes[4 + $1]) << (8 * $1) }
        let size = 40 + length
        return bytes.count >= size ? Array(bytes.prefix(size)) : nil
    }
}
