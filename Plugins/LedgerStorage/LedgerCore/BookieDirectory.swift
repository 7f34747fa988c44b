import NIOCore
import NIOPosix
import Synchronization

/// The bookies a ledger client knows, by id: this node's own (in-process) and the remote ones of the `bookies`
/// setting. Ledger managers resolve ensembles through it, writers take replacements from it, and autorecovery
/// can use it to reach any bookie of a fragment.
///
/// Ensembles for new ledgers: this node's bookie first (its reads stay local), then the other available
/// bookies in random order (spreading ledgers over them). Replacements in an ensemble change: a random
/// available bookie not in the ensemble. A writer node that is not to hold its own ledgers' entries
/// (`localInEnsembles` false: a writer whose crash must not take a replica with it, as a BookKeeper client on
/// a machine without a bookie) puts only remote bookies in ensembles; its own bookie still serves reads of
/// ledgers that name it.
public final class BookieDirectory: Sendable {
    /// This node's bookie, if it has one.
    public let local: (any Bookie)?
    private let remote: [any Bookie]
    private let byId: [String: any Bookie]
    private let group: (any EventLoopGroup)?
    /// Whether `local` is put in new ensembles and taken as a replacement.
    public let localInEnsembles: Bool

    /// A directory of `local` and `remote` bookies (ids must be distinct).
    /// - Parameters:
    ///   - group: the event loops of the remote bookies, shut down by `shutdown()` when given.
    ///   - localInEnsembles: false: `local` is never chosen for an ensemble or as a replacement.
    public init(
        local: (any Bookie)?, remote: [any Bookie], group: (any EventLoopGroup)? = nil, localInEnsembles: Bool = true
    ) throws(LedgerError) {
        self.local = local
        self.remote = remote
        self.group = group
        self.localInEnsembles = localInEnsembles
        var byId: [String: any Bookie] = [:]
        for bookie in (local.map { [$0] } ?? []) + remote {
            guard byId[bookie.id] == nil else {
                throw LedgerError(.invalidArgument, "bookie id '\(bookie.id)' is listed twice")
            }
            byId[bookie.id] = bookie
        }
        self.byId = byId
    }

    /// A directory of this node's bookie and `RemoteBookie`s for every `id=host:port` of `list` (a comma-
    /// separated `bookies` setting; an entry naming the local bookie's id is skipped: it is used in-process).
    public static func connecting(
        local: (any Bookie)?, list: String, options: RemoteBookie.Options = RemoteBookie.Options(),
        threads: Int = 1, localInEnsembles: Bool = true
    ) throws(LedgerError) -> BookieDirectory {
        let entries = try parse(list)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, threads))
        do {
            let remote = try entries.filter { $0.id != local?.id }.map { (entry) throws(LedgerError) -> any Bookie in
                try RemoteBookie(id: entry.id, address: entry.address, group: group, options: options)
            }
            return try BookieDirectory(
                local: local, remote: remote, group: group, localInEnsembles: localInEnsembles)
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
    }

    /// Parses `id=host:port, id=host:port, ...` (empty: none).
    /// - Throws: `.invalidArgument` naming the entry that is not `id=host:port`, or an id listed twice.
    public static func parse(_ list: String) throws(LedgerError) -> [(id: String, address: String)] {
        var entries: [(id: String, address: String)] = []
        for part in list.split(separator: ",") {
            let item = part.trimmingBlanks()
            guard !item.isEmpty else { continue }
            guard let equals = item.firstIndex(of: "=") else {
                throw LedgerError(.invalidArgument, "bookies: '\(item)' is not id=host:port")
            }
            let id = String(item[..<equals]).trimmingBlanks()
            let address = String(item[item.index(after: equals)...]).trimmingBlanks()
            guard !id.isEmpty else { throw LedgerError(.invalidArgument, "bookies: '\(item)' has an empty id") }
            _ = try BookieServer.hostPort(address, role: "bookies: the address of '\(id)'")
            guard !entries.contains(where: { $0.id == id }) else {
                throw LedgerError(.invalidArgument, "bookies: id '\(id)' is listed twice")
            }
            entries.append((id, address))
        }
        return entries
    }

    /// The bookie with `id`, nil when unknown.
    public func bookie(_ id: String) -> (any Bookie)? { byId[id] }

    /// Every known id: this node's first, then the remote ones as listed.
    public var ids: [String] { (local.map { [$0.id] } ?? []) + remote.map(\.id) }

    /// The ids of the bookies thought reachable (remote ones not within their reconnect delay of a failure)
    /// that may be put in an ensemble (this node's only when `localInEnsembles`).
    public var availableIds: [String] {
        (localInEnsembles ? local.map { [$0.id] } ?? [] : [])
            + remote.filter { ($0 as? RemoteBookie)?.isAvailable ?? true }.map(\.id)
    }

    /// An ensemble of `size` bookies for a new ledger: this node's first, then available remote ones at random.
    /// - Throws: `.notEnoughBookies` when fewer than `size` are available.
    public func chooseEnsemble(size: Int) throws(LedgerError) -> [String] {
        let available = availableIds
        guard available.count >= size else {
            throw LedgerError(
                .notEnoughBookies,
                "an ensemble of \(size) bookies needs \(size) available, but \(available.count) are "
                    + "(\(available.joined(separator: ", ")); known: \(ids.joined(separator: ", "))")
        }
        let own = localInEnsembles ? local.map { [$0.id] } ?? [] : []
        return Array((own + available.filter { !own.contains($0) }.shuffled()).prefix(size))
    }

    /// A random available bookie not in `excluded`, nil when there is none.
    public func replacement(excluding excluded: Set<String>) -> String? {
        availableIds.filter { !excluded.contains($0) }.randomElement()
    }

    /// Closes the remote bookies' connections and their event loops.
    public func shutdown() {
        for bookie in remote { (bookie as? RemoteBookie)?.shutdown() }
        try? group?.syncShutdownGracefully()
    }
}

extension StringProtocol {
    /// Without leading and trailing spaces and tabs.
    func trimmingBlanks() -> String {
        let skip: Set<Character> = [" ", "\t"]
        var slice = Substring(self)
        while let first = slice.first, skip.contains(first) { slice = slice.dropFirst() }
        while let last = slice.last, skip.contains(last) { slice = slice.dropLast() }
        return String(slice)
    }
}
