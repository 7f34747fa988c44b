import Foundation
import PlexusBench
import PlexusClient
import Synchronization

/// What a run of the benchmark does: its sections, levels and durations, and where the systems come from.
public struct RaftBenchSettings: Sendable {
    public var installation: PlexusInstallation
    /// A directory for data directories, logs and the ceiling's file, on the disk being measured.
    public var workDirectory: String
    public var etcd = "etcd"
    public var concurrency = [1, 16, 128]
    public var warmup: Duration = .seconds(2)
    public var duration: Duration = .seconds(10)
    public var singleDuration: Duration = .seconds(5)
    public var rounds = 3
    public var payloadSize = 1024
    public var kills = 20
    public var failoverRate = 100.0
    /// More raft-log values for the three members (`KEY=VALUE`), e.g. `electionTimeoutMs=300`.
    public var raftValues: [String] = []
    /// More ledger-storage values for the three ledger nodes (`KEY=VALUE`), e.g. `ackQuorum=1`.
    public var ledgerValues: [String] = []
    public var logLevel = "warning"

    public init(installation: PlexusInstallation, workDirectory: String) {
        self.installation = installation
        self.workDirectory = workDirectory
    }
}

/// The three sections of `make bench-raft`. Each catches its own failures and reports them in its result, so
/// that one part that cannot run (a missing feature, a server that does not start) does not hide the others.
public struct RaftBenchSections: Sendable {
    public var settings: RaftBenchSettings
    public var progress: @Sendable (String) -> Void

    public init(settings: RaftBenchSettings, progress: @escaping @Sendable (String) -> Void) {
        self.settings = settings
        self.progress = progress
    }

    private var loopShape: (warmup: Duration, duration: Duration) { (settings.warmup, settings.duration) }

    // MARK: Three members against etcd

    /// Three Plexus members and three etcd members, both up at once; at each concurrency Plexus, then etcd.
    public func durable() async -> RaftBenchReport.Durable {
        var report = RaftBenchReport.Durable()
        let payload = benchPayload(size: settings.payloadSize)
        let topic = "raftbench"

        progress("3 members: starting plexus a, b, c")
        var plexus: (cluster: PlexusCluster, client: PlexusClient, leader: String)?
        do {
            let cluster = try await PlexusCluster.replicated(
                installation: settings.installation, directory: settings.workDirectory,
                extraRaftValues: settings.raftValues, logLevel: settings.logLevel)
            do {
                try await cluster.prime(stream: topic, through: cluster.nodes[0])
                let leader = try await cluster.leader(of: topic)
                progress("3 members: plexus leader of '\(topic)' is \(leader.id) (127.0.0.1:\(leader.tcpPort))")
                let client = try await PlexusWriteTarget.connect(
                    host: Loopback.host, port: leader.tcpPort, name: "bench-raft")
                plexus = (cluster, client, leader.id)
            } catch {
                cluster.stop()
                throw error
            }
        } catch {
            report.plexusError = "\(error)"
            progress("3 members: plexus not run: \(error)")
        }

        progress("3 members: starting etcd-1, etcd-2, etcd-3")
        var etcd: (cluster: EtcdCluster, client: EtcdClient, leader: String)?
        do {
            let cluster = try await EtcdCluster.start(
                executable: settings.etcd, directory: settings.workDirectory + "/etcd")
            do {
                let (leader, status) = try await cluster.leader()
                report.etcdVersion = status.version
                progress("3 members: etcd leader is \(leader.name) (127.0.0.1:\(leader.clientPort)), \(status.version)")
                let client = try EtcdClient(host: Loopback.host, port: leader.clientPort)
                _ = try await client.put(key: Array("bench/prime".utf8), value: payload)
                etcd = (cluster, client, leader.name)
            } catch {
                cluster.stop()
                throw error
            }
        } catch {
            report.etcdError = "\(error)"
            progress("3 members: etcd not run: \(error)")
        }

        for concurrency in settings.concurrency {
            var row = RaftBenchReport.DurableRow(concurrency: concurrency)
            let loop = ClosedLoop(concurrency: concurrency, warmup: loopShape.warmup, duration: loopShape.duration)
            if let plexus {
                progress("3 members: plexus, \(concurrency) in flight")
                row.plexus = await loop.run(PlexusWriteTarget(client: plexus.client, topic: topic, payload: payload))
                if let now = try? await plexus.cluster.leader(of: topic, timeout: .seconds(5)), now.id != plexus.leader
                {
                    report.notes.append(
                        "plexus: the leader moved from \(plexus.leader) to \(now.id) by the end of C=\(concurrency); "
                            + "later writes were forwarded")
                }
            }
            if let etcd {
                progress("3 members: etcd, \(concurrency) in flight")
                row.etcd = await loop.run(
                    EtcdWriteTarget(client: etcd.client, prefix: "bench/c\(concurrency)/", payload: payload))
                if let now = try? await etcd.cluster.leader(timeout: .seconds(5)), now.member.name != etcd.leader {
                    report.notes.append(
                        "etcd: the leader moved from \(etcd.leader) to \(now.member.name) by the end of C=\(concurrency)"
                    )
                }
            }
            report.rows.append(row)
        }

        if let plexus {
            await plexus.client.close()
            let acknowledged = report.rows.compactMap(\.plexus).reduce(UInt64(0)) { $0 + $1.completed }
            report.notes.append(await plexus.cluster.checkReplicas(stream: topic, acknowledged: acknowledged))
            plexus.cluster.stop()
        }
        if let etcd {
            await etcd.client.close()
            etcd.cluster.stop()
        }
        return report
    }

