/// The messages raft-log members exchange, one Raft group per stream. Every message travels in an
/// `Envelope` naming the sender, the stream (the Raft group) and the receiver; `PeerTransport` frames them
/// (`docs` in the plugin README, "Node-to-node protocol").

/// A member of a Raft group: a node id from the manifest's `peers`.
public typealias NodeID = String

/// One log entry as it travels between members: everything of the on-disk entry except the chained CRC,
/// which each member computes from its own previous entry (so equal logs have equal chains).
public struct WireEntry: Sendable, Equatable {
    public var term: UInt64
    /// The Raft index, dense from 1.
    public var index: UInt64
    /// The stream offset of an event; for a control entry, the offset the next event will get.
    public var offset: UInt64
    /// Unix nanoseconds, set once by the leader that appended it.
    public var appendTime: UInt64
    /// `EntryKind` raw value.
    public var kind: UInt16
    /// CRC-32C of `body`.
    public var bodyCRC: UInt32
    public var body: [UInt8]
    /// The forwarded append this entry came from, while it travels between members (not stored): a new leader
    /// that already holds the entries of a forward resent to it answers it without appending them again.
    public var forward: ForwardTag?

    public init(
        term: UInt64, index: UInt64, offset: UInt64, appendTime: UInt64, kind: UInt16, bodyCRC: UInt32,
        body: [UInt8], forward: ForwardTag? = nil
    ) {
        self.term = term
        self.index = index
        self.offset = offset
        self.appendTime = appendTime
        self.kind = kind
        self.bodyCRC = bodyCRC
        self.body = body
        self.forward = forward
    }
}

/// Which follower forwarded an append, and its id for it (`ForwardRequest.id`).
public struct ForwardTag: Sendable, Hashable {
    public var origin: NodeID
    public var id: UInt64

    public init(origin: NodeID, id: UInt64) {
        self.origin = origin
        self.id = id
    }
}

/// What a log entry carries.
public enum EntryKind: UInt16, Sendable {
    /// A CloudEvent: it takes the stream offset in its header.
    case event = 1
    /// A new leader's empty entry, which commits the entries of earlier terms. No offset.
    case noop = 2
    /// A membership: the body is `Membership.encoded()`; it takes effect when appended. No offset.
    case membership = 3
}

/// A request for a vote, real or pre-vote.
public struct VoteRequest: Sendable, Equatable {
    /// For a vote, the candidate's term; for a pre-vote, the term it would campaign in.
    public var term: UInt64
    public var lastIndex: UInt64
    public var lastTerm: UInt64
    /// Set by a leadership transfer: voters grant it even while they hear from a leader.
    public var transfer: Bool

    public init(term: UInt64, lastIndex: UInt64, lastTerm: UInt64, transfer: Bool = false) {
        self.term = term
        self.lastIndex = lastIndex
        self.lastTerm = lastTerm
        self.transfer = transfer
    }
}

public struct VoteReply: Sendable, Equatable {
    /// The voter's term (for a pre-vote reply, the request's term when granted).
    public var term: UInt64
    public var granted: Bool

    public init(term: UInt64, granted: Bool) {
        self.term = term
        self.granted = granted
    }
}

/// AppendEntries; with no entries, a heartbeat.
public struct AppendRequest: Sendable, Equatable {
    public var term: UInt64
    public var prevIndex: UInt64
    public var prevTerm: UInt64
    /// The leader's commit index.
    public var commit: UInt64
    public var entries: [WireEntry]

    public init(term: UInt64, prevIndex: UInt64, prevTerm: UInt64, commit: UInt64, entries: [WireEntry]) {
        self.term = term
        self.prevIndex = prevIndex
        self.prevTerm = prevTerm
        self.commit = commit
        self.entries = entries
    }
}

extension AppendRequest {
    /// What makes this request one no leader sends, or nil: its entries must follow `prevIndex` one by one,
    /// with terms that never decrease, from `prevTerm` up to the leader's `term`, be of a known kind, and no
    /// event may stand at the last offset (the next would overflow).
    /// A peer's frame is checked before it reaches the state machine (`PeerCodec`), whose log relies on it.
    public var inconsistency: String? {
        guard prevTerm <= term else { return "prevTerm \(prevTerm) is after the leader's term \(term)" }
        guard UInt64(entries.count) <= UInt64.max - prevIndex else {
            return "\(entries.count) entries after prevIndex \(prevIndex) overflow the index"
        }
        var previousTerm = prevTerm
        for (position, entry) in entries.enumerated() {
            let expected = prevIndex + 1 + UInt64(position)
            guard entry.index == expected else {
                return
                    "entry \(position) has index \(entry.index), not \(expected) (entries follow prevIndex one by one)"
            }
            guard entry.term >= previousTerm, entry.term <= term else {
                return "entry \(entry.index) has term \(entry.term), outside \(previousTerm)...\(term)"
            }
            guard let kind = EntryKind(rawValue: entry.kind) else {
                return "entry \(entry.index) has the unknown kind \(entry.kind)"
            }
            // An event takes its offset, and the next one follows it: none can stand at the last offset.
            guard kind != .event || entry.offset < UInt64.max else {
                return "entry \(entry.index) is an event at offset \(entry.offset), the last there is"
            }
            previousTerm = entry.term
        }
        return nil
    }
}

