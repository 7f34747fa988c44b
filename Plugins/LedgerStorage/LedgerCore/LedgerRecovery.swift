import Synchronization

/// Recovers a ledger whose writer may be gone (BookKeeper's open-for-recovery): fences it on its bookies so
/// the old writer's adds fail from now on, finds its last entry, and makes sure that entry and every one
/// before it reached an ack quorum. The caller then closes the ledger's metadata with that last entry.
///
/// 1. Fence on every bookie of the ensemble. Enough must answer that every write set has at least
///    Qw − Qa + 1 fenced bookies: then no add of the old writer can reach Qa any more.
/// 2. Start from the highest LAC the fenced bookies report: every entry up to it completed.
/// 3. Read the entries after it one by one, each from its write set. An entry some bookie has is written
///    again (a recovery add, which fences do not refuse) to the bookies of its write set that lack it, until Qa
///    have it; the first entry that Qw − Qa + 1 bookies of its write set say they do not have ends the ledger
///    (no quorum can have acknowledged it).
/// 4. A bookie of the ensemble that fails a recovery add (it died with the writer, say) is replaced when a
///    `replacement` is given, as a writer's ensemble change does: from that entry on the tail goes to the
///    replacement, and the outcome names the new last fragment, which the caller records in the metadata with
///    the ledger's close. Reads keep asking the original ensemble: a replacement holds nothing of the old tail,
///    and its "no such entry" must not end the ledger early.
public enum LedgerRecovery {
    /// What a recovery found and did.
    public struct Outcome: Sendable {
        /// The ledger's last entry (-1: empty).
        public var lastEntry: Int64
        /// When bookies were replaced: the fragment from the first entry written to a replacement on, with the
        /// ensemble holding it (the ledger's new last fragment).
        public var fragment: (firstEntry: Int64, ensemble: [any Bookie])?
    }

    /// Recovers `ledger` on the ensemble of its last fragment, which starts at `firstEntry` (every entry before
    /// it completed: a fragment starts at its writer's LAC + 1); `completion` gets its last entry (-1: empty).
    public static func recover(
        ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, firstEntry: Int64 = 0,
        completion: @escaping @Sendable (Result<Int64, LedgerError>) -> Void
    ) {
        recover(
            ledger: ledger, ensemble: ensemble, config: config, firstEntry: firstEntry, replacement: nil
        ) { result in completion(result.map(\.lastEntry)) }
    }

    /// Recovers `ledger` as above; a bookie that fails a recovery add is replaced by `replacement` (given the
    /// ids the ensemble holds, it returns a bookie outside them, or nil when there is none).
    public static func recover(
        ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, firstEntry: Int64 = 0,
        replacement: (@Sendable (Set<String>) -> (any Bookie)?)?,
        completion: @escaping @Sendable (Result<Outcome, LedgerError>) -> Void
    ) {
        let run = Run(ledger: ledger, original: ensemble, config: config, replacement: replacement)
        let answers = Mutex<(count: Int, fenced: Set<Int>, lac: Int64, error: LedgerError?)>((0, [], -1, nil))
        for (position, bookie) in ensemble.enumerated() {
            bookie.fence(ledger: ledger) { result in
                let all: (fenced: Set<Int>, lac: Int64, error: LedgerError?)? = answers.withLock { a in
                    a.count += 1
                    switch result {
                    case .success(let tail):
                        a.fenced.insert(position)
                        a.lac = max(a.lac, tail.lastAddConfirmed)
                    case .failure(let error): a.error = error
                    }
                    return a.count == ensemble.count ? (a.fenced, a.lac, a.error) : nil
                }
                guard let all else { return }
                let needed = config.writeQuorum - config.ackQuorum + 1
                for first in 0..<config.ensembleSize {
                    let set = config.writeSet(Int64(first))
                    guard set.filter(all.fenced.contains).count >= needed else {
                        completion(
                            .failure(
                                LedgerError(
                                    .notEnoughBookies,
                                    "ledger \(ledger): recovery fenced \(all.fenced.count) of \(ensemble.count) "
                                        + "bookies, too few to stop the writer"
                                        + (all.error.map { " (\($0.message))" } ?? ""))))
                        return
                    }
                }
                forward(run, entry: max(all.lac + 1, firstEntry), completion: completion)
            }
        }
    }

    /// One recovery's ensembles: the original (read from) and the current one (written to), with the entry
    /// from which the current one holds the tail.
    final class Run: Sendable {
        let ledger: UInt64
        let original: [any Bookie]
        let config: QuorumConfig
        let replacement: (@Sendable (Set<String>) -> (any Bookie)?)?
        let state: Mutex<(current: [any Bookie], from: Int64?)>

        init(
            ledger: UInt64, original: [any Bookie], config: QuorumConfig,
            replacement: (@Sendable (Set<String>) -> (any Bookie)?)?
        ) {
            self.ledger = ledger
            self.original = original
            self.config = config
            self.replacement = replacement
            state = Mutex((original, nil))
        }

