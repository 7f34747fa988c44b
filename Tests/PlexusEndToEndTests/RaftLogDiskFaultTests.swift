import Foundation
import PlexusClient
import PlexusCore
import PlexusKernel
import Synchronization
import Testing

/// The fault-injecting file system shim of `Tests/Fixtures/faultfs/faultfs.c`, compiled for one test: a
/// node launched with `environment` has its file I/O under `root` failed as the control file says
/// (ENOSPC, EDQUOT, EIO or short writes on write, sync, open and truncate), changed while it runs.
struct FaultFS {
    let library: URL
    let control: URL
    let log: URL
    let root: URL

    /// Compiles the shim into `directory` and arms nothing yet (an empty control file).
    static func make(in directory: URL, root: URL) async throws -> FaultFS {
        let library = directory.appendingPathComponent("libfaultfs.so")
        let result = try await Command.run(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "cc", "-std=gnu99", "-shared", "-fPIC", "-O2",
                Repository.root.appendingPathComponent("Tests/Fixtures/faultfs/faultfs.c").path, "-o", library.path,
                "-ldl",
            ], in: directory)
        guard result.status == 0 else {
            throw SetupError(description: "cc faultfs.c exited \(result.status): \(result.stderr)")
        }
        let shim = FaultFS(
            library: library, control: directory.appendingPathComponent("faultfs.control"),
            log: directory.appendingPathComponent("faultfs.log"), root: root)
        try shim.set("")
        return shim
    }

    var environment: [String: String] {
        [
            "LD_PRELOAD": library.path, "FAULTFS_ROOT": root.path, "FAULTFS_CONTROL": control.path,
            "FAULTFS_LOG": log.path,
        ]
    }

    /// Replaces the rules (one `OPERATION FAULT [COUNT]` per line; empty: no faults), atomically.
    func set(_ rules: String) throws {
        try rules.write(to: control, atomically: true, encoding: .utf8)
    }

    /// The faults injected so far, one line each (`CALL FAULT`).
    var injected: [String] {
        ((try? String(contentsOf: log, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }
}

/// Disk faults under a real node's raft-log (a single member, `fsync: always`), injected by the `FaultFS`
/// shim: a full disk, a failed `fdatasync` and short writes. The policy they check (the plugin's README,
/// "Disk faults"): a failed write or sync fences the stream (appends refused with the reason, nothing not
/// durable acknowledged, health `degraded`), the unsynced tail is discarded rather than synced again, and
/// the fence lifts without a restart (by itself once space returns; with `recover` after an I/O error).
/// After each, every acknowledged event is read back over the wire and from the segment files.
@Suite("raft-log disk faults", .serialized, .timeLimit(.minutes(2)))
struct RaftLogDiskFaultTests {
    let topic = "disk"

    /// A node whose data directory is under the shim, its TCP port, and the shim.
    struct Node {
        let process: NodeProcess
        let port: Int
        let shim: FaultFS
        let data: URL
    }

    static func start(_ directory: TestDirectory, topic: String) async throws -> Node {
        let data = try directory.subdirectory("data")
        // Only the test's stream: the heartbeat stream of the same node never takes a fault meant for it.
        let shim = try await FaultFS.make(
            in: try directory.subdirectory("shim"),
            root: RaftSegmentReader.streamDirectory(data: data, stream: topic))
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 1000, raftValues: ["segmentBytes": "65536"]),
            data: data, in: try directory.subdirectory("run"), extraArguments: ["--default-storage", "raft-log"],
            environment: shim.environment)
        return Node(process: node, port: try await node.tcpPort(), shim: shim, data: data)
    }

    static func events(_ tag: String, _ count: Int) -> [CloudEvent] {
        (0..<count).map { i in
            CloudEvent(
                id: "\(tag)-\(i)", source: "/disk", type: "io.plexus.disk",
                data: Array("event \(tag)/\(i) ".utf8) + [UInt8](repeating: UInt8(i % 251), count: 200))
        }
    }

    /// raft-log's health as `plexus plugin list` shows it.
    static func health(_ node: Node) async throws -> String {
        let plugins = try await node.process.list()
        return try #require(plugins.first { $0.name == "raft-log" }?.health, "raft-log has no health")
    }

    /// Polls raft-log's health until `condition` holds (up to `timeout`); returns the last answer.
    static func health(
        _ node: Node, within timeout: Duration = .seconds(10), until condition: (String) -> Bool
    ) async throws -> String {
        var last = ""
        _ = try await eventually(timeout) {
            last = try await health(node)
            return condition(last)
        }
        return last
    }

    /// Publishes `batch` until it is acknowledged (up to `timeout`), recording it; the last refusal when not.
    static func publishUntilAcknowledged(
        _ client: PlexusClient, _ topic: String, _ batch: [CloudEvent], into acknowledged: Acknowledged,
        within timeout: Duration = .seconds(15)
    ) async throws {
        var last: (any Error)?
        let done = try await eventually(timeout) {
            do {
                acknowledged.add(batch, first: try await client.publish(topic: topic, batch))
                return true
            } catch {
                last = error
                return false
            }
        }
        if done { return }
        Issue.record("\(batch.count) events were not acknowledged within \(timeout): \(last.map { "\($0)" } ?? "")")
    }

    /// Reads every event of the topic from offset 0 over the wire, until `count` are read or 15 s pass.
    static func readAll(port: Int, topic: String, count: Int) async throws -> [UInt64: CloudEvent] {
        let reader = try await PlexusClient.connect(ClientConfiguration(port: port, name: "check", reconnect: false))
        let stream = try await reader.subscribe(
            topic: topic,
            options: SubscribeOptions(group: "check-\(UUID().uuidString)", start: .earliest, credits: 1000))
        let collected = Mutex<[UInt64: CloudEvent]>([:])
        let collector = Task {
            for await delivery in stream {
                collected.withLock { $0[delivery.offset] = delivery.event }
                delivery.ack()
            }
        }
        let deadline = ContinuousClock.now + .seconds(15)
        while collected.withLock({ $0.count }) < count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        // A little longer: anything past `count` (an event that should not be there) shows up too.
        try await Task.sleep(for: .milliseconds(300))
        collector.cancel()
        await reader.close()
        return collected.withLock { $0 }
    }

    /// Checks that every acknowledged event is read back at its offset, offsets are dense and none of
    /// `refused` was stored; then stops the node and checks its segment files (`RaftSegmentReader`,
    /// `RaftLogChecker`): no corruption, no torn tail, every acknowledged event committed at its offset.
    static func checkNothingLost(
        _ node: Node, topic: String, acknowledged: Acknowledged, refused: [CloudEvent],
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let acked = acknowledged.events
        let received = try await readAll(port: node.port, topic: topic, count: acked.count)
        var missing: [UInt64] = []
        for (offset, event) in acked where received[offset] != event { missing.append(offset) }
        #expect(
            missing.isEmpty, "acknowledged events missing or changed at offsets \(missing.sorted().prefix(20))",
            sourceLocation: sourceLocation)
        let highest = received.keys.max() ?? 0
        #expect(
            received.count == Int(highest) + 1, "offsets are dense: \(received.count) events up to \(highest)",
            sourceLocation: sourceLocation)
        let refusedIDs = Set(refused.map(\.id))
        let stored = received.values.filter { refusedIDs.contains($0.id) }.map(\.id)
        #expect(
            stored.isEmpty, "refused events were stored: \(stored.sorted().prefix(10))", sourceLocation: sourceLocation)

        #expect(try await node.process.signal(SIGTERM, waitingUpTo: .seconds(20)), "the node stops on SIGTERM")
        let log = try RaftSegmentReader.read(
            directory: RaftSegmentReader.streamDirectory(data: node.data, stream: topic))
        #expect(log.problems.isEmpty, "the segment files are damaged: \(log.problems)", sourceLocation: sourceLocation)
        #expect(log.tornTail == nil, "the log ends in a torn entry: \(String(describing: log.tornTail))")
        var published = Set(acked.values.map(\.id))
        published.formUnion(refusedIDs)
        let report = RaftLogChecker.check(
            ["node": ReplicaState(log: log, commitIndex: log.lastIndex)],
            ledger: LedgerSnapshot(
                published: published,
                acknowledged: Dictionary(uniqueKeysWithValues: acked.map { ($0.value.id, $0.key) })),
            allowDuplicates: false)
        #expect(report.failures.isEmpty, "\(report)", sourceLocation: sourceLocation)
        #expect(report.acknowledged == acked.count && report.committedEvents >= acked.count, "\(report)")
    }

    @Test(
        "a full disk: publish refused with the reason, health degraded, writes resume by themselves once space returns")
    func diskFull() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await Self.start(directory, topic: topic)
        defer { node.process.kill() }
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: node.port, name: "full", reconnect: false))
        let acknowledged = Acknowledged()
        for round in 0..<5 {
            acknowledged.add(
                Self.events("before\(round)", 20),
                first: try await client.publish(topic: topic, Self.events("before\(round)", 20)))
        }
        #expect(try await Self.health(node) == "healthy")

        try node.shim.set("write ENOSPC\nopen ENOSPC\n")
        var refused: [CloudEvent] = []
        let full = Self.events("full", 10)
        refused += full
        do {
            let offset = try await client.publish(topic: topic, full)
            Issue.record("a publish to a full disk was acknowledged at offset \(offset)")
        } catch {
            #expect("\(error)".contains("No space left on device"), "the refusal says why: \(error)")
            #expect("\(error)".contains("fenced"), "the refusal says the stream is fenced: \(error)")
        }
        #expect(node.shim.injected.contains { $0.hasSuffix("No space left on device") }, "the shim injected ENOSPC")
        let degraded = try await Self.health(node) { $0 != "healthy" }
        #expect(degraded.contains("degraded") && degraded.contains("No space left on device"), "health: \(degraded)")
        #expect(degraded.contains("'\(topic)'"), "health names the fenced stream: \(degraded)")
        #expect(degraded.hasPrefix("degraded: "), "PX_DEGRADED, not unhealthy: \(degraded)")
        let ready = try await HTTPTest.request(port: node.process.port, "GET", "/v1/ready")
        #expect(ready.status == 200, "a degraded storage leaves the node ready: \(ready.text)")

        // Still full: the probe (every second) keeps the fence up, and publishes stay refused.
        try await Task.sleep(for: .milliseconds(2500))
        let stillFull = Self.events("still-full", 5)
        refused += stillFull
        await #expect(throws: (any Error).self, "a publish while the disk is still full is refused") {
            _ = try await client.publish(topic: topic, stillFull)
        }
        #expect(try await Self.health(node).contains("degraded"))

        // Space returns: no restart, no operator.
        try node.shim.set("")
        try await Self.publishUntilAcknowledged(client, topic, Self.events("after", 20), into: acknowledged)
        let healthy = try await Self.health(node) { $0 == "healthy" }
        #expect(healthy == "healthy", "health once space returned: \(healthy)")
        for round in 0..<5 {
            acknowledged.add(
                Self.events("later\(round)", 20),
                first: try await client.publish(topic: topic, Self.events("later\(round)", 20)))
        }
        await client.close()
        try await Self.checkNothingLost(node, topic: topic, acknowledged: acknowledged, refused: refused)
    }

    @Test(
        "EIO from fdatasync: the batch is never acknowledged nor synced again, the stream stays fenced until `recover`")
    func fdatasyncFails() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await Self.start(directory, topic: topic)
        defer { node.process.kill() }
        let client = try await PlexusClient.connect(ClientConfiguration(port: node.port, name: "eio", reconnect: false))
        let acknowledged = Acknowledged()
        for round in 0..<5 {
            acknowledged.add(
                Self.events("before\(round)", 20),
                first: try await client.publish(topic: topic, Self.events("before\(round)", 20)))
        }

        // One fdatasync fails; the next would succeed, which is exactly when a retry would acknowledge pages
        // the kernel may already have dropped.
        try node.shim.set("sync EIO 1\n")
        let lost = Self.events("lost", 10)
        do {
            let offset = try await client.publish(topic: topic, lost)
            Issue.record("a batch whose fdatasync failed was acknowledged at offset \(offset)")
        } catch {
            #expect("\(error)".contains("Input/output error"), "the refusal says why: \(error)")
        }
        #expect(node.shim.injected.contains { $0.hasPrefix("fdatasync") }, "the shim failed an fdatasync")
        let degraded = try await Self.health(node) { $0 != "healthy" }
        #expect(degraded.contains("degraded") && degraded.contains("Input/output error"), "health: \(degraded)")

        // An I/O error is not lifted by the space probe: the operator recovers the stream.
        try await Task.sleep(for: .milliseconds(2500))
        let meanwhile = Self.events("meanwhile", 5)
        await #expect(throws: (any Error).self, "a fenced stream refuses publishes") {
            _ = try await client.publish(topic: topic, meanwhile)
        }
        #expect(try await Self.health(node).contains("degraded"), "still degraded without `recover`")

        let recovered = try await node.process.call("raft-log", "recover", [topic])
        #expect(
            recovered.status == 0 && recovered.output.contains("recovered"),
            "recover: \(recovered.output) \(recovered.stderr)")
        let again = try await node.process.call("raft-log", "recover", [topic])
        #expect(again.output.contains("not fenced"), "recover of a healthy stream: \(again.output)")
        try await Self.publishUntilAcknowledged(client, topic, Self.events("after", 20), into: acknowledged)
        #expect(try await Self.health(node) { $0 == "healthy" } == "healthy")
        await client.close()
        try await Self.checkNothingLost(node, topic: topic, acknowledged: acknowledged, refused: lost + meanwhile)
    }

    @Test("short writes: every append completes in parts, nothing torn, every acknowledged event readable")
    func shortWrites() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await Self.start(directory, topic: topic)
        defer { node.process.kill() }
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: node.port, name: "short", reconnect: false))
        let acknowledged = Acknowledged()
        try node.shim.set("write short\n")
        // Enough bytes to roll segments (64 KiB each) while writes come back short.
        for round in 0..<20 {
            let batch = Self.events("short\(round)", 1 + round % 7)
            acknowledged.add(batch, first: try await client.publish(topic: topic, batch))
        }
        #expect(node.shim.injected.filter { $0.hasSuffix("short") }.count >= 20, "the shim shortened writes")
        #expect(try await Self.health(node) == "healthy")
        try node.shim.set("")
        await client.close()
        try await Self.checkNothingLost(node, topic: topic, acknowledged: acknowledged, refused: [])
    }
}

