import RaftCore
import Testing

/// A member's disk in the simulation: its persisted entries and hard state.
final class SimulatedDisk: @unchecked Sendable {
    var snapshot = (index: UInt64(0), term: UInt64(0), nextOffset: UInt64(0))
    var entries: [WireEntry] = []
    var hardState = RaftNode.HardState()
    var membership: Membership

    init(membership: Membership) { self.membership = membership }

    var lastIndex: UInt64 { entries.last?.index ?? snapshot.index }

    func fetch(_ index: UInt64, _ maxCount: Int, _ maxBytes: Int) -> [WireEntry]? {
        guard index > snapshot.index, index <= lastIndex else { return nil }
        let start = Int(index - snapshot.index - 1)
        return Array(entries[start..<min(entries.count, start + maxCount)])
    }

    func meta() -> LogMeta {
        var meta = LogMeta(snapshotIndex: snapshot.index, snapshotTerm: snapshot.term)
        for entry in entries { meta.append(term: entry.term) }
        return meta
    }

    func apply(_ change: RaftNode.LogChange) {
        switch change {
        case .append(let truncateFrom, let new):
            if let truncateFrom { entries.removeSubrange(Int(truncateFrom - snapshot.index - 1)...) }
            if let first = new.first { precondition(first.index == lastIndex + 1, "gap in the simulated log") }
            entries.append(contentsOf: new)
        case .installSnapshot(let request):
            entries = []
            snapshot = (request.index, request.indexTerm, request.nextOffset)
        }
    }

    /// Drops the entries up to `index` (retention).
    func compact(through index: UInt64) {
        guard index > snapshot.index, let entry = entries.first(where: { $0.index == index }) else { return }
        let nextOffset = entry.offset + (entry.kind == EntryKind.event.rawValue ? 1 : 0)
        snapshot = (index, entry.term, nextOffset)
        entries.removeFirst(Int(index - (entries.first?.index ?? index)) + 1)
    }
}

/// A deterministic cluster: members, a network that delivers, drops or partitions messages, and a clock.
struct Simulation {
    var members: [NodeID: RaftNode] = [:]
    var disks: [NodeID: SimulatedDisk] = [:]
    var network: [(from: NodeID, to: NodeID, message: RaftMessage)] = []
    /// Directed links that drop everything.
    var cut: Set<String> = []
    var down: Set<NodeID> = []
    /// Every commit index ever published per member, checked against the log for safety.
    var committed: [NodeID: UInt64] = [:]
    /// index → (term, body) of every entry ever seen committed anywhere.
    var committedEntries: [UInt64: (term: UInt64, body: [UInt8])] = [:]
    var leadersByTerm: [UInt64: NodeID] = [:]
    var random: UInt64 = 42
    var dropRate = 0
    /// Writes reach the disk at once, but report as durable only at `sync`; a crash loses what was not
    /// synced (power loss).
    var delayedSync = false
    var unsynced: [NodeID: (index: UInt64, term: UInt64)] = [:]
    var durable: [NodeID: UInt64] = [:]

    init(ids: [NodeID], learners: [NodeID] = [], seed: UInt64 = 1) {
        let membership = Membership(
            members: ids.map { .init(id: $0, address: "\($0):1") }
                + learners.map {
                    .init(id: $0, address: "\($0):1", learner: true)
                })
        random = seed
        for id in ids + learners {
            disks[id] = SimulatedDisk(membership: membership)
            start(id, seed: seed &+ UInt64(id.utf8.first!))
        }
    }

    mutating func start(_ id: NodeID, seed: UInt64 = 7) {
        let disk = disks[id]!
        var history: [(index: UInt64, membership: Membership)] = []
        for entry in disk.entries where entry.kind == EntryKind.membership.rawValue {
            history.append((entry.index, Membership(decoding: entry.body)!))
        }
        let nextOffset =
            disk.entries.last.map { $0.offset + ($0.kind == EntryKind.event.rawValue ? 1 : 0) }
            ?? disk.snapshot.nextOffset
        var node = RaftNode(
            configuration: .init(id: id, electionTicks: 10, heartbeatTicks: 2, maxInflight: 4, maxBatchEntries: 8),
            hardState: disk.hardState, log: disk.meta(), commitIndex: disk.snapshot.index,
            baseMembership: disk.membership, history: history, nextOffset: nextOffset, seed: seed,
            fetch: { disk.fetch($0, $1, $2) })
        node.snapshotRequest = SnapshotRequest(
            term: 0, index: disk.snapshot.index, indexTerm: disk.snapshot.term, nextOffset: disk.snapshot.nextOffset,
            chain: 0, membership: disk.membership)
        members[id] = node
        down.remove(id)
    }

