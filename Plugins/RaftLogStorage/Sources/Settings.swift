import Foundation
import PlexusPluginSDK
import RaftCore

/// The manifest's `config` for raft-log, decoded and checked (defaults repeated here for a bare `on_create`).
struct Settings: Decodable, Sendable {
    /// When an append counts as durable.
    enum FsyncPolicy: String, Decodable, Sendable {
        /// Group commit: one `fdatasync` covers every batch written since the previous one; completions
        /// follow it.
        case always
        /// Completions at write time; `fdatasync` every `fsyncIntervalMs`.
        case interval
        /// Completions at write time; the operating system decides when to write back.
        case never
    }

    /// What start does with a log that is corrupt before its last entry.
    enum Repair: String, Decodable, Sendable {
        /// Refuse to start, naming the file, the byte and this key.
        case refuse
        /// Cut the log after the last good entry (losing every later one) and start.
        case truncate
    }

    var segmentBytes = 64 << 20
    var fsync = FsyncPolicy.always
    var fsyncIntervalMs = 10
    var maxEventBytes = 4 << 20
    var maxWriteBytes = 4 << 20
    var repairOnStart = Repair.refuse
    /// This node's member id; empty: a single member, no network.
    var nodeId = ""
    /// Every voting member at the first start: `id=host:port,…`, this node included.
    var peers = ""
    /// The node-to-node listener, `host:port`; empty: this node's entry in `peers`.
    var listen = ""
    var electionTimeoutMs = 500
    var heartbeatIntervalMs = 100
    var maxInflightAppends = 64
    var maxAppendBytes = 1 << 20
    var forwardTimeoutMs = 5000
    /// The secret every member proves in its node-to-node HELLO (`PeerSecret`); empty: unauthenticated.
    var clusterSecret = ""
    /// Where the first members come from: `peers` (the list above) or `registry` (the instances of the
    /// `raft-log` service in the node's registry, `RegistryMembers`).
    var members = MemberSource.peers
    /// With `members: registry`, how many members a cluster forms with at its first start.
    var expectMembers = 3

    /// Where the voters of a new cluster come from.
    enum MemberSource: String, Decodable, Sendable {
        case peers, registry
    }

    /// Whether this node replicates (has or will have other members).
    var isReplicated: Bool { !peers.isEmpty || members == .registry }

    enum CodingKeys: String, CodingKey {
        case segmentBytes, fsync, fsyncIntervalMs, maxEventBytes, maxWriteBytes, repairOnStart
        case nodeId, peers, listen, electionTimeoutMs, heartbeatIntervalMs, maxInflightAppends, maxAppendBytes
        case forwardTimeoutMs, clusterSecret, members, expectMembers
    }

    init() {}

    init(from decoder: any Decoder) throws {
        let keys = try decoder.container(keyedBy: CodingKeys.self)
        segmentBytes = try keys.decodeIfPresent(Int.self, forKey: .segmentBytes) ?? segmentBytes
        fsync = try keys.decodeIfPresent(FsyncPolicy.self, forKey: .fsync) ?? fsync
        fsyncIntervalMs = try keys.decodeIfPresent(Int.self, forKey: .fsyncIntervalMs) ?? fsyncIntervalMs
        maxEventBytes = try keys.decodeIfPresent(Int.self, forKey: .maxEventBytes) ?? maxEventBytes
        maxWriteBytes = try keys.decodeIfPresent(Int.self, forKey: .maxWriteBytes) ?? maxWriteBytes
        repairOnStart = try keys.decodeIfPresent(Repair.self, forKey: .repairOnStart) ?? repairOnStart
        nodeId = try keys.decodeIfPresent(String.self, forKey: .nodeId) ?? nodeId
        peers = try keys.decodeIfPresent(String.self, forKey: .peers) ?? peers
        listen = try keys.decodeIfPresent(String.self, forKey: .listen) ?? listen
        electionTimeoutMs = try keys.decodeIfPresent(Int.self, forKey: .electionTimeoutMs) ?? electionTimeoutMs
        heartbeatIntervalMs = try keys.decodeIfPresent(Int.self, forKey: .heartbeatIntervalMs) ?? heartbeatIntervalMs
        maxInflightAppends = try keys.decodeIfPresent(Int.self, forKey: .maxInflightAppends) ?? maxInflightAppends
        maxAppendBytes = try keys.decodeIfPresent(Int.self, forKey: .maxAppendBytes) ?? maxAppendBytes
        forwardTimeoutMs = try keys.decodeIfPresent(Int.self, forKey: .forwardTimeoutMs) ?? forwardTimeoutMs
        clusterSecret = try keys.decodeIfPresent(String.self, forKey: .clusterSecret) ?? clusterSecret
        members = try keys.decodeIfPresent(MemberSource.self, forKey: .members) ?? members
        expectMembers = try keys.decodeIfPresent(Int.self, forKey: .expectMembers) ?? expectMembers
    }

