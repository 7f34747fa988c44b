import Dispatch
import PlexusPluginSDK
import RaftCore
import Synchronization

/// One stream as the kernel sees it: its Raft group (a `RaftNode` under a lock) and its log on this node
/// (`StreamLog`).
///
/// An append on the leader is proposed to the group and completes once it is committed (on a quorum's disks)
/// and on this node's disk; on a follower it is forwarded to the leader and completes once this node has
/// committed it too, so whoever was acknowledged can read it here. Everything the group asks for (`Ready`) is
/// carried out under the group's lock, in order: log changes to the writer's queue, messages to the
/// transport. A new term or vote is written to the `raft` file outside the lock, by one thread at a time
/// (`persistRaftState`), and until it is durable the messages and log changes that follow it are held back
/// (etcd's Ready/Advance): no vote or append of the new term leaves this node, and no entry of it reaches
/// the disk, before the term and vote do. Completions run after the lock is released.
public final class RaftStream: Sendable {
    let name: String
    let log: StreamLog
    let context: RaftContext

    typealias AppendCompletion = @Sendable (Result<UInt64, PluginError>) -> Void

    /// A proposal of this node, waiting for its entries to be committed.
    struct Proposal {
        var lastIndex: UInt64
        var term: UInt64
        var firstOffset: UInt64
        var deadline: DispatchTime
        /// A local append, or a follower's forwarded one (answered with a message).
        var completion: AppendCompletion?
        var forwardedBy: (node: NodeID, id: UInt64)?
    }

    /// An append this follower forwarded, or holds until a leader is known.
    struct Forward {
        var bodies: [[UInt8]]
        var crcs: [UInt32]
        var deadline: DispatchTime
        var completion: AppendCompletion
        /// Sent to this leader; `nil` while waiting for one.
        var sentTo: NodeID?
        /// Answered: committed at the leader up to this index, with this first offset; waiting for this node
        /// to commit it.
        var committed: (lastIndex: UInt64, firstOffset: UInt64)?
    }

    struct State {
        var node: RaftNode
        /// What the `raft` file holds.
        var raftState: RaftState
        /// What it is to hold: ahead of `raftState` while a write is owed.
        var wantedRaftState: RaftState
        /// A term or vote in `wantedRaftState` is not durable yet: messages and log changes wait in `held`.
        var hardStatePending = false
        var held: [Held] = []
        /// A thread is writing the `raft` file (`persistRaftState`).
        var persisting = false
        var proposals: [Proposal] = []
        var forwards: [UInt64: Forward] = [:]
        /// Random at each start, so that a leader never takes a restarted follower's new forward for an old one.
        var nextForwardID = UInt64.random(in: 1...(UInt64.max >> 1))
        /// The role and leader last reported, to log changes once.
        var reportedLeader: NodeID?
        /// Set when the log or the `raft` file could not be written: the group takes no further part until
        /// `recover` rebuilds it.
        var failure: StreamLog.Fence?
        /// The forwarded appends among the entries that reached this member's log in messages (a new leader
        /// answers a forward resent to it from here instead of appending it twice).
        var forwarded: [ForwardTag: ForwardedEntries] = [:]
        /// The commit index last written to the `commit` file, and ticks since.
        var hintWritten: UInt64 = 0
        var ticksSinceHint = 0
    }

    /// What waits for the term and vote to be durable, in the order the group asked for it.
    enum Held {
        case message(Envelope)
        case log(RaftNode.LogChange)
    }

    /// Where a forwarded append's entries are in the log.
    struct ForwardedEntries {
        var firstIndex: UInt64
        var lastIndex: UInt64
        var firstOffset: UInt64
        var term: UInt64
        var count: Int
        /// The first entry's body CRC, checked against the resent forward's as well.
        var firstCRC: UInt32
    }

    let state: Mutex<State>

    /// Builds the group over a recovered log and starts the log's writer. A single voter becomes leader at
    /// once.
    init(name: String, log: StreamLog, context: RaftContext) throws {
        self.name = name
        self.log = log
        self.context = context
        let (node, raftState) = try Self.makeNode(name: name, log: log, context: context, commitFloor: 0)
        state = Mutex(
            State(node: node, raftState: raftState, wantedRaftState: raftState, hintWritten: node.commitIndex))
        log.start(
            StreamLog.Listener(
                persisted: { [weak self] index, term in self?.persisted(index, term) },
                compacted: { [weak self] in self?.compacted() },
                failed: { [weak self] fence in self?.fail(fence) }))
        let completions = state.withLock { s in process(&s) }
        run(completions)
    }

