/// Why a bookie, a ledger client or a metadata store refused or failed an operation: a code the caller can act
/// on and a sentence naming the ledger, entry, file or key.
public struct LedgerError: Error, Equatable, CustomStringConvertible {
    public enum Code: String, Sendable, Equatable {
        /// The ledger was fenced (opened for recovery by another client): no more adds from its writer.
        case fenced
        /// The bookie holds no such entry.
        case noSuchEntry
        /// The bookie (or the metadata store) knows no such ledger.
        case noSuchLedger
        /// The ledger was deleted.
        case deleted
        /// Stored bytes fail their checksum or format; the description names the file and byte offset.
        case corrupt
        /// A read, write or sync failed.
        case io
        /// Too few bookies answered to reach a quorum.
        case notEnoughBookies
        /// The ledger is closed (or its writer failed earlier) and takes no more adds.
        case closed
        /// A compare-and-swap on metadata failed: someone else changed it first.
        case conflict
        /// A malformed request.
        case invalidArgument
        /// The bookie is stopped.
        case stopped
        /// A bookie across the network cannot be reached: its connection failed or dropped, or a request timed
        /// out. The message names the bookie and why.
        case bookieUnavailable
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { message }
}

extension LedgerError {
    /// A bookie that cannot be reached: `id` and the reason (connection refused, dropped, a request timed out).
    public static func bookieUnavailable(_ id: String, _ reason: String) -> LedgerError {
        LedgerError(.bookieUnavailable, "bookie \(id) is unavailable: \(reason)")
    }
}
