import Dispatch
import PlexusPluginSDK
import RaftCore
import Synchronization

/// The durable storage of Plexus: every stream is a Raft group whose log is a segmented, checksummed commit
/// log on each member's disk, in the spirit of DLedger (the log is the state). With no `peers` the node is a
/// single member (the embedded default); with `peers` every node listed holds a replica of every stream, the
/// leader of each stream replicates it, and an append is acknowledged once a quorum has it on disk under the
/// fsync policy (and the acknowledging node has it too). `PX_DURABILITY_LOCAL` is what the vtable states:
/// it holds in both cases.
///
/// On start every stream under `<data>/streams/` is recovered (`Recovery`): a torn tail is cut, corruption
/// before it refuses the start (or is cut with `repairOnStart: truncate`). Each stream then has writer cycles
/// that group-commit its entries (`LogWriter.swift`), run one at a time per stream on a fixed pool of writer
/// threads shared by every stream (`WriterPool`), and its Raft group (`RaftStream`); a timer ticks every group
/// each `heartbeatIntervalMs`, and the transport (`PeerTransport`) carries their messages.
public final class RaftLogStorage: LendingStoragePlugin, ManagedStoragePlugin {
    public static let name = "raft-log"
    public static let version = "1.0.0"
    public static let durability = Durability.local

    let host: Host
    let settings: Settings
    let statistics: Statistics
    let context: RaftContext
    private let ticker = DispatchQueue(label: "raft-log.tick")
    private let timer = Mutex<DispatchSourceTimer?>(nil)
    /// Where the streams live: one directory per stream, its name escaped (`StreamName`).
    let root: String
    /// Where a deleted stream's directory is moved (one atomic, synced rename) before it is removed; emptied
    /// on start, so that a crash mid-removal leaves nothing behind that could come back.
    let graveyard: String
    let dataDirectory: String
    private let readers = DispatchQueue(label: "raft-log.read", attributes: .concurrent)
    /// The writer threads of every stream, started with the storage and stopped after its streams.
    private let writers = WriterPool()
    /// Where streams are recovered or created (mkdir, fsync, recovery, the writer's start), one at a time, so
    /// that no open does disk work on the caller's thread (`on_open_stream_async`) or under `state`'s lock.
    private let opener = DispatchQueue(label: "raft-log.open")
    /// Where the space probe of fenced streams runs (`probeFencedStreams`), and whether it does.
    private let prober = DispatchQueue(label: "raft-log.probe")
    private let probing = Mutex(false)
    private let ticks = Mutex(0)