    /// The group over the log as it is on disk: its term, vote and membership from the `raft` file, its log
    /// from the recovered segments, its commit index from the `commit` hint (or `commitFloor`, an index known
    /// committed). A single voter becomes leader at once.
    private static func makeNode(name: String, log: StreamLog, context: RaftContext, commitFloor: UInt64) throws
        -> (RaftNode, RaftState)
    {
        var raftState = try RaftState.load(directory: log.directory, stream: name)
        let (meta, history, nextOffset) = log.visible.withLock { v -> (LogMeta, [(UInt64, Membership)], UInt64) in
            let first = v.segments[0].header
            var meta = LogMeta(snapshotIndex: first.baseIndex - 1, snapshotTerm: first.baseTerm)
            var history: [(UInt64, Membership)] = []
            for segment in v.segments {
                for (number, run) in segment.scannedTerms.enumerated() {
                    let end =
                        number + 1 < segment.scannedTerms.count
                        ? segment.scannedTerms[number + 1].start : segment.nextIndex
                    meta.append(term: run.term, count: end - run.start)
                }
                for (index, body) in segment.scannedMemberships where index > raftState.membershipIndex {
                    if let membership = Membership(decoding: body) { history.append((index, membership)) }
                }
            }
            return (meta, history, v.writtenEnd)
        }
        if raftState.membership == nil { raftState.membership = context.initialMembership }
        let fetch: RaftNode.EntrySource = { [log] index, count, bytes in
            log.entries(from: index, maxCount: count, maxBytes: bytes)
        }
        let hint = CommitHint.load(directory: log.directory)
        var node = RaftNode(
            configuration: context.raftConfiguration,
            hardState: .init(term: raftState.term, votedFor: raftState.votedFor), log: meta,
            commitIndex: max(hint, commitFloor),
            baseMembership: raftState.membership!, history: history, nextOffset: nextOffset,
            seed: UInt64.random(in: 0...UInt64.max), fetch: fetch)
        let point = log.snapshotPoint()
        node.snapshotRequest = SnapshotRequest(
            term: 0, index: point.index, indexTerm: point.term, nextOffset: point.nextOffset, chain: point.chain,
            membership: raftState.membership!)
        let lost = RecoveringMarker.load(directory: log.directory)
        if lost > 0 && !context.isSingleVoter(node) {
            node.setRecovering(until: lost)
            if node.isRecovering {
                context.report(
                    .warning,
                    "raft-log: stream '\(name)': this member lost entries up to index \(lost) to damage on disk; it "
                        + "neither votes nor stands for election until it has them again from a leader")
            }
        }
        if lost > 0 && !node.isRecovering { RecoveringMarker.remove(directory: log.directory) }
        if context.isSingleVoter(node) { node.campaign(transfer: false) }
        context.membershipChanged(node.membership, stream: name)
        if node.commitIndex > 0 { log.publishCommit(node.commitIndex) }
        return (node, raftState)
    }

    // MARK: Appends

    /// Appends events: proposed here when this node leads, else forwarded to the leader. Each event's bytes
    /// are copied once, from the kernel's borrowed event into its entry body; the writer writes the bodies
    /// from there.
    func append(_ events: EventBatchView, completion: @escaping AppendCompletion) throws {
        var bodies: [[UInt8]] = []
        var crcs: [UInt32] = []
        bodies.reserveCapacity(events.count)
        crcs.reserveCapacity(events.count)
        for (position, event) in events.enumerated() {
            let body = EventCodec.encode(event)
            guard body.count <= context.settings.maxEventBytes else {
                throw PluginError.invalidArgument(
                    "raft-log: event \(position) (id '\(event.id)') encodes to \(body.count) bytes, more than "
                        + "maxEventBytes (\(context.settings.maxEventBytes))")
            }
            bodies.append(body)
            crcs.append(CRC32C.checksum(body))
        }
        if let failure = log.failure { throw failure.refusal(stream: name) }
        let forwardBytes = bodies.reduce(0) { $0 + $1.count + 8 }
        let completions = try state.withLock { s throws(PluginError) -> [() -> Void] in
            if let failure = s.failure { throw failure.refusal(stream: name) }
            if s.node.role == .leader {
                try propose(&s, bodies: bodies, crcs: crcs, completion: completion, forwardedBy: nil)
            } else {
                guard forwardBytes <= context.maxForwardBytes else {
                    throw PluginError.invalidArgument(
                        "raft-log: stream '\(name)': a batch of \(forwardBytes) bytes is too large to forward to the "
                            + "leader (at most \(context.maxForwardBytes)); publish smaller batches")
                }
                let id = s.nextForwardID
                s.nextForwardID += 1
                s.forwards[id] = Forward(
                    bodies: bodies, crcs: crcs, deadline: .now() + .milliseconds(context.settings.forwardTimeoutMs),
                    completion: completion)
                sendForwards(&s)
            }
            return process(&s)
        }
        run(completions)
    }

