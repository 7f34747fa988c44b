import LedgerCore
import PlexusPluginSDK
import StorageIO
import Synchronization

/// What every stream of one ledger-storage instance shares: its settings, its bookie (and the server that
/// offers it to other nodes), the bookies it knows, its metadata store and the ledger manager over them.
final class StorageContext: Sendable {
    let settings: Settings
    let bookie: LocalBookie
    let store: any MetadataStore
    let ledgers: LedgerManager
    let quorum: QuorumConfig
    /// This node's bookie and the remote ones of `bookies`.
    let directory: BookieDirectory
    /// Serves `bookie` on `bookieListen`; nil when that is empty.
    let server: BookieServer?
    /// Writes a line to the node's log at a level.
    let log: @Sendable (Host.LogLevel, String) -> Void
    /// Readers of closed ledgers (their fragments change only by re-replication: refreshed on a failed read).
    private let readers = Mutex<[UInt64: LedgerReader]>([:])

    init(
        settings: Settings, bookie: LocalBookie, store: any MetadataStore,
        log: @escaping @Sendable (Host.LogLevel, String) -> Void
    ) throws {
        self.settings = settings
        self.bookie = bookie
        self.store = store
        self.log = log
        do {
            quorum = try QuorumConfig(
                ensembleSize: settings.ensembleSize, writeQuorum: settings.writeQuorum, ackQuorum: settings.ackQuorum)
            var options = RemoteBookie.Options()
            options.timeout = .milliseconds(settings.bookieTimeoutMs)
            options.maxFrameBytes = BookieWire.maxFrameBytes(maxPayloadBytes: settings.maxEventBytes)
            directory = try BookieDirectory.connecting(
                local: bookie, list: settings.bookies, options: options,
                localInEnsembles: settings.ownBookieInEnsembles)
            ledgers = LedgerManager(store: store, prefix: MetadataKeys.ledgerPrefix, directory: directory)
            if settings.bookieListen.isEmpty {
                server = nil
            } else {
                let server = BookieServer(
                    bookie: bookie, maxFrameBytes: BookieWire.maxFrameBytes(maxPayloadBytes: settings.maxEventBytes),
                    log: { level, line in log(Host.LogLevel(level), line) })
                try server.start(listen: settings.bookieListen)
                self.server = server
            }
        } catch {
            throw error.pluginError
        }
    }

    /// Creates a ledger on an ensemble of `quorum.ensembleSize` available bookies (this node's first).
    func createLedger() throws(LedgerError) -> (LedgerMetadata, LedgerWriter) {
        try ledgers.create(ensemble: try directory.chooseEnsemble(size: quorum.ensembleSize), quorum: quorum)
    }

    /// A reader of closed ledger `ledger` (cached; `refresh` reads its metadata again).
    func reader(_ ledger: UInt64, refresh: Bool = false) throws(LedgerError) -> LedgerReader {
        if !refresh, let cached = readers.withLock({ $0[ledger] }) { return cached }
        let reader = try ledgers.reader(try ledgers.read(ledger).0, preferred: bookie.id)
        readers.withLock { $0[ledger] = reader }
        return reader
    }

    /// Deletes a ledger (bookies, then metadata) and forgets its reader; a failure leaves garbage, not harm.
    func deleteLedger(_ ledger: UInt64) {
        readers.withLock { _ = $0.removeValue(forKey: ledger) }
        try? ledgers.delete(ledger)
    }

    /// The payload bytes of a ledger's entries 0 … `last` (for a recovered ledger's size).
    func payloadBytes(ledger: UInt64, through last: Int64) throws(LedgerError) -> UInt64 {
        guard last >= 0 else { return 0 }
        let reader = try reader(ledger)
        var total: UInt64 = 0
        var first: Int64 = 0
        while first <= last {
            let end = min(last, first + 255)
            for stored in try waitFor({ reader.read(first, through: end, completion: $0) }) {
                total += UInt64(stored.payload.count)
            }
            first = end + 1
        }
        return total
    }

