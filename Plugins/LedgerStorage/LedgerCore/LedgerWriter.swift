import Dispatch
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

/// A bookie failed under a writer: what an ensemble change must replace.
public struct EnsembleChangeRequest: Sendable {
    public var ledger: UInt64
    /// The first entry of the new fragment: the first not yet acknowledged (the writer's LAC + 1).
    public var firstEntry: Int64
    /// The ensemble's bookie ids now.
    public var ensemble: [String]
    /// The positions to replace, with why their bookie failed.
    public var failed: [Int: LedgerError]
}

/// Replaces the failed bookies of a writer's ensemble: records a new fragment by compare-and-swap on the
/// ledger's metadata and completes with the new ensemble (the same size, the failed positions replaced), or
/// fails when no replacement exists or the metadata refuses (the ledger is being recovered). May block.
public typealias EnsembleChange =
    @Sendable (
        EnsembleChangeRequest, @escaping @Sendable (Result<[any Bookie], LedgerError>) -> Void
    ) -> Void

/// One stretch of a ledger's entries and the ensemble that holds them, as a writer or reader uses it.
public struct BookieFragment: Sendable {
    public var firstEntry: Int64
    public var ensemble: [any Bookie]

    public init(firstEntry: Int64, ensemble: [any Bookie]) {
        self.firstEntry = firstEntry
        self.ensemble = ensemble
    }
}

/// Writes the entries of one open ledger to its ensemble.
///
/// Entry `e` goes to the Qw bookies of `writeSet(e)`, carrying the LAC (last add confirmed) as the writer knows
/// it when sending. An add completes when Qa of those bookies acknowledged it *and* every earlier entry
/// completed: acknowledgements may come in any order, completions are in entry order and the LAC only grows
/// along them.
///
/// When an add fails on a bookie (unreachable, timed out, an I/O error; not "fenced") and the writer has an
/// `ensembleChange`, it replaces that bookie (BookKeeper's ensemble change): from the failure on, the bookie's
/// acknowledgements no longer count and those it gave to entries not yet completed are withdrawn; the change
/// records a new fragment from the first entry not yet completed (LAC + 1) with a replacement in the failed
/// position; then every entry not yet completed whose write set holds that position is sent again to the
/// replacement. Entries sent meanwhile skip the failed position. If no replacement can be found, every entry not
/// yet completed fails and the writer takes no more adds. So every completed entry has Qa acknowledgements
/// from the bookies its fragment names.
///
/// Without an `ensembleChange`, or on "fenced", an entry that can no longer reach Qa fails with every later one
/// (earlier ones still complete when their acknowledgements come) and the writer takes no more adds.
///
/// - Important: `append` may be called from any thread; completions run on the bookies' threads (in order)
///   and must not block. The ensemble change runs on a Dispatch worker (it may block on the metadata store).
public final class LedgerWriter: Sendable {
    private typealias Completions = [(@Sendable (Result<Int64, LedgerError>) -> Void, Result<Int64, LedgerError>)]

    private struct Pending {
        var entry: Int64
        var payload: [UInt8]
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
        var ensemble: [any Bookie]
        var fragments: [BookieFragment]
        /// Per position, bumped when its bookie fails or is replaced: answers of an older generation are stale.
        var generations: [Int]
        /// Positions whose bookie failed and awaits a replacement.
        var failedPositions: [Int: LedgerError] = [:]
        var changing = false
        var ensembleChanges = 0
        /// Completions due, in entry order, not yet called; `delivering` while a thread calls them.
        var ready: Completions = []
        var delivering = false
    }

    public let ledger: UInt64
    public let config: QuorumConfig
    private let ensembleChange: EnsembleChange?
    private let state: Mutex<State>

    /// A writer for `ledger`, continuing after `lastAddConfirmed` (-1 for a new ledger).
    /// - Parameters:
    ///   - fragments: the ledger's fragments before this writer (nil: one fragment of `ensemble` from entry 0).
    ///   - ensembleChange: replaces failed bookies; nil: a failed bookie fails the writer.
    public init(
        ledger: UInt64, ensemble: [any Bookie], config: QuorumConfig, lastAddConfirmed: Int64 = -1,
        fragments: [BookieFragment]? = nil, ensembleChange: EnsembleChange? = nil
    ) throws(LedgerError) {
        guard ensemble.count == config.ensembleSize else {
            throw LedgerError(
                .invalidArgument,
                "ledger \(ledger): \(ensemble.count) bookies for an ensemble of \(config.ensembleSize)")
        }
        self.ledger = ledger
        self.config = config
        self.ensembleChange = ensembleChange
        state = Mutex(
            State(
                nextEntry: lastAddConfirmed + 1, lastAddConfirmed: lastAddConfirmed, ensemble: ensemble,
                fragments: fragments ?? [BookieFragment(firstEntry: 0, ensemble: ensemble)],
                generations: Array(repeating: 0, count: ensemble.count)))
    }

