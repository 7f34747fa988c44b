import Synchronization

/// Reads the entries of a ledger from its ensembles: each entry from the bookies of its write set in the
/// fragment that holds it, one after the other until one has it (a preferred bookie, such as this node's,
/// first).
public struct LedgerReader: Sendable {
    public let ledger: UInt64
    public let fragments: [BookieFragment]
    public let config: QuorumConfig
    /// The id of the bookie tried first when it is in an entry's write set (this node's: no network hop).
    public let preferred: String?

    /// The ensemble of the last fragment.
    public var ensemble: [any Bookie] { fragments.last?.ensemble ?? [] }

    public init(ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, preferred: String? = nil) {
        self.init(
            ledger: ledger, fragments: [BookieFragment(firstEntry: 0, ensemble: ensemble)], config: config,
            preferred: preferred)
    }

    /// A reader of a ledger with several fragments (in entry order, the first from entry 0).
    public init(ledger: UInt64, fragments: [BookieFragment], config: QuorumConfig, preferred: String? = nil) {
        self.ledger = ledger
        self.fragments = fragments
        self.config = config
        self.preferred = preferred
    }

    /// The ensemble that holds `entry`: the last fragment starting at or before it.
    public func ensemble(of entry: Int64) -> [any Bookie] {
        (fragments.last { $0.firstEntry <= entry } ?? fragments.first)?.ensemble ?? []
    }

    /// Reads entry `entry`: from the first bookie of its write set that holds it. Fails with the last error
    /// (`.noSuchEntry` when none holds it).
    public func read(_ entry: Int64, completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void) {
        let ensemble = ensemble(of: entry)
        var order = config.writeSet(entry)
        if let preferred, let at = order.firstIndex(where: { ensemble[$0].id == preferred }), at > 0 {
            order.insert(order.remove(at: at), at: 0)
        }
        read(entry, ensemble: ensemble, trying: order[...], lastError: nil, completion: completion)
    }

    private func read(
        _ entry: Int64, ensemble: [any Bookie], trying positions: ArraySlice<Int>, lastError: LedgerError?,
        completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void
    ) {
        guard let position = positions.first, position < ensemble.count else {
            completion(
                .failure(lastError ?? LedgerError(.noSuchEntry, "ledger \(ledger): no bookie holds entry \(entry)")))
            return
        }
        ensemble[position].readEntry(ledger: ledger, entry: entry) { result in
            switch result {
            case .success: completion(result)
            case .failure(let error):
                read(entry, ensemble: ensemble, trying: positions.dropFirst(), lastError: error, completion: completion)
            }
        }
    }

    /// Reads entries `first...last` at once (pipelined), completing with them in order or the first failure.
    public func read(
        _ first: Int64, through last: Int64,
        completion: @escaping @Sendable (Result<[StoredEntry], LedgerError>) -> Void
    ) {
        guard last >= first else {
            completion(.success([]))
            return
        }
        let count = Int(last - first + 1)
        let gathered = Mutex<(entries: [StoredEntry?], left: Int, error: LedgerError?)>(
            (Array(repeating: nil, count: count), count, nil))
        for entry in first...last {
            read(entry) { result in
                let finished: Result<[StoredEntry], LedgerError>? = gathered.withLock { g in
                    switch result {
                    case .success(let stored): g.entries[Int(entry - first)] = stored
                    case .failure(let error): if g.error == nil { g.error = error }
                    }
                    g.left -= 1
                    guard g.left == 0 else { return nil }
                    if let error = g.error { return .failure(error) }
                    return .success(g.entries.map { $0! })
                }
                if let finished { completion(finished) }
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