    /// The id of this member.
    var memberID: NodeID { nodeId.isEmpty ? "local" : nodeId }

    /// The voters of a new group: `peers`, or this node alone.
    /// - Throws: `PluginError` naming what is wrong with `peers`.
    func initialMembership() throws -> Membership {
        guard !peers.isEmpty else { return Membership(members: [.init(id: memberID, address: listen)]) }
        return try Self.membership(peers: peers, nodeId: nodeId)
    }

    /// Parses an `id=host:port,…` list that must name `nodeId`.
    /// - Throws: `PluginError` naming the entry at fault.
    static func membership(peers: String, nodeId: String) throws -> Membership {
        var members: [Membership.Member] = []
        for item in peers.split(separator: ",") {
            let parts = item.trimmingCharacters(in: .whitespaces).split(separator: "=", maxSplits: 1)
            guard parts.count == 2, !parts[0].isEmpty, Self.isAddress(String(parts[1])) else {
                throw PluginError.invalidArgument(
                    "raft-log: peers entry '\(item)' is not id=host:port (peers: '\(peers)')")
            }
            guard !members.contains(where: { $0.id == parts[0] }) else {
                throw PluginError.invalidArgument("raft-log: peers names '\(parts[0])' twice")
            }
            members.append(.init(id: String(parts[0]), address: String(parts[1])))
        }
        guard !nodeId.isEmpty else {
            throw PluginError.invalidArgument("raft-log: peers is set, so nodeId must name this node among them")
        }
        guard members.contains(where: { $0.id == nodeId }) else {
            throw PluginError.invalidArgument(
                "raft-log: nodeId '\(nodeId)' is not among peers (\(members.map(\.id).joined(separator: ", ")))")
        }
        return Membership(members: members)
    }

    /// Whether `text` is `host:port` with a port number.
    static func isAddress(_ text: String) -> Bool {
        guard let colon = text.lastIndex(of: ":"), colon != text.startIndex,
            let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port)
        else { return false }
        return true
    }

    /// Decodes and range-checks a configuration.
    /// - Throws: `PluginError` with `PX_ERR_INVALID_ARGUMENT` naming the key at fault.
    static func from(_ config: PluginConfig) throws -> Settings {
        let settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
        func check(_ ok: Bool, _ key: String, _ rule: String) throws {
            guard ok else { throw PluginError.invalidArgument("raft-log: \(key) \(rule)") }
        }
        try check(settings.segmentBytes >= 4096, "segmentBytes", "must be at least 4096")
        try check(settings.segmentBytes <= Int(UInt32.max), "segmentBytes", "must be at most 4294967295")
        try check(settings.fsyncIntervalMs >= 1, "fsyncIntervalMs", "must be at least 1")
        try check(settings.maxEventBytes >= 1, "maxEventBytes", "must be positive")
        try check(
            settings.maxEventBytes <= Int(UInt32.max) - LogFormat.entryHeaderSize - LogFormat.segmentHeaderSize,
            "maxEventBytes", "must fit a 32-bit entry length")
        try check(settings.maxWriteBytes >= 4096, "maxWriteBytes", "must be at least 4096")
        try check(settings.heartbeatIntervalMs >= 1, "heartbeatIntervalMs", "must be at least 1")
        try check(
            settings.electionTimeoutMs >= 2 * settings.heartbeatIntervalMs, "electionTimeoutMs",
            "must be at least twice heartbeatIntervalMs")
        try check(settings.maxInflightAppends >= 1, "maxInflightAppends", "must be at least 1")
        try check(settings.maxAppendBytes >= 4096, "maxAppendBytes", "must be at least 4096")
        try check(settings.forwardTimeoutMs >= 1, "forwardTimeoutMs", "must be at least 1")
        try check(settings.listen.isEmpty || isAddress(settings.listen), "listen", "must be host:port")
        if settings.members == .registry {
            try check(settings.peers.isEmpty, "peers", "must be empty with members: registry (the registry names them)")
            try check(!settings.nodeId.isEmpty, "nodeId", "must name this node with members: registry")
            try check(
                !settings.listen.isEmpty, "listen",
                "must be this node's host:port for the other members with members: registry")
            try check((1...9).contains(settings.expectMembers), "expectMembers", "must be 1 to 9")
        }
        _ = try settings.initialMembership()
        return settings
    }
}