    private func propose(
        _ s: inout State, bodies: [[UInt8]], crcs: [UInt32], completion: AppendCompletion?,
        forwardedBy: (node: NodeID, id: UInt64)?
    ) throws(PluginError) {
        // A single member's append waits for its disk however slow, as before replication; in a cluster an
        // append that no quorum takes in time fails (it may still be committed).
        let deadline =
            context.isSingleVoter(s.node)
            ? DispatchTime.distantFuture : .now() + .milliseconds(context.settings.forwardTimeoutMs)
        guard !bodies.isEmpty else {
            // An empty batch stores nothing; it completes, after every append before it, with the offset it
            // would have had (term 0 marks it).
            guard s.node.role == .leader else {
                throw PluginError(refusal: .notLeader(leader: s.node.leader), stream: name)
            }
            s.proposals.append(
                Proposal(
                    lastIndex: s.node.log.lastIndex, term: 0, firstOffset: s.node.nextOffset, deadline: deadline,
                    completion: completion, forwardedBy: forwardedBy))
            return
        }
        do {
            let (firstIndex, firstOffset) = try s.node.propose(
                kind: .event, bodies: zip(bodies, crcs).map { ($0, $1) }, appendTime: Files.now(),
                forward: forwardedBy.map { ForwardTag(origin: $0.node, id: $0.id) })
            s.proposals.append(
                Proposal(
                    lastIndex: firstIndex + UInt64(bodies.count) - 1, term: s.node.term, firstOffset: firstOffset,
                    deadline: deadline, completion: completion, forwardedBy: forwardedBy))
        } catch {
            throw PluginError(refusal: error, stream: name)
        }
    }

    /// Sends held forwards to the leader, when one is known.
    private func sendForwards(_ s: inout State) {
        guard let leader = s.node.leader, leader != context.id else { return }
        for (id, forward) in s.forwards.sorted(by: { $0.key < $1.key }) where forward.sentTo == nil {
            s.forwards[id]!.sentTo = leader
            context.send(
                Envelope(
                    from: context.id, to: leader, stream: name,
                    message: .forward(ForwardRequest(id: id, bodies: forward.bodies, crcs: forward.crcs))))
            context.statistics.forwarded(count: forward.bodies.count)
        }
    }

    // MARK: Events from the network, the writer and the clock

    func receive(_ envelope: Envelope) {
        let completions = state.withLock { s -> [() -> Void] in
            guard s.failure == nil else { return [] }
            switch envelope.message {
            case .forward(let request):
                do throws(PluginError) {
                    guard s.node.role == .leader else {
                        throw PluginError(PX_ERR_UNAVAILABLE, "raft-log: '\(context.id)' does not lead '\(name)'")
                    }
                    let tag = ForwardTag(origin: envelope.from, id: request.id)
                    if let known = s.forwarded[tag], known.count == request.bodies.count,
                        known.firstCRC == request.crcs.first, s.node.log.term(at: known.lastIndex) == known.term
                    {
                        // Resent after a leader change, and already in this log: answer once it is committed.
                        let proposal = Proposal(
                            lastIndex: known.lastIndex, term: known.term, firstOffset: known.firstOffset,
                            deadline: .now() + .milliseconds(context.settings.forwardTimeoutMs), completion: nil,
                            forwardedBy: (envelope.from, request.id))
                        let position = s.proposals.firstIndex { $0.lastIndex > known.lastIndex } ?? s.proposals.count
                        s.proposals.insert(proposal, at: position)
                        context.statistics.deduplicated(count: request.bodies.count)
                    } else {
                        try propose(
                            &s, bodies: request.bodies, crcs: request.crcs, completion: nil,
                            forwardedBy: (envelope.from, request.id))
                    }
                } catch {
                    context.send(
                        Envelope(
                            from: context.id, to: envelope.from, stream: name,
                            message: .forwardReply(
                                ForwardReply(
                                    id: request.id, status: error.status, message: error.message,
                                    firstOffset: 0, lastIndex: 0))))
                }
            case .forwardReply(let reply):
                guard var forward = s.forwards[reply.id] else { break }
                if reply.status == PX_OK.status {
                    forward.committed = (reply.lastIndex, reply.firstOffset)
                    s.forwards[reply.id] = forward
                } else if reply.status == PX_ERR_UNAVAILABLE.status && forward.deadline > .now() {
                    // Not the leader (any more), or handing over: hold it for the next one, asked at the next
                    // tick at the latest.
                    s.forwards[reply.id]!.sentTo = nil
                } else {
                    s.forwards[reply.id] = nil
                    let completion = forward.completion
                    let error = PluginError(status: reply.status, reply.message)
                    return process(&s) + [{ completion(.failure(error)) }]
                }
            default:
                s.node.step(from: envelope.from, envelope.message)
            }
            return process(&s)
        }
        run(completions)
    }