    mutating func crash(_ id: NodeID) {
        members[id] = nil
        down.insert(id)
        if delayedSync, let disk = disks[id] {
            let keep = durable[id] ?? disk.lastIndex
            if keep < disk.lastIndex, keep >= disk.snapshot.index {
                disk.entries.removeSubrange(Int(keep - disk.snapshot.index)...)
            }
            unsynced[id] = nil
        }
        network.removeAll { $0.to == id || $0.from == id }
    }

    mutating func nextRandom() -> UInt64 {
        random &+= 0x9E37_79B9_7F4A_7C15
        var z = random
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Carries out a member's `Ready`: hard state and log to its disk (durable at once), then messages.
    mutating func drain(_ id: NodeID) {
        while var node = members[id] {
            let ready = node.takeReady()
            if ready.isEmpty { return }
            let disk = disks[id]!
            if let hardState = ready.hardState { disk.hardState = hardState }
            for change in ready.log {
                disk.apply(change)
                switch change {
                case .installSnapshot(let request):
                    disk.membership = request.membership
                    durable[id] = request.index
                case .append(let truncateFrom?, _):
                    durable[id] = min(durable[id] ?? 0, truncateFrom - 1)
                default: break
                }
            }
            if !ready.log.isEmpty {
                let last = disk.entries.last.map { ($0.index, $0.term) } ?? (disk.snapshot.index, disk.snapshot.term)
                if delayedSync {
                    unsynced[id] = last
                } else {
                    node.persisted(through: last.0, term: last.1)
                    durable[id] = last.0
                }
            }
            for (to, message) in ready.messages { network.append((id, to, message)) }
            if node.role == .leader {
                if let other = leadersByTerm[node.term] {
                    #expect(other == id, "two leaders in term \(node.term): \(other) and \(id)")
                }
                leadersByTerm[node.term] = id
            }
            members[id] = node
            checkCommitted(id)
        }
    }

    /// Every committed entry is the same on every member that holds it, forever.
    mutating func checkCommitted(_ id: NodeID) {
        guard let node = members[id], let disk = disks[id] else { return }
        for entry in disk.entries where entry.index <= node.commitIndex {
            if let known = committedEntries[entry.index] {
                #expect(
                    known.term == entry.term && known.body == entry.body,
                    "committed entry \(entry.index) differs on \(id)")
            } else {
                committedEntries[entry.index] = (entry.term, entry.body)
            }
        }
        committed[id] = node.commitIndex
    }

    /// The disk of `id` finishes its writes.
    mutating func sync(_ id: NodeID) {
        guard let (index, term) = unsynced.removeValue(forKey: id), members[id] != nil else { return }
        durable[id] = index
        members[id]!.persisted(through: index, term: term)
        drain(id)
    }

    mutating func tick() {
        for id in unsynced.keys.sorted() { sync(id) }
        for id in members.keys.sorted() {
            members[id]!.tick()
            drain(id)
        }
    }

    /// Delivers every message in flight (and those they cause), up to `limit` deliveries.
    mutating func deliver(limit: Int = 100_000) {
        var count = 0
        while !network.isEmpty && count < limit {
            let (from, to, message) = network.removeFirst()
            count += 1
            if cut.contains("\(from)>\(to)") || down.contains(to) { continue }
            if dropRate > 0 && Int(nextRandom() % 100) < dropRate { continue }
            guard members[to] != nil else { continue }
            members[to]!.step(from: from, message)
            drain(to)
        }
    }

    mutating func run(ticks: Int) {
        for _ in 0..<ticks {
            tick()
            deliver()
        }
    }

    var leader: NodeID? {
        let leaders = members.filter { $0.value.role == .leader }
        return leaders.max { $0.value.term < $1.value.term }?.key
    }

    mutating func propose(_ text: String, at id: NodeID? = nil) -> UInt64? {
        guard let id = id ?? leader else { return nil }
        let body = Array(text.utf8)
        guard
            let (index, _) = try? members[id]!.propose(
                kind: .event, bodies: [(body, CRC32C.checksum(body))], appendTime: 1)
        else { return nil }
        drain(id)
        return index
    }

