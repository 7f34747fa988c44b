/// The Raft consensus of one group (one stream), as a deterministic state machine in the style of etcd's raft
/// library: it does no I/O and keeps no clock. Its owner feeds it ticks, messages, proposals and the progress
/// of the disk, and carries out what it asks for in `Ready`: messages to send, the term and vote to persist
/// (before the messages go out), entries to write, a commit index to publish.
///
/// Implemented: leader election with pre-vote and check-quorum and randomized timeouts; pipelined, batched
/// replication with per-follower flow control (probe / replicate / snapshot, `maxInflight` messages in flight);
/// commit by quorum match index (a leader commits only entries of its own term, so a new leader appends a
/// no-op); install-snapshot for followers behind the leader's retained log; leadership transfer; membership
/// change one server at a time, with learners.
///
/// - Important: Not thread-safe: the owner serializes every call (raft-log holds a lock per group).
public struct RaftNode: Sendable {
    public enum Role: String, Sendable {
        case follower, precandidate, candidate, leader, learner
    }

    public struct Configuration: Sendable {
        public var id: NodeID
        /// Ticks without a leader before a follower campaigns; each election picks a random timeout in
        /// `[electionTicks, 2 × electionTicks)`.
        public var electionTicks: Int
        public var heartbeatTicks: Int
        /// Append messages in flight per follower while replicating.
        public var maxInflight: Int
        /// Entries and bytes per append message.
        public var maxBatchEntries: Int
        public var maxBatchBytes: Int
        public var preVote: Bool
        public var checkQuorum: Bool

        public init(
            id: NodeID, electionTicks: Int = 5, heartbeatTicks: Int = 1, maxInflight: Int = 64,
            maxBatchEntries: Int = 4096, maxBatchBytes: Int = 1 << 20, preVote: Bool = true, checkQuorum: Bool = true
        ) {
            self.id = id
            self.electionTicks = electionTicks
            self.heartbeatTicks = heartbeatTicks
            self.maxInflight = maxInflight
            self.maxBatchEntries = maxBatchEntries
            self.maxBatchBytes = maxBatchBytes
            self.preVote = preVote
            self.checkQuorum = checkQuorum
        }
    }

    /// What must survive a restart, written before any message that depends on it is sent.
    public struct HardState: Sendable, Equatable {
        public var term: UInt64
        public var votedFor: NodeID?
        public init(term: UInt64 = 0, votedFor: NodeID? = nil) {
            self.term = term
            self.votedFor = votedFor
        }
    }

    /// A follower's replication state, as its leader sees it.
    public struct Progress: Sendable, Equatable {
        public enum State: String, Sendable { case probe, replicate, snapshot }
        /// The highest index known to be stored on the follower.
        public var match: UInt64 = 0
        /// The next index to send.
        public var next: UInt64
        public var state = State.probe
        /// In probe state: a message is out, wait for its answer (or a heartbeat's).
        public var paused = false
        /// The last index of each append in flight (replicate state).
        public var inflight: [UInt64] = []
        /// Heard from since the last check-quorum.
        public var recentActive = false
        /// The snapshot index sent (snapshot state).
        public var pendingSnapshot: UInt64 = 0
        public var learner: Bool
        /// The highest commit index sent to it.
        public var sentCommit: UInt64 = 0

        init(next: UInt64, learner: Bool) {
            self.next = next
            self.learner = learner
        }
    }

    /// What the owner does after a call, in this order: persist `hardState` if set; apply `log` to the disk
    /// (`persisted(through:term:)` reports when it is durable); send `messages`; publish `commitIndex`.
    public struct Ready: Sendable {
        public var hardState: HardState?
        public var log: [LogChange] = []
        public var messages: [(to: NodeID, message: RaftMessage)] = []
        /// The commit index advanced to this.
        public var commitIndex: UInt64?
        /// The membership changed to this (the owner updates its connections).
        public var membership: Membership?
        /// The role or leader changed.
        public var roleChanged = false
        /// The log is persisted through `recoveringUntil` again: the member votes and stands again (the
        /// owner removes its marker).
        public var recovered = false

        public var isEmpty: Bool {
            hardState == nil && log.isEmpty && messages.isEmpty && commitIndex == nil && membership == nil
                && !roleChanged && !recovered
        }
    }

    public enum LogChange: Sendable {
        /// Remove the entries from `truncateFrom` (if any) on, then write `entries` after the last one.
        case append(truncateFrom: UInt64?, entries: [WireEntry])
        /// Discard the whole log; it now starts after the snapshot.
        case installSnapshot(SnapshotRequest)
    }

    /// Why a proposal is refused.
    public enum Refusal: Error, Sendable, Equatable {
        case notLeader(leader: NodeID?)
        case transferring
        case membershipPending
        case invalid(String)
    }