/// The disk faults of `RaftLogDiskFaultTests` at random for `PLEXUS_SOAK_MINUTES` (`make soak`) against one
/// node under a continuous acknowledged load: a full disk (on writes, on file creation, on syncs), an `EIO`
/// from a write, a sync or a truncation, and short writes, each held for 0.5–3 s and then cleared (after an
/// `EIO`, with `recover`); after each, writes must resume. At the end every acknowledged event is read back
/// and checked in the segment files, and no refused event was stored. Only with `PLEXUS_SOAK_MINUTES` set;
/// `PLEXUS_SOAK_SEED` replays a run.
@Suite(
    "raft-log disk fault soak", .serialized, .timeLimit(.minutes(180)),
    .enabled(if: ProcessInfo.processInfo.environment["PLEXUS_SOAK_MINUTES"] != nil))
struct RaftLogDiskFaultSoakTests {
    let topic = "disk"

    @Test("random disk faults for PLEXUS_SOAK_MINUTES under load: writes resume after each, nothing acknowledged lost")
    func soak() async throws {
        var (duration, _, random) = RaftClusterSoakTests.settings(label: "disk soak", standard: .seconds(60))
        let faults: [(rules: String, operator: Bool)] = [
            ("write ENOSPC\n", false), ("open ENOSPC\nwrite ENOSPC\n", false), ("sync ENOSPC\n", false),
            ("write EIO 1\n", true), ("sync EIO 1\n", true), ("truncate EIO\nsync EIO 1\n", true),
            ("write short\n", false),
        ]

        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await RaftLogDiskFaultTests.start(directory, topic: topic)
        defer { node.process.kill() }
        let acknowledged = Acknowledged()
        let refused = Acknowledged()
        let stopping = StopFlag()
        let port = node.port
        let publishers = Task {
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<4 {
                    group.addTask {
                        guard
                            let client = try? await PlexusClient.connect(
                                ClientConfiguration(port: port, name: "soak-\(publisher)", reconnect: false))
                        else { return }
                        var sequence = 0
                        // Bounded: at most 100,000 batches each, and only until the soak stops them.
                        while !stopping.isSet && sequence < 100_000 {
                            let batch = RaftLogDiskFaultTests.events("p\(publisher)-\(sequence)", 1 + sequence % 4)
                            sequence += 1
                            do {
                                acknowledged.add(batch, first: try await client.publish(topic: "disk", batch))
                            } catch {
                                refused.add(batch, first: UInt64(refused.count))
                                try? await Task.sleep(for: .milliseconds(20))
                            }
                        }
                        await client.close()
                    }
                }
            }
        }
        var injected: [String] = []
        let end = ContinuousClock.now + duration
        while ContinuousClock.now < end {
            let fault = faults.randomElement(using: &random)!
            let hold = Duration.milliseconds(Int.random(in: 500...3000, using: &random))
            try node.shim.set(fault.rules)
            try await Task.sleep(for: hold)
            try node.shim.set("")
            if fault.operator {
                let answer = try await node.process.call("raft-log", "recover", ["*"])
                #expect(answer.status == 0, "recover: \(answer.stderr)")
            }
            let before = acknowledged.count
            let deadline = ContinuousClock.now + .seconds(15)
            while acknowledged.count < before + 20 && ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            let resumed = acknowledged.count >= before + 20
            #expect(resumed, "writes resume after \(fault.rules.split(separator: "\n")) held \(hold)")
            injected.append("\(fault.rules.split(separator: "\n").joined(separator: ", ")) for \(hold)")
            if !resumed { break }
        }
        stopping.set()
        await publishers.value
        print(
            "disk soak: \(injected.count) faults, \(acknowledged.count) events acknowledged, "
                + "\(refused.count) refused, \(node.shim.injected.count) faults injected:\n  "
                + injected.joined(separator: "\n  "))
        #expect(try await RaftLogDiskFaultTests.health(node) { $0 == "healthy" } == "healthy")
        try await RaftLogDiskFaultTests.checkNothingLost(
            node, topic: topic, acknowledged: acknowledged, refused: Array(refused.events.values))
    }
}

/// A flag publishers poll to stop.
final class StopFlag: Sendable {
    private let flag = Atomic<Bool>(false)
    var isSet: Bool { flag.load(ordering: .relaxed) }
    func set() { flag.store(true, ordering: .relaxed) }
}
