import Foundation
import PlexusClient
import PlexusKernel
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `plexus plugin call raft-log status` of one node (the raft-log contract, "Operations").
struct RaftStatus: Decodable, Sendable {
    var node: String
    var streams: [StreamStatus]
}

/// One stream (Raft group) as one node sees it.
struct StreamStatus: Decodable, Sendable, CustomStringConvertible {
    struct Peer: Decodable, Sendable {
        var id: String
        var match: UInt64
        var active: Bool?
    }

    var stream: String
    /// leader, follower, candidate, precandidate or learner.
    var role: String
    var term: UInt64
    /// "" when unknown.
    var leader: String
    var commitIndex: UInt64
    var lastIndex: UInt64
    var firstIndex: UInt64
    /// The offset after the last committed event.
    var nextOffset: UInt64
    /// The chained CRC of the entry at `commitIndex`.
    var commitChain: UInt32
    /// Only on the leader.
    var peers: [Peer]?
    /// Non-zero while the member lacks entries it lost to damage and neither votes nor stands (absent from
    /// older builds).
    var recoveringUntil: UInt64?

    var description: String {
        "\(role) term \(term) leader '\(leader)' commit \(commitIndex) last \(lastIndex) next offset \(nextOffset)"
            + (peers.map { " peers " + $0.map { "\($0.id):\($0.match)" }.joined(separator: ",") } ?? "")
    }
}

/// Three (or more) `plexus serve` nodes on 127.0.0.1 running raft-log as one replicated cluster, with a
/// `FaultProxy` on every directed node-to-node link, and the faults the tests inject.
///
/// Each member has its own directory (data, manifests, one `run-N` directory of logs per start), its own TCP
/// port and raft port (fixed, so a restart keeps them) and an ephemeral admin port; HTTP is on port 0. Its
/// raft-log config (the raft-log contract): `nodeId` = its id, `listen` = its real raft port, `peers` = itself
/// at its real port and every other member at the port of the proxy for the link from this member to that
/// one. So `cut(from: "a", to: "b")` severs the connections a opens to b and nothing else.
///
/// - Important: Not thread-safe: one test drives it from its own task. Call `shutdown()` at the end (or use
///   `RaftCluster.run`), which kills every node it started and stops the proxies.
final class RaftCluster {
    /// A directed link: the connections `from` opens to `to`.
    struct Link: Hashable, CustomStringConvertible {
        var from: String
        var to: String
        var description: String { "\(from)→\(to)" }
    }

    final class Member {
        let id: String
        let home: URL
        let data: URL
        let raftPort: Int
        let tcpPort: Int
        var raftValues: [String: String]
        var manifests: URL
        var process: NodeProcess?
        var starts = 0
        var paused = false

        init(
            id: String, home: URL, data: URL, raftPort: Int, tcpPort: Int, raftValues: [String: String], manifests: URL
        ) {
            self.id = id
            self.home = home
            self.data = data
            self.raftPort = raftPort
            self.tcpPort = tcpPort
            self.raftValues = raftValues
            self.manifests = manifests
        }

        var isRunning: Bool { process?.process.isRunning ?? false }
    }

    let directory: TestDirectory
    let ids: [String]
    let members: [String: Member]
    let proxies: [Link: FaultProxy]
    /// Set by a failed check or a thrown error: `run` keeps the directory (logs, data) and prints where.
    private(set) var failed = false

    /// The raft-log values every fault test uses unless it overrides them: small segments, so that a few
    /// thousand events span several files.
    static let defaultRaftValues = ["segmentBytes": "65536", "fsync": "always"]

    private init(directory: TestDirectory, ids: [String], members: [String: Member], proxies: [Link: FaultProxy]) {
        self.directory = directory
        self.ids = ids
        self.members = members
        self.proxies = proxies
    }

    // MARK: Starting and stopping

