import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Random faults against a ledger-storage cluster under an acknowledged write load, then every topic read back
/// and checked (issue "Ledger storage plugin", item 6: the longer randomized form, behind `make soak`).
///
/// The cluster: a real etcd, five bookie-only nodes (one started again comes back on its port, so it keeps its
/// place in the writers' `bookies` lists), and two writer-capable nodes with their ledger metadata in etcd,
/// E 3 / Qw 2 / Qa 2 over the five bookies and `ownBookieInEnsembles: false` (`LedgerWriterFailoverTests`).
/// One node at a time is the writer: four publishers send batches of 1-3 events to two topics through it.
///
/// At random intervals one fault, undone before the next (one bookie down at a time: with five bookies and
/// E 3 an ensemble always has a live spare; recovery of a stream whose last ledger lost a bookie waits for that
/// bookie, so writer faults never overlap bookie faults):
/// - kill -9 a bookie, started again on its port after a hold; SIGSTOP a bookie, SIGCONT after a hold (past
///   `bookieTimeoutMs` the writer changes ensemble);
/// - kill -9 the writer: the publishers move to the other node, which fences and recovers the stream; the
///   killed node is started again and becomes the standby;
/// - SIGSTOP the writer: the other node takes the stream over; after SIGCONT the zombie answers what it held
///   and a new publish through it must fail (fenced), never be acknowledged; it is then restarted;
/// - publish through both writer nodes at once: the other node fences the writer's ledgers when it opens the
///   streams, the writer's publishes fail from then on (a new one through it must be refused), the writer is
///   restarted;
/// - SIGSTOP the writer past `bookieTimeoutMs` and SIGCONT it with no takeover: it must go on writing;
/// - kill -9 every node (not etcd) and start them all again.
/// After each, writes must resume. At the end every topic is read back from the writer and then from the other
/// node (which takes the streams over): every acknowledged event at the offset it was acknowledged with, the
/// offsets dense, every visible event one that was published (never a publish a fenced writer refused), none
/// twice, in each read, and the second read holding every event of the first at the same offset.
///
/// Only with `PLEXUS_SOAK_MINUTES` set (`make soak`); `PLEXUS_SOAK_SEED` replays a run's fault schedule;
/// `PLEXUS_SOAK_FAULTS` (case names, comma-separated) limits the faults to those.
@Suite(
    "ledger-storage cluster soak", .serialized, .timeLimit(.minutes(180)),
    .enabled(if: ProcessInfo.processInfo.environment["PLEXUS_SOAK_MINUTES"] != nil))
struct LedgerClusterSoakTests {
    /// The faults the soak picks from; each is undone before the next.
    enum Fault: String, CaseIterable {
        case killBookie = "kill -9 a bookie"
        case pauseBookie = "SIGSTOP a bookie"
        case killWriter = "kill -9 the writer"
        case pauseWriter = "SIGSTOP the writer (zombie)"
        case dualWriters = "publish through both writer nodes at once"
        case stallWriter = "SIGSTOP the writer, SIGCONT with no takeover"
        case restartAll = "kill -9 every node and start them again"
    }

    static let bookieIDs = ["b1", "b2", "b3", "b4", "b5"]
    static let topics = ["ledger-soak-a", "ledger-soak-b"]

