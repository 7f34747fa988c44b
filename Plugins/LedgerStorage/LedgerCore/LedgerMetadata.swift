import Foundation

/// A ledger's metadata, kept in the metadata store (JSON) and changed only by compare-and-swap.
public struct LedgerMetadata: Sendable, Equatable, Codable {
    /// OPEN (a writer adds to it) → IN_RECOVERY (a recovery client fenced it) → CLOSED (its last entry is
    /// final). A writer closes its own ledger OPEN → CLOSED.
    public enum State: String, Sendable, Codable {
        case open = "OPEN"
        case inRecovery = "IN_RECOVERY"
        case closed = "CLOSED"
    }

    /// The ensemble from `firstEntry` on (an ensemble change starts a new fragment).
    public struct Fragment: Sendable, Equatable, Codable {
        public var firstEntry: Int64
        public var ensemble: [String]

        public init(firstEntry: Int64, ensemble: [String]) {
            self.firstEntry = firstEntry
            self.ensemble = ensemble
        }
    }

    public var id: UInt64
    public var quorum: QuorumConfig
    public var state: State
    /// The last entry once CLOSED (-1: empty); -1 before.
    public var lastEntry: Int64
    public var fragments: [Fragment]
    /// Unix time in milliseconds when the ledger was created.
    public var createdMilliseconds: UInt64

    public init(
        id: UInt64, quorum: QuorumConfig, state: State = .open, lastEntry: Int64 = -1, fragments: [Fragment],
        createdMilliseconds: UInt64
    ) {
        self.id = id
        self.quorum = quorum
        self.state = state
        self.lastEntry = lastEntry
        self.fragments = fragments
        self.createdMilliseconds = createdMilliseconds
    }

    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    public static func decode(_ bytes: [UInt8], key: String) throws(LedgerError) -> LedgerMetadata {
        do {
            return try JSONDecoder().decode(LedgerMetadata.self, from: Data(bytes))
        } catch {
            throw LedgerError(.corrupt, "metadata key '\(key)' is not ledger metadata: \(error)")
        }
    }
}

/// Creates, closes and recovers ledgers: their metadata in a `MetadataStore` (compare-and-swap on every
/// change), their entries on bookies found by id.
///
/// Keys: `<prefix>/next-ledger-id` (a counter), `<prefix>/ledger/<20-digit id>` (`LedgerMetadata`).
public struct LedgerManager: Sendable {
    public let store: any MetadataStore
    public let prefix: String
    /// The bookie with an id, `nil` when unknown.
    public let bookie: @Sendable (String) -> (any Bookie)?
    /// A replacement for a failed bookie, not one of the given ids; nil: none (or ensemble changes are off).
    public let replacement: @Sendable (Set<String>) -> String?

    /// - Parameter replacement: picks the bookie that replaces a failed one in an ensemble change; by default
    ///   none is found, so a writer whose bookie fails fails.
    public init(
        store: any MetadataStore, prefix: String, bookie: @escaping @Sendable (String) -> (any Bookie)?,
        replacement: @escaping @Sendable (Set<String>) -> String? = { _ in nil }
    ) {
        self.store = store
        self.prefix = prefix
        self.bookie = bookie
        self.replacement = replacement
    }

    /// A manager whose bookies and replacements come from `directory`.
    public init(store: any MetadataStore, prefix: String, directory: BookieDirectory) {
        self.init(
            store: store, prefix: prefix, bookie: { directory.bookie($0) },
            replacement: { directory.replacement(excluding: $0) })
    }

    public func key(_ ledger: UInt64) -> String {
        let digits = String(ledger)
        return prefix + "/ledger/" + String(repeating: "0", count: max(0, 20 - digits.count)) + digits
    }