    // MARK: Ledgers against raft-log

    /// Three ledger-storage nodes (bookies; E=3, Qw=2, Qa=2) and three raft-log members, both up at once; at
    /// each concurrency raft-log, then the ledger, through one node each: raft's leader, the ledger's writer.
    public func ledger() async -> RaftBenchReport.Ledger {
        var report = RaftBenchReport.Ledger()
        let payload = benchPayload(size: settings.payloadSize)
        let topic = "ledgerbench"

        progress("ledger: starting ledger-storage nodes a, b, c (bookies)")
        var ledger: (cluster: PlexusCluster, client: PlexusClient)?
        do {
            let cluster = try await PlexusCluster.ledger(
                installation: settings.installation, directory: settings.workDirectory,
                extraLedgerValues: settings.ledgerValues, logLevel: settings.logLevel)
            do {
                let writer = cluster.nodes[0]
                try await cluster.prime(stream: topic, through: writer)
                let client = try await PlexusWriteTarget.connect(
                    host: Loopback.host, port: writer.tcpPort, name: "bench-ledger")
                ledger = (cluster, client)
            } catch {
                cluster.stop()
                throw error
            }
        } catch {
            report.ledgerError = "\(error)"
            progress("ledger: ledger-storage not run: \(error)")
        }

        progress("ledger: starting raft-log members a, b, c")
        var raft: (cluster: PlexusCluster, client: PlexusClient)?
        do {
            let cluster = try await PlexusCluster.replicated(
                installation: settings.installation, directory: settings.workDirectory + "/raft",
                extraRaftValues: settings.raftValues, logLevel: settings.logLevel)
            do {
                try await cluster.prime(stream: topic, through: cluster.nodes[0])
                let leader = try await cluster.leader(of: topic)
                let client = try await PlexusWriteTarget.connect(
                    host: Loopback.host, port: leader.tcpPort, name: "bench-ledger-raft")
                raft = (cluster, client)
            } catch {
                cluster.stop()
                throw error
            }
        } catch {
            report.raftError = "\(error)"
            progress("ledger: raft-log not run: \(error)")
        }

        for concurrency in settings.concurrency {
            var row = RaftBenchReport.LedgerRow(concurrency: concurrency)
            let loop = ClosedLoop(concurrency: concurrency, warmup: loopShape.warmup, duration: loopShape.duration)
            if let raft {
                progress("ledger: raft-log, \(concurrency) in flight")
                row.raft = await loop.run(PlexusWriteTarget(client: raft.client, topic: topic, payload: payload))
            }
            if let ledger {
                progress("ledger: ledger-storage, \(concurrency) in flight")
                row.ledger = await loop.run(PlexusWriteTarget(client: ledger.client, topic: topic, payload: payload))
            }
            report.rows.append(row)
        }
        if let ledger {
            await ledger.client.close()
            ledger.cluster.stop()
        }
        if let raft {
            await raft.client.close()
            raft.cluster.stop()
        }
        return report
    }