    func isolate(_ id: NodeID) -> Set<String> {
        var links: Set<String> = []
        for other in disks.keys where other != id {
            links.insert("\(id)>\(other)")
            links.insert("\(other)>\(id)")
        }
        return links
    }
}

@Suite struct RaftNodeTests {
    @Test func threeMembersElectOneLeaderAndReplicate() {
        var sim = Simulation(ids: ["a", "b", "c"])
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        #expect(sim.members.values.filter { $0.role == .leader }.count == 1)
        for i in 0..<50 { #expect(sim.propose("e\(i)") != nil) }
        sim.run(ticks: 5)
        let last = sim.disks[leader]!.lastIndex
        for id in ["a", "b", "c"] {
            #expect(sim.members[id]!.commitIndex == last, "\(id)")
            #expect(sim.disks[id]!.entries.map(\.body) == sim.disks[leader]!.entries.map(\.body))
        }
        // 50 events plus the leader's no-op; offsets dense over events only.
        let events = sim.disks[leader]!.entries.filter { $0.kind == EntryKind.event.rawValue }
        #expect(events.map(\.offset) == Array(0..<50))
    }

    /// A follower given an append whose entries skip an index (a peer's frame is refused by the codec first;
    /// this is the state machine's own guard) keeps its log and the cluster goes on.
    @Test func anAppendWithAGapIsIgnoredNotTrappedOn() {
        var sim = Simulation(ids: ["a", "b", "c"])
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        for i in 0..<5 { #expect(sim.propose("e\(i)") != nil) }
        sim.run(ticks: 5)
        let follower = try! #require(["a", "b", "c"].first { $0 != leader })
        let before = sim.disks[follower]!.lastIndex
        let term = sim.members[leader]!.term
        let gap = WireEntry(term: term, index: before + 2, offset: 99, appendTime: 1, kind: 1, bodyCRC: 0, body: [1])
        sim.members[follower]!.step(
            from: leader,
            .append(AppendRequest(term: term, prevIndex: before, prevTerm: term, commit: 0, entries: [gap])))
        sim.drain(follower)
        #expect(sim.disks[follower]!.lastIndex == before)
        #expect(sim.propose("after") != nil)
        sim.run(ticks: 5)
        #expect(sim.members[follower]!.commitIndex == sim.disks[leader]!.lastIndex)
    }

    @Test func singleVoterLeadsAtOnceAndCommitsOnPersist() {
        var sim = Simulation(ids: ["solo"])
        sim.members["solo"]!.campaign(transfer: false)
        sim.drain("solo")
        #expect(sim.members["solo"]!.role == .leader)
        #expect(sim.propose("x") == 1)
        #expect(sim.members["solo"]!.commitIndex == 1)
    }

    @Test func isolatedLeaderStepsDownAndNewLeaderKeepsCommittedEntries() {
        var sim = Simulation(ids: ["a", "b", "c"], seed: 3)
        sim.run(ticks: 40)
        let old = try! #require(sim.leader)
        for i in 0..<10 { _ = sim.propose("before\(i)") }
        sim.run(ticks: 3)
        let committedBefore = sim.members[old]!.commitIndex
        sim.cut = sim.isolate(old)
        // Proposals on the isolated leader are never committed.
        _ = sim.propose("lost", at: old)
        sim.run(ticks: 60)
        #expect(sim.members[old]!.role != .leader, "check-quorum steps the isolated leader down")
        let new = try! #require(sim.leader)
        #expect(new != old)
        for i in 0..<10 { #expect(sim.propose("after\(i)") != nil) }
        sim.cut = []
        sim.run(ticks: 40)
        let reference = sim.disks[new]!.entries
        for id in ["a", "b", "c"] {
            #expect(sim.disks[id]!.entries.map(\.body) == reference.map(\.body), "\(id) converged")
            #expect(sim.members[id]!.commitIndex >= committedBefore)
        }
        #expect(!reference.contains { $0.body == Array("lost".utf8) })
    }

    /// The Jepsen NATS scenario at the level of the state machine: `behind` is down while the leader and
    /// `damaged` commit entries; `damaged` then loses them (damage on disk) and the leader goes down. With
    /// `setRecovering(until:)` the two left elect nobody (`damaged` grants no vote, stands for nothing); once
    /// the old leader returns it leads, `damaged` gets the entries back and votes again; no committed entry
    /// ever changes (the simulation checks). Without it they would elect a leader lacking the entries.
    @Test func aMemberThatLostEntriesToDamageNeitherVotesNorStandsUntilItHasThemAgain() {
        var sim = Simulation(ids: ["a", "b", "c"], seed: 5)
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        let others = ["a", "b", "c"].filter { $0 != leader }
        let (damaged, behind) = (others[0], others[1])
        sim.crash(behind)
        for i in 0..<10 { _ = sim.propose("x\(i)") }
        sim.run(ticks: 10)
        let lost = sim.disks[damaged]!.lastIndex
        let keep = sim.disks[behind]!.lastIndex
        #expect(lost > keep && sim.members[leader]!.commitIndex >= lost, "entries committed without \(behind)")

        sim.crash(damaged)
        let disk = sim.disks[damaged]!
        disk.entries.removeSubrange(Int(keep - disk.snapshot.index)...)
        sim.crash(leader)
        sim.start(damaged)
        sim.members[damaged]!.setRecovering(until: lost)
        #expect(sim.members[damaged]!.isRecovering)
        sim.start(behind)
        sim.run(ticks: 80)
        #expect(sim.leader == nil, "\(damaged) and \(behind) elected \(sim.leader ?? "")")

        sim.start(leader)
        sim.run(ticks: 80)
        #expect(sim.leader != nil)
        #expect(!sim.members[damaged]!.isRecovering, "\(damaged) has the entries again")
        #expect(sim.disks[damaged]!.lastIndex >= lost)
    }

    @Test func preVoteKeepsAPartitionedFollowerFromRaisingTerms() {
        var sim = Simulation(ids: ["a", "b", "c"], seed: 5)
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        let follower = ["a", "b", "c"].first { $0 != leader }!
        let term = sim.members[leader]!.term
        sim.cut = sim.isolate(follower)
        sim.run(ticks: 100)
        #expect(sim.members[follower]!.term == term, "pre-vote fails without a quorum, so no term is raised")
        sim.cut = []
        sim.run(ticks: 20)
        #expect(sim.leader == leader, "rejoining does not disrupt the leader")
        #expect(sim.members[leader]!.term == term)
    }

    @Test func crashedFollowerCatchesUpAfterRestart() {
        var sim = Simulation(ids: ["a", "b", "c"], seed: 9)
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        let follower = ["a", "b", "c"].first { $0 != leader }!
        sim.crash(follower)
        for i in 0..<100 { #expect(sim.propose("x\(i)") != nil) }
        sim.run(ticks: 5)
        #expect(sim.members[leader]!.commitIndex == sim.disks[leader]!.lastIndex, "two of three commit")
        sim.start(follower)
        sim.run(ticks: 30)
        #expect(sim.disks[follower]!.entries.map(\.body) == sim.disks[leader]!.entries.map(\.body))
        #expect(sim.members[follower]!.commitIndex == sim.disks[leader]!.lastIndex)
    }

    @Test func followerBehindTheRetainedLogGetsASnapshot() {
        var sim = Simulation(ids: ["a", "b", "c"], seed: 11)
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        let follower = ["a", "b", "c"].first { $0 != leader }!
        sim.crash(follower)
        for i in 0..<60 { _ = sim.propose("y\(i)") }
        sim.run(ticks: 5)
        // Retention on the leader drops the first 40 entries.
        let disk = sim.disks[leader]!
        disk.compact(through: 40)
        sim.members[leader]!.compacted(through: 40)
        sim.members[leader]!.snapshotRequest = SnapshotRequest(
            term: 0, index: 40, indexTerm: disk.snapshot.term, nextOffset: disk.snapshot.nextOffset, chain: 0,
            membership: disk.membership)
        sim.start(follower)
        sim.run(ticks: 30)
        let caughtUp = sim.disks[follower]!
        #expect(caughtUp.snapshot.index == 40)
        #expect(caughtUp.entries.map(\.body) == disk.entries.map(\.body))
        #expect(caughtUp.entries.first?.offset == disk.entries.first?.offset)
        for i in 0..<5 { _ = sim.propose("z\(i)") }
        sim.run(ticks: 5)
        #expect(sim.members[follower]!.commitIndex == disk.lastIndex)
    }

    @Test func leadershipTransfer() {
        var sim = Simulation(ids: ["a", "b", "c"], seed: 13)
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        let target = ["a", "b", "c"].first { $0 != leader }!
        for i in 0..<5 { _ = sim.propose("t\(i)") }
        try! sim.members[leader]!.transferLeadership(to: target)
        sim.drain(leader)
        #expect(throws: RaftNode.Refusal.transferring) {
            try sim.members[leader]!.propose(kind: .event, bodies: [([1], 0)], appendTime: 1)
        }
        sim.run(ticks: 5)
        #expect(sim.leader == target)
        #expect(sim.members[leader]!.role == .follower)
    }

    @Test func membershipOneServerAtATimeWithALearner() {
        var sim = Simulation(ids: ["a", "b", "c"], seed: 17)
        sim.run(ticks: 40)
        let leader = try! #require(sim.leader)
        // d joins as a learner, catches up, then becomes a voter; then c leaves.
        sim.disks["d"] = SimulatedDisk(membership: Membership(members: [.init(id: "d", address: "d:1", learner: true)]))
        sim.start("d")
        for i in 0..<20 { _ = sim.propose("m\(i)") }
        var next = sim.members[leader]!.membership
        next.members.append(.init(id: "d", address: "d:1", learner: true))
        next = Membership(members: next.members)
        _ = try! sim.members[leader]!.proposeMembership(next, appendTime: 1)
        sim.drain(leader)
        sim.run(ticks: 10)
        #expect(sim.members["d"]!.role == .learner)
        #expect(sim.disks["d"]!.entries.map(\.body) == sim.disks[leader]!.entries.map(\.body))
        // A second change while one is uncommitted is refused; after commit it is taken.
        var promoted = next
        promoted.members = promoted.members.map { $0.id == "d" ? .init(id: "d", address: "d:1") : $0 }
        _ = try! sim.members[leader]!.proposeMembership(promoted, appendTime: 1)
        #expect(throws: RaftNode.Refusal.membershipPending) {
            try sim.members[leader]!.proposeMembership(promoted, appendTime: 1)
        }
        sim.drain(leader)
        sim.run(ticks: 10)
        #expect(sim.members["d"]!.role == .follower)
        #expect(sim.members[leader]!.membership.voters == ["a", "b", "c", "d"])
        #expect(throws: RaftNode.Refusal.self) {
            try sim.members[sim.leader!]!.proposeMembership(
                Membership(members: [.init(id: "a", address: "a:1")]), appendTime: 1)
        }
    }

    /// Random drops, partitions and crashes; the checks in `drain` (one leader per term, committed entries
    /// never change) run throughout, and at the end every member converges.
    @Test(arguments: Array(UInt64(1)...24))
    func randomFaultsKeepSafety(seed: UInt64) {
        var sim = Simulation(ids: ["a", "b", "c", "d", "e"], seed: seed)
        sim.dropRate = 5
        // Half the seeds: disks slower than the network, and crashes that lose unsynced writes.
        sim.delayedSync = seed % 2 == 0
        let ids = ["a", "b", "c", "d", "e"]
        for round in 0..<300 {
            let roll = sim.nextRandom() % 100
            if roll < 3 {
                let victim = ids[Int(sim.nextRandom() % 5)]
                if sim.down.contains(victim) {
                    sim.start(victim, seed: seed &+ UInt64(round))
                } else {
                    sim.crash(victim)
                }
            } else if roll < 6 {
                sim.cut = sim.isolate(ids[Int(sim.nextRandom() % 5)])
            } else if roll < 10 {
                sim.cut = []
            }
            if sim.down.count > 2 { sim.start(sim.down.sorted()[0]) }
            _ = sim.propose("r\(round)")
            if roll >= 97, let leader = sim.leader {
                try? sim.members[leader]!.transferLeadership(to: ids[Int(sim.nextRandom() % 5)])
                sim.drain(leader)
            }
            // Some members' disks catch up before the messages are delivered, some after.
            for id in ids where sim.nextRandom() % 3 == 0 { sim.sync(id) }
            sim.deliver(limit: Int(sim.nextRandom() % 50))
            if round % 3 == 0 { sim.tick() }
        }
        sim.dropRate = 0
        sim.cut = []
        for id in sim.down.sorted() { sim.start(id) }
        sim.run(ticks: 120)
        _ = sim.propose("final")
        sim.run(ticks: 20)
        let leader = try! #require(sim.leader)
        let reference = sim.disks[leader]!.entries
        for id in ids {
            #expect(sim.disks[id]!.entries.map(\.term) == reference.map(\.term), "\(id) converged (seed \(seed))")
            #expect(sim.members[id]!.commitIndex == reference.last?.index)
        }
    }
}