    /// The last entry whose add completed (-1: none).
    public var lastAddConfirmed: Int64 { state.withLock { $0.lastAddConfirmed } }

    /// Adds sent and not completed.
    public var pendingCount: Int { state.withLock { $0.pending.count } }

    /// The error that stopped the writer, if one did.
    public var failure: LedgerError? { state.withLock { $0.failure } }

    /// The current ensemble (the last fragment's).
    public var ensemble: [any Bookie] { state.withLock { $0.ensemble } }

    /// The ledger's fragments as this writer knows them (the last is the current ensemble).
    public var fragments: [BookieFragment] { state.withLock { $0.fragments } }

    /// Ensemble changes completed.
    public var ensembleChanges: Int { state.withLock { $0.ensembleChanges } }

    /// Sends `payload` as the next entry; `completion` gets its entry id once it completed (see the type).
    public func append(_ payload: [UInt8], completion: @escaping @Sendable (Result<Int64, LedgerError>) -> Void) {
        let sent: (entry: Int64, lac: Int64, ensemble: [any Bookie], generations: [Int], skip: [Int])? = state.withLock
        {
            s in
            guard s.failure == nil, !s.closed else { return nil }
            let entry = s.nextEntry
            s.nextEntry += 1
            s.pending.append(Pending(entry: entry, payload: payload, completion: completion))
            return (entry, s.lastAddConfirmed, s.ensemble, s.generations, Array(s.failedPositions.keys))
        }
        guard let sent else {
            let error = state.withLock { $0.failure } ?? LedgerError(.closed, "ledger \(ledger) is closed for writing")
            completion(.failure(error))
            return
        }
        for position in config.writeSet(sent.entry) where !sent.skip.contains(position) {
            send(
                entry: sent.entry, lac: sent.lac, payload: payload, to: sent.ensemble[position], position: position,
                generation: sent.generations[position])
        }
    }

    private func send(
        entry: Int64, lac: Int64, payload: [UInt8], to bookie: any Bookie, position: Int, generation: Int
    ) {
        bookie.addEntry(ledger: ledger, entry: entry, lastAddConfirmed: lac, payload: payload, recovery: false) {
            [self] result in
            acknowledge(entry: entry, position: position, generation: generation, result: result)
        }
    }

    /// Takes no more adds (those in flight still complete).
    public func close() { state.withLock { $0.closed = true } }

    /// Whether a failure of an add is the bookie's (replace it) rather than the ledger's (fenced, deleted).
    static func replaceable(_ error: LedgerError) -> Bool {
        switch error.code {
        case .fenced, .deleted, .invalidArgument, .closed, .conflict, .noSuchLedger: return false
        default: return true
        }
    }

    private func acknowledge(entry: Int64, position: Int, generation: Int, result: Result<Void, LedgerError>) {
        let (startChange, deliver): (Bool, Bool) = state.withLock { s in
            guard s.generations[position] == generation else { return (false, false) }  // a replaced or failed bookie
            let index = Int(entry - (s.lastAddConfirmed + 1))
            let found = index >= 0 && index < s.pending.count && s.pending[index].entry == entry
            var startChange = false
            switch result {
            case .success:
                if found { s.pending[index].acked.insert(position) }
            case .failure(let error) where ensembleChange != nil && Self.replaceable(error) && s.failure == nil:
                // The bookie is gone for this writer: withdraw its acknowledgements of entries not completed.
                s.generations[position] += 1
                s.failedPositions[position] = error
                for i in s.pending.indices { s.pending[i].acked.remove(position) }
                // A closed writer with nothing in flight has nothing to re-send (and its metadata is closing).
                if !s.changing && !(s.closed && s.pending.isEmpty) {
                    s.changing = true
                    startChange = true
                }
            case .failure(let error):
                guard found else { break }
                s.pending[index].failed += 1
                let reachable = config.writeQuorum - s.pending[index].failed
                if !Self.replaceable(error) || reachable < config.ackQuorum {
                    fail(&s, from: entry, error, bookie: s.ensemble[position].id)
                }
            }
            completeLeading(&s)
            return (startChange, Self.claimDelivery(&s))
        }
        if deliver { deliverReady() }
        if startChange { DispatchQueue.global().async { self.changeEnsemble() } }
    }