    @Test("random bookie and writer faults for PLEXUS_SOAK_MINUTES under load, then every topic checked")
    func soak() async throws {
        let environment = ProcessInfo.processInfo.environment
        var (duration, seed, random) = RaftClusterSoakTests.settings(label: "ledger soak", standard: .seconds(60))
        // PLEXUS_SOAK_FAULTS=killBookie,stallWriter: only those faults (by case name).
        let named = environment["PLEXUS_SOAK_FAULTS"].map { $0.split(separator: ",").map(String.init) }
        let chosen = Fault.allCases.filter { fault in named.map { $0.contains("\(fault)") } ?? true }
        try #require(!chosen.isEmpty, "PLEXUS_SOAK_FAULTS names none of \(Fault.allCases.map { "\($0)" })")

        try await RaftRegistryClusterTests.withEtcd("ledger soak (seed \(seed))") { directory, etcdPort, _ in
            let cluster = try await LedgerSoakCluster.start(directory, etcdPort: etcdPort)
            // Bounded: paced to about 40,000 events over the run (all of them read back twice at the end), at
            // most 100,000, and the publishers stop a minute after the faults end at the latest.
            let batchesPerPublisher = 40_000 / 2 / LedgerSoakLoad.publishers
            let cycle = Double(duration.components.seconds) / Double(batchesPerPublisher)
            let pace = Duration.milliseconds(max(0, Int(cycle * 1000) - 4))
            let load = LedgerSoakLoad(
                writer: cluster.writer, port: try await cluster.nodes[cluster.writer]!.tcpPort(), pace: pace,
                maxEvents: 100_000, duration: duration + .seconds(60))
            print("ledger soak: publishers pause \(pace) between batches")
            let warm = await load.waitForProgress(200, within: .seconds(60))
            try #require(warm, "the first 200 events are acknowledged within 60 s")

            var injected: [Fault: Int] = [:]
            var violations: [String] = []
            var zombie = (resumed: 0, lateAcknowledgements: 0)
            var probes = (accepted: 0, refusedFenced: 0, refusedOtherwise: 0)
            /// A publish through `node`, whose streams `winner` took over, must be refused.
            func probe(_ node: String, taken winner: String) async throws {
                for topic in Self.topics {
                    switch try await load.probe(cluster.nodes[node]!, topic: topic) {
                    case .acknowledged(let offset):
                        probes.accepted += 1
                        violations.append(
                            "\(node) acknowledged a publish to \(topic) at offset \(offset) after \(winner) took the "
                                + "stream over")
                    case .refused(let reason) where reason.contains("fenced") || reason.contains("another client"):
                        probes.refusedFenced += 1
                    case .refused(let reason):
                        probes.refusedOtherwise += 1
                        print("ledger soak: \(node) refused a publish to \(topic), not as fenced: \(reason)")
                    }
                }
            }
            let end = ContinuousClock.now + duration
            faults: while ContinuousClock.now < end {
                try await Task.sleep(for: .milliseconds(Int.random(in: 0...3000, using: &random)))
                let fault = chosen.randomElement(using: &random)!
                let hold = Duration.milliseconds(Int.random(in: 500...4000, using: &random))
                let bookie = Self.bookieIDs.randomElement(using: &random)!
                let writer = cluster.writer
                let standby = cluster.standby
                let detail: String
                switch fault {
                case .killBookie, .pauseBookie: detail = "\(bookie), \(hold)"
                case .killWriter, .pauseWriter, .dualWriters: detail = "\(writer) → \(standby), \(hold)"
                case .restartAll, .stallWriter: detail = "writer \(writer), \(hold)"
                }
                let number = injected.values.reduce(0, +) + 1
                print("ledger soak: fault \(number): \(fault.rawValue) (\(detail))")
                load.phase("fault \(number)")
                switch fault {
                case .killBookie:
                    cluster.kill(bookie)
                    try await Task.sleep(for: hold)
                    try await cluster.startBookies([bookie])
                case .pauseBookie:
                    try cluster.pause(bookie)
                    try await Task.sleep(for: hold)
                    try cluster.resume(bookie)
                case .killWriter, .pauseWriter:
                    if fault == .killWriter { cluster.kill(writer) } else { try cluster.pause(writer) }
                    cluster.writer = standby
                    load.target(standby, port: try await cluster.nodes[standby]!.tcpPort())
                    guard await load.waitForProgress(50, via: standby, within: .seconds(60)) else {
                        violations.append("\(fault.rawValue) (\(detail)): \(standby) took no writes over in 60 s")
                        injected[fault, default: 0] += 1
                        break faults
                    }
                    try await Task.sleep(for: hold)
                    if fault == .pauseWriter {
                        // The zombie wakes up: it answers what it held (adds the recovery found durable may be
                        // acknowledged; the checker finds them at their offsets), then refuses new ones.
                        let before = load.acknowledged(via: writer)
                        try cluster.resume(writer)
                        try await Task.sleep(for: .seconds(3))
                        zombie.resumed += 1
                        zombie.lateAcknowledgements += load.acknowledged(via: writer) - before
                        try await probe(writer, taken: standby)
                        cluster.kill(writer)
                    }
                    // The old writer's streams took no appends since it was fenced: a new process is the standby.
                    try await cluster.startWriter(writer)
                case .dualWriters:
                    // Half the publishers stay with the writer, half go to the other node, which fences the
                    // writer's ledgers when it opens the streams: the writer's publishes fail from then on.
                    let standbyPort = try await cluster.nodes[standby]!.tcpPort()
                    load.split(
                        (writer, try await cluster.nodes[writer]!.tcpPort()), (standby, standbyPort))
                    cluster.writer = standby
                    guard await load.waitForProgress(50, via: standby, within: .seconds(60)) else {
                        violations.append("\(fault.rawValue) (\(detail)): \(standby) took no writes over in 60 s")
                        injected[fault, default: 0] += 1
                        break faults
                    }
                    try await Task.sleep(for: hold)
                    load.target(standby, port: standbyPort)
                    try await probe(writer, taken: standby)
                    cluster.kill(writer)
                    try await cluster.startWriter(writer)
                case .stallWriter:
                    // A pause past bookieTimeoutMs (a long GC, an overloaded machine): every request in flight
                    // times out at once when the writer runs again; the writer must carry on.
                    try cluster.pause(writer)
                    try await Task.sleep(for: hold + .seconds(2))
                    try cluster.resume(writer)
                case .restartAll:
                    cluster.killAll()
                    try await Task.sleep(for: hold)
                    try await cluster.startBookies(Self.bookieIDs)
                    try await cluster.startWriter(writer)
                    try await cluster.startWriter(standby)
                    load.target(writer, port: try await cluster.nodes[writer]!.tcpPort())
                }
                injected[fault, default: 0] += 1
                load.phase("after fault \(number)")
                guard await load.waitForProgress(100, within: .seconds(60)) else {
                    violations.append("no writes for 60 s after \(fault.rawValue) (\(detail))")
                    break faults
                }
            }
            await load.stop()

            // Heal everything, then read every topic from the writer and from the other node.
            try await cluster.healAll()
            var reads: [String: [String: [UInt64: CloudEvent]]] = [:]
            for node in [cluster.writer, cluster.standby] {
                let reader = try await PlexusClient.connect(
                    ClientConfiguration(port: try await cluster.nodes[node]!.tcpPort(), name: "check", reconnect: false)
                )
                for topic in Self.topics {
                    let highest = load.snapshot(topic).acknowledged.values.max() ?? 0
                    reads[topic, default: [:]][node] = try await readBack(
                        reader, topic: topic, through: highest, settle: .milliseconds(500), group: "check-\(node)")
                }
                await reader.close()
            }
            var visible = 0
            for topic in Self.topics {
                let first = reads[topic]![cluster.writer]!
                let second = reads[topic]![cluster.standby]!
                visible += first.count
                violations += Self.check(
                    topic, received: first, snapshot: load.snapshot(topic), published: load.published.events,
                    probes: load.probes)
                // The second read took the streams over: it may hold more (a failed writer's view ends at its LAC;
                // recovery keeps the durable entries of publishes that failed), never less or other events.
                let differing = first.keys.filter { first[$0] != second[$0] }.sorted()
                if !differing.isEmpty {
                    violations.append(
                        "\(topic): \(cluster.writer) reads \(first.count) events, \(cluster.standby) \(second.count); "
                            + "offsets differing: \(differing.prefix(10))")
                }
                violations += Self.check(
                    topic, received: second, snapshot: load.snapshot(topic), published: load.published.events,
                    probes: load.probes
                ).map { "read through \(cluster.standby): \($0)" }
            }

            let faultCounts = Fault.allCases.map { "\($0.rawValue) \(injected[$0] ?? 0)" }.joined(separator: ", ")
            print(
                "ledger soak (seed \(seed), \(duration)): \(load.sent) events sent, \(load.acknowledgedTotal) "
                    + "acknowledged (by node: \(load.acknowledgedByNode)), \(load.timeouts) batches timed out; "
                    + "\(injected.values.reduce(0, +)) faults (\(faultCounts)); zombie: \(zombie.resumed) resumed, "
                    + "\(zombie.lateAcknowledgements) late acknowledgements; publishes through a taken-over writer: "
                    + "\(probes.refusedFenced) refused as fenced, \(probes.refusedOtherwise) otherwise, "
                    + "\(probes.accepted) accepted; \(visible) events read back from \(cluster.writer) and "
                    + "\(cluster.standby); \(violations.count) violation(s)"
                    + (violations.isEmpty ? "" : ":\n  " + violations.prefix(40).joined(separator: "\n  ")))
            print("ledger soak: publishes that failed: \(load.failures)")
            // Thrown, so that the nodes' logs and data stay for a look.
            try #require(violations.isEmpty, "ledger soak (seed \(seed)): \(violations.count) violation(s)")
        }
    }