    private func persisted(_ index: UInt64, _ term: UInt64) {
        let completions = state.withLock { s -> [() -> Void] in
            guard s.failure == nil else { return [] }
            s.node.persisted(through: index, term: term)
            return process(&s)
        }
        run(completions)
    }

    private func compacted() {
        let point = log.snapshotPoint()
        let completions = state.withLock { s -> [() -> Void] in
            s.node.compacted(through: point.index)
            let membership = s.node.baseMembership
            s.node.snapshotRequest = SnapshotRequest(
                term: 0, index: point.index, indexTerm: point.term, nextOffset: point.nextOffset, chain: point.chain,
                membership: membership)
            guard s.wantedRaftState.membership != membership && s.wantedRaftState.membershipIndex <= point.index
            else { return [] }
            s.wantedRaftState.membership = membership
            s.wantedRaftState.membershipIndex = point.index
            return schedulePersist(&s)
        }
        run(completions)
    }

    /// Advances the group's clock, times out what waited too long, and writes the commit hint about once a
    /// second.
    /// - Returns: how many entries the furthest-behind follower lacks, when this node leads the stream.
    @discardableResult
    func tick() -> UInt64? {
        let (completions, hint, lag) = state.withLock { s -> ([() -> Void], UInt64?, UInt64?) in
            guard s.failure == nil else { return ([], nil, nil) }
            s.node.tick()
            let now = DispatchTime.now()
            var late: [() -> Void] = []
            for (id, forward) in s.forwards.filter({ $0.value.deadline <= now }).sorted(by: { $0.key < $1.key }) {
                s.forwards[id] = nil
                let error =
                    forward.committed == nil
                    ? PluginError(
                        PX_ERR_UNAVAILABLE,
                        "raft-log: stream '\(name)': no leader took the append within "
                            + "\(context.settings.forwardTimeoutMs) ms (leader: \(s.node.leader ?? "unknown")); it may "
                            + "still be committed")
                    : PluginError(
                        PX_ERR_TIMEOUT,
                        "raft-log: stream '\(name)': the append was committed by the leader but did not reach this "
                            + "node within \(context.settings.forwardTimeoutMs) ms")
                late.append { forward.completion(.failure(error)) }
            }
            if s.node.role != .leader { sendForwards(&s) }
            var hint: UInt64?
            s.ticksSinceHint += 1
            if s.ticksSinceHint >= 10 && s.node.commitIndex > s.hintWritten {
                s.ticksSinceHint = 0
                hint = s.node.commitIndex
                s.hintWritten = s.node.commitIndex
            }
            if s.proposals.contains(where: { $0.deadline <= now }) {
                let timeout = PluginError(
                    PX_ERR_TIMEOUT,
                    "raft-log: stream '\(name)': the append was not committed within "
                        + "\(context.settings.forwardTimeoutMs) ms (it may still be)")
                s.proposals.removeAll { proposal in
                    guard proposal.deadline <= now else { return false }
                    late += answer(proposal, .failure(timeout))
                    return true
                }
            }
            return (process(&s) + late, hint, Self.lag(s.node))
        }
        // Outside the lock: appends and messages of this stream never wait for the file.
        if let hint { _ = CommitHint.write(hint, directory: log.directory) }
        run(completions)
        return lag
    }

    /// How many entries the furthest-behind follower lacks, when `node` leads.
    private static func lag(_ node: RaftNode) -> UInt64? {
        guard node.role == .leader else { return nil }
        return node.progress.values.map { behind(node, $0) }.max() ?? 0
    }

    private static func behind(_ node: RaftNode, _ progress: RaftNode.Progress) -> UInt64 {
        node.log.lastIndex - min(progress.match, node.log.lastIndex)
    }

    // MARK: Carrying out what the group asks for