    public let configuration: Configuration
    public private(set) var role = Role.follower
    public private(set) var term: UInt64
    public private(set) var votedFor: NodeID?
    public private(set) var leader: NodeID?
    public private(set) var commitIndex: UInt64
    /// The last index this member has durably stored (its own match index as a leader).
    public private(set) var persistedIndex: UInt64
    public private(set) var log: LogMeta
    public private(set) var membership: Membership
    /// Membership entries in the log after the snapshot, with their indices, oldest first; the one before
    /// them is `baseMembership`.
    private var membershipHistory: [(index: UInt64, membership: Membership)]
    /// The membership in force at the snapshot point.
    public private(set) var baseMembership: Membership
    public private(set) var progress: [NodeID: Progress] = [:]
    public private(set) var transferee: NodeID?
    /// The next offset an event appended after the last entry takes.
    public private(set) var nextOffset: UInt64
    /// Non-zero while this member's log lacks entries it once held (damage on disk cut it, and it may have
    /// acknowledged them): until its log is persisted through this index again, fetched from a leader, it
    /// grants no vote or pre-vote and never stands for election, so that it cannot help elect a leader
    /// lacking entries it counted towards a commit. It still takes entries, and acknowledges those it has.
    public private(set) var recoveringUntil: UInt64 = 0

    public var isRecovering: Bool { recoveringUntil > 0 }

    private var electionElapsed = 0
    private var heartbeatElapsed = 0
    private var randomizedElectionTicks: Int
    private var transferElapsed = 0
    private var votes: [NodeID: Bool] = [:]
    /// Append replies owed once the disk has stored up to their index: `(to, term, index)`.
    private var owedReplies: [(to: NodeID, term: UInt64, index: UInt64)] = []
    private var random: SplitMix
    private var ready = Ready()

    /// Fetches up to `maxCount` entries (about `maxBytes`, at least one) from `index`; `nil` when the log no
    /// longer holds `index` (a snapshot must be sent instead).
    public typealias EntrySource = @Sendable (_ index: UInt64, _ maxCount: Int, _ maxBytes: Int) -> [WireEntry]?

    /// Reads entries the cache no longer holds from the disk.
    private let fetch: EntrySource
    /// The newest entries, for replication without a disk read: `cache[cacheHead...]` are the entries from
    /// `cacheFirst` to the last index.
    private var cache: [WireEntry] = []
    private var cacheHead = 0
    private var cacheFirst: UInt64
    private var cacheBytes = 0
    /// The most body bytes the cache keeps.
    public let cacheBudget = 64 << 20

    /// A member restarting from its persisted state.
    /// - Parameters:
    ///   - log: the log on disk (everything in it is persisted).
    ///   - membership: the membership in force at the end of `log` (the newest membership entry, else the
    ///     snapshot's, else the configured one); `history` the membership entries in the log with their index.
    ///   - nextOffset: the offset the next event takes.
    public init(
        configuration: Configuration, hardState: HardState, log: LogMeta, commitIndex: UInt64,
        baseMembership: Membership, history: [(index: UInt64, membership: Membership)], nextOffset: UInt64,
        seed: UInt64, fetch: @escaping EntrySource
    ) {
        self.fetch = fetch
        self.cacheFirst = log.lastIndex + 1
        self.configuration = configuration
        self.term = hardState.term
        self.votedFor = hardState.votedFor
        self.log = log
        self.persistedIndex = log.lastIndex
        self.commitIndex = min(max(commitIndex, log.snapshotIndex), log.lastIndex)
        self.baseMembership = baseMembership
        self.membershipHistory = history
        self.membership = history.last?.membership ?? baseMembership
        self.voters = membership.voters
        self.nextOffset = nextOffset
        self.random = SplitMix(seed: seed)
        self.randomizedElectionTicks = configuration.electionTicks
        resetRandomizedTimeout()
        role = isLearner ? .learner : .follower
    }

    // MARK: Queries

    /// The newest membership entry at or below the commit index, to keep beside the log once retention drops
    /// it.
    public var committedMembership: (index: UInt64, membership: Membership)? {
        membershipHistory.last { $0.index <= commitIndex }
    }

    public var isVoter: Bool { membership.member(configuration.id).map { !$0.learner } ?? false }

    /// Marks the log as lacking entries up to `index` (see `recoveringUntil`); nothing when the log already
    /// reaches it.
    public mutating func setRecovering(until index: UInt64) {
        // A single voter has nobody to fetch from, and nobody to mislead.
        recoveringUntil = index > persistedIndex && voters.count > 1 ? index : 0
    }
    private var isLearner: Bool { membership.member(configuration.id)?.learner ?? false }
    /// `membership.voters`, kept with it (read on every commit decision).
    public private(set) var voters: [NodeID]
    private var quorum: Int { voters.count / 2 + 1 }
    private var hardState: HardState { HardState(term: term, votedFor: votedFor) }

    /// Takes what the last calls asked for.
    public mutating func takeReady() -> Ready {
        defer { ready = Ready() }
        return ready
    }