        /// Positions whose bookie was replaced.
        var replaced: Set<Int> {
            state.withLock { s in Set(s.current.indices.filter { s.current[$0] !== original[$0] }) }
        }

        /// Replaces the bookie at `position` from entry `entry` on; false when no replacement is found.
        func replace(_ position: Int, from entry: Int64) -> Bool {
            guard let replacement else { return false }
            let excluded = state.withLock { s in Set(s.current.map(\.id) + original.map(\.id)) }
            guard let chosen = replacement(excluded) else { return false }
            state.withLock { s in
                s.current[position] = chosen
                if s.from == nil { s.from = entry }
            }
            return true
        }

        func outcome(lastEntry: Int64) -> Outcome {
            state.withLock { s in
                Outcome(lastEntry: lastEntry, fragment: s.from.map { ($0, s.current) })
            }
        }
    }

    /// Recovers entry `entry` and the ones after it.
    private static func forward(
        _ run: Run, entry: Int64, completion: @escaping @Sendable (Result<Outcome, LedgerError>) -> Void
    ) {
        let (ledger, ensemble, config) = (run.ledger, run.original, run.config)
        let set = config.writeSet(entry)
        let answers = Mutex<(count: Int, found: StoredEntry?, holders: Set<Int>, missing: Int, error: LedgerError?)>(
            (0, nil, [], 0, nil))
        for position in set {
            ensemble[position].readEntry(ledger: ledger, entry: entry) { result in
                let all: (found: StoredEntry?, holders: Set<Int>, missing: Int, error: LedgerError?)? =
                    answers.withLock { a in
                        a.count += 1
                        switch result {
                        case .success(let stored):
                            a.found = stored
                            a.holders.insert(position)
                        case .failure(let error) where error.code == .noSuchEntry: a.missing += 1
                        case .failure(let error): a.error = error
                        }
                        return a.count == set.count ? (a.found, a.holders, a.missing, a.error) : nil
                    }
                guard let all else { return }
                guard let found = all.found else {
                    if all.missing >= config.writeQuorum - config.ackQuorum + 1 {
                        completion(.success(run.outcome(lastEntry: entry - 1)))
                    } else {
                        completion(
                            .failure(
                                LedgerError(
                                    .notEnoughBookies,
                                    "ledger \(ledger): recovery cannot tell whether entry \(entry) exists: "
                                        + (all.error?.message ?? "too few bookies answered"))))
                    }
                    return
                }
                rewrite(run, entry: found, holders: all.holders, set: set) { result in
                    switch result {
                    case .success: forward(run, entry: entry + 1, completion: completion)
                    case .failure(let error): completion(.failure(error))
                    }
                }
            }
        }
    }

    /// Writes `entry` to the bookies of its write set that lack it (a replacement lacks everything), until Qa
    /// bookies have it. A bookie that fails the add is replaced (when the run can) and the add tried on the
    /// replacement, once per position and entry.
    private static func rewrite(
        _ run: Run, entry: StoredEntry, holders: Set<Int>, set: [Int],
        completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        let (ledger, config) = (run.ledger, run.config)
        let replaced = run.replaced
        let have = holders.subtracting(replaced).count
        let lacking = set.filter { !holders.contains($0) || replaced.contains($0) }
        guard have < config.ackQuorum || !lacking.filter(replaced.contains).isEmpty else {
            completion(.success(()))
            return
        }
        let progress = Mutex<(count: Int, have: Int, error: LedgerError?)>((0, have, nil))
        @Sendable func done(_ result: Result<Void, LedgerError>) {
            let finished: Result<Void, LedgerError>? = progress.withLock { p in
                p.count += 1
                switch result {
                case .success: p.have += 1
                case .failure(let error): p.error = error
                }
                guard p.count == lacking.count else { return nil }
                if p.have >= config.ackQuorum { return .success(()) }
                return .failure(
                    LedgerError(
                        .notEnoughBookies,
                        "ledger \(ledger): recovery could not bring entry \(entry.entry) to \(config.ackQuorum) "
                            + "bookies" + (p.error.map { ": \($0.message)" } ?? "")))
            }
            if let finished { completion(finished) }
        }
        @Sendable func add(_ position: Int, retry: Bool) {
            let bookie = run.state.withLock { $0.current[position] }
            bookie.addEntry(
                ledger: ledger, entry: entry.entry, lastAddConfirmed: entry.lastAddConfirmed, payload: entry.payload,
                recovery: true
            ) { result in
                if case .failure(let error) = result, retry, LedgerWriter.replaceable(error),
                    run.replace(position, from: entry.entry)
                {
                    add(position, retry: false)
                    return
                }
                done(result)
            }
        }
        for position in lacking { add(position, retry: true) }
    }
}
