/// An entry as a bookie returns it: its payload and the LAC its writer sent with it.
public struct StoredEntry: Sendable, Equatable {
    public var entry: Int64
    public var lastAddConfirmed: Int64
    public var payload: [UInt8]

    public init(entry: Int64, lastAddConfirmed: Int64, payload: [UInt8]) {
        self.entry = entry
        self.lastAddConfirmed = lastAddConfirmed
        self.payload = payload
    }
}

/// What a bookie knows of a ledger's end: the highest entry it stores and the highest LAC it was sent
/// (-1: none).
public struct LedgerTail: Sendable, Equatable {
    public var lastEntry: Int64
    public var lastAddConfirmed: Int64

    public init(lastEntry: Int64, lastAddConfirmed: Int64) {
        self.lastEntry = lastEntry
        self.lastAddConfirmed = lastAddConfirmed
    }
}

/// A storage node of ledgers, as the ledger client sees it: the same client code drives a bookie in this
/// process (`LocalBookie`) and, later, one across the network.
///
/// - Important: Every method may be called from any thread; each completion is called exactly once, on any
///   thread (possibly before the method returns), and must not block.
public protocol Bookie: AnyObject, Sendable {
    /// The bookie's id, as ensembles in ledger metadata name it.
    var id: String { get }

    /// Stores entry `entry` of `ledger` with the writer's LAC; completes once it is durable.
    /// - Parameter recovery: a recovery client's add, accepted on a fenced ledger.
    /// - Important: Fails with `.fenced` on a fenced ledger unless `recovery`.
    func addEntry(
        ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: [UInt8], recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void)

    /// Reads one entry; `.noSuchEntry` when the bookie does not hold it.
    func readEntry(
        ledger: UInt64, entry: Int64, completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void)

    /// The highest entry and LAC the bookie holds for `ledger` (-1, -1 for a ledger it knows nothing of).
    func readTail(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void)

    /// Fences `ledger`: from now on adds without `recovery` fail with `.fenced`. Completes, with the
    /// bookie's tail of the ledger, once the fence is durable.
    func fence(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void)

    /// Deletes `ledger` and its entries (their space is reclaimed by garbage collection).
    func deleteLedger(ledger: UInt64, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void)
}
