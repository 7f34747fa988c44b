import Foundation
import LedgerCore
import PlexusPluginSDK

/// The manifest's `config` of ledger-storage (defaults filled in by the kernel; repeated here for a bare
/// `on_create`). `plugin-manifests/ledger-storage.yaml` describes every key.
struct Settings: Decodable {
    /// Where ledger and stream metadata and consumer offsets live.
    enum Metadata: String, Decodable {
        /// The registry's metadata store when the kernel offers one, else the local file.
        case auto
        /// A local fsynced file in the data directory.
        case file
        /// The registry's metadata store; refused when the node offers none.
        case registry
    }

    var ensembleSize = 1
    var writeQuorum = 1
    var ackQuorum = 1
    var ledgerRollBytes = 64 << 20
    var ledgerRollMs = 3_600_000
    var journalFileBytes = 64 << 20
    var entryLogFileBytes = 128 << 20
    var checkpointIntervalMs = 10_000
    var maxEventBytes = 4 << 20
    var metadata = Metadata.auto
    var bookieId = ""
    var bookieHeartbeatMs = 10_000
    var autorecoveryIntervalMs = 0
    /// `host:port` on which this node's bookie serves other nodes; empty: it serves none.
    var bookieListen = ""
    /// The other nodes' bookies: `id=host:port`, comma-separated.
    var bookies = ""
    /// A request to a remote bookie without an answer after this long fails (the bookie is replaced).
    var bookieTimeoutMs = 5000
    /// Whether this node's own bookie is put in the ensembles of the ledgers it writes.
    var ownBookieInEnsembles = true

    enum CodingKeys: String, CodingKey {
        case ensembleSize, writeQuorum, ackQuorum, ledgerRollBytes, ledgerRollMs, journalFileBytes, entryLogFileBytes
        case checkpointIntervalMs, maxEventBytes, metadata, bookieId, bookieListen, bookies, bookieTimeoutMs
        case ownBookieInEnsembles
        case bookieHeartbeatMs, autorecoveryIntervalMs
    }

    init() {}

    init(from decoder: any Decoder) throws {
        let keys = try decoder.container(keyedBy: CodingKeys.self)
        func value<T: Decodable>(_ key: CodingKeys, _ fallback: T) throws -> T {
            try keys.decodeIfPresent(T.self, forKey: key) ?? fallback
        }
        ensembleSize = try value(.ensembleSize, ensembleSize)
        writeQuorum = try value(.writeQuorum, writeQuorum)
        ackQuorum = try value(.ackQuorum, ackQuorum)
        ledgerRollBytes = try value(.ledgerRollBytes, ledgerRollBytes)
        ledgerRollMs = try value(.ledgerRollMs, ledgerRollMs)
        journalFileBytes = try value(.journalFileBytes, journalFileBytes)
        entryLogFileBytes = try value(.entryLogFileBytes, entryLogFileBytes)
        checkpointIntervalMs = try value(.checkpointIntervalMs, checkpointIntervalMs)
        maxEventBytes = try value(.maxEventBytes, maxEventBytes)
        metadata = try value(.metadata, metadata)
        bookieId = try value(.bookieId, bookieId)
        bookieHeartbeatMs = try value(.bookieHeartbeatMs, bookieHeartbeatMs)
        autorecoveryIntervalMs = try value(.autorecoveryIntervalMs, autorecoveryIntervalMs)
        bookieListen = try value(.bookieListen, bookieListen)
        bookies = try value(.bookies, bookies)
        bookieTimeoutMs = try value(.bookieTimeoutMs, bookieTimeoutMs)
        ownBookieInEnsembles = try value(.ownBookieInEnsembles, ownBookieInEnsembles)
    }

    /// Refuses values the manifest schema would refuse, for a bare `on_create` that skipped it.
    func validate() throws {
        func positive(_ value: Int, _ key: String) throws {
            guard value > 0 else { throw PluginError.invalidArgument("ledger-storage: \(key) must be positive") }
        }
        try positive(ledgerRollBytes, "ledgerRollBytes")
        try positive(ledgerRollMs, "ledgerRollMs")
        try positive(journalFileBytes, "journalFileBytes")
        try positive(entryLogFileBytes, "entryLogFileBytes")
        try positive(maxEventBytes, "maxEventBytes")
        for (value, key) in [
            (checkpointIntervalMs, "checkpointIntervalMs"), (bookieHeartbeatMs, "bookieHeartbeatMs"),
            (autorecoveryIntervalMs, "autorecoveryIntervalMs"),
        ] where value < 0 {
            throw PluginError.invalidArgument("ledger-storage: \(key) must not be negative")
        }
        try positive(bookieTimeoutMs, "bookieTimeoutMs")
        // E >= Qw >= Qa >= 1, and no more bookies per ensemble than this node knows (its own and `bookies`).
        do {
            _ = try QuorumConfig(ensembleSize: ensembleSize, writeQuorum: writeQuorum, ackQuorum: ackQuorum)
        } catch {
            throw PluginError.invalidArgument("ledger-storage: \(error.message)")
        }
        let known: Int
        do {
            known =
                (ownBookieInEnsembles ? 1 : 0)
                + (try BookieDirectory.parse(bookies)).filter { $0.id != bookieId || bookieId.isEmpty }.count
        } catch {
            throw PluginError.invalidArgument("ledger-storage: \(error.message)")
        }
        guard ensembleSize <= known else {
            let own = ownBookieInEnsembles ? "its own and " : "not its own (ownBookieInEnsembles is false), "
            throw PluginError.invalidArgument(
                "ledger-storage: ensembleSize \(ensembleSize) needs that many bookies, but this node knows \(known) "
                    + "(\(own)\(known - (ownBookieInEnsembles ? 1 : 0)) in `bookies`)")
        }
    }
}