    /// Fails unless the shipped raft-log declares its replicated mode: the `nodeId`, `peers` and `listen`
    /// config keys and the `status` operation of the raft-log contract.
    /// - Throws: `SetupError` saying what is missing and that the cluster tests wait for it.
    static func requireReplication() throws {
        let path = Repository.root.appendingPathComponent("plugin-manifests/raft-log.yaml")
        let text = try String(contentsOf: path, encoding: .utf8)
        let manifest: Manifest
        do {
            manifest = try ManifestParser.parse(text, path: "plugin-manifests/raft-log.yaml")
        } catch {
            throw SetupError(
                description: "plugin-manifests/raft-log.yaml does not parse with this kernel: \(error)")
        }
        let keys = ["nodeId", "peers", "listen", "electionTimeoutMs"].filter { key in
            !manifest.configSchema.keys.contains { $0.name == key }
        }
        let operations = ["status"].filter { name in !manifest.operations.contains { $0.name == name } }
        guard keys.isEmpty && operations.isEmpty else {
            throw SetupError(
                description: "the three-node fault tests need raft-log's replication (issue 6, stage 2), which this "
                    + "build lacks: plugin-manifests/raft-log.yaml declares "
                    + (keys.isEmpty ? "" : "no config key \(keys.joined(separator: ", "))")
                    + (keys.isEmpty || operations.isEmpty ? "" : " and ")
                    + (operations.isEmpty ? "" : "no operation \(operations.joined(separator: ", "))")
                    + ". These tests fail until it lands; run them alone with `swift test --filter RaftClusterTests` "
                    + "(the soak: `make soak`).")
        }
    }

    /// Starts a cluster of `ids` (three by default) in a new test directory, runs `body` and shuts the
    /// cluster down whatever happens. The directory is removed unless something failed.
    ///
    /// `replicated: false` starts the same nodes, ports and proxies with raft-log's single-member defaults
    /// instead (no `nodeId`, `peers`, `listen`): three independent nodes, for testing the harness itself.
    static func run(
        ids: [String] = ["a", "b", "c"], raftValues: [String: String] = [:], replicated: Bool = true,
        _ body: (RaftCluster) async throws -> Void
    ) async throws {
        // One cluster at a time in this process: three nodes and their load already fill a two-core machine, and
        // the suites that use clusters would otherwise run side by side.
        await ClusterGate.shared.acquire()
        do {
            try await runAlone(ids: ids, raftValues: raftValues, replicated: replicated, body)
        } catch {
            await ClusterGate.shared.release()
            throw error
        }
        await ClusterGate.shared.release()
    }

    private static func runAlone(
        ids: [String], raftValues: [String: String], replicated: Bool, _ body: (RaftCluster) async throws -> Void
    ) async throws {
        if replicated { try requireReplication() }
        let directory = try TestDirectory()
        let cluster: RaftCluster
        do {
            cluster = try await start(ids: ids, raftValues: raftValues, replicated: replicated, in: directory)
        } catch {
            print("raft cluster: could not start; logs in \(directory.url.path)")
            throw error
        }
        do {
            try await body(cluster)
        } catch {
            cluster.failed = true
            print("raft cluster: \(error)\n\(cluster.diagnostics())")
            cluster.shutdown()
            print("raft cluster: logs and data kept in \(directory.url.path)")
            throw error
        }
        cluster.shutdown()
        if cluster.failed {
            print("raft cluster: logs and data kept in \(directory.url.path)")
        } else {
            directory.remove()
        }
    }

