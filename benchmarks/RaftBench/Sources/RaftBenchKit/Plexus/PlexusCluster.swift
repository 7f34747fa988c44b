import Foundation
import PlexusClient
import PlexusCore

/// Plexus nodes on 127.0.0.1 with raft-log as every topic's storage: either one node with raft-log's shipped
/// configuration (a single member), or members `a`, `b`, `c` configured as the replication contract describes
/// (`nodeId` each, the same `peers`, `fsync: always` by default: an append is acknowledged once a quorum has
/// it on disk).
public final class PlexusCluster: Sendable {
    public let nodes: [PlexusNode]

    private init(nodes: [PlexusNode]) { self.nodes = nodes }

    /// The node called `id`.
    public func node(_ id: String) -> PlexusNode? { nodes.first { $0.id == id } }

    /// One node with raft-log's defaults (no `nodeId`: a single member, no network).
    ///
    /// - Throws: ``HarnessError`` with the node's log when it does not start.
    public static func single(
        installation: PlexusInstallation, directory: String, logLevel: String = "warning"
    ) async throws -> PlexusCluster {
        let node = try PlexusNode(
            id: "single", directory: directory + "/plexus-single", installation: installation,
            storageValues: ManifestValues(), logLevel: logLevel)
        let cluster = PlexusCluster(nodes: [node])
        do {
            try await node.start()
        } catch {
            node.stop()
            throw error
        }
        return cluster
    }

    /// Members `ids` (default a, b, c), each with `nodeId`, the same `peers` (node-to-node addresses on free
    /// ports) and `extraRaftValues` (e.g. `electionTimeoutMs`), started together.
    ///
    /// - Throws: ``HarnessError`` with the failing node's log when one does not start; the others are stopped.
    public static func replicated(
        installation: PlexusInstallation, directory: String, ids: [String] = ["a", "b", "c"],
        extraRaftValues: [String] = [], logLevel: String = "warning"
    ) async throws -> PlexusCluster {
        try requireReplication(installation)
        // Every port of every member in one call: ports are distinct only within a call.
        let ports = try Loopback.freePorts(3 * ids.count)
        let raftPorts = Array(ports[0..<ids.count])
        let peers = zip(ids, raftPorts).map { "\($0)=127.0.0.1:\($1)" }.joined(separator: ",")
        var nodes: [PlexusNode] = []
        for (number, id) in ids.enumerated() {
            var values = ManifestValues()
            values.set("nodeId", string: id)
            values.set("peers", string: peers)
            for assignment in extraRaftValues { try values.set(assignment: assignment) }
            nodes.append(
                try PlexusNode(
                    id: id, directory: "\(directory)/plexus-\(id)", installation: installation, storageValues: values,
                    logLevel: logLevel,
                    ports: (ports[ids.count + 2 * number], ports[ids.count + 2 * number + 1])))
        }
        let cluster = PlexusCluster(nodes: nodes)
        do {
            // Started together: a member waits for its peers to elect a leader, not to listen.
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in nodes { group.addTask { try await node.start() } }
                try await group.waitForAll()
            }
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    /// Nodes `ids` (default a, b, c) with ledger-storage as every topic's storage, each serving its bookie on a
    /// free port (`bookieListen`) and naming the others' bookies (`bookies`); ledgers are striped over
    /// `ensembleSize` bookies with `writeQuorum` and `ackQuorum` (`extraLedgerValues`, e.g. `ackQuorum=2`,
    /// override the defaults E=3, Qw=2, Qa=2). Every node keeps its ledger metadata in its own file: the writer's
    /// node is the one the benchmark publishes to, the others serve as bookies.
    ///
    /// - Throws: ``HarnessError`` with the failing node's log when one does not start; the others are stopped.
    public static func ledger(
        installation: PlexusInstallation, directory: String, ids: [String] = ["a", "b", "c"],
        extraLedgerValues: [String] = [], logLevel: String = "warning"
    ) async throws -> PlexusCluster {
        try requireKeys(["bookieListen", "bookies", "ensembleSize"], of: "ledger-storage", installation)
        let ports = try Loopback.freePorts(3 * ids.count)
        let bookiePorts = Array(ports[0..<ids.count])
        var nodes: [PlexusNode] = []
        for (number, id) in ids.enumerated() {
            var values = ManifestValues()
            values.set("bookieId", string: id)
            values.set("bookieListen", string: "127.0.0.1:\(bookiePorts[number])")
            values.set(
                "bookies",
                string: zip(ids, bookiePorts).filter { $0.0 != id }.map { "\($0)=127.0.0.1:\($1)" }
                    .joined(separator: ","))
            values.set("ensembleSize", int: min(3, ids.count))
            values.set("writeQuorum", int: min(2, ids.count))
            values.set("ackQuorum", int: min(2, ids.count))
            values.set("metadata", string: "file")
            for assignment in extraLedgerValues { try values.set(assignment: assignment) }
            nodes.append(
                try PlexusNode(
                    id: id, directory: "\(directory)/ledger-\(id)", installation: installation, storageValues: values,
                    storage: "ledger-storage", logLevel: logLevel,
                    ports: (ports[ids.count + 2 * number], ports[ids.count + 2 * number + 1])))
        }
        let cluster = PlexusCluster(nodes: nodes)
        do {
            try await withThrowingTaskGroup(of: Void.self) { group in
                for node in nodes { group.addTask { try await node.start() } }
                try await group.waitForAll()
            }
        } catch {
            cluster.stop()
            throw error
        }
        return cluster
    }

    /// Fails unless the shipped manifest of `plugin` declares every config key of `keys`.
    ///
    /// - Throws: ``HarnessError`` naming the keys missing.
    static func requireKeys(_ keys: [String], of plugin: String, _ installation: PlexusInstallation) throws {
        let path = installation.manifestDirectory + "/\(plugin).yaml"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HarnessError("cannot read \(path)")
        }
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let missing = keys.filter { key in !lines.contains("\(key):") }
        guard missing.isEmpty else {
            throw HarnessError(
                "\(plugin) in this build has no config key " + missing.map { "'\($0)'" }.joined(separator: ", ")
                    + " (\(path))")
        }
    }

