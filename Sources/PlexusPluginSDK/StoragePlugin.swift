import PlexusABI

/// A storage engine: named streams of events with dense offsets, consumer offsets per group, and trimming.
///
/// Adopt it on your `Plugin` type and `PluginExport.entry` hangs a storage vtable off the descriptor (and adds
/// the storage kind). The SDK turns the C calls into these methods:
///
/// - the `px_stream *` the kernel holds is your `StreamHandle`, retained by the SDK from `openStream` until
///   the kernel closes it;
/// - events arrive copied into `CloudEvent`s, so you may keep them;
/// - records you hand to a read completion are laid out in C memory for the kernel's callback;
/// - a thrown error becomes the hook's status and text (and the completion is then never called); a method
///   that returns normally must call its completion exactly once, now or later, from any thread. Results
///   reported after the first are ignored; a completion released without being called reports
///   `PX_ERR_INTERNAL`.
///
/// Before your method runs, the SDK refuses with `PX_ERR_INVALID_ARGUMENT` a NULL stream handle, a NULL
/// completion, a NULL event array with a non-zero count, a NULL event in it, and a read of zero records.
///
/// - Important: Every method may be called from any thread, concurrently, including for the same stream.
///   Completions must not block.
public protocol StoragePlugin: Plugin {
    /// Your handle for one open stream: a class the SDK retains while the kernel holds it.
    associatedtype StreamHandle: AnyObject & Sendable

    /// What "durable" means when your completions report success.
    static var durability: Durability { get }

    /// Opens, creating if needed, a named stream.
    /// - Parameters:
    ///   - name: the stream's name (the kernel uses the topic).
    ///   - options: retention settings; zero means unlimited.
    /// - Throws: `PluginError` to refuse.
    func openStream(name: String, options: StreamOptions) throws -> StreamHandle

    /// Releases a handle returned by `openStream`; no call on it is in flight. The default does nothing.
    func closeStream(_ stream: StreamHandle)

    /// Appends a batch, assigning dense increasing offsets; batches are ordered as the calls were made.
    /// - Parameters:
    ///   - events: the batch, possibly empty (then the result is the stream's next offset).
    ///   - completion: the offset of the first event, once the batch is durable per `durability`.
    /// - Throws: `PluginError` to refuse the batch outright (then `completion` is never called).
    func append(
        _ stream: StreamHandle, _ events: [CloudEvent],
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws

    /// Reads up to `maxRecords` records and about `maxBytes` bytes (at least one record) from `offset`.
    /// - Parameters:
    ///   - maxRecords: at least 1.
    ///   - maxBytes: a size hint; `0` means no byte limit.
    ///   - completion: the records in offset order and the offset to read from next; zero records at the end.
    /// - Throws: `PluginError` with `PX_ERR_OUT_OF_RANGE` before the first retained offset or past the end.
    func read(
        _ stream: StreamHandle, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<ReadResult, PluginError>) -> Void
    ) throws

    /// Stores a consumer group's committed offset (the next offset it will consume).
    /// - Parameter completion: called once the offset is durable per `durability`.
    func commitOffset(
        _ stream: StreamHandle, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws

    /// Fetches a consumer group's committed offset: `nil` when the group has committed none.
    func fetchOffset(
        _ stream: StreamHandle, group: String, completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
    ) throws

    /// Discards events with offsets below `offset`; offsets never move.
    func trim(
        _ stream: StreamHandle, before offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws

    /// The stream's extent and size now.
    func streamInfo(_ stream: StreamHandle) throws -> StreamInfo
}

extension StoragePlugin {
    public static var kinds: PluginKinds { [.storage] }

    public func closeStream(_ stream: StreamHandle) {}
}

/// What a read completion carries: the records, in offset order, and the offset to read from next.
public typealias ReadResult = (records: [StoredRecord], next: UInt64)

/// What "durable" means for a storage plugin's completions (`px_durability`).
public enum Durability: UInt32, Sendable {
    /// In memory: lost when the process ends.
    case none = 0
    /// On this node's disk, per its fsync policy.
    case local = 1
    /// On a quorum of nodes' disks.
    case replicated = 2
}

/// Per-stream settings (`px_stream_options`). Zero means unlimited.
public struct StreamOptions: Sendable, Equatable {
    /// Keep about this many bytes; older events go first.
    public var retentionBytes: UInt64
    /// Keep events for this many milliseconds after they were stored.
    public var retentionMilliseconds: UInt64

    public init(retentionBytes: UInt64 = 0, retentionMilliseconds: UInt64 = 0) {
        self.retentionBytes = retentionBytes
        self.retentionMilliseconds = retentionMilliseconds
    }

    /// Copies borrowed C options; NULL means the defaults. Fields beyond the caller's `struct_size` are zero.
    init(copying options: UnsafePointer<px_stream_options>?) {
        guard let options else {
            self.init()
            return
        }
        let size = Int(UnsafeRawPointer(options).load(as: UInt32.self))
        func fits<T>(_ path: KeyPath<px_stream_options, T>) -> Bool {
            guard let offset = MemoryLayout<px_stream_options>.offset(of: path) else { return false }
            return offset + MemoryLayout<T>.size <= size
        }
        self.init(
            retentionBytes: fits(\.retention_bytes) ? options.pointee.retention_bytes : 0,
            retentionMilliseconds: fits(\.retention_ms) ? options.pointee.retention_ms : 0)
    }
}

/// The extent of a stream (`px_stream_info`): offsets `firstOffset ..< nextOffset` exist.
public struct StreamInfo: Sendable, Equatable {
    public var firstOffset: UInt64
    public var nextOffset: UInt64
    public var sizeBytes: UInt64

    public init(firstOffset: UInt64, nextOffset: UInt64, sizeBytes: UInt64) {
        self.firstOffset = firstOffset
        self.nextOffset = nextOffset
        self.sizeBytes = sizeBytes
    }
}
