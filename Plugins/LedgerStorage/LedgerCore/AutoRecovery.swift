/// BookKeeper's autorecovery: brings the fragments of ledgers whose ensemble names a lost bookie back to
/// their write quorum on live bookies.
///
/// For every ledger in the metadata store, every *closed* fragment (all fragments of a CLOSED ledger; all but
/// the last of an OPEN or IN_RECOVERY one, whose last fragment belongs to its writer or its recovery) is
/// checked against the set of live bookies. For a bookie of a fragment's ensemble that is not live:
///
/// 1. a replacement is chosen among the live bookies outside that ensemble (by ledger id over the sorted
///    candidates, so that the lost bookie's ledgers spread over the survivors);
/// 2. every entry the lost bookie held is copied to it: entry `e` of the fragment lives on the Qw positions of
///    `writeSet(e)` (from `e mod E` on), so the entries with the lost position in their write set are read from
///    another live position of that write set and written to the replacement as recovery adds (accepted on a
///    fenced ledger);
/// 3. the replacement takes the lost bookie's position in that fragment's ensemble, by compare-and-swap on the
///    ledger's metadata; on a conflict (a writer changed the metadata meanwhile: an ensemble change, a close)
///    the metadata is read again and the replacement applied to it again, as long as the fragment is the same
///    and still names the lost bookie at that position.
///
/// A fragment with no possible replacement or with an entry no live bookie holds is reported and left as it
/// is (metadata unchanged); entries already copied to the replacement are harmless (nothing names it). The
/// copy is one entry at a time.
public struct AutoRecovery: Sendable {
    /// A fragment brought back: the lost bookie replaced, `entries` copied.
    public struct Replication: Sendable, Equatable, CustomStringConvertible {
        public var ledger: UInt64
        /// The fragment's first entry.
        public var firstEntry: Int64
        public var lost: String
        public var replacement: String
        public var entries: Int

        public var description: String {
            "ledger \(ledger) fragment from entry \(firstEntry): bookie \(lost) replaced by \(replacement) "
                + "(\(entries) entries copied)"
        }
    }

    /// A fragment that could not be brought back, and why.
    public struct Problem: Sendable, Equatable, CustomStringConvertible {
        public var ledger: UInt64
        public var firstEntry: Int64
        public var lost: String
        public var reason: String

        public var description: String {
            "ledger \(ledger) fragment from entry \(firstEntry), lost bookie \(lost): \(reason)"
        }
    }

    /// What one run did.
    public struct Report: Sendable, Equatable {
        public var ledgersChecked = 0
        public var replicated: [Replication] = []
        public var problems: [Problem] = []

        public init() {}
    }

    public let ledgers: LedgerManager
    /// Compare-and-swap attempts per fragment before giving up for this run.
    public var maxAttempts = 16
    /// Asked before each ledger: `true` ends the run there (its owner is stopping).
    public var isCancelled: @Sendable () -> Bool = { false }

    public init(ledgers: LedgerManager) { self.ledgers = ledgers }

    /// Checks every ledger against `live` (the ids of the bookies that are up) and re-replicates what a lost
    /// bookie held.
    /// - Parameters:
    ///   - live: the bookies that may serve as sources and replacements.
    ///   - lost: the bookies to replace; `nil`: every bookie not in `live`. (A node passes the bookies whose
    ///     membership went stale, so that a bookie it never heard of is not taken for lost.)
    /// - Throws: when the ledgers cannot be listed; failures of single ledgers are in the report.
    public func run(live: Set<String>, lost: Set<String>? = nil) throws(LedgerError) -> Report {
        let store = ledgers.store
        let prefix = ledgers.prefix + "/ledger/"
        let entries = try store.wait { store.list(prefix: prefix, completion: $0) }
        var report = Report()
        for (key, value) in entries {
            if isCancelled() { break }
            let metadata: LedgerMetadata
            do {
                metadata = try LedgerMetadata.decode(value.value, key: key)
            } catch {
                report.problems.append(Problem(ledger: 0, firstEntry: 0, lost: "", reason: error.message))
                continue
            }
            report.ledgersChecked += 1
            repair(metadata.id, live: live, lost: lost, report: &report)
        }
        return report
    }

    /// The fragments of `metadata` that no writer adds to any more, with their entry ranges (nil: empty).
    static func closedFragments(_ metadata: LedgerMetadata) -> [(index: Int, range: ClosedRange<Int64>?)] {
        let count = metadata.state == .closed ? metadata.fragments.count : metadata.fragments.count - 1
        guard count > 0 else { return [] }
        return (0..<count).map { index in
            let first = metadata.fragments[index].firstEntry
            let last =
                index + 1 < metadata.fragments.count ? metadata.fragments[index + 1].firstEntry - 1 : metadata.lastEntry
            return (index, last >= first ? first...last : nil)
        }
    }