    /// Records that `entry` (and every later one) cannot reach its quorum.
    private func fail(_ s: inout State, from entry: Int64, _ error: LedgerError, bookie: String) {
        guard s.failedFrom == nil || entry < s.failedFrom! else { return }
        s.failedFrom = entry
        s.failure = LedgerError(
            error.code,
            "ledger \(ledger): entry \(entry) cannot reach its ack quorum of \(config.ackQuorum): "
                + "bookie \(bookie): \(error.message)")
    }

    /// Completes, in order, every leading entry that has its quorum; then fails what follows a failure.
    private func completeLeading(_ s: inout State) {
        while let first = s.pending.first, first.acked.count >= config.ackQuorum {
            s.pending.removeFirst()
            s.lastAddConfirmed = first.entry
            s.ready.append((first.completion, .success(first.entry)))
        }
        if let failure = s.failure, let failedFrom = s.failedFrom, let first = s.pending.first,
            first.entry >= failedFrom
        {
            for pending in s.pending { s.ready.append((pending.completion, .failure(failure))) }
            s.pending = []
        }
    }

    /// Whether the caller is to call the ready completions: true unless there are none or another thread is
    /// calling them (it will take these too).
    private static func claimDelivery(_ s: inout State) -> Bool {
        guard !s.ready.isEmpty, !s.delivering else { return false }
        s.delivering = true
        return true
    }

    /// Calls the ready completions, in order, until none is left. One thread at a time (`claimDelivery`), so
    /// completions are called in entry order even when acknowledgements arrive on several threads.
    private func deliverReady() {
        while true {
            let batch: Completions = state.withLock { s in
                guard !s.ready.isEmpty else {
                    s.delivering = false
                    return []
                }
                defer { s.ready = [] }
                return s.ready
            }
            guard !batch.isEmpty else { return }
            for (completion, result) in batch { completion(result) }
        }
    }

    /// Replaces the failed positions (on a Dispatch worker), then sends their entries to the replacements.
    private func changeEnsemble() {
        guard let ensembleChange else { return }
        let request: EnsembleChangeRequest = state.withLock { s in
            EnsembleChangeRequest(
                ledger: ledger, firstEntry: s.lastAddConfirmed + 1, ensemble: s.ensemble.map(\.id),
                failed: s.failedPositions)
        }
        ensembleChange(request) { [self] result in
            var resend: [(entry: Int64, payload: [UInt8], position: Int)] = []
            let (again, deliver, lac, ensemble, generations) = state.withLock {
                s -> (Bool, Bool, Int64, [any Bookie], [Int]) in
                switch result {
                case .success(let replaced) where replaced.count == s.ensemble.count:
                    for position in request.failed.keys {
                        s.ensemble[position] = replaced[position]
                        s.failedPositions[position] = nil
                        s.generations[position] += 1
                    }
                    let fragment = BookieFragment(firstEntry: request.firstEntry, ensemble: s.ensemble)
                    if let last = s.fragments.last, last.firstEntry == request.firstEntry {
                        s.fragments[s.fragments.count - 1] = fragment
                    } else {
                        s.fragments.append(fragment)
                    }
                    s.ensembleChanges += 1
                    for pending in s.pending {
                        for position in config.writeSet(pending.entry)
                        where request.failed[position] != nil && !pending.acked.contains(position) {
                            resend.append((pending.entry, pending.payload, position))
                        }
                    }
                case .success(let replaced):
                    fail(
                        &s, from: s.lastAddConfirmed + 1,
                        LedgerError(.invalidArgument, "an ensemble change returned \(replaced.count) bookies"),
                        bookie: "-")
                case .failure(let error):
                    let failed = request.failed.map { "bookie \(request.ensemble[$0.key]) (\($0.value.message))" }
                    fail(
                        &s, from: s.lastAddConfirmed + 1,
                        LedgerError(
                            error.code == .fenced || error.code == .conflict ? error.code : .notEnoughBookies,
                            "no ensemble change: \(error.message)"),
                        bookie: failed.sorted().joined(separator: ", "))
                }
                completeLeading(&s)
                s.changing = s.failure == nil && !s.failedPositions.isEmpty
                return (s.changing, Self.claimDelivery(&s), s.lastAddConfirmed, s.ensemble, s.generations)
            }
            for item in resend {
                send(
                    entry: item.entry, lac: lac, payload: item.payload, to: ensemble[item.position],
                    position: item.position, generation: generations[item.position])
            }
            if deliver { deliverReady() }
            if again { DispatchQueue.global().async { self.changeEnsemble() } }
        }
    }
}
