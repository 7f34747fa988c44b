import Foundation

/// What the workload did: every id it sent (acknowledged or not) and the offset each acknowledged one got.
struct LedgerSnapshot: Sendable {
    var published: Set<String>
    var acknowledged: [String: UInt64]
}

/// One replica as the checker sees it: its log read from disk and how far it says the log is committed.
struct ReplicaState: Sendable {
    var log: ReplicaLog
    /// The commit index the node reported (`status`); for a single-member log, its last index.
    var commitIndex: UInt64
    /// `commitChain` of `status`: the chained CRC of the entry at `commitIndex`; nil when not reported.
    var commitChain: UInt32?
    /// `nextOffset` of `status`: the offset after the last committed event; nil when not reported.
    var nextOffset: UInt64?
}

/// The checker's verdict: one line per violation (empty: the logs are consistent with the workload).
struct CheckReport: Sendable, CustomStringConvertible {
    var failures: [String] = []
    /// Committed entries and events of the replica that commits the most, acknowledgements checked.
    var committedEntries = 0
    var committedEvents = 0
    var acknowledged = 0
    var replicas = 0
    /// Event ids committed more than once on the reference replica (allowed under at-least-once), with their
    /// offsets.
    var duplicates: [String: [UInt64]] = [:]

    var description: String {
        "\(replicas) replica(s), \(committedEntries) committed entries (\(committedEvents) events), "
            + "\(acknowledged) acknowledged events checked, \(duplicates.count) event(s) committed twice"
            + (duplicates.isEmpty
                ? ""
                : " ("
                    + duplicates.sorted { $0.value[0] < $1.value[0] }.prefix(5).map { "\($0.key) at \($0.value)" }
                    .joined(separator: ", ") + ")")
            + ", \(failures.count) violation(s)"
            + (failures.isEmpty ? "" : ":\n" + failures.prefix(40).joined(separator: "\n"))
    }
}

/// Checks replicas of one stream against each other and against what the workload was told:
///
/// - every replica's log is well formed (`RaftSegmentReader`'s checks: CRCs, chain, dense indexes, continuing
///   segments) and holds the entries it reports committed, with the reported `commitChain` and `nextOffset`;
/// - event offsets are dense from 0 in index order (control entries take none);
/// - the logs are identical up to the commit index: entry by entry, every header field including the
///   chained CRC, each replica against the one with the highest commit index, up to its own commit index
///   (so in particular up to the minimum commit index of all);
/// - every acknowledged event is committed on every replica at the offset it was acknowledged with;
/// - no two acknowledged events share an offset, and every event in any log is one the workload sent (no
///   phantom ids);
/// - with `allowDuplicates: false`, no committed event appears twice. The workload never resends an id, but
///   raft-log promises at-least-once: a follower resends a forwarded append whose answer a leader change
///   lost to the next leader, so an event the old leader had already replicated can be committed twice. By
///   default duplicates are only counted in the report.
enum RaftLogChecker {
    /// The most violations of one kind listed; the rest are counted.
    static let listed = 8

    static func check(_ replicas: [String: ReplicaState], ledger: LedgerSnapshot, allowDuplicates: Bool = true)
        -> CheckReport
    {
        var report = CheckReport(acknowledged: ledger.acknowledged.count, replicas: replicas.count)
        var failures = Failures()
        let names = replicas.keys.sorted()
        guard !names.isEmpty else {
            report.failures = ["no replica to check"]
            return report
        }
        for name in names {
            let replica = replicas[name]!
            checkOwnLog(name, replica, &failures)
        }

        // The reference: the replica that reports the highest commit index (the leader after settling).
        let reference = names.max { (replicas[$0]!.commitIndex, $1) < (replicas[$1]!.commitIndex, $0) }!
        let referenceState = replicas[reference]!
        let referenceCommitted = committedEvents(referenceState)
        report.committedEntries = referenceState.log.entries.filter { $0.index <= referenceState.commitIndex }.count
        report.committedEvents = referenceCommitted.count
        for name in names where name != reference {
            compare(name, replicas[name]!, with: reference, referenceState, &failures)
        }

        // Acknowledgements: unique offsets, and each one committed on every replica at its offset.
        var byOffset: [UInt64: [String]] = [:]
        for (id, offset) in ledger.acknowledged { byOffset[offset, default: []].append(id) }
        for (offset, ids) in byOffset.sorted(by: { $0.key < $1.key }) where ids.count > 1 {
            failures.add("ack-unique", "offset \(offset) was acknowledged to \(ids.count) events: \(ids.sorted())")
        }
        for name in names {
            let events = committedEvents(replicas[name]!)
            let committed = Dictionary(events.map { ($0.offset, $0.eventID) }) { first, _ in first }
            for (id, offset) in ledger.acknowledged.sorted(by: { $0.value < $1.value }) {
                guard let held = committed[offset] else {
                    failures.add(
                        "ack-missing",
                        "\(name): acknowledged event \(id) at offset \(offset) is not committed (the replica's "
                            + "committed events end before offset \(events.last.map { $0.offset + 1 } ?? 0))")
                    continue
                }
                if held != id {
                    failures.add(
                        "ack-moved",
                        "\(name): offset \(offset) holds \(held ?? "nothing"), but it was acknowledged to \(id)")
                }
            }
        }

        // Phantoms and duplicates.
        for name in names {
            let log = replicas[name]!.log
            for entry in log.entries where entry.isEvent {
                if let id = entry.eventID, !ledger.published.contains(id) {
                    failures.add(
                        "phantom", "\(name): index \(entry.index) offset \(entry.offset) holds \(id), never published")
                }
            }
            var seen: [String: [UInt64]] = [:]
            for entry in committedEvents(replicas[name]!) {
                guard let id = entry.eventID else { continue }
                seen[id, default: []].append(entry.offset)
            }
            let twice = seen.filter { $0.value.count > 1 }
            if name == reference { report.duplicates = twice }
            if !allowDuplicates {
                for (id, offsets) in twice.sorted(by: { $0.value[0] < $1.value[0] }) {
                    failures.add("duplicate", "\(name): \(id) is committed at offsets \(offsets)")
                }
            }
        }
        report.failures = failures.lines
        return report
    }