    /// Carries out the node's `Ready` and settles what it resolved; returns the completions to run unlocked.
    private func process(_ s: inout State) -> [() -> Void] {
        var completions: [() -> Void] = []
        while true {
            let ready = s.node.takeReady()
            if ready.isEmpty { break }
            if let hard = ready.hardState {
                // Messages and entries that depend on an unsaved vote or term wait until it is durable.
                s.wantedRaftState.term = hard.term
                s.wantedRaftState.votedFor = hard.votedFor
                s.hardStatePending = true
                completions += schedulePersist(&s)
            }
            for change in ready.log {
                track(change, &s)
                if case .append(let truncateFrom?, _) = change {
                    // Our uncommitted proposals from there on were replaced.
                    s.proposals.removeAll { proposal in
                        guard proposal.lastIndex >= truncateFrom else { return false }
                        completions += answer(proposal, .failure(replaced))
                        return true
                    }
                }
                if s.hardStatePending { s.held.append(.log(change)) } else { log.enqueue(change) }
            }
            for (to, message) in ready.messages {
                let envelope = Envelope(from: context.id, to: to, stream: name, message: message)
                if s.hardStatePending { s.held.append(.message(envelope)) } else { context.send(envelope) }
            }
            if let membership = ready.membership { context.membershipChanged(membership, stream: name) }
            if ready.recovered {
                completions.append { [self] in
                    RecoveringMarker.remove(directory: log.directory)
                    context.report(
                        .info,
                        "raft-log: stream '\(name)': this member has every entry it lost again; it votes and stands "
                            + "for election again")
                }
            }
            if let commit = ready.commitIndex {
                log.publishCommit(commit)
                // The newest committed membership is kept beside the log, so that retention may drop its entry.
                if let (index, membership) = s.node.committedMembership, index > s.wantedRaftState.membershipIndex {
                    s.wantedRaftState.membershipIndex = index
                    s.wantedRaftState.membership = membership
                    completions += schedulePersist(&s)
                }
            }
            if ready.roleChanged {
                if s.node.role == .candidate { context.statistics.electionStarted() }
                if s.reportedLeader != s.node.leader {
                    s.reportedLeader = s.node.leader
                    context.leaderChanged(stream: name, leader: s.node.leader, term: s.node.term, role: s.node.role)
                }
                if s.node.role == .leader {
                    // Appends held while there was no leader, or sent to an earlier one that never answered,
                    // are proposed here now (one the earlier leader did commit is then stored twice).
                    let held = s.forwards.filter { $0.value.committed == nil }
                    for (id, forward) in held.sorted(by: { $0.key < $1.key }) {
                        s.forwards[id] = nil
                        do {
                            try propose(
                                &s, bodies: forward.bodies, crcs: forward.crcs, completion: forward.completion,
                                forwardedBy: nil)
                        } catch {
                            completions.append { forward.completion(.failure(error)) }
                        }
                    }
                } else {
                    // Forwards to an earlier leader that never answered go to the new one.
                    for (id, forward) in s.forwards
                    where forward.committed == nil && forward.sentTo != nil && forward.sentTo != s.node.leader {
                        s.forwards[id]!.sentTo = nil
                    }
                    sendForwards(&s)
                }
            }
        }
        completions += settle(&s)
        return completions
    }

    /// Keeps `forwarded` in step with the log.
    private func track(_ change: RaftNode.LogChange, _ s: inout State) {
        switch change {
        case .installSnapshot:
            s.forwarded = [:]
        case .append(let truncateFrom, let entries):
            if let truncateFrom { s.forwarded = s.forwarded.filter { $0.value.lastIndex < truncateFrom } }
            for entry in entries {
                guard let tag = entry.forward else { continue }
                if var known = s.forwarded[tag], known.term == entry.term, known.lastIndex + 1 == entry.index {
                    known.lastIndex = entry.index
                    known.count += 1
                    s.forwarded[tag] = known
                } else {
                    s.forwarded[tag] = ForwardedEntries(
                        firstIndex: entry.index, lastIndex: entry.index, firstOffset: entry.offset, term: entry.term,
                        count: 1, firstCRC: entry.bodyCRC)
                }
            }
            // Bounded: a forward is resent within forwardTimeoutMs, long after which its entries are committed.
            if s.forwarded.count > 65_536 {
                let commit = s.node.commitIndex
                s.forwarded = s.forwarded.filter { $0.value.lastIndex > commit }
            }
        }
    }

    /// Completes the proposals and forwards that are committed and on this node's disk.
    private func settle(_ s: inout State) -> [() -> Void] {
        let settled = min(s.node.commitIndex, s.node.persistedIndex)
        var completions: [() -> Void] = []
        while let first = s.proposals.first, first.lastIndex <= settled {
            s.proposals.removeFirst()
            let stored = first.term == 0 || s.node.log.term(at: first.lastIndex) == first.term
            completions += answer(first, stored ? .success(first.firstOffset) : .failure(replaced))
        }
        for (id, forward) in s.forwards.sorted(by: { $0.key < $1.key }) {
            guard let committed = forward.committed, committed.lastIndex <= settled else { continue }
            s.forwards[id] = nil
            completions.append { forward.completion(.success(committed.firstOffset)) }
        }
        return completions
    }

    /// The log's writer failed: every waiting append fails, and the group takes no further part until
    /// `recover`.
    private func fail(_ fence: StreamLog.Fence) {
        let completions = state.withLock { s in
            failAll(&s, .init(reason: "its log is fenced: \(fence.reason)", outOfSpace: fence.outOfSpace))
        }
        run(completions)
    }