    // MARK: One member against the group-commit ceiling

    /// raft-log's counters on a node at one instant.
    struct Counters: Sendable {
        var appends: UInt64 = 0
        var groupCommits: UInt64 = 0
        var bytes: UInt64 = 0

        static func read(_ node: PlexusNode) async throws -> Counters {
            async let appends = node.counter("appends")
            async let commits = node.counter("group-commits")
            async let bytes = node.counter("bytes-on-disk")
            return try await Counters(appends: appends, groupCommits: commits, bytes: bytes)
        }
    }

    /// One node with raft-log's defaults; at each concurrency, `rounds` times: the closed loop over TCP, then
    /// the ceiling measured on its own at its best grouping for the same window.
    public func single() async -> RaftBenchReport.Single {
        var report = RaftBenchReport.Single()
        let payload = benchPayload(size: settings.payloadSize)
        let topic = "raftbench-single"
        progress("1 member: starting plexus with raft-log's defaults")
        let cluster: PlexusCluster
        do {
            cluster = try await PlexusCluster.single(
                installation: settings.installation, directory: settings.workDirectory, logLevel: settings.logLevel)
        } catch {
            report.error = "\(error)"
            return report
        }
        defer { cluster.stop() }
        let node = cluster.nodes[0]
        do {
            try await cluster.prime(stream: topic, through: node)
            let client = try await PlexusWriteTarget.connect(
                host: Loopback.host, port: node.tcpPort, name: "bench-raft")
            let target = PlexusWriteTarget(client: client, topic: topic, payload: payload)
            for concurrency in settings.concurrency {
                var rounds: [RaftBenchReport.SingleRow] = []
                for round in 1...max(1, settings.rounds) {
                    progress("1 member: \(concurrency) in flight, round \(round) of \(settings.rounds)")
                    rounds.append(try await singleRound(node: node, target: target, concurrency: concurrency))
                }
                report.rows.append(Self.median(rounds))
            }
            await client.close()
        } catch {
            report.error = "\(error)"
        }
        return report
    }