    /// Picks the ports, makes the proxies and manifests and starts every member.
    static func start(ids: [String], raftValues: [String: String], replicated: Bool, in directory: TestDirectory)
        async throws -> RaftCluster
    {
        var ports = Set<Int>()
        func freshPort() throws -> Int {
            for _ in 0..<20 {
                let port = try TCPReconnectionTests.freePort()
                if ports.insert(port).inserted { return port }
            }
            throw SetupError(description: "no fresh free port")
        }
        var raftPorts: [String: Int] = [:]
        var tcpPorts: [String: Int] = [:]
        for id in ids {
            raftPorts[id] = try freshPort()
            tcpPorts[id] = try freshPort()
        }
        var proxies: [Link: FaultProxy] = [:]
        for from in ids {
            for to in ids where to != from {
                // A proxy listens on a port of its own choosing, which must not be one picked for a node.
                var proxy = try FaultProxy(name: "\(from)→\(to)", target: raftPorts[to]!)
                while !ports.insert(proxy.port).inserted {
                    let taken = proxy
                    proxy = try FaultProxy(name: "\(from)→\(to)", target: raftPorts[to]!)
                    taken.stop()
                }
                proxies[Link(from: from, to: to)] = proxy
            }
        }
        var members: [String: Member] = [:]
        for id in ids {
            let peers = ids.map { other in
                let port = other == id ? raftPorts[id]! : proxies[Link(from: id, to: other)]!.port
                return "\(other)=127.0.0.1:\(port)"
            }
            // Every replicated test cluster authenticates its node-to-node connections (a test fixture secret).
            let membership = [
                "nodeId": id, "listen": "127.0.0.1:\(raftPorts[id]!)", "peers": peers.joined(separator: ","),
                "clusterSecret": "test-fixture-cluster-secret",
            ]
            let values = defaultRaftValues.merging(raftValues) { $1 }.merging(replicated ? membership : [:]) { $1 }
            let home = try directory.subdirectory(id)
            let member = Member(
                id: id, home: home, data: try directory.subdirectory("\(id)/data"), raftPort: raftPorts[id]!,
                tcpPort: tcpPorts[id]!, raftValues: values,
                manifests: try Self.manifests(directory, id: id, tcpPort: tcpPorts[id]!, raftValues: values))
            members[id] = member
        }
        let cluster = RaftCluster(directory: directory, ids: ids, members: members, proxies: proxies)
        do {
            try await cluster.start(ids)
        } catch {
            cluster.shutdown()
            throw error
        }
        return cluster
    }

    private static func manifests(_ directory: TestDirectory, id: String, tcpPort: Int, raftValues: [String: String])
        throws -> URL
    {
        try directory.shippedManifests(
            intervalMs: 60_000, tcpValues: ["port": "\(tcpPort)", "node": id], raftValues: raftValues,
            name: "\(id)/manifests")
    }

    /// Starts (or restarts) a member on its data directory and ports, with raft-log as the default storage,
    /// and waits until raft-log is active on it.
    /// - Throws: `SetupError` when the node does not come up or raft-log fails to start (with its error).
    func start(_ id: String) async throws { try await start([id]) }

    /// Starts several members side by side (a replicated raft-log may wait for its peers while it starts)
    /// and waits until raft-log is active on each.
    func start(_ ids: [String]) async throws {
        var launched: [(String, NodeProcess.Launched)] = []
        var nodes: [(String, NodeProcess)] = []
        do {
            for id in ids { launched.append((id, try launch(id))) }
            for (id, pending) in launched {
                let node = try await pending.ready()
                members[id]?.process = node
                nodes.append((id, node))
            }
        } catch {
            // The ones launched but not yet handed to their member are nobody's: kill them here.
            for (id, pending) in launched
            where members[id]?.process?.process !== pending.process && pending.process.isRunning {
                Glibc.kill(pending.process.processIdentifier, SIGKILL)
                pending.process.waitUntilExit()
            }
            throw error
        }
        for (id, node) in nodes {
            let state = try await node.raftLogState()
            guard state.state == .active else {
                throw SetupError(
                    description: "raft-log on \(id) is \(state.state.rawValue), not active: \(state.lastError ?? "")")
            }
        }
    }

    /// Starts a member whose raft-log is expected to fail to start; returns raft-log's error (the node
    /// itself keeps running without it until stopped).
    /// - Throws: `SetupError` when raft-log starts after all.
    func startExpectingRaftLogFailure(_ id: String) async throws -> String {
        let node = try await launch(id).ready()
        members[id]?.process = node
        let state = try await node.raftLogState()
        guard state.state == .failed else {
            throw SetupError(description: "raft-log on \(id) is \(state.state.rawValue), expected it to fail")
        }
        return state.lastError ?? ""
    }