    /// Repairs every closed fragment of `ledger` that names a bookie outside `live`, one lost position at a time.
    func repair(_ ledger: UInt64, live: Set<String>, lost: Set<String>?, report: inout Report) {
        // Positions ("<first entry>/<position>") this run could not repair: not tried again.
        var skipped: Set<String> = []
        // Each pass repairs one position or skips it, so the passes end; `idle` bounds the passes in which the
        // fragment changed under the repair.
        var idle = 0
        while idle < maxAttempts {
            let metadata: LedgerMetadata
            do {
                (metadata, _) = try ledgers.read(ledger)
            } catch {
                if error.code != .noSuchLedger {  // deleted meanwhile: nothing to repair
                    report.problems.append(Problem(ledger: ledger, firstEntry: 0, lost: "", reason: error.message))
                }
                return
            }
            var found: (index: Int, position: Int, range: ClosedRange<Int64>?)?
            search: for (index, range) in Self.closedFragments(metadata) {
                let fragment = metadata.fragments[index]
                for (position, id) in fragment.ensemble.enumerated()
                where (lost.map { $0.contains(id) } ?? !live.contains(id))
                    && !skipped.contains("\(fragment.firstEntry)/\(position)")
                {
                    found = (index, position, range)
                    break search
                }
            }
            guard let target = found else { return }
            let fragment = metadata.fragments[target.index]
            let lost = fragment.ensemble[target.position]
            let mark = "\(fragment.firstEntry)/\(target.position)"
            func fail(_ reason: String) {
                report.problems.append(
                    Problem(ledger: ledger, firstEntry: fragment.firstEntry, lost: lost, reason: reason))
                skipped.insert(mark)
            }
            guard fragment.ensemble.count == metadata.quorum.ensembleSize else {
                fail("its ensemble has \(fragment.ensemble.count) bookies for E = \(metadata.quorum.ensembleSize)")
                continue
            }
            let candidates = live.sorted().filter { !fragment.ensemble.contains($0) && ledgers.bookie($0) != nil }
            guard !candidates.isEmpty else {
                fail(
                    "no live bookie outside its ensemble [\(fragment.ensemble.joined(separator: ", "))] can replace it"
                )
                continue
            }
            let replacementID = candidates[Int(ledger % UInt64(candidates.count))]
            var copied = 0
            if let range = target.range {
                do {
                    copied = try copy(
                        ledger, fragment: fragment, quorum: metadata.quorum, position: target.position, range: range,
                        live: live, to: replacementID)
                } catch {
                    fail(error.message)
                    continue
                }
            }
            do {
                let swapped = try replace(
                    ledger, firstEntry: fragment.firstEntry, range: target.range, position: target.position, lost: lost,
                    by: replacementID)
                if swapped {
                    report.replicated.append(
                        Replication(
                            ledger: ledger, firstEntry: fragment.firstEntry, lost: lost, replacement: replacementID,
                            entries: copied))
                } else {
                    idle += 1
                }
            } catch {
                fail(error.message)
            }
        }
        report.problems.append(
            Problem(
                ledger: ledger, firstEntry: 0, lost: "",
                reason: "its metadata kept changing under \(maxAttempts) repairs; left for the next run"))
    }

    /// Copies the entries position `position` of `fragment` held, each from another live bookie of its write
    /// set, to the bookie `replacementID`; returns how many.
    func copy(
        _ ledger: UInt64, fragment: LedgerMetadata.Fragment, quorum: QuorumConfig, position: Int,
        range: ClosedRange<Int64>, live: Set<String>, to replacementID: String
    ) throws(LedgerError) -> Int {
        guard let replacement = ledgers.bookie(replacementID) else {
            throw LedgerError(.notEnoughBookies, "no bookie '\(replacementID)' is known to this node")
        }
        var copied = 0
        var entry = range.lowerBound
        while entry <= range.upperBound {
            defer { entry += 1 }
            let set = quorum.writeSet(entry)
            guard set.contains(position) else { continue }
            var stored: StoredEntry?
            var lastError: LedgerError?
            for source in set where source != position && live.contains(fragment.ensemble[source]) {
                guard let bookie = ledgers.bookie(fragment.ensemble[source]) else { continue }
                do {
                    stored = try waitFor { bookie.readEntry(ledger: ledger, entry: entry, completion: $0) }
                    break
                } catch {
                    lastError = error
                }
            }
            guard let stored else {
                throw LedgerError(
                    .notEnoughBookies,
                    "entry \(entry): no live bookie of its write set holds it"
                        + (lastError.map { " (\($0.message))" } ?? ""))
            }
            try waitFor {
                replacement.addEntry(
                    ledger: ledger, entry: entry, lastAddConfirmed: stored.lastAddConfirmed, payload: stored.payload,
                    recovery: true, completion: $0)
            }
            copied += 1
        }
        return copied
    }

    /// Puts `replacement` at `position` of the fragment starting at `firstEntry`, by compare-and-swap, reading
    /// the metadata again after each conflict. `false` when the fragment changed under it (another recovery
    /// replaced the bookie, or the ledger went away): the caller looks again.
    func replace(
        _ ledger: UInt64, firstEntry: Int64, range: ClosedRange<Int64>?, position: Int, lost: String,
        by replacement: String
    ) throws(LedgerError) -> Bool {
        let store = ledgers.store
        for _ in 0..<maxAttempts {
            var (metadata, version) = try ledgers.read(ledger)
            guard
                let current = Self.closedFragments(metadata).first(where: {
                    metadata.fragments[$0.index].firstEntry == firstEntry
                }),
                current.range == range, metadata.fragments[current.index].ensemble.count > position,
                metadata.fragments[current.index].ensemble[position] == lost
            else { return false }
            metadata.fragments[current.index].ensemble[position] = replacement
            do {
                _ = try store.wait {
                    store.put(ledgers.key(ledger), metadata.encoded(), expected: .exactly(version), completion: $0)
                }
                return true
            } catch  where error.code == .conflict {
                continue
            }
        }
        throw LedgerError(
            .conflict, "ledger \(ledger): its metadata kept changing; \(maxAttempts) compare-and-swaps failed")
    }
}