public struct AppendReply: Sendable, Equatable {
    public var term: UInt64
    public var success: Bool
    /// On success, the last index the follower has durably stored that matches the leader's log; on
    /// failure, the follower's last index (a hint where the leader should probe next).
    public var index: UInt64
    /// On failure, the prevIndex of the request that was refused.
    public var rejected: UInt64

    public init(term: UInt64, success: Bool, index: UInt64, rejected: UInt64 = 0) {
        self.term = term
        self.success = success
        self.index = index
        self.rejected = rejected
    }
}

/// InstallSnapshot. The log is the state, so a snapshot is where the leader's retained log starts: the
/// follower discards its log and starts an empty one after `index`.
public struct SnapshotRequest: Sendable, Equatable {
    public var term: UInt64
    /// The last index the snapshot covers, its term, the offset the next event takes and the chained CRC
    /// after it.
    public var index: UInt64
    public var indexTerm: UInt64
    public var nextOffset: UInt64
    public var chain: UInt32
    /// The membership in force at `index`.
    public var membership: Membership

    public init(
        term: UInt64, index: UInt64, indexTerm: UInt64, nextOffset: UInt64, chain: UInt32, membership: Membership
    ) {
        self.term = term
        self.index = index
        self.indexTerm = indexTerm
        self.nextOffset = nextOffset
        self.chain = chain
        self.membership = membership
    }
}

/// A follower's request that the leader append events it was given: the bodies are encoded and checksummed
/// by the follower.
public struct ForwardRequest: Sendable, Equatable {
    /// Chosen by the follower; the reply carries it back.
    public var id: UInt64
    public var bodies: [[UInt8]]
    public var crcs: [UInt32]

    public init(id: UInt64, bodies: [[UInt8]], crcs: [UInt32]) {
        self.id = id
        self.bodies = bodies
        self.crcs = crcs
    }
}

public struct ForwardReply: Sendable, Equatable {
    public var id: UInt64
    /// A `px_status` value: 0 when the events were committed.
    public var status: Int32
    public var message: String
    /// On success: the offset of the first event and the index of the last one.
    public var firstOffset: UInt64
    public var lastIndex: UInt64

    public init(id: UInt64, status: Int32, message: String, firstOffset: UInt64, lastIndex: UInt64) {
        self.id = id
        self.status = status
        self.message = message
        self.firstOffset = firstOffset
        self.lastIndex = lastIndex
    }
}

/// The voters and learners of a group, and where each listens.
public struct Membership: Sendable, Equatable {
    public struct Member: Sendable, Equatable {
        public var id: NodeID
        /// `host:port` of its node-to-node listener.
        public var address: String
        /// A learner receives the log but does not vote and does not count for commit.
        public var learner: Bool

        public init(id: NodeID, address: String, learner: Bool = false) {
            self.id = id
            self.address = address
            self.learner = learner
        }
    }

    /// Sorted by id.
    public var members: [Member]

    public init(members: [Member]) { self.members = members.sorted { $0.id < $1.id } }

    public var voters: [NodeID] { members.filter { !$0.learner }.map(\.id) }
    public var learners: [NodeID] { members.filter(\.learner).map(\.id) }
    public func member(_ id: NodeID) -> Member? { members.first { $0.id == id } }
}

/// Every message between members.
public enum RaftMessage: Sendable, Equatable {
    case preVote(VoteRequest)
    case preVoteReply(VoteReply)
    case vote(VoteRequest)
    case voteReply(VoteReply)
    case append(AppendRequest)
    case appendReply(AppendReply)
    case snapshot(SnapshotRequest)
    /// `index` is the snapshot's index when installed.
    case snapshotReply(AppendReply)
    /// Leadership transfer: campaign now, without waiting for an election timeout.
    case timeoutNow(term: UInt64)
    case forward(ForwardRequest)
    case forwardReply(ForwardReply)
}

/// A message with its addressing: `stream` names the Raft group.
public struct Envelope: Sendable, Equatable {
    public var from: NodeID
    public var to: NodeID
    public var stream: String
    public var message: RaftMessage

    public init(from: NodeID, to: NodeID, stream: String, message: RaftMessage) {
        self.from = from
        self.to = to
        self.stream = stream
        self.message = message
    }
}