    private func launch(_ id: String) throws -> NodeProcess.Launched {
        let member = try self.member(id)
        guard !member.isRunning else { throw SetupError(description: "\(id) is running already") }
        member.starts += 1
        member.paused = false
        let run = try directory.subdirectory("\(id)/run-\(member.starts)")
        return try NodeProcess.launch(
            manifests: member.manifests, data: member.data, in: run, extraArguments: ["--default-storage", "raft-log"])
    }

    /// Replaces a stopped member's raft-log values (merged over its current ones) for its next start.
    func reconfigure(_ id: String, raftValues: [String: String]) throws {
        let member = try self.member(id)
        member.raftValues.merge(raftValues) { $1 }
        member.manifests = try Self.manifests(
            directory, id: id, tcpPort: member.tcpPort, raftValues: member.raftValues)
    }

    /// Kills every node (SIGKILL, after SIGCONT for paused ones) and stops every proxy.
    func shutdown() {
        for member in members.values {
            if member.paused, let process = member.process { Glibc.kill(process.process.processIdentifier, SIGCONT) }
            member.process?.kill()
        }
        for proxy in proxies.values { proxy.stop() }
    }

    // MARK: Faults

    func member(_ id: String) throws -> Member {
        guard let member = members[id] else { throw SetupError(description: "no member '\(id)' in \(ids)") }
        return member
    }

    /// The members whose node runs and is not paused.
    var live: [String] { ids.filter { members[$0]!.isRunning && !members[$0]!.paused } }

    /// kill -9.
    func kill(_ id: String) throws {
        let member = try self.member(id)
        if member.paused, let process = member.process { Glibc.kill(process.process.processIdentifier, SIGCONT) }
        member.process?.kill()
        member.paused = false
    }

    /// SIGTERM, waiting up to 15 s for a graceful stop; false if the node had to be killed.
    @discardableResult
    func stop(_ id: String) async throws -> Bool {
        let member = try self.member(id)
        guard let process = member.process, member.isRunning else { return true }
        if member.paused { try resume(id) }
        if try await process.signal(SIGTERM, waitingUpTo: .seconds(15)) { return true }
        process.kill()
        return false
    }

    /// SIGSTOP: the node keeps its sockets but does nothing.
    func pause(_ id: String) throws {
        let member = try self.member(id)
        guard let process = member.process, member.isRunning else {
            throw SetupError(description: "cannot pause \(id): not running")
        }
        Glibc.kill(process.process.processIdentifier, SIGSTOP)
        member.paused = true
    }

    /// SIGCONT.
    func resume(_ id: String) throws {
        let member = try self.member(id)
        guard let process = member.process else { return }
        Glibc.kill(process.process.processIdentifier, SIGCONT)
        member.paused = false
    }

    /// Severs the connections `from` opens to `to` and refuses new ones, until healed.
    func cut(from: String, to: String) throws { try proxy(from, to).cut() }

    func heal(from: String, to: String) throws { try proxy(from, to).heal() }

    /// Cuts every link to and from `id`.
    func isolate(_ id: String) throws {
        for other in ids where other != id {
            try cut(from: id, to: other)
            try cut(from: other, to: id)
        }
    }

    func healAll() {
        for proxy in proxies.values { proxy.heal() }
    }

    func proxy(_ from: String, _ to: String) throws -> FaultProxy {
        guard let proxy = proxies[Link(from: from, to: to)] else {
            throw SetupError(description: "no link \(from)→\(to)")
        }
        return proxy
    }

    // MARK: Observing

    /// raft-log's `status` on one node, or the reason there is none (the call times out after 5 s).
    func status(_ id: String) async -> Result<RaftStatus, SetupError> {
        guard let member = members[id], let process = member.process, member.isRunning else {
            return .failure(SetupError(description: "\(id) is not running"))
        }
        do {
            let result = try await process.call("raft-log", "status", timeout: .seconds(5))
            guard result.status == 0 else {
                return .failure(SetupError(description: "status on \(id) failed: \(result.stderr)"))
            }
            do {
                return .success(try JSONDecoder().decode(RaftStatus.self, from: Data(result.output.utf8)))
            } catch {
                return .failure(
                    SetupError(
                        description:
                            "status on \(id) is not the contract's JSON (\(error)): \(result.output.prefix(400))"))
            }
        } catch let error as SetupError {
            return .failure(error)
        } catch {
            return .failure(SetupError(description: "status on \(id): \(error)"))
        }
    }