    /// Stops serving other nodes and closes the connections to remote bookies.
    func stopNetwork() {
        server?.stop()
        directory.shutdown()
    }
}

/// Streams stored as BookKeeper-style ledgers on this node's bookie (`LedgerCore`): a durable journal with
/// group commit, entry logs and an index, fencing and recovery. One node, E = Qw = Qa = 1 (the embedded
/// setting): an acknowledged append is on this node's disk (fdatasync'd by the journal) and survives kill -9.
///
/// A stream is an ordered list of ledgers; the last is open for this node's writer. Opening a stream after a
/// restart recovers the ledger the previous process left open (fences it, so nothing more can be added to it,
/// and closes it at its last entry) and opens a new one. Metadata (streams, ledgers) and consumer offsets go
/// to a `MetadataStore`: the registry's metadata store (ABI 1.4) or the local fsynced file `<data>/metadata`
/// (`MetadataLocation`).
public final class LedgerStorage: StoragePlugin, ManagedStoragePlugin {
    public static let name = "ledger-storage"
    public static let version = "0.1.0"
    public static let durability = Durability.local

    let host: Host
    let context: StorageContext
    let maintenance: LedgerMaintenance
    private let streams = Mutex<[String: LedgerStream]>([:])

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        let settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
        try settings.validate()
        guard !config.dataDirectory.isEmpty else {
            throw PluginError.invalidArgument("ledger-storage: the node gave the instance no data directory")
        }
        let id = !settings.bookieId.isEmpty ? settings.bookieId : (config.nodeID.isEmpty ? "local" : config.nodeID)
        var options = LocalBookie.Options()
        options.journalFileBytes = settings.journalFileBytes
        options.entryLogFileBytes = settings.entryLogFileBytes
        options.checkpointIntervalMilliseconds = settings.checkpointIntervalMs
        options.log = { [host] level, line in host.log(Host.LogLevel(level), line) }
        do {
            try Files.makeDirectory(config.dataDirectory)
            // Before the bookie starts, so that a refused metadata setting leaves nothing running.
            let store = try MetadataLocation.open(settings.metadata, host: host, dataDirectory: config.dataDirectory)
            let bookie = try LocalBookie(id: id, directory: config.dataDirectory + "/bookie", options: options)
            if let torn = bookie.recovery.tornTail {
                host.log(
                    .warning,
                    "ledger-storage: cut a torn record (\(torn.bytes) bytes) off the journal \(torn.path) at byte "
                        + "\(torn.offset), left by a crash while it was written")
            }
            context = try StorageContext(settings: settings, bookie: bookie, store: store) { [host] level, line in
                host.log(level, line)
            }
        } catch let error as LedgerError {
            throw error.pluginError
        } catch let error as IOFailure {
            throw PluginError(PX_ERR_IO, "ledger-storage: \(error)")
        }
        // The address other nodes reach this bookie at, as bound (`bookieListen` may name port 0).
        let address =
            settings.bookieListen.isEmpty ? "" : Self.boundAddress(settings.bookieListen, context.server?.port)
        maintenance = LedgerMaintenance(host: host, context: context, bookieAddress: address)
    }

    /// `listen` (`host:port`) with the port the server bound.
    static func boundAddress(_ listen: String, _ port: Int?) -> String {
        guard let port, let colon = listen.lastIndex(of: ":") else { return listen }
        return listen[..<colon] + ":\(port)"
    }

    /// Starts the bookie's heartbeat and autorecovery (`LedgerMaintenance`).
    public func start() throws { maintenance.start() }

    /// Closes every open ledger at its LAC and stops the bookie after a last checkpoint.
    public func stop(timeout: Duration) throws {
        let open = streams.withLock { streams in
            defer { streams = [:] }
            return Array(streams.values)
        }
        maintenance.stop()
        for stream in open { stream.closeLedger() }
        context.stopNetwork()
        context.bookie.stop(checkpoint: true)
    }

    public func openStream(name: String, options: StreamOptions) throws -> LedgerStream {
        guard !name.isEmpty else { throw PluginError.invalidArgument("ledger-storage: the stream name is empty") }
        // One open per name at a time, so that two handles never write two ledgers of one stream.
        return try streams.withLock { streams in
            if let existing = streams[name] {
                existing.setOptions(options)
                return existing
            }
            let stream = try LedgerStream.open(name: name, options: options, context: context)
            streams[name] = stream
            return stream
        }
    }

    public func append(
        _ stream: LedgerStream, _ events: EventBatchView,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        try stream.append(events, maxEventBytes: context.settings.maxEventBytes, completion: completion)
    }

    public func read(
        _ stream: LedgerStream, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<ReadResult, PluginError>) -> Void
    ) throws {
        guard maxRecords > 0 else { throw PluginError.invalidArgument("ledger-storage: maxRecords must be at least 1") }
        completion(.success(try stream.read(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)))
    }

    public func commitOffset(
        _ stream: LedgerStream, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        guard offset != UInt64.max else {
            throw PluginError.invalidArgument("ledger-storage: PX_OFFSET_NONE cannot be committed")
        }
        context.store.put(
            MetadataKeys.offset(stream.name, group), Array(String(offset).utf8), expected: .any
        ) { result in
            completion(result.map { _ in () }.mapError(\.pluginError))
        }
    }

    public func fetchOffset(
        _ stream: LedgerStream, group: String, completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
    ) throws {
        context.store.get(MetadataKeys.offset(stream.name, group)) { result in
            completion(
                result.map { stored in stored.flatMap { UInt64(String(decoding: $0.value, as: UTF8.self)) } }
                    .mapError(\.pluginError))
        }
    }

    public func trim(
        _ stream: LedgerStream, before offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try stream.trim(before: offset)
        completion(.success(()))
    }

    public func streamInfo(_ stream: LedgerStream) throws -> StreamInfo { stream.info() }

    public func listStreams(completion: @escaping @Sendable (Result<[String], PluginError>) -> Void) throws {
        context.store.list(prefix: MetadataKeys.streamPrefix) { result in
            completion(
                result.map { entries in
                    entries.map { MetadataKeys.unescape($0.key.dropFirst(MetadataKeys.streamPrefix.count)) }
                }.mapError(\.pluginError))
        }
    }

    /// Deletes the stream's ledgers, metadata and offsets; opening the name again creates an empty stream.
    public func deleteStream(
        _ stream: LedgerStream, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try streams.withLock { streams in
            try stream.delete()
            if streams[stream.name] === stream { streams[stream.name] = nil }
        }
        completion(.success(()))
    }

    public func listOffsets(
        _ stream: LedgerStream, completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void
    ) throws {
        let prefix = MetadataKeys.offsets(stream.name)
        context.store.list(prefix: prefix) { result in
            completion(
                result.map { entries in
                    entries.compactMap { entry in
                        UInt64(String(decoding: entry.value.value, as: UTF8.self)).map {
                            GroupOffset(group: MetadataKeys.unescape(entry.key.dropFirst(prefix.count)), offset: $0)
                        }
                    }
                }.mapError(\.pluginError))
        }
    }

    public func deleteOffset(
        _ stream: LedgerStream, group: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        context.store.delete(MetadataKeys.offset(stream.name, group), expected: .any) { result in
            completion(result.mapError(\.pluginError))
        }
    }
}

@_cdecl("px_plugin_entry_v1")
public func ledgerStorageEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(LedgerStorage.self, api, out, err)
}

extension Host.LogLevel {
    /// The node's level for a line LedgerCore logged.
    init(_ level: LogLevel) {
        switch level {
        case .info: self = .info
        case .warning: self = .warning
        case .error: self = .error
        }
    }
}