    /// What one topic's read-back breaks of the promises: every acknowledged event at its offset, the offsets
    /// dense from 0, every visible event published as it is (never a publish a fenced writer refused), none
    /// twice.
    static func check(
        _ topic: String, received: [UInt64: CloudEvent], snapshot: LedgerSnapshot, published: [String: CloudEvent],
        probes: Set<String>
    ) -> [String] {
        var violations: [String] = []
        for (id, offset) in snapshot.acknowledged.sorted(by: { $0.value < $1.value }) where received[offset]?.id != id {
            violations.append(
                "\(topic): \(id) was acknowledged at offset \(offset), which holds "
                    + (received[offset].map { "\($0.id)" } ?? "nothing"))
        }
        let end = (received.keys.max() ?? 0) + 1
        if !received.isEmpty, let gap = (0..<end).first(where: { received[$0] == nil }) {
            violations.append("\(topic): offset \(gap) is missing below the last visible offset \(end - 1)")
        }
        for (offset, event) in received.sorted(by: { $0.key < $1.key }) {
            if probes.contains(event.id) {
                violations.append("\(topic): offset \(offset) holds \(event.id), a publish a fenced writer refused")
            } else if published[event.id] != event {
                violations.append("\(topic): offset \(offset) holds \(event.id), which nobody published as it is")
            }
        }
        var seen: [String: UInt64] = [:]
        for (offset, event) in received.sorted(by: { $0.key < $1.key }) {
            if let earlier = seen[event.id] {
                violations.append("\(topic): \(event.id) is visible twice, at \(earlier) and \(offset)")
            }
            seen[event.id] = offset
        }
        return violations
    }
}