    /// Every listed node's view of `stream` (a node that does not answer or lacks the stream is absent), and
    /// what went wrong with the others.
    func streamStatuses(_ stream: String, of nodes: [String]) async -> (
        statuses: [String: StreamStatus], missing: [String: String]
    ) {
        var statuses: [String: StreamStatus] = [:]
        var missing: [String: String] = [:]
        for id in nodes {
            switch await status(id) {
            case .success(let status):
                if let entry = status.streams.first(where: { $0.stream == stream }) {
                    statuses[id] = entry
                } else {
                    missing[id] = "no stream '\(stream)' (has \(status.streams.map(\.stream)))"
                }
            case .failure(let error):
                missing[id] = error.description
            }
        }
        return (statuses, missing)
    }

    /// Waits until every node of `among` (default: the live ones) answers and they agree on one leader of
    /// `stream` (`agreedLeader`). Returns the leader and the term.
    /// - Throws: `SetupError` with every node's last view after `timeout`.
    func waitForLeader(_ stream: String, among: [String]? = nil, timeout: Duration = .seconds(20)) async throws -> (
        leader: String, term: UInt64
    ) {
        let deadline = ContinuousClock.now + timeout
        while true {
            let nodes = among ?? live
            let (statuses, missing) = await streamStatuses(stream, of: nodes)
            if missing.isEmpty, let agreed = Self.agreedLeader(statuses, among: nodes) { return agreed }
            if ContinuousClock.now > deadline {
                throw SetupError(
                    description: "no agreed leader of '\(stream)' among \(nodes) within \(timeout):\n"
                        + Self.describe(statuses, missing))
            }
            try await Task.sleep(for: .milliseconds(200))
        }
    }

    /// Waits until every live node holds the same log of `stream`, committed to its end (`settledEnd`), the
    /// same in two polls in a row. Returns every live node's status.
    /// - Throws: `SetupError` with every node's last view after `timeout`.
    func settle(_ stream: String, timeout: Duration = .seconds(30)) async throws -> [String: StreamStatus] {
        let deadline = ContinuousClock.now + timeout
        var previous: UInt64?
        while true {
            let nodes = live
            let (statuses, missing) = await streamStatuses(stream, of: nodes)
            let end = missing.isEmpty ? Self.settledEnd(statuses, nodes: nodes) : nil
            if let end, end == previous { return statuses }
            previous = end
            if ContinuousClock.now > deadline {
                throw SetupError(
                    description: "'\(stream)' did not settle on \(nodes) within \(timeout):\n"
                        + Self.describe(statuses, missing))
            }
            try await Task.sleep(for: .milliseconds(250))
        }
    }

    /// The leader and term every node of `nodes` agrees on: each reports the highest term any of them
    /// reports and the same leader, and the leader is one of them and reports itself in the role of leader.
    /// Nil while a node is missing, lags in an older term, knows no leader or names another.
    static func agreedLeader(_ statuses: [String: StreamStatus], among nodes: [String]) -> (
        leader: String, term: UInt64
    )? {
        guard !nodes.isEmpty, nodes.allSatisfy({ statuses[$0] != nil }) else { return nil }
        let views = nodes.compactMap { statuses[$0] }
        guard let term = views.map(\.term).max(), views.allSatisfy({ $0.term == term }),
            let leader = views.first?.leader, !leader.isEmpty, views.allSatisfy({ $0.leader == leader }),
            nodes.contains(leader), statuses[leader]?.role == "leader"
        else { return nil }
        return (leader, term)
    }

