import Dispatch
import PlexusPluginSDK
import Synchronization

/// The durable storage of Plexus: one segmented, checksummed commit log per stream on this node's disk, in the
/// spirit of DLedger. Stage 1 is a single Raft member: entries carry a term and an index so that replication
/// can be added without changing the format, but an append is durable once it is on the local disk
/// (`PX_DURABILITY_LOCAL`) under the fsync policy.
///
/// On start every stream under `<data>/streams/` is recovered (`Recovery`): a torn tail is cut, corruption
/// before it refuses the start (or is cut with `repairOnStart: truncate`). Each stream then has its own writer
/// thread that group-commits appends (`LogWriter.swift`).
public final class RaftLogStorage: StoragePlugin {
    public static let name = "raft-log"
    public static let version = "1.0.0"
    public static let durability = Durability.local

    let host: Host
    let settings: Settings
    let statistics: Statistics
    /// Where the streams live: one directory per stream, its name escaped (`StreamName`).
    let root: String
    let dataDirectory: String
    private let readers = DispatchQueue(label: "raft-log.read", attributes: .concurrent)

    private enum Phase { case created, started, stopped }
    private struct State {
        var phase = Phase.created
        var streams: [String: StreamLog] = [:]
    }
    private let state = Mutex(State())

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        settings = try Settings.from(config)
        statistics = Statistics(host: host)
        guard !config.dataDirectory.isEmpty else {
            throw PluginError.invalidArgument("raft-log: the kernel gave no data directory")
        }
        dataDirectory = config.dataDirectory
        root = config.dataDirectory + "/streams"
    }

    /// Recovers every stream on disk, so that a corrupt log stops the start with a message saying how to
    /// repair it.
    public func start() throws {
        do {
            if !Files.exists(root) {
                try Files.makeDirectory(root)
                if settings.fsync != .never { try Files.syncDirectory(dataDirectory) }
            }
        } catch {
            throw PluginError(PX_ERR_IO, "raft-log: cannot create \(root): \(error)")
        }
        var recovered: [String: StreamLog] = [:]
        do {
            let directories: [String]
            do {
                directories = try Files.list(root).sorted()
            } catch {
                throw PluginError(PX_ERR_IO, "raft-log: cannot list \(root): \(error)")
            }
            for directory in directories {
                guard let name = StreamName.unescape(directory) else {
                    host.log(.warning, "raft-log: ignoring \(root)/\(directory): not the directory of a stream")
                    continue
                }
                recovered[name] = try makeLog(name: name)
            }
        } catch {
            // on_start undoes its partial work: stop the writers already started.
            for log in recovered.values { _ = log.stop(deadline: .distantFuture) }
            throw error
        }
        let count = recovered.count
        state.withLock {
            $0.streams = recovered
            $0.phase = .started
        }
        host.log(
            .info,
            "raft-log: \(count) stream(s) recovered from \(root); fsync \(settings.fsync.rawValue), segments of "
                + "\(settings.segmentBytes) bytes")
    }

    /// Finishes what every writer has queued, syncs and stops them.
    public func stop(timeout: Duration) throws {
        let logs = state.withLock { s -> [StreamLog] in
            s.phase = .stopped
            return Array(s.streams.values)
        }
        let (seconds, attoseconds) = timeout.components
        let deadline =
            DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        var late: [String] = []
        for log in logs where !log.stop(deadline: deadline) { late.append(log.name) }
        guard late.isEmpty else {
            throw PluginError(PX_ERR_TIMEOUT, "raft-log: the writers of \(late.sorted()) did not finish in time")
        }
    }

    public func health() throws {
        let failed = state.withLock { $0.streams.values.compactMap { log in log.failure.map { (log.name, $0) } } }
        if let (name, failure) = failed.first {
            throw PluginError(PX_ERR_IO, "raft-log: stream '\(name)' takes no writes: \(failure)")
        }
    }

    /// Opens a stream, creating its directory on first use; opening it again returns the same log and
    /// replaces its retention settings.
    public func openStream(name: String, options: StreamOptions) throws -> StreamLog {
        guard !name.isEmpty else { throw PluginError.invalidArgument("raft-log: the stream name is empty") }
        let log = try state.withLock { s -> StreamLog in
            guard s.phase == .started else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log is not running") }
            if let existing = s.streams[name] { return existing }
            let created = try makeLog(name: name)
            s.streams[name] = created
            return created
        }
        log.setOptions(options)
        return log
    }

    /// Recovers or creates the log of `name`.
    private func makeLog(name: String) throws -> StreamLog {
        let escaped = StreamName.escape(name)
        guard escaped.utf8.count <= StreamName.maxDirectoryBytes else {
            throw PluginError.invalidArgument(
                "raft-log: the stream name '\(name.prefix(64))…' is too long (\(escaped.utf8.count) bytes escaped, "
                    + "at most \(StreamName.maxDirectoryBytes))")
        }
        let directory = root + "/" + escaped
        if !Files.exists(directory) {
            do {
                try Files.makeDirectory(directory)
                if settings.fsync != .never { try Files.syncDirectory(root) }
            } catch {
                throw PluginError(PX_ERR_IO, "raft-log: cannot create the directory of stream '\(name)': \(error)")
            }
        }
        let host = self.host
        return try StreamLog(
            name: name, directory: directory, settings: settings, statistics: statistics, readers: readers,
            report: { level, message in host.log(level, message) })
    }

    public func append(
        _ stream: StreamLog, _ events: [CloudEvent],
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        try stream.append(events, completion: completion)
    }

    public func read(
        _ stream: StreamLog, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<ReadResult, PluginError>) -> Void
    ) throws {
        guard maxRecords > 0 else { throw PluginError.invalidArgument("raft-log: maxRecords must be at least 1") }
        try stream.read(from: offset, maxRecords: maxRecords, maxBytes: maxBytes, completion: completion)
    }

    public func commitOffset(
        _ stream: StreamLog, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try stream.commitOffset(group: group, offset: offset, completion: completion)
    }

    public func fetchOffset(
        _ stream: StreamLog, group: String, completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
    ) throws {
        completion(.success(stream.fetchOffset(group: group)))
    }

    public func trim(
        _ stream: StreamLog, before offset: UInt64, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try stream.trim(before: offset, completion: completion)
    }

    public func streamInfo(_ stream: StreamLog) throws -> StreamInfo { stream.info() }

    /// The bytes of every stream's segment files.
    var bytesOnDisk: UInt64 {
        let logs = state.withLock { Array($0.streams.values) }
        return logs.reduce(0) { $0 + UInt64($1.sizeBytes) }
    }

    var streamCount: UInt64 { state.withLock { UInt64($0.streams.count) } }
}

@_cdecl("px_plugin_entry_v1")
public func raftLogStorageEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(RaftLogStorage.self, api, out, err)
}