    /// The events of a replica's log up to its commit index, in offset order.
    static func committedEvents(_ replica: ReplicaState) -> [SegmentEntry] {
        replica.log.entries.filter { $0.isEvent && $0.index <= replica.commitIndex }
    }

    private static func checkOwnLog(_ name: String, _ replica: ReplicaState, _ failures: inout Failures) {
        let log = replica.log
        for problem in log.problems { failures.add("format", "\(name): \(problem)") }
        if replica.commitIndex > log.lastIndex {
            failures.add(
                "commit",
                "\(name) reports commit index \(replica.commitIndex) but its log ends at index \(log.lastIndex)")
        }
        if let chain = replica.commitChain, replica.commitIndex > 0,
            let entry = log.entry(at: replica.commitIndex), entry.chain != chain
        {
            failures.add(
                "commit",
                "\(name) reports commitChain \(chain) at index \(replica.commitIndex), its log has \(entry.chain)")
        }
        let events = log.entries.filter(\.isEvent)
        if let first = events.first, log.firstIndex == 1, first.offset != 0 {
            failures.add("dense", "\(name): the first event has offset \(first.offset), not 0")
        }
        for (previous, next) in zip(events, events.dropFirst()) where next.offset != previous.offset + 1 {
            failures.add(
                "dense",
                "\(name): offset \(next.offset) at index \(next.index) follows offset \(previous.offset) at index "
                    + "\(previous.index)")
        }
        if let nextOffset = replica.nextOffset {
            let committed = committedEvents(replica)
            let expected = committed.last.map { $0.offset + 1 } ?? 0
            if nextOffset != expected {
                failures.add(
                    "commit",
                    "\(name) reports nextOffset \(nextOffset), its log's committed events end before \(expected)")
            }
        }
    }

    private static func compare(
        _ name: String, _ replica: ReplicaState, with reference: String, _ referenceState: ReplicaState,
        _ failures: inout Failures
    ) {
        let upTo = min(replica.commitIndex, referenceState.commitIndex)
        let from = max(replica.log.firstIndex ?? 1, referenceState.log.firstIndex ?? 1)
        guard upTo >= from else { return }
        for index in from...upTo {
            guard let mine = replica.log.entry(at: index), let theirs = referenceState.log.entry(at: index) else {
                failures.add("identical", "\(name) or \(reference) lacks committed index \(index)")
                return
            }
            if mine.replicatedFields != theirs.replicatedFields {
                failures.add(
                    "identical",
                    "\(name) and \(reference) differ at committed index \(index): \(mine.replicatedFields) vs "
                        + "\(theirs.replicatedFields)")
                return  // the chain differs from here on; one line says it
            }
            if mine.eventID != theirs.eventID {
                failures.add(
                    "identical",
                    "\(name) and \(reference) hold different event ids at index \(index) with equal headers")
                return
            }
        }
    }

    /// Violations grouped by kind, each kind listed up to `listed` times.
    private struct Failures {
        var lines: [String] = []
        var counts: [String: Int] = [:]

        mutating func add(_ kind: String, _ line: String) {
            counts[kind, default: 0] += 1
            let count = counts[kind]!
            if count <= RaftLogChecker.listed {
                lines.append("[\(kind)] \(line)")
            } else if count == RaftLogChecker.listed + 1 {
                lines.append("[\(kind)] … more of this kind")
            }
        }
    }
}