    /// The last index of a settled stream: exactly one of `nodes` leads, every one agrees on it and its term,
    /// every one's last index and commit index equal the leader's last index, and the leader reports every
    /// one of `nodes` among its peers matched up to it. Nil otherwise.
    static func settledEnd(_ statuses: [String: StreamStatus], nodes: [String]) -> UInt64? {
        guard !nodes.isEmpty, nodes.allSatisfy({ statuses[$0] != nil }) else { return nil }
        let leaders = nodes.filter { statuses[$0]?.role == "leader" }
        guard leaders.count == 1, let leader = leaders.first, let leading = statuses[leader] else { return nil }
        let end = leading.lastIndex
        for node in nodes {
            guard let view = statuses[node], view.term == leading.term, view.leader == leader, view.lastIndex == end,
                view.commitIndex == end
            else { return nil }
            if node != leader, let peers = leading.peers,
                peers.first(where: { $0.id == node })?.match != end
            {
                return nil
            }
        }
        return end
    }

    private static func describe(_ statuses: [String: StreamStatus], _ missing: [String: String]) -> String {
        (statuses.map { "  \($0.key): \($0.value)" } + missing.map { "  \($0.key): \($0.value)" }).sorted()
            .joined(separator: "\n")
    }

    /// The last lines of every node's log that are warnings or worse, for a failure message.
    func diagnostics(lines: Int = 15) -> String {
        ids.map { id in
            let member = members[id]!
            let text = member.process?.stderr ?? ""
            let interesting = text.split(separator: "\n").filter { !$0.contains(" info ") && !$0.contains(" debug ") }
            return "--- \(id) (start \(member.starts), \(member.isRunning ? "running" : "down")"
                + "\(member.paused ? ", paused" : "")):\n" + interesting.suffix(lines).joined(separator: "\n")
        }.joined(separator: "\n")
    }

    // MARK: Checking

    /// The stream directory of a member's data.
    func streamDirectory(_ id: String, _ stream: String) throws -> URL {
        RaftSegmentReader.streamDirectory(data: try member(id).data, stream: stream)
    }

    /// Reads every member in `statuses` from disk with the independent reader and runs `RaftLogChecker`
    /// against the workload's ledger; records every violation as a test issue and returns the report.
    @discardableResult
    func check(
        _ stream: String, statuses: [String: StreamStatus], ledger: LedgerSnapshot, allowDuplicates: Bool = true,
        sourceLocation: SourceLocation = #_sourceLocation
    ) throws -> CheckReport {
        var replicas: [String: ReplicaState] = [:]
        for (id, status) in statuses {
            let log = try RaftSegmentReader.read(directory: try streamDirectory(id, stream))
            replicas[id] = ReplicaState(
                log: log, commitIndex: status.commitIndex, commitChain: status.commitChain,
                nextOffset: status.nextOffset)
        }
        let report = RaftLogChecker.check(replicas, ledger: ledger, allowDuplicates: allowDuplicates)
        if !report.failures.isEmpty { failed = true }
        for failure in report.failures { Issue.record("\(failure)", sourceLocation: sourceLocation) }
        #expect(
            report.committedEvents >= ledger.acknowledged.count,
            "the log commits at least every acknowledged event", sourceLocation: sourceLocation)
        return report
    }

    /// Reads `stream` through a subscription on `id` from offset 0 up to `count` events (or 20 s) and
    /// returns each offset's event id: what a consumer of that node sees.
    func readThroughSubscription(_ id: String, stream: String, count: UInt64) async throws -> [UInt64: String] {
        let member = try self.member(id)
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: member.tcpPort, name: "fault-reader", reconnect: false))
        let events = try await client.subscribe(
            topic: stream,
            options: SubscribeOptions(group: "check-\(UUID().uuidString)", start: .earliest, credits: 1000))
        let collected = Mutex<[UInt64: String]>([:])
        let collector = Task {
            for await delivery in events {
                collected.withLock { $0[delivery.offset] = delivery.event.id }
                delivery.ack()
            }
        }
        let deadline = ContinuousClock.now + .seconds(20 + Int(count / 5_000))
        while collected.withLock({ UInt64($0.count) }) < count && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        collector.cancel()
        await client.close(timeout: .milliseconds(500))
        return collected.withLock { $0 }
    }

    // MARK: Damage on disk

    /// Cuts a stopped member's last segment of `stream` in the middle of its last entry (see `LogDamage`);
    /// returns the Raft index of the entry cut.
    @discardableResult
    func truncateMidEntry(_ id: String, _ stream: String) throws -> UInt64 {
        guard !(try member(id)).isRunning else { throw SetupError(description: "stop \(id) before damaging its log") }
        return try LogDamage.truncateMidEntry(try streamDirectory(id, stream))
    }

    /// Flips a byte in the middle of a stopped member's first segment of `stream` (see `LogDamage`).
    @discardableResult
    func flipByteMidSegment(_ id: String, _ stream: String) throws -> LogDamage.Flip {
        guard !(try member(id)).isRunning else { throw SetupError(description: "stop \(id) before damaging its log") }
        return try LogDamage.flipByteMidSegment(try streamDirectory(id, stream))
    }
}

