import Synchronization

/// Reads the entries of a ledger from its ensemble: each entry from the bookies of its write set, one after
/// the other until one has it.
public struct LedgerReader: Sendable {
    public let ledger: UInt64
    public let ensemble: [any Bookie]
    public let config: QuorumConfig

    public init(ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig) {
        self.ledger = ledger
        self.ensemble = ensemble
        self.config = config
    }

    /// Reads entry `entry`: from the first bookie of its write set that holds it. Fails with the last error
    /// (`.noSuchEntry` when none holds it).
    public func read(_ entry: Int64, completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void) {
        read(entry, trying: config.writeSet(entry)[...], lastError: nil, completion: completion)
    }

    private func read(
        _ entry: Int64, trying positions: ArraySlice<Int>, lastError: LedgerError?,
        completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void
    ) {
        guard let position = positions.first else {
            completion(
                .failure(lastError ?? LedgerError(.noSuchEntry, "ledger \(ledger): no bookie holds entry \(entry)")))
            return
        }
        ensemble[position].readEntry(ledger: ledger, entry: entry) { result in
            switch result {
            case .success: completion(result)
            case .failure(let error):
                read(entry, trying: positions.dropFirst(), lastError: error, completion: completion)
            }
        }
    }

    /// The LAC of an open ledger as its bookies know it: the highest LAC any of them was sent (each entry
    /// carries the LAC of when it was sent, so this may trail the writer's by the entries in flight).
    /// Fails only when no bookie answers.
    public func readLastAddConfirmed(completion: @escaping @Sendable (Result<Int64, LedgerError>) -> Void) {
        let answers = Mutex<(count: Int, best: Int64?, error: LedgerError?)>((0, nil, nil))
        let total = ensemble.count
        for bookie in ensemble {
            bookie.readTail(ledger: ledger) { result in
                let finished: Result<Int64, LedgerError>? = answers.withLock { a in
                    a.count += 1
                    switch result {
                    case .success(let tail): a.best = max(a.best ?? -1, tail.lastAddConfirmed)
                    case .failure(let error): a.error = error
                    }
                    guard a.count == total else { return nil }
                    if let best = a.best { return .success(best) }
                    return .failure(a.error ?? LedgerError(.notEnoughBookies, "no bookie answered"))
                }
                if let finished { completion(finished) }
            }
        }
    }
}