/// The soak's nodes: five bookies (started again on their ports), two writer-capable nodes, etcd's port and the
/// metadata prefix.
/// Each `NodeProcess` kills its process when let go, so a failed soak leaves nothing running.
final class LedgerSoakCluster {
    let directory: TestDirectory
    let etcdPort: Int
    let prefix = "/plexus-ledger-soak"
    /// The bookies as first started (their ports and data directories, to start them again on).
    private var bookies: [String: LedgerCluster.Bookie] = [:]
    /// The `bookies` setting of the writers.
    private var setting = ""
    /// Every node's current process, by id.
    var nodes: [String: NodeProcess] = [:]
    private(set) var paused: Set<String> = []
    private var starts = 0
    /// The node the publishers write through, and the other.
    var writer = "w1"
    var standby: String { writer == "w1" ? "w2" : "w1" }

    private init(directory: TestDirectory, etcdPort: Int) {
        self.directory = directory
        self.etcdPort = etcdPort
    }

    /// Starts the five bookies and the two writer nodes.
    static func start(_ directory: TestDirectory, etcdPort: Int) async throws -> LedgerSoakCluster {
        let cluster = LedgerSoakCluster(directory: directory, etcdPort: etcdPort)
        let started = try await LedgerCluster.startBookies(
            LedgerClusterSoakTests.bookieIDs, in: directory, intervalMs: 60_000)
        for bookie in started {
            cluster.bookies[bookie.id] = bookie
            cluster.nodes[bookie.id] = bookie.node
        }
        cluster.setting = LedgerCluster.setting(started)
        try await cluster.startWriter("w1")
        try await cluster.startWriter("w2")
        return cluster
    }

    /// Starts bookies again on their ports and data.
    func startBookies(_ ids: [String]) async throws {
        for id in ids {
            starts += 1
            nodes[id] = try await LedgerCluster.restart(
                bookies[id]!, in: directory, intervalMs: 60_000, run: "run-\(starts)")
            paused.remove(id)
        }
    }

    /// Starts a writer node (again).
    func startWriter(_ id: String) async throws {
        nodes[id] = try await LedgerWriterFailoverTests.startWriter(
            id, directory, etcdPort: etcdPort, prefix: prefix, bookies: setting)
        paused.remove(id)
    }