extension NodeProcess {
    /// raft-log's entry in `plexus plugin list`, once it is active or failed (or after 30 s).
    func raftLogState() async throws -> PluginStatus {
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let plugins = try await list()
            let raftLog = try #require(plugins.first { $0.name == "raft-log" }, "the node has no raft-log plugin")
            if raftLog.state == .active || raftLog.state == .failed || ContinuousClock.now > deadline {
                return raftLog
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }
}

/// The damage a crash or a bad disk does to a stream directory, made on purpose.
enum LogDamage {
    /// Cuts the last segment in the middle of its last entry's body, as a crash mid-write would; returns the
    /// Raft index of the entry cut. A last segment that holds no whole entry yet (one just rolled) is removed
    /// first, as if the crash had come before the roll.
    static func truncateMidEntry(_ directory: URL) throws -> UInt64 {
        var log = try RaftSegmentReader.read(directory: directory)
        if let file = log.files.last, log.files.count > 1, log.entries.last?.file != file {
            try FileManager.default.removeItem(at: directory.appendingPathComponent(file))
            log = try RaftSegmentReader.read(directory: directory)
        }
        guard let file = log.files.last, let last = log.entries.last, last.file == file else {
            throw SetupError(description: "the last segment of \(directory.lastPathComponent) holds no whole entry")
        }
        let handle = try FileHandle(forWritingTo: directory.appendingPathComponent(file))
        defer { try? handle.close() }
        try handle.truncate(
            atOffset: UInt64(last.position + RaftSegmentReader.entryHeaderSize + Int(last.bodyLength) / 2))
        return last.index
    }

    /// Where `flipByteMidSegment` damaged a log.
    struct Flip {
        /// The segment file.
        var path: String
        /// The byte flipped.
        var position: Int
        /// The damaged entry: where its header starts, and its Raft index.
        var entryPosition: Int
        var index: UInt64
    }

    /// Flips one byte in the body of the middle entry of the first segment (a sealed one when there are
    /// several): corruption before the end of the log, which recovery refuses.
    static func flipByteMidSegment(_ directory: URL) throws -> Flip {
        let log = try RaftSegmentReader.read(directory: directory)
        guard let file = log.files.first else {
            throw SetupError(description: "\(directory.lastPathComponent) has no segment")
        }
        let entries = log.entries.filter { $0.file == file && $0.bodyLength > 0 }
        guard entries.count >= 3 else {
            throw SetupError(description: "\(file) holds \(entries.count) entries; one in the middle needs three")
        }
        let victim = entries[entries.count / 2]
        let url = directory.appendingPathComponent(file)
        var bytes = try Data(contentsOf: url)
        let position = victim.position + RaftSegmentReader.entryHeaderSize + Int(victim.bodyLength) / 2
        bytes[position] ^= 0x20
        try bytes.write(to: url)
        return Flip(path: url.path, position: position, entryPosition: victim.position, index: victim.index)
    }
}

/// Lets one `RaftCluster` run at a time.
actor ClusterGate {
    static let shared = ClusterGate()
    private var busy = false
    private var waiting: [CheckedContinuation<Void, Never>] = []

    func acquire() async {
        guard busy else {
            busy = true
            return
        }
        await withCheckedContinuation { waiting.append($0) }
    }

    func release() {
        if waiting.isEmpty { busy = false } else { waiting.removeFirst().resume() }
    }
}
