import Foundation
import PlexusABI
import PlexusCore

/// `GET /v1/cluster` and `plexus cluster status`: the nodes registered in the registry (`ClusterNode`), their
/// health, and which node leads each replicated stream (from the storage plugins' `status` operation).
public struct ClusterStatusReport: Codable, Sendable, Equatable {
    public struct Node: Codable, Sendable, Equatable {
        /// The node id.
        public var id: String
        /// Its admin endpoint, `host:port`.
        public var admin: String
        /// `up`: registered under a live lease; `missing`: a member of a replicated stream that no node of
        /// that id keeps registered (stopped, killed, or cut off from the registry for longer than its TTL).
        public var health: String
        /// Each protocol plugin's listening addresses.
        public var protocols: [String: String]
        /// The storage plugins active on it.
        public var storages: [String]
        /// How many of the streams this node sees it leads.
        public var leads: Int
    }

    public struct Stream: Codable, Sendable, Equatable {
        public var stream: String
        /// The node id of its leader, "" while there is none.
        public var leader: String
        public var voters: [String]
    }

    /// The node that answered.
    public var node: String
    /// The registry that answered (a plugin name), nil without one.
    public var registry: String?
    public var nodes: [Node]
    public var streams: [Stream]
    /// What could not be read (no registry, a lookup that failed).
    public var problems: [String]
}

extension Kernel {
    /// Registers this node with the active registry (after every plugin started), with its admin endpoint.
    func registerNode(admin: String) {
        var protocols: [String: [String]] = [:]
        var storages: [String] = []
        for record in records.withLock({ Array($0.values) }) where record.state == .active {
            guard let manifest = record.snapshot.manifest else { continue }
            if manifest.kinds.contains(.protocolKind) {
                protocols[manifest.name] = services.listeners.addresses(of: manifest.name)
            }
            if manifest.kinds.contains(.storage) { storages.append(manifest.name) }
        }
        clusterNode.start(nodeID: config.nodeID, admin: admin, protocols: protocols, storages: storages)
    }

    /// Deregisters this node (before the plugins, the registry among them, stop).
    func deregisterNode() { clusterNode.stop() }

    /// The cluster as this node sees it: the registry's `plexus-node` instances and the storages' leaders.
    public func clusterStatus() -> ClusterStatusReport {
        var problems: [String] = []
        var registryName: String?
        var registered: [Lease.Instance] = []
        let wait = RegistryWait()
        let status =
            services.withRegistry { binding -> px_status in
                registryName = binding.name
                guard let lookup = binding.vtable.pointee.on_lookup else { return PX_ERR_UNSUPPORTED.status }
                return withPXStr(ClusterNode.service) { service in
                    lookup(binding.instance, service, registryWaitLookupDone, wait.retained(), nil)
                }
            } ?? PX_ERR_UNAVAILABLE.status
        if status == PX_OK.status {
            if let (done, text) = wait.wait(seconds: 5) {
                if done == PX_OK.status {
                    registered = wait.found
                } else {
                    problems.append("lookup of \(ClusterNode.service) failed: \(StatusText.name(done)) \(text)")
                }
            } else {
                problems.append("the registry did not answer the lookup of \(ClusterNode.service) within 5 s")
            }
        } else {
            wait.releaseUnused()
            problems.append(
                registryName == nil
                    ? "no registry plugin is active on this node, so it knows no other node"
                    : "lookup of \(ClusterNode.service) refused: \(StatusText.name(status))")
        }
        let streams = askStreamStatus()
        var nodes: [String: ClusterStatusReport.Node] = [:]
        for instance in registered {
            var protocols: [String: String] = [:]
            var storages: [String] = []
            for (key, value) in instance.metadata {
                if key.hasPrefix("protocol.") { protocols[String(key.dropFirst("protocol.".count))] = value }
                if key.hasPrefix("storage.") { storages.append(String(key.dropFirst("storage.".count))) }
            }
            nodes[instance.instanceID] = .init(
                id: instance.instanceID, admin: instance.address, health: "up", protocols: protocols,
                storages: storages.sorted(), leads: 0)
        }
        for stream in streams {
            for voter in stream.voters where nodes[voter] == nil {
                nodes[voter] = .init(id: voter, admin: "", health: "missing", protocols: [:], storages: [], leads: 0)
            }
            if !stream.leader.isEmpty { nodes[stream.leader]?.leads += 1 }
        }
        return ClusterStatusReport(
            node: config.nodeID, registry: registryName, nodes: nodes.values.sorted { $0.id < $1.id },
            streams: streams.sorted { $0.stream < $1.stream }, problems: problems)
    }

    /// Each replicated stream's leader and voters, from every bound storage with a `status` operation.
    private func askStreamStatus() -> [ClusterStatusReport.Stream] {
        struct Status: Decodable {
            struct Stream: Decodable {
                var stream: String
                var leader: String?
                var voters: [String]?
            }
            var streams: [Stream]?
        }
        var streams: [ClusterStatusReport.Stream] = []
        for name in services.router.boundStorages().keys.sorted() {
            guard let manifest = record(name)?.snapshot.manifest,
                manifest.operations.contains(where: { $0.name == "status" }),
                let text = try? callOperation(plugin: name, operation: "status", arguments: []),
                let status = try? JSONDecoder().decode(Status.self, from: Data(text.utf8))
            else { continue }
            for stream in status.streams ?? [] where (stream.voters?.count ?? 0) > 1 {
                streams.append(.init(stream: stream.stream, leader: stream.leader ?? "", voters: stream.voters ?? []))
            }
        }
        return streams
    }
}