    /// Fails unless the shipped raft-log manifest declares the replicated mode of the contract: the `nodeId` and
    /// `peers` config keys and the `status` operation (issue 6, stage 2).
    ///
    /// - Throws: ``HarnessError`` naming what is missing.
    public static func requireReplication(_ installation: PlexusInstallation) throws {
        let path = installation.manifestDirectory + "/raft-log.yaml"
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw HarnessError("cannot read \(path)")
        }
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        let missing =
            ["nodeId", "peers"].filter { key in !lines.contains("\(key):") }.map { "config key '\($0)'" }
            + (lines.contains("- name: status") ? [] : ["operation 'status'"])
        guard missing.isEmpty else {
            throw HarnessError(
                "raft-log has no replicated mode in this build: \(path) declares no "
                    + missing.joined(separator: ", ") + " (the replication contract, issue 6 stage 2)")
        }
    }

    /// Stops every node.
    public func stop() {
        for node in nodes { node.stop() }
    }

    /// Every running node's status, by node id; nodes that do not answer are left out.
    public func statuses() async -> [String: RaftStatus] {
        await withTaskGroup(of: (String, RaftStatus?).self) { group in
            for node in nodes where node.isRunning {
                group.addTask { (node.id, try? await node.status()) }
            }
            var result: [String: RaftStatus] = [:]
            for await (id, status) in group { if let status { result[id] = status } }
            return result
        }
    }

    /// The leader of `stream` once every running node names the same one and that node says it leads.
    ///
    /// - Throws: ``HarnessError`` with the last statuses seen when that does not happen within `timeout`.
    public func leader(of stream: String, timeout: Duration = .seconds(30)) async throws -> PlexusNode {
        let deadline = ContinuousClock.now + timeout
        var last = "no status yet"
        while ContinuousClock.now < deadline {
            let statuses = await statuses()
            let running = nodes.filter(\.isRunning)
            let views = running.map { node in (node.id, statuses[node.id]?.stream(stream)) }
            last = views.map { "\($0.0): \($0.1.map { "\($0.role), leader '\($0.leader)'" } ?? "no answer")" }
                .joined(separator: "; ")
            if let first = views.first?.1?.leader, !first.isEmpty,
                views.allSatisfy({ $0.1?.leader == first }),
                let leader = node(first), statuses[first]?.stream(stream)?.role == "leader"
            {
                return leader
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("stream '\(stream)' has no agreed leader after \(timeout) (\(last))")
    }

    /// Waits until `node` has caught up on `stream`: its commit index at least the leader's, read just before.
    ///
    /// - Throws: ``HarnessError`` when it has not within `timeout`.
    public func waitCaughtUp(_ node: PlexusNode, stream: String, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = "no status yet"
        while ContinuousClock.now < deadline {
            if let leader = try? await leader(of: stream, timeout: .seconds(2)),
                let target = try? await leader.status().stream(stream)?.commitIndex
            {
                if leader === node { return }
                if let own = try? await node.status().stream(stream) {
                    if own.commitIndex >= target && own.leader == leader.id { return }
                    last = "node \(node.id) at commit index \(own.commitIndex), leader \(leader.id) at \(target)"
                }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("node \(node.id) did not catch up on '\(stream)' within \(timeout) (\(last))")
    }

    /// Checks that the writes were replicated: every node reaches the same commit index and commit chain on
    /// `stream` within `timeout`, and the stream holds at least `acknowledged` events.
    ///
    /// - Returns: One line for the report, saying what matched or what did not.
    public func checkReplicas(stream: String, acknowledged: UInt64, timeout: Duration = .seconds(30)) async -> String {
        let deadline = ContinuousClock.now + timeout
        var last = "no status"
        while ContinuousClock.now < deadline {
            let statuses = await statuses()
            let views = nodes.map { ($0.id, statuses[$0.id]?.stream(stream)) }
            last = views.map { id, view in
                "\(id): "
                    + (view.map { "commit \($0.commitIndex) chain \($0.commitChain.map(String.init) ?? "?")" } ?? "none")
            }.joined(separator: ", ")
            let found = views.compactMap(\.1)
            if found.count == nodes.count, let first = found.first,
                found.allSatisfy({ $0.commitIndex == first.commitIndex && $0.commitChain == first.commitChain })
            {
                let offset = first.nextOffset ?? 0
                guard offset >= acknowledged else {
                    return
                        "plexus replicas agree (\(last)) but hold \(offset) events; \(acknowledged) were acknowledged"
                }
                return "plexus replicas agree: \(last); \(offset) events, \(acknowledged) acknowledged in the windows"
            }
            try? await Task.sleep(for: .milliseconds(200))
        }
        return "plexus replicas did NOT converge within \(timeout): \(last)"
    }

    /// Publishes one event through `node` until it is acknowledged: creates the stream (and its Raft group) on
    /// first use.
    ///
    /// - Throws: ``HarnessError`` with the last failure when no publish is acknowledged within `timeout`.
    public func prime(stream: String, through node: PlexusNode, timeout: Duration = .seconds(60)) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = "no attempt"
        while ContinuousClock.now < deadline {
            do {
                let client = try await PlexusClient.connect(
                    ClientConfiguration(
                        host: Loopback.host, port: node.tcpPort, name: "bench-raft-prime", reconnect: false))
                do {
                    _ = try await client.publish(
                        topic: stream, CloudEvent(id: "prime", source: "/bench/raft", type: "bench.prime", data: [1]))
                    await client.close()
                    return
                } catch {
                    await client.close()
                    throw error
                }
            } catch {
                last = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(200))
        }
        throw HarnessError("no publish to '\(stream)' through node \(node.id) was acknowledged in \(timeout): \(last)")
    }
}
