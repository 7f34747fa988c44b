import PlexusPluginSDK
import RaftCore
import Synchronization

/// What every stream's Raft group of one raft-log instance shares: this member's id and settings, the
/// node-to-node transport (none for a single member), the counters and the log.
final class RaftContext: Sendable {
    let id: NodeID
    let settings: Settings
    let statistics: Statistics
    let host: Host
    let raftConfiguration: RaftNode.Configuration
    /// The voters of a stream created here for the first time: `peers`, or with `members: registry` what
    /// `adopt` was given at start, before any stream opens.
    var initialMembership: Membership { initial.withLock { $0 } }
    private let initial: Mutex<Membership>
    let transport: PeerTransport?
    /// Each stream's membership, whose union is who the transport connects to.
    private let memberships = Mutex<(byStream: [String: Membership], applied: [NodeID: String])>(([:], [:]))

    init(settings: Settings, statistics: Statistics, host: Host, transport: PeerTransport?) throws {
        self.settings = settings
        self.statistics = statistics
        self.host = host
        self.transport = transport
        id = settings.memberID
        initial = Mutex(try settings.initialMembership())
        raftConfiguration = RaftNode.Configuration(
            id: settings.memberID,
            electionTicks: max(2, settings.electionTimeoutMs / settings.heartbeatIntervalMs), heartbeatTicks: 1,
            maxInflight: settings.maxInflightAppends, maxBatchEntries: 16384, maxBatchBytes: settings.maxAppendBytes)
    }

    func send(_ envelope: Envelope) { transport?.send(envelope) }

    /// Takes the first members found in the registry (`members: registry`), before any stream opens.
    func adopt(_ membership: Membership) {
        initial.withLock { $0 = membership }
        let peers = Dictionary(
            membership.members.filter { $0.id != id }.map { ($0.id, $0.address) }, uniquingKeysWith: { $1 })
        memberships.withLock { all in
            all.applied = peers
            transport?.setPeers(peers)
        }
    }

    /// The largest batch a follower forwards: what one transport frame carries.
    var maxForwardBytes: Int { settings.maxAppendBytes + settings.maxEventBytes }

    func isConnected(_ peer: NodeID) -> Bool { transport?.isConnected(to: peer) ?? false }

    func isSingleVoter(_ node: RaftNode) -> Bool { node.voters.count == 1 && node.voters[0] == id }

    func report(_ level: Host.LogLevel, _ message: String) { host.log(level, message) }

    /// A stream's membership is now `membership`: connect to whoever any stream has.
    func membershipChanged(_ membership: Membership, stream: String) {
        guard let transport else { return }
        // Under the lock, so that two streams' changes reach the transport in the order they were made.
        memberships.withLock { all in
            all.byStream[stream] = membership
            var addresses: [NodeID: String] = [:]
            for (_, membership) in all.byStream {
                for member in membership.members where member.id != id { addresses[member.id] = member.address }
            }
            for member in initialMembership.members where member.id != id && addresses[member.id] == nil {
                addresses[member.id] = member.address
            }
            // Most streams share one membership: the transport hears only of a change of the union.
            guard addresses != all.applied else { return }
            all.applied = addresses
            transport.setPeers(addresses)
        }
    }

    func leaderChanged(stream: String, leader: NodeID?, term: UInt64, role: RaftNode.Role) {
        statistics.leaderChanged(elected: leader == id)
        guard transport != nil else { return }
        host.log(
            .info,
            "raft-log: stream '\(stream)': term \(term), "
                + (leader.map { $0 == id ? "this node (\(id)) leads" : "leader \($0)" } ?? "no leader")
                + ", this node is \(role.rawValue)")
    }
}