    private func singleRound(node: PlexusNode, target: PlexusWriteTarget, concurrency: Int) async throws
        -> RaftBenchReport.SingleRow
    {
        let snapshots = Mutex<[Result<Counters, HarnessError>]>([])
        @Sendable func snapshot() async {
            let result: Result<Counters, HarnessError>
            do { result = .success(try await Counters.read(node)) } catch let error as HarnessError {
                result = .failure(error)
            } catch { result = .failure(HarnessError("\(error)")) }
            snapshots.withLock { $0.append(result) }
        }
        let loop = ClosedLoop(concurrency: concurrency, warmup: settings.warmup, duration: settings.singleDuration)
        let measured = await loop.run(target, atWindowStart: snapshot, atWindowEnd: snapshot)
        let taken = snapshots.withLock { $0 }
        guard taken.count == 2 else {
            throw HarnessError("raft-log's counters were not read at both ends of the window")
        }
        let before = try taken[0].get()
        let after = try taken[1].get()
        let appends = after.appends &- before.appends
        let commits = after.groupCommits &- before.groupCommits
        guard appends > 0, commits > 0, after.bytes > before.bytes else {
            throw HarnessError(
                "raft-log counted \(appends) appends and \(commits) group commits in the window; "
                    + "\(measured.completed) publishes were acknowledged (errors: \(measured.errorSamples.first ?? "none"))"
            )
        }
        let eventsPerSync = Double(appends) / Double(commits)
        let entryBytes = Int((after.bytes - before.bytes) / appends)
        // The ceiling is measured on its own, at the raw loop's best grouping for the same window, not at the
        // node's events per fsync: a node that groups poorly shows as a low ratio.
        let path = settings.workDirectory + "/ceiling-\(concurrency).log"
        let seconds = Double(settings.singleDuration.nanoseconds) / 1e9
        let raw = try await Self.onThread {
            try GroupCommitCeiling.best(window: concurrency, entryBytes: entryBytes, path: path, seconds: seconds)
        }
        var row = RaftBenchReport.SingleRow(
            concurrency: concurrency, eventsPerSecond: measured.opsPerSecond, latency: measured.latency,
            errors: measured.errors, eventsPerFsync: eventsPerSync, entryBytes: entryBytes,
            ceilingEventsPerSecond: raw.measurement.eventsPerSecond, rawFsyncMicros: raw.measurement.fsyncMicros,
            ratio: measured.opsPerSecond / raw.measurement.eventsPerSecond)
        row.ceilingEventsPerFsync = raw.grouping
        return row
    }

    /// The median of each figure over the rounds (the latency of the median round by rate).
    static func median(_ rounds: [RaftBenchReport.SingleRow]) -> RaftBenchReport.SingleRow {
        func median(_ values: [Double]) -> Double {
            let sorted = values.sorted()
            guard !sorted.isEmpty else { return 0 }
            return sorted.count % 2 == 1
                ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
        }
        let byRate = rounds.sorted { $0.eventsPerSecond < $1.eventsPerSecond }
        var row = byRate[(byRate.count - 1) / 2]
        row.eventsPerSecond = median(rounds.map(\.eventsPerSecond))
        row.eventsPerFsync = median(rounds.map(\.eventsPerFsync))
        row.ceilingEventsPerSecond = median(rounds.map(\.ceilingEventsPerSecond))
        row.ceilingEventsPerFsync =
            rounds.sorted { $0.ceilingEventsPerSecond < $1.ceilingEventsPerSecond }[(rounds.count - 1) / 2]
            .ceilingEventsPerFsync
        row.rawFsyncMicros = median(rounds.map(\.rawFsyncMicros))
        row.ratio = median(rounds.map(\.ratio))
        row.roundRatios = rounds.map(\.ratio)
        row.errors = rounds.reduce(0) { $0 + $1.errors }
        return row
    }

    /// Runs blocking `body` on a thread of its own, off Swift's cooperative pool.
    static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread { continuation.resume(with: Result { try body() }) }
            thread.name = "plexus-bench-raft-ceiling"
            thread.start()
        }
    }

    // MARK: Failover

    /// Three members; `kills` times: kill -9 the leader, time the first acknowledged write, restart it, wait
    /// for it to catch up.
    public func failover() async -> RaftBenchReport.Failover {
        var report = RaftBenchReport.Failover()
        progress("failover: starting plexus a, b, c")
        let cluster: PlexusCluster
        do {
            cluster = try await PlexusCluster.replicated(
                installation: settings.installation, directory: settings.workDirectory + "/failover",
                extraRaftValues: settings.raftValues, logLevel: settings.logLevel)
        } catch {
            report.error = "\(error)"
            return report
        }
        defer { cluster.stop() }
        let test = FailoverTest(kills: settings.kills, rate: settings.failoverRate, payloadSize: settings.payloadSize)
        do {
            report.summary = try await test.run(cluster: cluster, stream: "raftbench-failover", progress: progress)
        } catch {
            report.error = "\(error)"
        }
        return report
    }
}