    // MARK: Time

    /// Advances the clock by one tick.
    public mutating func tick() {
        if role == .leader {
            heartbeatElapsed += 1
            electionElapsed += 1
            if transferee != nil {
                transferElapsed += 1
                if transferElapsed >= configuration.electionTicks { transferee = nil }
            }
            if electionElapsed >= configuration.electionTicks {
                electionElapsed = 0
                if configuration.checkQuorum && !checkQuorumActive() {
                    becomeFollower(term: term, leader: nil)
                    return
                }
            }
            if heartbeatElapsed >= configuration.heartbeatTicks {
                heartbeatElapsed = 0
                broadcastHeartbeat()
            }
        } else {
            electionElapsed += 1
            if electionElapsed >= randomizedElectionTicks && isVoter && !isRecovering {
                electionElapsed = 0
                campaign(transfer: false)
            }
        }
    }

    /// Starts an election now (a single voter becomes leader at once).
    public mutating func campaign(transfer: Bool) {
        guard isVoter, !isRecovering else { return }
        if configuration.preVote && !transfer && voters.count > 1 {
            becomePreCandidate()
        } else {
            becomeCandidate(transfer: transfer)
        }
    }

    // MARK: Proposals

    /// Appends `bodies` (events, or one control entry) as a leader; returns the index of the first new entry.
    /// - Throws: `Refusal` unless this member leads and can take it.
    public mutating func propose(
        kind: EntryKind, bodies: [(body: [UInt8], crc: UInt32)], appendTime: UInt64, forward: ForwardTag? = nil
    ) throws(Refusal) -> (firstIndex: UInt64, firstOffset: UInt64) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard transferee == nil else { throw .transferring }
        guard !bodies.isEmpty else { throw .invalid("an empty proposal") }
        let first = log.lastIndex + 1
        let firstOffset = nextOffset
        var new: [WireEntry] = []
        new.reserveCapacity(bodies.count)
        for (body, crc) in bodies {
            new.append(
                WireEntry(
                    term: term, index: log.lastIndex + 1 + UInt64(new.count), offset: nextOffset,
                    appendTime: appendTime, kind: kind.rawValue, bodyCRC: crc, body: body, forward: forward))
            if kind == .event { nextOffset += 1 }
        }
        appendLocally(new, truncateFrom: nil)
        broadcastAppend(fresh: new)
        maybeCommit()
        return (first, firstOffset)
    }

    /// Proposes a membership change: one voter or learner added, promoted or removed at a time.
    public mutating func proposeMembership(_ next: Membership, appendTime: UInt64)
        throws(Refusal) -> UInt64
    {
        guard role == .leader else { throw .notLeader(leader: leader) }
        if let last = membershipHistory.last, last.index > commitIndex { throw .membershipPending }
        // Not before this leader has committed an entry of its own term (Ongaro's fix for one-at-a-time
        // changes): an uncommitted change of an earlier leader could otherwise overlap this one.
        guard voters.count == 1 || log.term(at: commitIndex) == term else { throw .membershipPending }
        let oldVoters = Set(membership.voters)
        let newVoters = Set(next.voters)
        guard oldVoters.symmetricDifference(newVoters).count <= 1 else {
            throw .invalid("change one voter at a time (\(oldVoters.sorted()) → \(newVoters.sorted()))")
        }
        guard !newVoters.isEmpty else { throw .invalid("a group needs at least one voter") }
        let body = next.encoded()
        return try propose(
            kind: .membership, bodies: [(body, CRC32C.checksum(body))], appendTime: appendTime
        ).firstIndex
    }

    /// Starts handing leadership to `target`: once its log has caught up it is told to campaign at once.
    public mutating func transferLeadership(to target: NodeID) throws(Refusal) {
        guard role == .leader else { throw .notLeader(leader: leader) }
        guard target != configuration.id else { return }
        guard let progress = progress[target], !progress.learner else {
            throw .invalid("'\(target)' is not a voter of this group")
        }
        transferee = target
        transferElapsed = 0
        electionElapsed = 0
        if progress.match == log.lastIndex {
            send(target, .timeoutNow(term: term))
        } else {
            sendAppend(to: target)
        }
    }

    // MARK: The disk

    /// The disk stored every entry up to `index`, the last of which has `term`.
    public mutating func persisted(through index: UInt64, term entryTerm: UInt64) {
        if let owed = owedSnapshotReply, index >= owed.index, log.snapshotIndex == owed.index {
            owedSnapshotReply = nil
            if owed.term == term {
                send(owed.to, .snapshotReply(AppendReply(term: term, success: true, index: owed.index)))
            }
        }
        // Stale when the entry was replaced since (a truncation happened after that write was queued).
        guard index > persistedIndex, log.term(at: index) == entryTerm else { return }
        persistedIndex = index
        if isRecovering && persistedIndex >= recoveringUntil {
            recoveringUntil = 0
            ready.recovered = true
        }
        if role == .leader {
            maybeCommit()
        } else {
            let due = owedReplies.filter { $0.index <= persistedIndex }
            owedReplies.removeAll { $0.index <= persistedIndex }
            if let best = due.max(by: { $0.index < $1.index }), best.term == term {
                send(best.to, .appendReply(AppendReply(term: term, success: true, index: best.index)))
            }
            advanceFollowerCommit(to: pendingLeaderCommit)
        }
    }

    /// The owner compacted its log through `index` (retention dropped the entries up to it).
    public mutating func compacted(through index: UInt64) {
        guard index <= commitIndex else { return }
        log.compact(through: index)
        if let last = membershipHistory.last(where: { $0.index <= index }) { baseMembership = last.membership }
        membershipHistory.removeAll { $0.index <= index }
    }

    // MARK: Messages

    /// Handles a message from `from`.
    public mutating func step(from: NodeID, _ message: RaftMessage) {
        let messageTerm = Self.term(of: message)
        if let messageTerm, messageTerm > term {
            switch message {
            case .preVote:
                break  // a pre-vote never changes terms
            case .preVoteReply(let reply) where reply.granted:
                break  // granted pre-votes carry the proposed term
            case .vote(let request) where !request.transfer && inLease:
                return  // check-quorum: a live leader exists; ignore a disruptive candidate
            default:
                let leader: NodeID? =
                    switch message {
                    case .append, .snapshot: from
                    default: nil
                    }
                becomeFollower(term: messageTerm, leader: leader)
            }
        } else if let messageTerm, messageTerm < term {
            switch message {
            case .append, .snapshot:
                // A stale leader: tell it the term so that it steps down.
                send(from, .appendReply(AppendReply(term: term, success: false, index: log.lastIndex)))
            case .preVote:
                send(from, .preVoteReply(VoteReply(term: term, granted: false)))
            case .vote:
                send(from, .voteReply(VoteReply(term: term, granted: false)))
            default:
                break
            }
            return
        }
        progress[from]?.recentActive = true

        switch message {
        case .preVote(let request):
            let grant =
                !isRecovering && log.isUpToDate(lastIndex: request.lastIndex, lastTerm: request.lastTerm) && !inLease
                && request.term > term
            send(from, .preVoteReply(VoteReply(term: grant ? request.term : term, granted: grant)))
        case .vote(let request):
            let canVote = votedFor == from || (votedFor == nil && leader == nil)
            let grant =
                canVote && !isRecovering && log.isUpToDate(lastIndex: request.lastIndex, lastTerm: request.lastTerm)
            if grant {
                votedFor = from
                electionElapsed = 0
                ready.hardState = hardState
            }
            send(from, .voteReply(VoteReply(term: term, granted: grant)))
        case .preVoteReply(let reply):
            guard role == .precandidate else { return }
            tally(from, reply.granted)
        case .voteReply(let reply):
            guard role == .candidate else { return }
            tally(from, reply.granted)
        case .append(let request):
            if role != .follower && role != .learner { becomeFollower(term: term, leader: from) }
            if leader != from {
                leader = from
                ready.roleChanged = true
            }
            electionElapsed = 0
            handleAppend(from: from, request)
        case .appendReply(let reply):
            guard role == .leader else { return }
            handleAppendReply(from: from, reply)
        case .snapshot(let request):
            if role != .follower && role != .learner { becomeFollower(term: term, leader: from) }
            leader = from
            electionElapsed = 0
            handleSnapshot(from: from, request)
        case .snapshotReply(let reply):
            guard role == .leader, var progress = progress[from] else { return }
            progress.state = .probe
            progress.paused = false
            if reply.success { progress.match = max(progress.match, reply.index) }
            progress.next = progress.match + 1
            self.progress[from] = progress
            sendAppend(to: from)
        case .timeoutNow:
            guard isVoter, role != .leader else { return }
            becomeCandidate(transfer: true)
        case .forward, .forwardReply:
            break  // the owner handles forwarding
        }
    }

    // MARK: Elections

    /// Whether this member heard from a leader within the election timeout (check-quorum's lease).
    private var inLease: Bool {
        configuration.checkQuorum && leader != nil && electionElapsed < configuration.electionTicks
            || role == .leader
    }

    private mutating func becomeFollower(term newTerm: UInt64, leader newLeader: NodeID?) {
        let changed = role != (isLearner ? .learner : .follower) || leader != newLeader
        if newTerm > term {
            term = newTerm
            votedFor = nil
            ready.hardState = hardState
        }
        role = isLearner ? .learner : .follower
        leader = newLeader
        transferee = nil
        electionElapsed = 0
        resetRandomizedTimeout()
        progress = [:]
        if changed { ready.roleChanged = true }
    }

    private mutating func becomePreCandidate() {
        role = .precandidate
        leader = nil
        votes = [configuration.id: true]
        ready.roleChanged = true
        resetRandomizedTimeout()
        let request = VoteRequest(term: term + 1, lastIndex: log.lastIndex, lastTerm: log.lastTerm)
        for voter in voters where voter != configuration.id { send(voter, .preVote(request)) }
    }

    private mutating func becomeCandidate(transfer: Bool) {
        role = .candidate
        term += 1
        votedFor = configuration.id
        leader = nil
        ready.hardState = hardState
        ready.roleChanged = true
        votes = [configuration.id: true]
        resetRandomizedTimeout()
        electionElapsed = 0
        if voters.count == 1 {
            becomeLeader()
            return
        }
        let request = VoteRequest(term: term, lastIndex: log.lastIndex, lastTerm: log.lastTerm, transfer: transfer)
        for voter in voters where voter != configuration.id { send(voter, .vote(request)) }
    }

    private mutating func tally(_ from: NodeID, _ granted: Bool) {
        guard voters.contains(from) else { return }
        votes[from] = granted
        let yes = votes.values.filter { $0 }.count
        let no = votes.values.filter { !$0 }.count
        if yes >= quorum {
            if role == .precandidate { becomeCandidate(transfer: false) } else { becomeLeader() }
        } else if no > voters.count - quorum {
            becomeFollower(term: term, leader: nil)
        }
    }

    private mutating func becomeLeader() {
        role = .leader
        leader = configuration.id
        transferee = nil
        electionElapsed = 0
        heartbeatElapsed = 0
        ready.roleChanged = true
        progress = [:]
        for member in membership.members where member.id != configuration.id {
            progress[member.id] = Progress(next: log.lastIndex + 1, learner: member.learner)
        }
        // A leader commits entries of earlier terms only through one of its own: the no-op. A single voter
        // is its own quorum and needs none.
        if voters.count == 1 {
            maybeCommit()
            return
        }
        appendLocally(
            [
                WireEntry(
                    term: term, index: log.lastIndex + 1, offset: nextOffset, appendTime: 0,
                    kind: EntryKind.noop.rawValue, bodyCRC: 0, body: [])
            ], truncateFrom: nil)
        for id in progress.keys.sorted() { sendAppend(to: id) }
    }

    private mutating func checkQuorumActive() -> Bool {
        var active = 1
        for (id, var progress) in progress {
            if !progress.learner && progress.recentActive { active += 1 }
            progress.recentActive = false
            self.progress[id] = progress
        }
        return active >= quorum || !isVoter
    }

    private mutating func resetRandomizedTimeout() {
        randomizedElectionTicks =
            configuration.electionTicks + Int(random.next() % UInt64(max(1, configuration.electionTicks)))
    }

    // MARK: Replication, leader side

    private mutating func broadcastAppend(fresh: [WireEntry]) {
        // A proposal larger than a batch goes out in batches, from the cache.
        let small =
            fresh.count <= configuration.maxBatchEntries
            && fresh.reduce(0, { $0 + $1.body.count + 64 }) <= configuration.maxBatchBytes
        for id in progress.keys.sorted() {
            guard var progress = progress[id] else { continue }
            // The common case: a follower in step receives exactly the new entries.
            if small, progress.state == .replicate, progress.next == fresh.first?.index,
                progress.inflight.count < configuration.maxInflight
            {
                let previous = progress.next - 1
                let request = AppendRequest(
                    term: term, prevIndex: previous, prevTerm: log.term(at: previous) ?? 0, commit: commitIndex,
                    entries: fresh)
                progress.next = fresh[fresh.count - 1].index + 1
                progress.inflight.append(progress.next - 1)
                self.progress[id] = progress
                send(id, .append(request))
            } else {
                sendAppend(to: id)
            }
        }
    }

    /// Sends `to` what it lacks, as flow control allows; `false` when nothing could be sent.
    @discardableResult
    private mutating func sendAppend(to id: NodeID) -> Bool {
        guard var progress = progress[id] else { return false }
        switch progress.state {
        case .snapshot: return false
        case .probe where progress.paused: return false
        case .replicate where progress.inflight.count >= configuration.maxInflight: return false
        default: break
        }
        let previous = progress.next - 1
        guard let previousTerm = log.term(at: previous) else {
            return sendSnapshot(to: id, &progress)
        }
        var batch: [WireEntry] = []
        // A probe carries no entries (they would be refused until the logs match), except the first one of a
        // new leader, whose followers are usually in step.
        if progress.next <= log.lastIndex
            && (progress.state == .replicate || progress.match + 1 == progress.next || progress.next == log.lastIndex)
        {
            guard
                let fetched = entries(from: progress.next), !fetched.isEmpty
            else {
                return sendSnapshot(to: id, &progress)
            }
            batch = fetched
        }
        let request = AppendRequest(
            term: term, prevIndex: previous, prevTerm: previousTerm, commit: commitIndex, entries: batch)
        if let last = batch.last {
            switch progress.state {
            case .replicate:
                progress.next = last.index + 1
                progress.inflight.append(last.index)
            case .probe:
                progress.paused = true
            case .snapshot:
                break
            }
        } else if progress.state == .probe {
            progress.paused = true
        }
        self.progress[id] = progress
        send(id, .append(request))
        return true
    }

    private mutating func sendSnapshot(to id: NodeID, _ progress: inout Progress) -> Bool {
        guard var snapshot = snapshotRequest else { return false }
        snapshot.term = term
        progress.state = .snapshot
        progress.pendingSnapshot = snapshot.index
        progress.inflight = []
        self.progress[id] = progress
        send(id, .snapshot(snapshot))
        return true
    }

    /// What a snapshot of this log says: where the retained log starts. Filled by the owner, which knows the
    /// offset and chain at the snapshot point.
    public var snapshotRequest: SnapshotRequest?

    private mutating func broadcastHeartbeat() {
        for id in progress.keys.sorted() {
            guard let progress = progress[id] else { continue }
            // A heartbeat matches the log at what the follower is known to hold, so it never fails for a
            // follower in step, and carries the commit index up to that point.
            let match = progress.match
            guard progress.state != .snapshot, let matchTerm = log.term(at: match) else {
                // Behind the retained log: (re)send the snapshot, which is only where the log starts.
                var progress = progress
                _ = sendSnapshot(to: id, &progress)
                continue
            }
            send(
                id,
                .append(
                    AppendRequest(
                        term: term, prevIndex: match, prevTerm: matchTerm, commit: min(commitIndex, match),
                        entries: [])))
        }
    }

    private mutating func handleAppendReply(from id: NodeID, _ reply: AppendReply) {
        guard var progress = progress[id] else { return }
        if !reply.success {
            // The follower lacks `rejected` or holds another term there.
            if reply.rejected < progress.match { return }  // an answer to an older message
            if reply.rejected == progress.match {
                // It no longer holds what it acknowledged (lost with an unsafe fsync policy): start lower.
                progress.match = min(progress.match, reply.index, reply.rejected &- 1)
            } else if progress.state == .probe && reply.rejected != progress.next - 1 {
                return  // an answer to an older probe
            }
            progress.state = .probe
            progress.inflight = []
            progress.paused = false
            progress.next = max(progress.match + 1, min(reply.rejected, reply.index + 1))
            self.progress[id] = progress
            sendAppend(to: id)
            return
        }
        let progressed = reply.index > progress.match
        if progressed {
            progress.match = reply.index
            progress.next = max(progress.next, reply.index + 1)
        }
        progress.inflight.removeAll { $0 <= reply.index }
        switch progress.state {
        case .probe:
            progress.paused = false
            if reply.index + 1 >= progress.next {
                // The probe matched: stream from here.
                progress.state = .replicate
                progress.next = progress.match + 1
                progress.inflight = []
            }
        case .replicate:
            // No progress (a heartbeat's answer) with a full window: what filled it may have been lost; free
            // a slot so that the next append finds out.
            if !progressed && progress.inflight.count >= configuration.maxInflight { progress.inflight.removeFirst() }
        case .snapshot:
            if progress.match >= progress.pendingSnapshot {
                progress.state = .probe
                progress.paused = false
            }
        }
        self.progress[id] = progress
        if progressed {
            maybeCommit()
            sendCommit(to: id)
        }
        if transferee == id && progress.match == log.lastIndex {
            send(id, .timeoutNow(term: term))
        }
        guard progress.match < log.lastIndex else { return }
        if !progressed && progress.state == .replicate && progress.next > log.lastIndex {
            // Everything was sent and nothing more arrived: an empty append checks that it all got there
            // (the transport is ordered, so it is refused only when something was lost).
            sendAppend(to: id)
            return
        }
        // Keep the pipeline full.
        while progress.next <= log.lastIndex, sendAppend(to: id) {
            progress = self.progress[id]!
            if progress.state != .replicate { break }
        }
    }

    private mutating func maybeCommit() {
        guard role == .leader else { return }
        var matches: [UInt64] = []
        for voter in voters {
            if voter == configuration.id {
                matches.append(persistedIndex)
            } else {
                matches.append(progress[voter]?.match ?? 0)
            }
        }
        guard !matches.isEmpty else { return }
        matches.sort(by: >)
        let candidate = matches[quorum - 1]
        guard candidate > commitIndex else { return }
        // Only entries of this term commit by counting (Raft §5.4.2); a single voter is its own quorum.
        guard voters.count == 1 || log.term(at: candidate) == term else { return }
        setCommit(candidate)
        // Followers that have been sent everything learn the new commit index now rather than at the next
        // heartbeat, so that appends they forwarded complete without waiting for one.
        for id in progress.keys.sorted() { sendCommit(to: id) }
        // A removed leader steps down once the membership without it commits.
        if !isVoter, let last = membershipHistory.last, last.index <= commitIndex {
            becomeFollower(term: term, leader: nil)
        }
    }

    /// Tells a follower that has everything sent to it, and has not heard it yet, how far it is committed.
    private mutating func sendCommit(to id: NodeID) {
        guard let progress = progress[id], progress.state == .replicate, progress.next > log.lastIndex,
            progress.sentCommit < min(commitIndex, progress.match), let matchTerm = log.term(at: progress.match)
        else { return }
        send(
            id,
            .append(
                AppendRequest(
                    term: term, prevIndex: progress.match, prevTerm: matchTerm,
                    commit: min(commitIndex, progress.match),
                    entries: [])))
    }

    private mutating func setCommit(_ index: UInt64) {
        guard index > commitIndex else { return }
        commitIndex = index
        ready.commitIndex = index
        evictReplicated()
    }

    // MARK: Replication, follower side

    /// The leader's commit index as last heard, applied once the matching entries are on disk.
    private var pendingLeaderCommit: UInt64 = 0

    private mutating func handleAppend(from: NodeID, _ request: AppendRequest) {
        // PeerCodec refuses such a frame from a peer and closes its connection; a request made in-process is
        // held to the same rule here, before the log relies on it.
        guard request.inconsistency == nil else { return }
        guard let localTerm = log.term(at: request.prevIndex), localTerm == request.prevTerm else {
            if request.prevIndex < log.snapshotIndex {
                // Behind our snapshot: everything up to it is committed and stored here.
                send(from, .appendReply(AppendReply(term: term, success: true, index: log.snapshotIndex)))
                return
            }
            // Where the leader should probe next: the last index here whose term is at most the leader's term
            // at prevIndex (entries of a later term here cannot match), so a diverging suffix is skipped in one
            // round trip rather than one index at a time.
            let hint = log.lastIndex(atOrBelow: min(log.lastIndex, request.prevIndex), termAtMost: request.prevTerm)
            send(
                from,
                .appendReply(AppendReply(term: term, success: false, index: hint, rejected: request.prevIndex)))
            return
        }
        // Skip the entries already held; cut the log at the first conflict.
        var firstNew = request.entries.count
        var truncateFrom: UInt64?
        for (position, entry) in request.entries.enumerated() {
            guard let existing = log.term(at: entry.index) else {
                firstNew = position
                break
            }
            if existing != entry.term {
                // A leader never replaces a committed entry; refuse a message that would.
                guard entry.index > commitIndex else { return }
                truncateFrom = entry.index
                firstNew = position
                break
            }
        }
        if firstNew < request.entries.count {
            appendLocally(Array(request.entries[firstNew...]), truncateFrom: truncateFrom)
        }
        let last = request.prevIndex + UInt64(request.entries.count)
        pendingLeaderCommit = max(pendingLeaderCommit, min(request.commit, last))
        if persistedIndex >= last {
            send(from, .appendReply(AppendReply(term: term, success: true, index: last)))
        } else {
            owedReplies.append((from, term, last))
        }
        advanceFollowerCommit(to: pendingLeaderCommit)
    }

    private mutating func advanceFollowerCommit(to index: UInt64) {
        let target = min(index, persistedIndex)
        if target > commitIndex { setCommit(target) }
    }

    private mutating func handleSnapshot(from: NodeID, _ request: SnapshotRequest) {
        if request.index <= commitIndex {
            send(from, .snapshotReply(AppendReply(term: term, success: true, index: commitIndex)))
            return
        }
        if log.term(at: request.index) == request.indexTerm {
            // We hold the snapshot point already: only the commit index moves.
            pendingLeaderCommit = max(pendingLeaderCommit, request.index)
            advanceFollowerCommit(to: request.index)
            send(
                from, .snapshotReply(AppendReply(term: term, success: true, index: min(persistedIndex, request.index))))
            return
        }
        log.reset(snapshotIndex: request.index, term: request.indexTerm)
        clearCache(next: request.index + 1)
        persistedIndex = request.index
        commitIndex = request.index
        ready.commitIndex = request.index
        nextOffset = request.nextOffset
        baseMembership = request.membership
        membershipHistory = []
        setMembership(request.membership)
        owedReplies = []
        ready.log.append(.installSnapshot(request))
        // Answered once the install is on disk (`persisted(through: request.index)`).
        owedSnapshotReply = (from, term, request.index)
    }

    /// The answer to an install-snapshot, owed until the install is durable.
    private var owedSnapshotReply: (to: NodeID, term: UInt64, index: UInt64)?

    // MARK: The log

    private mutating func appendLocally(_ entries: [WireEntry], truncateFrom: UInt64?) {
        if let truncateFrom {
            log.truncate(from: truncateFrom)
            persistedIndex = min(persistedIndex, truncateFrom - 1)
            owedReplies.removeAll { $0.index >= truncateFrom }
            if let first = entries.first { nextOffset = first.offset }
            if truncateFrom < cacheFirst {
                clearCache(next: truncateFrom)
            } else {
                let keep = cacheHead + Int(truncateFrom - cacheFirst)
                for entry in cache[keep...] { cacheBytes -= entry.body.count }
                cache.removeSubrange(keep...)
            }
            if membershipHistory.contains(where: { $0.index >= truncateFrom }) {
                membershipHistory.removeAll { $0.index >= truncateFrom }
                setMembership(membershipHistory.last?.membership ?? baseMembership)
            }
        }
        for entry in entries {
            // Holds for every append handleAppend lets through (it refuses inconsistent requests first).
            precondition(entry.index == log.lastIndex + 1, "raft: entries must follow the log")
            log.append(term: entry.term)
            nextOffset = entry.offset + (entry.kind == EntryKind.event.rawValue ? 1 : 0)
            if entry.kind == EntryKind.membership.rawValue, let next = Membership(decoding: entry.body) {
                membershipHistory.append((entry.index, next))
                setMembership(next)
            }
        }
        if cacheFirst + UInt64(cache.count - cacheHead) != entries.first?.index ?? 0 {
            clearCache(next: entries.first?.index ?? log.lastIndex + 1)
        }
        cache.append(contentsOf: entries)
        for entry in entries { cacheBytes += entry.body.count }
        evict(keepingAbove: 0)
        ready.log.append(.append(truncateFrom: truncateFrom, entries: entries))
    }

    // MARK: The entry cache

    /// Up to a batch of entries from `index`: from the cache, else from the disk.
    private func entries(from index: UInt64) -> [WireEntry]? {
        let cached = UInt64(cache.count - cacheHead)
        guard index >= cacheFirst, index < cacheFirst + cached else {
            return fetch(index, configuration.maxBatchEntries, configuration.maxBatchBytes)
        }
        var end = cacheHead + Int(index - cacheFirst)
        let start = end
        var bytes = 0
        while end < cache.count && end - start < configuration.maxBatchEntries {
            bytes += cache[end].body.count + 64
            if bytes > configuration.maxBatchBytes && end > start { break }
            end += 1
        }
        return Array(cache[start..<end])
    }

    private mutating func clearCache(next: UInt64) {
        cache = []
        cacheHead = 0
        cacheBytes = 0
        cacheFirst = next
    }

    /// Drops cached entries at or below `index`, and the oldest ones while over the budget.
    private mutating func evict(keepingAbove index: UInt64) {
        while cacheHead < cache.count
            && (cacheFirst <= index || cacheBytes > cacheBudget)
        {
            cacheBytes -= cache[cacheHead].body.count
            cacheHead += 1
            cacheFirst += 1
        }
        if cacheHead > 4096 && cacheHead * 2 > cache.count {
            cache.removeFirst(cacheHead)
            cacheHead = 0
        }
    }

    /// A leader keeps only what some follower still lacks; a follower only what is not committed.
    private mutating func evictReplicated() {
        let lowest = role == .leader ? (progress.values.map(\.match).min() ?? persistedIndex) : commitIndex
        evict(keepingAbove: min(lowest, commitIndex, persistedIndex))
    }

    /// A membership takes effect as soon as its entry is in the log.
    private mutating func setMembership(_ next: Membership) {
        guard next != membership else { return }
        membership = next
        voters = next.voters
        ready.membership = next
        if role == .leader {
            for member in next.members where member.id != configuration.id {
                if progress[member.id] == nil {
                    progress[member.id] = Progress(next: log.lastIndex + 1, learner: member.learner)
                } else {
                    progress[member.id]?.learner = member.learner
                }
            }
            for id in progress.keys where next.member(id) == nil { progress[id] = nil }
        } else if role == .follower || role == .learner {
            let wanted: Role = isLearner ? .learner : .follower
            if role != wanted {
                role = wanted
                ready.roleChanged = true
            }
        }
    }

    // MARK: Helpers

    private mutating func send(_ to: NodeID, _ message: RaftMessage) {
        if case .append(let request) = message, role == .leader {
            if let sent = progress[to]?.sentCommit, sent < request.commit { progress[to]!.sentCommit = request.commit }
        }
        ready.messages.append((to, message))
    }

    private static func term(of message: RaftMessage) -> UInt64? {
        switch message {
        case .preVote(let request), .vote(let request): request.term
        case .preVoteReply(let reply), .voteReply(let reply): reply.term
        case .append(let request): request.term
        case .appendReply(let reply), .snapshotReply(let reply): reply.term
        case .snapshot(let request): request.term
        case .timeoutNow(let term): term
        case .forward, .forwardReply: nil
        }
    }
}

/// A small, seedable pseudo-random generator for election timeouts (deterministic in tests).
struct SplitMix: Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
