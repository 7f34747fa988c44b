import Synchronization

/// A ledger's replication settings: E bookies in its ensemble, each entry written to Qw of them and
/// acknowledged once Qa of those have it (E ≥ Qw ≥ Qa ≥ 1).
public struct QuorumConfig: Sendable, Equatable, Codable {
    public var ensembleSize: Int
    public var writeQuorum: Int
    public var ackQuorum: Int

    /// - Throws: `.invalidArgument` unless E ≥ Qw ≥ Qa ≥ 1.
    public init(ensembleSize: Int, writeQuorum: Int, ackQuorum: Int) throws(LedgerError) {
        guard ensembleSize >= writeQuorum, writeQuorum >= ackQuorum, ackQuorum >= 1 else {
            throw LedgerError(
                .invalidArgument,
                "a ledger needs E >= Qw >= Qa >= 1; got E \(ensembleSize), Qw \(writeQuorum), Qa \(ackQuorum)")
        }
        self.ensembleSize = ensembleSize
        self.writeQuorum = writeQuorum
        self.ackQuorum = ackQuorum
    }

    /// The ensemble positions entry `entry` is written to: Qw of them, from `entry mod E` on (striping).
    public func writeSet(_ entry: Int64) -> [Int] {
        let first = Int(entry % Int64(ensembleSize))
        return (0..<writeQuorum).map { (first + $0) % ensembleSize }
    }
}

/// Writes the entries of one open ledger to its ensemble.
///
/// Entry `e` goes to the Qw bookies of `writeSet(e)`, carrying the LAC (last add confirmed) as the writer knows
/// it when sending. An add completes when Qa of those bookies acknowledged it *and* every earlier entry
/// completed: acknowledgements may come in any order, completions are in entry order and the LAC only grows
/// along them. When an entry can no longer reach Qa (too many of its bookies failed, or one says the ledger is
/// fenced), that entry and every later one fail with that error (earlier ones still complete when their
/// acknowledgements come) and the writer takes no more adds: BookKeeper
/// would replace the failed bookie (an ensemble change); this writer leaves that to its caller, which closes
/// the ledger and starts another.
///
/// - Important: `append` may be called from any thread; completions run on the bookies' threads (in order)
///   and must not block.
public final class LedgerWriter: Sendable {
    private struct Pending {
        var entry: Int64
        var acked: Set<Int> = []
        var failed = 0
        var completion: @Sendable (Result<Int64, LedgerError>) -> Void
    }

    private struct State {
        var nextEntry: Int64
        var lastAddConfirmed: Int64
        /// Entries sent and not completed, in entry order: `pending[i].entry == lastAddConfirmed + 1 + i`.
        var pending: [Pending] = []
        var failure: LedgerError?
        /// The first entry that cannot reach its quorum: it and every later entry fail, earlier ones may still
        /// complete.
        var failedFrom: Int64?
        var closed = false
    }

    public let ledger: UInt64
    public let ensemble: [any Bookie]
    public let config: QuorumConfig
    private let state: Mutex<State>

    /// A writer for `ledger`, continuing after `lastAddConfirmed` (-1 for a new ledger).
    public init(ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, lastAddConfirmed: Int64 = -1)
        throws(LedgerError)
    {
        guard ensemble.count == config.ensembleSize else {
            throw LedgerError(
                .invalidArgument,
                "ledger \(ledger): \(ensemble.count) bookies for an ensemble of \(config.ensembleSize)")
        }
        self.ledger = ledger
        self.ensemble = ensemble
        self.config = config
        state = Mutex(State(nextEntry: lastAddConfirmed + 1, lastAddConfirmed: lastAddConfirmed))
    }

    /// The last entry whose add completed (-1: none).
    public var lastAddConfirmed: Int64 { state.withLock { $0.lastAddConfirmed } }

    /// Adds sent and not completed.
    public var pendingCount: Int { state.withLock { $0.pending.count } }

    /// The error that stopped the writer, if one did.
    public var failure: LedgerError? { state.withLock { $0.failure } }

    /// Sends `payload` as the next entry; `completion` gets its entry id once it completed (see the type).
    public func append(_ payload: [UInt8], completion: @escaping @Sendable (Result<Int64, LedgerError>) -> Void) {
        let sent: (entry: Int64, lac: Int64)? = state.withLock { s in
            guard s.failure == nil, !s.closed else { return nil }
            let entry = s.nextEntry
            s.nextEntry += 1
            s.pending.append(Pending(entry: entry, completion: completion))
            return (entry, s.lastAddConfirmed)
        }
        guard let sent else {
            let error = state.withLock { $0.failure } ?? LedgerError(.closed, "ledger \(ledger) is closed for writing")
            completion(.failure(error))
            return
        }
        for position in config.writeSet(sent.entry) {
            ensemble[position].addEntry(
                ledger: ledger, entry: sent.entry, lastAddConfirmed: sent.lac, payload: payload, recovery: false
            ) { [self] result in
                acknowledge(entry: sent.entry, position: position, result: result)
            }
        }
    }

    /// Takes no more adds (those in flight still complete).
    public func close() { state.withLock { $0.closed = true } }

    private func acknowledge(entry: Int64, position: Int, result: Result<Void, LedgerError>) {
        var done: [(@Sendable (Result<Int64, LedgerError>) -> Void, Result<Int64, LedgerError>)] = []
        state.withLock { s in
            let index = Int(entry - (s.lastAddConfirmed + 1))
            guard index >= 0, index < s.pending.count, s.pending[index].entry == entry else { return }
            switch result {
            case .success:
                s.pending[index].acked.insert(position)
            case .failure(let error):
                s.pending[index].failed += 1
                let reachable = config.writeQuorum - s.pending[index].failed
                if error.code == .fenced || reachable < config.ackQuorum {
                    if s.failedFrom == nil || entry < s.failedFrom! {
                        s.failedFrom = entry
                        s.failure = LedgerError(
                            error.code,
                            "ledger \(ledger): entry \(entry) cannot reach its ack quorum of \(config.ackQuorum): "
                                + "bookie \(ensemble[position].id): \(error.message)")
                    }
                }
            }
            // Complete, in order, every leading entry that has its quorum.
            while let first = s.pending.first, first.acked.count >= config.ackQuorum {
                s.pending.removeFirst()
                s.lastAddConfirmed = first.entry
                done.append((first.completion, .success(first.entry)))
            }
            if let failure = s.failure, let failedFrom = s.failedFrom, let first = s.pending.first,
                first.entry >= failedFrom
            {
                for pending in s.pending { done.append((pending.completion, .failure(failure))) }
                s.pending = []
            }
        }
        for (completion, result) in done { completion(result) }
    }
}