    /// kill -9 of every node at once (SIGKILL to all, then each reaped).
    func killAll() {
        for node in nodes.values where node.process.isRunning { Glibc.kill(node.process.processIdentifier, SIGKILL) }
        for id in nodes.keys { kill(id) }
    }

    /// kill -9 (also of a stopped process).
    func kill(_ id: String) {
        nodes[id]?.kill()
        paused.remove(id)
    }

    func pause(_ id: String) throws {
        guard let node = nodes[id], node.process.isRunning else {
            throw SetupError(description: "\(id) is not running")
        }
        Glibc.kill(node.process.processIdentifier, SIGSTOP)
        paused.insert(id)
    }

    func resume(_ id: String) throws {
        guard let node = nodes[id] else { throw SetupError(description: "no node \(id)") }
        Glibc.kill(node.process.processIdentifier, SIGCONT)
        paused.remove(id)
    }

    /// Resumes every stopped node and starts every dead one.
    func healAll() async throws {
        for id in paused { try resume(id) }
        let dead = nodes.filter { !$0.value.process.isRunning }.keys
        let deadBookies = LedgerClusterSoakTests.bookieIDs.filter { dead.contains($0) }
        if !deadBookies.isEmpty { try await startBookies(deadBookies) }
        for id in ["w1", "w2"] where dead.contains(id) { try await startWriter(id) }
    }
}

/// Four publishers sending batches of 1-3 acknowledged events, two to each topic, through the current writer
/// node; they follow it when the soak moves it (`target`). Each topic's `ClusterWorkload` is used only for its
/// `publish` (timeouts, late acknowledgements) and its `PublishLedger`; `published` keeps every event as sent.
final class LedgerSoakLoad: Sendable {
    static let publishers = 4

    enum ProbeOutcome {
        case acknowledged(UInt64)
        case refused(String)
    }

    let published = Published()
    private let workloads: [String: ClusterWorkload]
    /// Where each publisher sends (by publisher number modulo the count).
    private let current: Mutex<[(node: String, port: Int)]>
    private let probeIDs = Mutex<Set<String>>([])
    /// Each distinct failure (node, topic, message with digits masked) with its count.
    private let failureKinds = Mutex<[String: Int]>([:])
    private let currentPhase = Mutex("warm-up")
    private let stopping = StopFlag()
    private let maxEvents: Int
    private let running = Mutex<Task<Void, Never>?>(nil)

    init(writer: String, port: Int, pace: Duration, maxEvents: Int, duration: Duration) {
        var workloads: [String: ClusterWorkload] = [:]
        for topic in LedgerClusterSoakTests.topics {
            var configuration = ClusterWorkload.Configuration()
            configuration.topic = topic
            configuration.publishTimeout = .seconds(5)
            workloads[topic] = ClusterWorkload(ports: [:], configuration: configuration)
        }
        self.workloads = workloads
        self.maxEvents = maxEvents
        current = Mutex([(writer, port)])
        let task = Task { [self] in
            await withTaskGroup(of: Void.self) { group in
                for number in 0..<Self.publishers {
                    group.addTask { await self.publish(as: number, pace: pace, until: .now + duration) }
                }
            }
        }
        running.withLock { $0 = task }
    }

    /// Sends the publishers to `node` on `port`.
    func target(_ node: String, port: Int) { current.withLock { $0 = [(node, port)] } }

    /// Sends publishers 0 and 1 (one per topic) to `first`, 2 and 3 to `second`.
    func split(_ first: (node: String, port: Int), _ second: (node: String, port: Int)) {
        current.withLock { $0 = [first, first, second, second] }
    }

    func stop() async {
        stopping.set()
        await running.withLock { $0 }?.value
    }

    var sent: Int { workloads.values.reduce(0) { $0 + $1.ledger.sentCount } }
    var acknowledgedTotal: Int { workloads.values.reduce(0) { $0 + $1.ledger.acknowledgedCount } }
    var timeouts: Int { workloads.values.reduce(0) { $0 + $1.ledger.timeoutCount } }
    var probes: Set<String> { probeIDs.withLock { $0 } }
    var acknowledgedByNode: String {
        var byNode: [String: Int] = [:]
        for workload in workloads.values { byNode.merge(workload.ledger.acknowledgedVia, uniquingKeysWith: +) }
        return byNode.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
    }

    func acknowledged(via node: String) -> Int {
        workloads.values.reduce(0) { $0 + ($1.ledger.acknowledgedVia[node] ?? 0) }
    }