    private func failAll(_ s: inout State, _ fence: StreamLog.Fence) -> [() -> Void] {
        if s.failure == nil {
            s.failure = fence
            context.report(.error, "raft-log: stream '\(name)' stops taking part in replication: \(fence.reason)")
        }
        let error = (s.failure ?? fence).refusal(stream: name)
        var completions: [() -> Void] = []
        for proposal in s.proposals { completions += answer(proposal, .failure(error)) }
        for (_, forward) in s.forwards.sorted(by: { $0.key < $1.key }) {
            completions.append { forward.completion(.failure(error)) }
        }
        s.proposals = []
        s.forwards = [:]
        s.held = []
        return completions
    }

    /// Why an append whose entries a new leader replaced fails.
    private var replaced: PluginError {
        PluginError(
            PX_ERR_UNAVAILABLE,
            "raft-log: stream '\(name)': leadership changed before the append was committed; it was not stored")
    }

    /// Answers a proposal: the follower that forwarded it, or its local completion (returned, to run unlocked).
    private func answer(_ proposal: Proposal, _ result: Result<UInt64, PluginError>) -> [() -> Void] {
        if let (node, id) = proposal.forwardedBy {
            reply(to: node, id: id, result.map { ($0, proposal.lastIndex) })
        }
        guard let completion = proposal.completion else { return [] }
        return [{ completion(result) }]
    }

    private func reply(to node: NodeID, id: UInt64, _ result: Result<(UInt64, UInt64), PluginError>) {
        let reply: ForwardReply
        switch result {
        case .success(let (firstOffset, lastIndex)):
            reply = ForwardReply(
                id: id, status: PX_OK.status, message: "", firstOffset: firstOffset, lastIndex: lastIndex)
        case .failure(let error):
            reply = ForwardReply(id: id, status: error.status, message: error.message, firstOffset: 0, lastIndex: 0)
        }
        context.send(Envelope(from: context.id, to: node, stream: name, message: .forwardReply(reply)))
    }

    /// Starts the writer of the `raft` file unless one runs: the returned completion, run unlocked, writes
    /// `wantedRaftState` until the file holds it.
    private func schedulePersist(_ s: inout State) -> [() -> Void] {
        guard !s.persisting, s.failure == nil else { return [] }
        s.persisting = true
        return [{ [self] in persistRaftState() }]
    }

    /// Writes the newest wanted term, vote and membership to the `raft` file, outside the group's lock, until
    /// the file holds what is wanted; once a term or vote is durable, sends the messages and queues the log
    /// changes held back for it, in order. A failed write of a term or vote stops the group (its memory is
    /// ahead of its disk); a failed write of a membership alone is reported and retried at the next change.
    private func persistRaftState() {
        while true {
            let target = state.withLock { s -> RaftState? in
                guard s.failure == nil, s.wantedRaftState != s.raftState else {
                    s.persisting = false
                    if s.failure == nil { release(&s) }
                    return nil
                }
                return s.wantedRaftState
            }
            guard let target else { return }
            let failed = write(target)
            let (proceed, completions) = state.withLock { s -> (Bool, [() -> Void]) in
                guard s.failure == nil else {
                    s.persisting = false
                    return (false, [])
                }
                if let failed {
                    s.persisting = false
                    guard s.hardStatePending else { return (false, []) }
                    return (
                        false,
                        failAll(
                            &s,
                            .init(
                                reason: "its Raft state (term and vote) could not be written: \(failed.reason)",
                                outOfSpace: failed.outOfSpace))
                    )
                }
                s.raftState = target
                if s.wantedRaftState.term == target.term && s.wantedRaftState.votedFor == target.votedFor {
                    release(&s)
                }
                return (true, [])
            }
            run(completions)
            guard proceed else { return }
        }
    }

    /// The term and vote are durable: what was held back for them goes out, in order.
    private func release(_ s: inout State) {
        guard s.hardStatePending else { return }
        s.hardStatePending = false
        for item in s.held {
            switch item {
            case .message(let envelope): context.send(envelope)
            case .log(let change): log.enqueue(change)
            }
        }
        s.held = []
    }

    /// Writes the `raft` file durably; on failure the stream stops taking part (its messages are dropped).
    /// - Returns: why it failed, or nil when it is written.
    private func write(_ next: RaftState) -> StreamLog.Fence? {
        do {
            try Files.replace(
                log.directory + "/" + RaftState.fileName, with: next.encoded(), directory: log.directory, sync: true)
            return nil
        } catch {
            context.report(.error, "raft-log: stream '\(name)': cannot write its Raft state (term and vote): \(error)")
            return StreamLog.Fence(error)
        }
    }

    private func run(_ completions: [() -> Void]) {
        for completion in completions { completion() }
    }