    private enum Phase { case created, started, stopped }
    private struct State {
        var phase = Phase.created
        var streams: [String: RaftStream] = [:]
    }
    private let state = Mutex(State())
    /// Consumer offsets replicated through the registry's metadata store (`members: registry`).
    private let replicated = Mutex<ReplicatedOffsets?>(nil)

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        settings = try Settings.from(config)
        statistics = Statistics(host: host)
        guard !config.dataDirectory.isEmpty else {
            throw PluginError.invalidArgument("raft-log: the kernel gave no data directory")
        }
        dataDirectory = config.dataDirectory
        root = config.dataDirectory + "/streams"
        graveyard = config.dataDirectory + "/deleted-streams"
        var transport: PeerTransport?
        if settings.isReplicated {
            let listen =
                settings.listen.isEmpty
                ? (try settings.initialMembership().member(settings.memberID)?.address ?? "") : settings.listen
            let inbox = Inbox()
            do {
                let secret = settings.clusterSecret.isEmpty ? nil : try PeerSecret(settings.clusterSecret)
                if secret == nil {
                    host.log(
                        .warning,
                        "raft-log: clusterSecret is not set: anyone who can reach \(listen) can speak to this member; "
                            + "set the same clusterSecret on every member")
                }
                transport = try PeerTransport(
                    node: settings.memberID, listen: listen,
                    maxFrameBytes: settings.maxAppendBytes + settings.maxEventBytes + (1 << 20), secret: secret,
                    log: { [host] in host.log(.info, $0) },
                    receive: { inbox.deliver($0) })
            } catch {
                throw PluginError.invalidArgument("raft-log: \(error)")
            }
            context = try RaftContext(settings: settings, statistics: statistics, host: host, transport: transport)
            inbox.owner.withLock { $0 = self }
        } else {
            context = try RaftContext(settings: settings, statistics: statistics, host: host, transport: nil)
        }
    }

    /// Hands envelopes from the transport to the instance (which exists only after the transport does).
    private final class Inbox: Sendable {
        let owner = Mutex<RaftLogStorage?>(nil)
        func deliver(_ envelope: Envelope) { owner.withLock { $0 }?.receive(envelope) }
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
        if settings.members == .registry {
            let members = RegistryMembers(host: host, settings: settings, dataDirectory: dataDirectory)
            context.adopt(try members.resolve())
            let offsets = try ReplicatedOffsets.start(host: host)
            replicated.withLock { $0 = offsets }
        }
        // What a crash left of deleted streams: their rename was durable, so they are gone.
        if Files.exists(graveyard) {
            do {
                try Files.removeTree(graveyard)
            } catch {
                host.log(.warning, "raft-log: cannot empty \(graveyard): \(error)")
            }
        }
        writers.start()
        var recovered: [String: RaftStream] = [:]
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
            for stream in recovered.values { _ = stream.log.stop(deadline: .distantFuture) }
            writers.stop()
            context.transport?.stop()
            throw error
        }
        let count = recovered.count
        state.withLock {
            $0.streams = recovered
            $0.phase = .started
        }
        if let transport = context.transport {
            do {
                try transport.start()
            } catch {
                for stream in recovered.values { _ = stream.log.stop(deadline: .distantFuture) }
                writers.stop()
                transport.stop()
                throw PluginError(PX_ERR_IO, "raft-log: cannot listen for the other members: \(error)")
            }
        }
        let interval = DispatchTimeInterval.milliseconds(settings.heartbeatIntervalMs)
        timer.withLock { [ticker] slot in
            let timer = DispatchSource.makeTimerSource(queue: ticker)
            timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(1))
            timer.setEventHandler { [weak self] in self?.tick() }
            timer.resume()
            slot = timer
        }
        host.log(
            .info,
            "raft-log: \(count) stream(s) recovered from \(root); fsync \(settings.fsync.rawValue), segments of "
                + "\(settings.segmentBytes) bytes")
    }

    /// Finishes what every writer has queued, syncs and stops them.
    public func stop(timeout: Duration) throws {
        replicated.withLock { $0 }?.stop()
        timer.withLock {
            $0?.cancel()
            $0 = nil
        }
        ticker.sync {}
        context.transport?.stop()
        let streams = state.withLock { s -> [RaftStream] in
            s.phase = .stopped
            return Array(s.streams.values)
        }
        // An open in flight finishes first: it sees the stop and stops its stream's writer while the pool runs.
        opener.sync {}
        for stream in streams { stream.saveCommitHint() }
        let logs = streams.map(\.log)
        let (seconds, attoseconds) = timeout.components
        let deadline =
            DispatchTime.now() + .nanoseconds(Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000))
        var late: [String] = []
        for log in logs where !log.stop(deadline: deadline) { late.append(log.name) }
        // A writer still running keeps its thread: the pool stops only once every stream's writer is done.
        if late.isEmpty { writers.stop() }
        guard late.isEmpty else {
            throw PluginError(PX_ERR_TIMEOUT, "raft-log: the writers of \(late.sorted()) did not finish in time")
        }
    }

    /// Healthy unless a stream is fenced: then `degraded`, naming the fenced streams and the first one's
    /// reason (the other streams take writes as before).
    public func health() throws {
        let fenced = allStreams.compactMap { stream in stream.fence.map { (stream.name, $0) } }
        guard let (name, fence) = fenced.first else { return }
        let names = fenced.prefix(8).map { "'\($0.0)'" }.joined(separator: ", ") + (fenced.count > 8 ? ", …" : "")
        throw PluginError(
            PX_DEGRADED,
            "\(fenced.count) stream(s) fenced after a failed write, taking no writes (\(names)); "
                + "'\(name)': \(fence.reason). "
                + (fence.outOfSpace ? "It recovers by itself once the disk has space again, or with " : "Recover with ")
                + "`plexus plugin call raft-log recover \(name)` once the cause is cleared")
    }

    /// Lifts the fence of stream `name` (`*`: of every fenced stream) without a restart (`RaftStream.recover`).
    /// - Returns: one line per stream, saying what happened.
    func recover(_ name: String) -> String {
        let streams = name == "*" ? allStreams.filter { $0.fence != nil } : allStreams.filter { $0.name == name }
        guard !streams.isEmpty else {
            return name == "*" ? "no stream is fenced" : "raft-log has no open stream '\(name)'"
        }
        return streams.map { stream in
            do {
                return try stream.recover() ?? "stream '\(stream.name)' is not fenced"
            } catch {
                return "stream '\(stream.name)' stays fenced: \(error)"
            }
        }.joined(separator: "\n")
    }

    /// Probes, about once a second, the disk of each stream fenced because it was full, and recovers the
    /// stream once a write and sync succeed there again; one probe at a time, off the tick.
    private func probeFencedStreams() {
        let fenced = allStreams.filter { $0.fence?.outOfSpace == true }
        guard !fenced.isEmpty else { return }
        let start = probing.withLock { running -> Bool in
            defer { running = true }
            return !running
        }
        guard start else { return }
        prober.async { [self] in
            defer { probing.withLock { $0 = false } }
            for stream in fenced where stream.log.probeSpace() {
                do {
                    _ = try stream.recover()
                } catch {
                    host.log(.warning, "raft-log: stream '\(stream.name)' stays fenced after the space probe: \(error)")
                }
            }
        }
    }

    /// Opens a stream, creating its directory on first use; opening it again returns the same log and
    /// replaces its retention settings. The caller waits while a new stream is recovered or created (the
    /// 1.0 open; a 1.1 kernel opens with the completion form).
    public func openStream(name: String, options: StreamOptions) throws -> RaftStream {
        guard !name.isEmpty else { throw PluginError.invalidArgument("raft-log: the stream name is empty") }
        let stream = try stream(named: name)
        stream.log.setOptions(options)
        return stream
    }

    /// Opens a stream without blocking the caller: an open stream completes inline; a new one is recovered or
    /// created on the storage's open queue, which completes.
    public func openStream(
        name: String, options: StreamOptions,
        completion: @escaping @Sendable (Result<RaftStream, PluginError>) -> Void
    ) throws {
        guard !name.isEmpty else { throw PluginError.invalidArgument("raft-log: the stream name is empty") }
        if let open = try existing(name) {
            open.log.setOptions(options)
            return completion(.success(open))
        }
        opener.async { [self] in
            do {
                let stream = try create(name)
                stream.log.setOptions(options)
                completion(.success(stream))
            } catch let error as PluginError {
                completion(.failure(error))
            } catch {
                completion(.failure(PluginError(PX_ERR_IO, "raft-log: cannot open stream '\(name)': \(error)")))
            }
        }
    }

    /// The stream `name`, recovered or created on first use (also when another member's message names it).
    private func stream(named name: String) throws -> RaftStream {
        if let open = try existing(name) { return open }
        return try opener.sync { try create(name) }
    }

    /// The stream `name` if it is open.
    /// - Throws: `PX_ERR_UNAVAILABLE` unless the storage runs.
    private func existing(_ name: String) throws -> RaftStream? {
        try state.withLock { s in
            guard s.phase == .started else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log is not running") }
            return s.streams[name]
        }
    }

    /// Recovers or creates the stream `name` unless it is open. Runs on `opener` only, so that one name is
    /// never created twice; the disk work is done outside `state`'s lock.
    private func create(_ name: String) throws -> RaftStream {
        dispatchPrecondition(condition: .onQueue(opener))
        if let open = try existing(name) { return open }
        let created = try makeLog(name: name)
        let stopped = state.withLock { s -> Bool in
            guard s.phase == .started else { return true }
            s.streams[name] = created
            return false
        }
        if stopped {
            // The storage stopped meanwhile: its stop did not see this writer.
            _ = created.log.stop(deadline: .distantFuture)
            throw PluginError(PX_ERR_UNAVAILABLE, "raft-log is not running")
        }
        return created
    }

    /// A message from another member, for the group of its stream.
    private func receive(_ envelope: Envelope) {
        do {
            try stream(named: envelope.stream).receive(envelope)
        } catch {
            host.log(.warning, "raft-log: a message from '\(envelope.from)' for stream '\(envelope.stream)': \(error)")
        }
    }

    private func tick() {
        let streams = state.withLock { $0.phase == .started ? Array($0.streams.values) : [] }
        var lag: UInt64 = 0
        for stream in streams { lag = max(lag, stream.tick() ?? 0) }
        if context.transport != nil { host.gauge("replication_lag_max", Double(lag)) }
        let probeDue = ticks.withLock { count -> Bool in
            count += 1
            guard count * settings.heartbeatIntervalMs >= Self.probeIntervalMs else { return false }
            count = 0
            return true
        }
        if probeDue { probeFencedStreams() }
    }

    /// Recovers or creates the log of `name` and its Raft group.
    private func makeLog(name: String) throws -> RaftStream {
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
        let log = try StreamLog(
            name: name, directory: directory, settings: settings, statistics: statistics, readers: readers,
            writers: writers,
            report: { level, message in host.log(level, message) })
        return try RaftStream(name: name, log: log, context: context)
    }

    public func append(
        _ stream: RaftStream, _ events: EventBatchView,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        try stream.append(events, completion: completion)
    }

    public func readBatch(
        _ stream: RaftStream, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
    ) throws {
        guard maxRecords > 0 else { throw PluginError.invalidArgument("raft-log: maxRecords must be at least 1") }
        try stream.log.readBatch(from: offset, maxRecords: maxRecords, maxBytes: maxBytes, completion: completion)
    }

    public func commitOffset(
        _ stream: RaftStream, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        guard let offsets = replicated.withLock({ $0 }) else {
            return try stream.log.commitOffset(group: group, offset: offset, completion: completion)
        }
        // Here first (durable in the state file), then in the metadata store for the other members.
        let name = stream.name
        try stream.log.commitOffset(group: group, offset: offset) { local in
            guard case .success = local else { return completion(local) }
            offsets.commit(stream: name, group: group, offset: offset, completion: completion)
        }
    }

    public func fetchOffset(
        _ stream: RaftStream, group: String, completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
    ) throws {
        if let offsets = replicated.withLock({ $0 }), let latest = offsets.offset(stream: stream.name, group: group) {
            return completion(.success(latest))
        }
        completion(.success(stream.log.fetchOffset(group: group)))
    }

    public func trim(
        _ stream: RaftStream, before offset: UInt64, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try stream.log.trim(before: offset, completion: completion)
    }

    public func streamInfo(_ stream: RaftStream) throws -> StreamInfo { stream.log.info() }

    /// Every stream under the storage's directory: those recovered at start and those created since.
    public func listStreams(completion: @escaping @Sendable (Result<[String], PluginError>) -> Void) throws {
        let names = try state.withLock { s -> [String] in
            guard s.phase == .started else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log is not running") }
            return Array(s.streams.keys)
        }
        completion(.success(names))
    }

    /// Deletes a stream on this node: its writer stops (what it has queued finishes first), its directory is
    /// renamed out of `streams/` (synced, so the deletion survives a crash) and removed. Refused on a
    /// replicated raft-log (`peers`): the other members hold the stream too and nothing replicates a
    /// deletion to them yet, so deleting here alone would let them bring it back or leave the members
    /// disagreeing.
    public func deleteStream(
        _ stream: RaftStream, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        guard context.transport == nil else {
            throw PluginError(
                PX_ERR_UNSUPPORTED,
                "raft-log: deleting stream '\(stream.name)' is not supported on a replicated raft-log (peers are "
                    + "configured): a deletion is not replicated to the other members yet")
        }
        let removed = try state.withLock { s -> Bool in
            guard s.phase == .started else { throw PluginError(PX_ERR_UNAVAILABLE, "raft-log is not running") }
            guard s.streams[stream.name] === stream else { return false }
            s.streams[stream.name] = nil
            return true
        }
        guard removed else {
            throw PluginError(PX_ERR_NOT_FOUND, "raft-log: stream '\(stream.name)' was already deleted")
        }
        opener.async { [self] in
            let directory = root + "/" + StreamName.escape(stream.name)
            _ = stream.log.stop(deadline: .now() + .seconds(10))
            do {
                if !Files.exists(graveyard) { try Files.makeDirectory(graveyard) }
                let grave = graveyard + "/" + StreamName.escape(stream.name) + "-" + String(Files.now())
                try Files.rename(directory, grave)
                if settings.fsync != .never {
                    try Files.syncDirectory(root)
                    try Files.syncDirectory(graveyard)
                }
                try Files.removeTree(grave)
                completion(.success(()))
            } catch {
                completion(
                    .failure(PluginError(PX_ERR_IO, "raft-log: cannot delete stream '\(stream.name)': \(error)")))
            }
        }
    }

    public func listOffsets(
        _ stream: RaftStream, completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void
    ) throws {
        completion(.success(stream.log.committedOffsets()))
    }

    public func deleteOffset(
        _ stream: RaftStream, group: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        guard let offsets = replicated.withLock({ $0 }) else {
            return try stream.log.deleteOffset(group: group, completion: completion)
        }
        let name = stream.name
        try stream.log.deleteOffset(group: group) { local in
            guard case .success = local else { return completion(local) }
            offsets.delete(stream: name, group: group, completion: completion)
        }
    }

    /// The bytes of every stream's segment files.
    var bytesOnDisk: UInt64 {
        let streams = state.withLock { Array($0.streams.values) }
        return streams.reduce(0) { $0 + UInt64($1.log.sizeBytes) }
    }

    var streamCount: UInt64 { state.withLock { UInt64($0.streams.count) } }

    /// How often the disk of a stream fenced for lack of space is probed.
    static let probeIntervalMs = 1000

    var allStreams: [RaftStream] { state.withLock { $0.streams.values.sorted { $0.name < $1.name } } }
}

@_cdecl("px_plugin_entry_v1")
public func raftLogStorageEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(RaftLogStorage.self, api, out, err)
}
