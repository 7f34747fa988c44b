import PlexusPluginSDK
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// Streams kept in memory: the storage for tests and for topics that may lose their events when the process
/// ends (`PX_DURABILITY_NONE`).
///
/// Each stream has its own lock, so appenders to different streams never wait for each other and batches to
/// one stream are ordered as the calls took the lock. Completions are called before the hook returns.
///
/// An appended batch is copied once, from the kernel's borrowed events into one allocation in C layout
/// (`CopiedEventBatch`), and never again: reads lend the kernel pointers into those immutable batches
/// (`LendingStoragePlugin`), and a lent read keeps the batches it points into alive however the stream is
/// trimmed meanwhile.
public final class MemoryStorage: LendingStoragePlugin, ManagedStoragePlugin {
    public static let name = "memory-storage"
    public static let version = "1.0.0"
    public static let durability = Durability.none

    /// The manifest's `config` (defaults filled in by the kernel; repeated here for a bare `on_create`).
    struct Settings: Decodable {
        var maxEventBytes: Int = 4 << 20
        var maxStreamBytes: Int = 1 << 30

        enum CodingKeys: String, CodingKey { case maxEventBytes, maxStreamBytes }

        init() {}

        init(from decoder: any Decoder) throws {
            let keys = try decoder.container(keyedBy: CodingKeys.self)
            maxEventBytes = try keys.decodeIfPresent(Int.self, forKey: .maxEventBytes) ?? maxEventBytes
            maxStreamBytes = try keys.decodeIfPresent(Int.self, forKey: .maxStreamBytes) ?? maxStreamBytes
        }
    }

    let settings: Settings
    private let streams = Mutex<[String: MemoryStream]>([:])

    public init(host: Host, config: PluginConfig) throws {
        settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
        guard settings.maxEventBytes > 0 else {
            throw PluginError.invalidArgument("memory-storage: maxEventBytes must be positive")
        }
        guard settings.maxStreamBytes > 0 else {
            throw PluginError.invalidArgument("memory-storage: maxStreamBytes must be positive")
        }
    }

    public func start() throws {}

    public func stop(timeout: Duration) throws {}

    /// Opens a stream, creating it on first use. Opening an existing stream again returns the same stream and
    /// replaces its retention with `options` (applied from the next append).
    public func openStream(name: String, options: StreamOptions) throws -> MemoryStream {
        guard !name.isEmpty else { throw PluginError.invalidArgument("memory-storage: the stream name is empty") }
        let stream = streams.withLock { streams in
            if let existing = streams[name] { return existing }
            let created = MemoryStream(name: name, options: options)
            streams[name] = created
            return created
        }
        stream.setOptions(options)
        return stream
    }

    public func append(
        _ stream: MemoryStream, _ events: EventBatchView,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        var sizes: [Int] = []
        sizes.reserveCapacity(events.count)
        for (index, event) in events.enumerated() {
            let size = event.byteCount
            guard size <= settings.maxEventBytes else {
                throw PluginError.invalidArgument(
                    "memory-storage: event \(index) (id '\(event.id)') is \(size) bytes, more than maxEventBytes "
                        + "(\(settings.maxEventBytes))")
            }
            sizes.append(size)
        }
        // The one copy of the batch's bytes, made before the stream's lock is taken.
        let batch = events.isEmpty ? nil : CopiedEventBatch(copying: events)
        let first = try stream.append(batch, sizes: sizes, now: Self.now(), maxStreamBytes: settings.maxStreamBytes)
        completion(.success(first))
    }

    public func readBatch(
        _ stream: MemoryStream, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
    ) throws {
        guard maxRecords > 0 else { throw PluginError.invalidArgument("memory-storage: maxRecords must be at least 1") }
        completion(.success(try stream.read(from: offset, maxRecords: maxRecords, maxBytes: maxBytes)))
    }

    public func commitOffset(
        _ stream: MemoryStream, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        guard offset != UInt64.max else {
            throw PluginError.invalidArgument("memory-storage: PX_OFFSET_NONE cannot be committed")
        }
        stream.commit(group: group, offset: offset)
        completion(.success(()))
    }

    public func fetchOffset(
        _ stream: MemoryStream, group: String, completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
    ) throws {
        completion(.success(stream.committed(group: group)))
    }

    public func trim(
        _ stream: MemoryStream, before offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try stream.trim(before: offset)
        completion(.success(()))
    }

    public func streamInfo(_ stream: MemoryStream) throws -> StreamInfo { stream.info() }

    public func listStreams(completion: @escaping @Sendable (Result<[String], PluginError>) -> Void) throws {
        completion(.success(streams.withLock { Array($0.keys) }))
    }

    /// Forgets the stream: it leaves the listing, its events and offsets go, and opening the name again
    /// creates an empty stream from offset 0.
    public func deleteStream(
        _ stream: MemoryStream, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        streams.withLock { streams in
            if streams[stream.name] === stream { streams[stream.name] = nil }
        }
        stream.markDeleted()
        completion(.success(()))
    }

    public func listOffsets(
        _ stream: MemoryStream, completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void
    ) throws {
        completion(.success(stream.committedOffsets()))
    }

    public func deleteOffset(
        _ stream: MemoryStream, group: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        stream.forget(group: group)
        completion(.success(()))
    }

    /// Unix time in nanoseconds.
    static func now() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return UInt64(spec.tv_sec) * 1_000_000_000 + UInt64(spec.tv_nsec)
    }
}

@_cdecl("px_plugin_entry_v1")
public func memoryStorageEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(MemoryStorage.self, api, out, err)
}