    /// The publishes refused or lost, by kind (node, topic and message, numbers masked), most frequent first.
    var failures: String {
        failureKinds.withLock { kinds in
            kinds.isEmpty
                ? "none"
                : kinds.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.value)× \($0.key)" }
                    .joined(separator: "; ")
        }
    }

    /// Names what the soak does now (for the first failure of each kind, printed as it happens).
    func phase(_ name: String) { currentPhase.withLock { $0 = name } }

    private func noteFailure(_ description: String) {
        let kind = description.replacingOccurrences(of: #"\b[0-9]+\b"#, with: "N", options: .regularExpression)
        let first = failureKinds.withLock { kinds in
            defer { kinds[kind, default: 0] += 1 }
            return kinds[kind] == nil
        }
        if first { print("ledger soak: \(currentPhase.withLock { $0 }): a publish failed: \(description)") }
    }

    func snapshot(_ topic: String) -> LedgerSnapshot { workloads[topic]!.ledger.snapshot }

    /// Waits until `more` events beyond those acknowledged now are acknowledged (through `node` when given).
    func waitForProgress(_ more: Int, via node: String? = nil, within timeout: Duration) async -> Bool {
        let count = { node.map { self.acknowledged(via: $0) } ?? self.acknowledgedTotal }
        let goal = count() + more
        let deadline = ContinuousClock.now + timeout
        while count() < goal {
            if ContinuousClock.now > deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// Publishes one event through a new connection to `node` (a writer whose streams were taken over).
    func probe(_ node: NodeProcess, topic: String) async throws -> ProbeOutcome {
        let id = "zombie-probe-\(probeIDs.withLock { $0.count })"
        probeIDs.withLock { _ = $0.insert(id) }
        let client = try await PlexusClient.connect(
            ClientConfiguration(
                port: try await node.tcpPort(), name: "zombie-probe", requestTimeout: .seconds(30), reconnect: false))
        defer { Task { await client.close(timeout: .milliseconds(100)) } }
        do {
            return .acknowledged(
                try await client.publish(topic: topic, CloudEvent(id: id, source: "/ledger-soak", type: "t")))
        } catch {
            return .refused("\(error)")
        }
    }

    /// One publisher: connects to the current writer, publishes until told to stop (or the bound), and
    /// reconnects when the writer moves or its connection fails. Connections it left stay open until it ends,
    /// so that a resumed zombie's late answers are still recorded.
    private func publish(as number: Int, pace: Duration, until deadline: ContinuousClock.Instant) async {
        let topic = LedgerClusterSoakTests.topics[number % LedgerClusterSoakTests.topics.count]
        let workload = workloads[topic]!
        var client: (connection: PlexusClient, node: String, port: Int)?
        var left: [PlexusClient] = []
        var sequence = 0
        while !stopping.isSet && ContinuousClock.now < deadline && sent < maxEvents {
            let (node, port) = current.withLock { $0[number % $0.count] }
            guard let connected = client, connected.port == port else {
                if let client { left.append(client.connection) }
                client = nil
                if let connection = try? await PlexusClient.connect(
                    ClientConfiguration(
                        port: port, name: "soak-\(number)", connectTimeout: .seconds(1), requestTimeout: .seconds(60),
                        reconnect: false))
                {
                    client = (connection, node, port)
                } else {
                    try? await Task.sleep(for: .milliseconds(100))
                }
                continue
            }
            let batch = (0..<(1 + sequence % 3)).map { i in
                CloudEvent(
                    id: "s\(number)-\(sequence)-\(i)", source: "/ledger-soak", type: "io.plexus.soak",
                    data: Array("event \(number)/\(sequence)/\(i) ".utf8) + Array(repeating: UInt8(97 + i), count: 64))
            }
            sequence += 1
            published.add(batch)
            switch await workload.publish(batch, with: connected.connection, via: connected.node) {
            case .acknowledged, .timedOut:
                if pace > .zero { try? await Task.sleep(for: pace) }
            case .failed(let error):
                noteFailure("\(connected.node) \(topic): \(error)")
                left.append(connected.connection)
                client = nil
                try? await Task.sleep(for: .milliseconds(50))
            }
        }
        for connection in left + (client.map { [$0.connection] } ?? []) { await connection.close(timeout: .seconds(1)) }
    }
}