    /// Writes the commit hint now (at stop).
    func saveCommitHint() {
        let commit = state.withLock { $0.node.commitIndex }
        if commit > 0 { _ = CommitHint.write(commit, directory: log.directory) }
    }

    // MARK: Fencing

    /// Why the stream is fenced (its log or its `raft` file could not be written), if it is.
    var fence: StreamLog.Fence? { log.failure ?? state.withLock { $0.failure } }

    /// One recovery at a time (the operation and the storage's probe may both ask).
    private let recovering = Mutex(false)

    /// Lifts the fence without a restart (`plexus plugin call raft-log recover STREAM`, or the storage's probe
    /// once space returns): the log discards what was not durable and is recovered from disk
    /// (`StreamLog.recover`), then the group is rebuilt over it from the `raft` file as at a start (a follower
    /// again, or leader at once when it is the only voter), with the commit index it had. Every append that
    /// waited failed when the fence went up, and nothing unsynced was reported, so the group forgets only
    /// entries it never counted as its own.
    /// - Returns: what the log now holds, or nil when the stream was not fenced.
    /// - Throws: `PluginError` when the disk still fails or the stream is busy (retry); it stays fenced.
    func recover() throws -> String? {
        guard fence != nil else { return nil }
        let busy = recovering.withLock { running -> Bool in
            defer { running = true }
            return running
        }
        guard !busy else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log: stream '\(name)' is being recovered") }
        defer { recovering.withLock { $0 = false } }
        // The group stops first (the log's failure reaches it through the listener, perhaps not yet).
        let (persisting, oldCommit, failed) = state.withLock { s -> (Bool, UInt64, [() -> Void]) in
            let failed =
                s.failure == nil ? failAll(&s, .init(reason: "its log is being recovered", outOfSpace: false)) : []
            return (s.persisting, s.node.commitIndex, failed)
        }
        run(failed)
        guard !persisting else {
            throw PluginError(PX_ERR_UNAVAILABLE, "raft-log: stream '\(name)': its Raft state is being written; retry")
        }
        _ = try log.recover()
        let (node, raftState) = try Self.makeNode(name: name, log: log, context: context, commitFloor: oldCommit)
        let completions = state.withLock { s -> [() -> Void] in
            s.node = node
            s.raftState = raftState
            s.wantedRaftState = raftState
            s.hardStatePending = false
            s.held = []
            s.proposals = []
            s.forwards = [:]
            s.forwarded = [:]
            s.reportedLeader = nil
            s.hintWritten = node.commitIndex
            s.failure = nil
            return process(&s)
        }
        run(completions)
        let info = log.info()
        let last = log.visible.withLock { $0.lastIndex }
        context.report(
            .info,
            "raft-log: stream '\(name)' recovered from its fence: the log ends at index \(last), next offset "
                + "\(info.nextOffset); it takes writes again")
        return "stream '\(name)' recovered: its log ends at index \(last) (next offset \(info.nextOffset))"
    }

    // MARK: Operations

    /// Leadership transfer to `target`.
    func transfer(to target: NodeID) -> String? {
        let completions = state.withLock { s -> [() -> Void]? in
            guard s.node.role == .leader else { return nil }
            do {
                try s.node.transferLeadership(to: target)
            } catch {
                context.report(.warning, "raft-log: stream '\(name)': cannot transfer leadership: \(error)")
                return nil
            }
            return process(&s)
        }
        guard let completions else { return nil }
        run(completions)
        return name
    }

    /// Proposes `change` to the membership, when this node leads.
    func changeMembership(_ change: (Membership) throws -> Membership) throws -> Bool {
        let completions = try state.withLock { s -> [() -> Void]? in
            guard s.node.role == .leader else { return nil }
            let next = try change(s.node.membership)
            do throws(RaftNode.Refusal) {
                _ = try s.node.proposeMembership(next, appendTime: Files.now())
            } catch {
                throw PluginError(refusal: error, stream: name)
            }
            return process(&s)
        }
        guard let completions else { return false }
        run(completions)
        return true
    }

