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
public enum LedgerRecovery {
    /// Recovers `ledger` on the ensemble of its last fragment, which starts at `firstEntry` (every entry before
    /// it completed: a fragment starts at its writer's LAC + 1); `completion` gets its last entry (-1: empty).
    public static func recover(
        ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, firstEntry: Int64 = 0,
        completion: @escaping @Sendable (Result<Int64, LedgerError>) -> Void
    ) {
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
                forward(
                    ledger: ledger, ensemble: ensemble, config: config, entry: max(all.lac + 1, firstEntry),
                    completion: completion)
            }
        }
    }

    /// Recovers entry `entry` and the ones after it.
    private static func forward(
        ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, entry: Int64,
        completion: @escaping @Sendable (Result<Int64, LedgerError>) -> Void
    ) {
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
                        completion(.success(entry - 1))
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
                rewrite(
                    ledger: ledger, ensemble: ensemble, config: config, entry: found, holders: all.holders, set: set
                ) { result in
                    switch result {
                    case .success:
                        forward(
                            ledger: ledger, ensemble: ensemble, config: config, entry: entry + 1,
                            completion: completion)
                    case .failure(let error): completion(.failure(error))
                    }
                }
            }
        }
    }

    /// Writes `entry` to the bookies of its write set that lack it, until Qa bookies have it.
    private static func rewrite(
        ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, entry: StoredEntry, holders: Set<Int>,
        set: [Int], completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        let lacking = set.filter { !holders.contains($0) }
        guard holders.count < config.ackQuorum else {
            completion(.success(()))
            return
        }
        let progress = Mutex<(count: Int, have: Int, error: LedgerError?)>((0, holders.count, nil))
        for position in lacking {
            ensemble[position].addEntry(
                ledger: ledger, entry: entry.entry, lastAddConfirmed: entry.lastAddConfirmed, payload: entry.payload,
                recovery: true
            ) { result in
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
        }
    }
}