    /// Allocates an id, writes OPEN metadata for a ledger on `ensemble`, and returns a writer for it.
    public func create(ensemble: [String], quorum: QuorumConfig) throws(LedgerError) -> (
        LedgerMetadata, LedgerWriter
    ) {
        let bookies = try resolve(ensemble)
        let counterKey = prefix + "/next-ledger-id"
        var id: UInt64 = 0
        while true {
            let current = try store.wait { store.get(counterKey, completion: $0) }
            let next = current.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } ?? 1
            do {
                _ = try store.wait {
                    store.put(
                        counterKey, Array(String(next + 1).utf8),
                        expected: current.map { .exactly($0.version) } ?? .absent, completion: $0)
                }
                id = next
                break
            } catch  where error.code == .conflict {
                continue
            }
        }
        let metadata = LedgerMetadata(
            id: id, quorum: quorum, fragments: [.init(firstEntry: 0, ensemble: ensemble)],
            createdMilliseconds: UInt64(Date().timeIntervalSince1970 * 1000))
        _ = try store.wait { store.put(key(id), metadata.encoded(), expected: .absent, completion: $0) }
        return (
            metadata,
            try LedgerWriter(
                ledger: id, ensemble: bookies, config: quorum,
                ensembleChange: { [self] request, completion in
                    completion(
                        Result { () throws(LedgerError) -> [any Bookie] in
                            try resolve(try changeEnsemble(request))
                        })
                })
        )
    }

    /// An ensemble change (see `LedgerWriter`): replaces the failed positions of `request` with bookies from
    /// `replacement`, recording a fragment from `request.firstEntry` by compare-and-swap (replacing the last
    /// fragment when it starts there too). Returns the new ensemble's ids.
    /// - Throws: `.notEnoughBookies` when no replacement is found, `.fenced` when the ledger is no longer
    ///   OPEN (a recovery took it), what the store throws.
    public func changeEnsemble(_ request: EnsembleChangeRequest) throws(LedgerError) -> [String] {
        while true {
            var (metadata, version) = try read(request.ledger)
            guard metadata.state == .open else {
                throw LedgerError(
                    .fenced,
                    "ledger \(request.ledger) is \(metadata.state.rawValue): its ensemble can no longer change "
                        + "(another client recovers it)")
            }
            var ensemble = metadata.fragments.last?.ensemble ?? request.ensemble
            var excluded = Set(ensemble).union(request.ensemble)
            for position in request.failed.keys.sorted() where position < ensemble.count {
                guard let chosen = replacement(excluded) else {
                    throw LedgerError(
                        .notEnoughBookies,
                        "ledger \(request.ledger): no bookie outside the ensemble "
                            + "(\(ensemble.joined(separator: ", "))) can replace bookie \(ensemble[position])")
                }
                ensemble[position] = chosen
                excluded.insert(chosen)
            }
            let fragment = LedgerMetadata.Fragment(firstEntry: request.firstEntry, ensemble: ensemble)
            if let last = metadata.fragments.last, last.firstEntry >= request.firstEntry {
                metadata.fragments[metadata.fragments.count - 1] = fragment
            } else {
                metadata.fragments.append(fragment)
            }
            do {
                _ = try store.wait {
                    store.put(key(request.ledger), metadata.encoded(), expected: .exactly(version), completion: $0)
                }
                return ensemble
            } catch  where error.code == .conflict {
                continue  // changed meanwhile: look again (a recovery makes it not OPEN)
            }
        }
    }

    /// A reader of `metadata`'s ledger over its fragments.
    public func reader(_ metadata: LedgerMetadata, preferred: String? = nil) throws(LedgerError) -> LedgerReader {
        var fragments: [BookieFragment] = []
        for fragment in metadata.fragments {
            fragments.append(BookieFragment(firstEntry: fragment.firstEntry, ensemble: try resolve(fragment.ensemble)))
        }
        return LedgerReader(ledger: metadata.id, fragments: fragments, config: metadata.quorum, preferred: preferred)
    }

    /// The metadata of `ledger` with its version.
    public func read(_ ledger: UInt64) throws(LedgerError) -> (LedgerMetadata, version: UInt64) {
        guard let stored = try store.wait({ store.get(key(ledger), completion: $0) }) else {
            throw LedgerError(.noSuchLedger, "ledger \(ledger) has no metadata (key '\(key(ledger))')")
        }
        return (try LedgerMetadata.decode(stored.value, key: key(ledger)), stored.version)
    }

    /// Closes a ledger its own writer wrote: OPEN → CLOSED with the writer's LAC, by compare-and-swap (fails
    /// with `.conflict` when someone recovered it meanwhile).
    public func close(_ ledger: UInt64, lastEntry: Int64) throws(LedgerError) -> LedgerMetadata {
        let (metadata, version) = try read(ledger)
        guard metadata.state == .open else {
            throw LedgerError(.conflict, "ledger \(ledger) is \(metadata.state.rawValue), not OPEN: its writer lost it")
        }
        var closed = metadata
        closed.state = .closed
        closed.lastEntry = lastEntry
        _ = try store.wait { store.put(key(ledger), closed.encoded(), expected: .exactly(version), completion: $0) }
        return closed
    }

    /// Opens a ledger for recovery: marks it IN_RECOVERY (compare-and-swap), fences it on its bookies, finds
    /// and secures its last entry (`LedgerRecovery`, replacing a bookie that fails its recovery adds from
    /// `replacement`), and closes it with that entry (and the new fragment, when a bookie was replaced). A
    /// CLOSED ledger is returned as it is.
    public func recover(_ ledger: UInt64) throws(LedgerError) -> LedgerMetadata {
        var (metadata, version) = try read(ledger)
        if metadata.state == .closed { return metadata }
        if metadata.state == .open {
            metadata.state = .inRecovery
            version = try store.wait {
                store.put(key(ledger), metadata.encoded(), expected: .exactly(version), completion: $0)
            }
        }
        guard let fragment = metadata.fragments.last else {
            throw LedgerError(.corrupt, "ledger \(ledger) has no ensemble in its metadata")
        }
        let bookies = try resolve(fragment.ensemble)
        let outcome = try waitFor {
            LedgerRecovery.recover(
                ledger: ledger, ensemble: bookies, config: metadata.quorum, firstEntry: fragment.firstEntry,
                replacement: { [self] excluded in replacement(excluded).flatMap { bookie($0) } }, completion: $0)
        }
        metadata.state = .closed
        metadata.lastEntry = outcome.lastEntry
        if let (first, ensemble) = outcome.fragment, first <= outcome.lastEntry {
            let replaced = LedgerMetadata.Fragment(firstEntry: first, ensemble: ensemble.map(\.id))
            if first == fragment.firstEntry {
                metadata.fragments[metadata.fragments.count - 1] = replaced
            } else {
                metadata.fragments.append(replaced)
            }
        }
        _ = try store.wait { store.put(key(ledger), metadata.encoded(), expected: .exactly(version), completion: $0) }
        return metadata
    }

    /// Deletes a ledger: from its bookies, then its metadata. A bookie that cannot be reached keeps its copy
    /// (garbage no ledger names any more).
    public func delete(_ ledger: UInt64) throws(LedgerError) {
        let (metadata, version) = try read(ledger)
        var seen = Set<String>()
        for fragment in metadata.fragments {
            for id in fragment.ensemble where seen.insert(id).inserted {
                guard let bookie = bookie(id) else { continue }
                do {
                    try waitFor { bookie.deleteLedger(ledger: ledger, completion: $0) }
                } catch  where error.code == .bookieUnavailable {
                    continue
                }
            }
        }
        try store.wait { store.delete(key(ledger), expected: .exactly(version), completion: $0) }
    }

    /// The bookies with these ids.
    public func resolve(_ ids: [String]) throws(LedgerError) -> [any Bookie] {
        var bookies: [any Bookie] = []
        for id in ids {
            guard let found = bookie(id) else {
                throw LedgerError(.notEnoughBookies, "no bookie '\(id)' is known to this node")
            }
            bookies.append(found)
        }
        return bookies
    }
}