    /// This group's part of `status`, as a JSON object.
    func status() -> String {
        let (node, lastWritten) = (state.withLock { $0.node }, log.visible.withLock { $0.lastIndex })
        let chain = node.commitIndex <= lastWritten ? log.chain(at: node.commitIndex).map(String.init) : nil
        let info = log.info()
        var peers: [String] = []
        if node.role == .leader {
            for (id, progress) in node.progress.sorted(by: { $0.key < $1.key }) {
                peers.append(
                    "{\"id\":\(CloudEventJSON.quote(id)),\"match\":\(progress.match),\"next\":\(progress.next),"
                        + "\"lag\":\(Self.behind(node, progress)),"
                        + "\"inflight\":\(progress.inflight.count),\"state\":\"\(progress.state.rawValue)\","
                        + "\"learner\":\(progress.learner),\"active\":\(context.isConnected(id))}")
            }
        }
        return "{\"stream\":\(CloudEventJSON.quote(name)),\"role\":\"\(node.role.rawValue)\",\"term\":\(node.term),"
            + "\"leader\":\(CloudEventJSON.quote(node.leader ?? "")),\"commitIndex\":\(node.commitIndex),"
            + "\"lastIndex\":\(node.log.lastIndex),\"firstIndex\":\(node.log.firstIndex),"
            + "\"persistedIndex\":\(node.persistedIndex),\"recoveringUntil\":\(node.recoveringUntil),"
            + "\"firstOffset\":\(info.firstOffset),"
            + "\"nextOffset\":\(info.nextOffset),\"commitChain\":\(chain ?? "null"),"
            + "\"voters\":[\(node.membership.voters.map(CloudEventJSON.quote).joined(separator: ","))],"
            + "\"learners\":[\(node.membership.learners.map(CloudEventJSON.quote).joined(separator: ","))],"
            + "\"peers\":[\(peers.joined(separator: ","))]}"
    }
}

extension PluginError {
    init(refusal: RaftNode.Refusal, stream: String) {
        switch refusal {
        case .notLeader(let leader):
            self.init(
                PX_ERR_UNAVAILABLE, "raft-log: stream '\(stream)' has no leader here (leader: \(leader ?? "unknown"))")
        case .transferring:
            self.init(PX_ERR_UNAVAILABLE, "raft-log: stream '\(stream)' is handing leadership over; retry")
        case .membershipPending:
            self.init(PX_ERR_UNAVAILABLE, "raft-log: stream '\(stream)' has a membership change in progress; retry")
        case .invalid(let reason):
            self.init(PX_ERR_INVALID_ARGUMENT, "raft-log: stream '\(stream)': \(reason)")
        }
    }
}

/// A stream's `commit` file: a recent commit index of this member, so that after a restart it serves what it
/// served before without waiting for a leader. Safe however old: an index once committed stays committed, and
/// the log up to it is the committed one. Written about once a second without a sync; a missing or damaged
/// file is no hint. A `SealedRecord` with magic "PXRC" whose body is the `u64` commit index.
enum CommitHint {
    static let fileName = "commit"
    static let magic: UInt32 = 0x4352_5850

    static func load(directory: String) -> UInt64 {
        guard let file = try? OpenFile(path: directory + "/" + fileName),
            let bytes = try? file.read(count: try file.size, at: 0),
            let body = try? SealedRecord.open(bytes, magic: magic, what: "the commit file"), body.count == 8
        else { return 0 }
        return body.withUnsafeBytes { $0.loadLE(UInt64.self, at: 0) }
    }

    static func write(_ index: UInt64, directory: String) -> Bool {
        let bytes = SealedRecord.seal(magic: magic, withUnsafeBytes(of: index.littleEndian) { Array($0) })
        return (try? Files.replace(directory + "/" + fileName, with: bytes, directory: directory, sync: false)) != nil
    }
}

/// A stream's `recovering` file: written (durably) when recovery cut entries out of the log for damage
/// (`repairOnStart: truncate`), holding the highest index the log is known to have held. Entries this member
/// may have acknowledged are gone, so until its log reaches that index again, fetched from a leader, it
/// neither votes nor stands for election (`RaftNode.recoveringUntil`): it cannot help elect a leader lacking
/// them. Removed once the log reaches it. A `SealedRecord` with magic "PXRV" whose body is the `u64` index;
/// a damaged file counts as the highest index possible (the member then waits for an operator, or for the
/// log to be replaced by a leader's snapshot).
enum RecoveringMarker {
    static let fileName = "recovering"
    static let magic: UInt32 = 0x5652_5850

    static func load(directory: String) -> UInt64 {
        let path = directory + "/" + fileName
        guard Files.exists(path) else { return 0 }
        guard let file = try? OpenFile(path: path), let bytes = try? file.read(count: try file.size, at: 0),
            let body = try? SealedRecord.open(bytes, magic: magic, what: "the recovering file"), body.count == 8
        else { return .max }
        return body.withUnsafeBytes { $0.loadLE(UInt64.self, at: 0) }
    }

    /// Writes `index` (or keeps a higher one already there) durably.
    static func write(_ index: UInt64, directory: String) throws {
        let existing = load(directory: directory)
        let bytes = SealedRecord.seal(
            magic: magic, withUnsafeBytes(of: max(index, existing == .max ? 0 : existing).littleEndian) { Array($0) })
        try Files.replace(directory + "/" + fileName, with: bytes, directory: directory, sync: true)
    }

    static func remove(directory: String) {
        try? Files.remove(directory + "/" + fileName)
        try? Files.syncDirectory(directory)
    }
}
