import PlexusABI

/// A storage engine: named streams of events with dense offsets, consumer offsets per group, and trimming.
///
/// Adopt it on your `Plugin` type and `PluginExport.entry` hangs a storage vtable off the descriptor (and adds
/// the storage kind). The SDK turns the C calls into these methods:
///
/// - the `px_stream *` the kernel holds is your `StreamHandle`, retained by the SDK from `openStream` until
///   the kernel closes it; `on_open_stream_async` calls the completion form of `openStream`, which by default
///   opens synchronously and completes inline (override it when opening does disk work);
/// - events arrive borrowed, as an `EventBatchView` over the kernel's own `px_event`s: nothing is copied
///   before your `append` runs, and you copy each event's bytes once, into your own storage (`copy()` makes
///   an owned `CloudEvent` where that is the form you keep);
/// - records you hand to a read completion are laid out in C memory for the kernel's callback; adopt
///   `LendingStoragePlugin` instead to lend the kernel your stored records without laying them out again;
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
    /// - Important: Called on the caller's thread, which waits: a 1.0 kernel's and the conformance kit's open.
    func openStream(name: String, options: StreamOptions) throws -> StreamHandle

    /// Opens, creating if needed, a named stream without blocking the caller (`on_open_stream_async`, which a
    /// 1.1 kernel prefers). The default calls `openStream(name:options:)` and completes inline: enough when
    /// opening does no I/O. A storage whose open does disk work (mkdir, fsync, recovery) overrides it to do
    /// that work on a thread of its own.
    /// - Parameters:
    ///   - completion: the opened stream, or why not; called exactly once, on any thread.
    /// - Throws: `PluginError` to refuse outright (then `completion` is never called).
    func openStream(
        name: String, options: StreamOptions,
        completion: @escaping @Sendable (Result<StreamHandle, PluginError>) -> Void) throws

    /// Releases a handle returned by `openStream`; no call on it is in flight. The default does nothing.
    func closeStream(_ stream: StreamHandle)

    /// Appends a batch, assigning dense increasing offsets; batches are ordered as the calls were made.
    /// - Parameters:
    ///   - events: the batch, borrowed from the kernel and possibly empty (then the result is the stream's
    ///     next offset).
    ///   - completion: the offset of the first event, once the batch is durable per `durability`.
    /// - Throws: `PluginError` to refuse the batch outright (then `completion` is never called).
    /// - Important: `events` and everything reached through it are valid only until this method returns:
    ///   copy the bytes you store before returning, and never capture a view in `completion` or hand it to
    ///   another thread.
    func append(
        _ stream: StreamHandle, _ events: EventBatchView,
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

    /// Opens synchronously with `openStream(name:options:)` and completes inline.
    public func openStream(
        name: String, options: StreamOptions,
        completion: @escaping @Sendable (Result<StreamHandle, PluginError>) -> Void
    ) throws {
        completion(.success(try openStream(name: name, options: options)))
    }
}

/// A storage plugin that lends its read records to the kernel (`on_read_batch`, ABI 1.1) instead of having
/// them laid out for each callback: the records stay where the storage keeps them, or in one arena per read,
/// until the kernel releases the batch, so they reach subscribers without another copy.
///
/// Adopting it fills `on_read_batch` in the storage vtable. The SDK serves the 1.0 `on_read` from
/// `readBatch` too (the conformance kit and `host->storage_read` still call it), passing the lent records to
/// the callback and letting go of the batch afterwards; and `read` has a default that copies them into
/// `StoredRecord`s, for Swift callers.
///
/// - Important: Every method may be called from any thread, concurrently. A batch may outlive everything
///   the storage does afterwards (trims, retention, closing the stream): it must keep alive, unchanged,
///   whatever its records point into (see `LentRecordBatch`).
public protocol LendingStoragePlugin: StoragePlugin {
    /// Reads up to `maxRecords` records and about `maxBytes` bytes (at least one record) from `offset`, and
    /// lends them.
    /// - Parameters:
    ///   - maxRecords: at least 1.
    ///   - maxBytes: a size hint; `0` means no byte limit.
    ///   - completion: the records in offset order with the offset to read from next (zero records at the
    ///     end); called exactly once, on any thread.
    /// - Throws: `PluginError` with `PX_ERR_OUT_OF_RANGE` before the first retained offset or past the end.
    func readBatch(
        _ stream: StreamHandle, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
    ) throws
}

extension LendingStoragePlugin {
    /// Reads with `readBatch` and copies the records out of the lent batch.
    public func read(
        _ stream: StreamHandle, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<ReadResult, PluginError>) -> Void
    ) throws {
        try readBatch(stream, from: offset, maxRecords: maxRecords, maxBytes: maxBytes) { result in
            completion(result.map { ($0.copy(), $0.nextOffset) })
        }
    }
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
    /// The first retained offset.
    public var firstOffset: UInt64
    /// The offset the next event appended takes.
    public var nextOffset: UInt64
    /// The bytes the stream holds.
    public var sizeBytes: UInt64

    public init(firstOffset: UInt64, nextOffset: UInt64, sizeBytes: UInt64) {
        self.firstOffset = firstOffset
        self.nextOffset = nextOffset
        self.sizeBytes = sizeBytes
    }
}

/// A storage plugin that can say which streams and consumer offsets it holds and delete them (ABI 1.3:
/// `on_list_streams`, `on_delete_stream`, `on_list_offsets`, `on_delete_offset`). The kernel's topic and
/// consumer-group admin API is built on these; a storage that does not adopt it leaves the hooks NULL and the
/// kernel answers those requests with "not supported by storage X".
///
/// - Important: Every method may be called from any thread, concurrently with the storage's other work.
///   Each completion must be called exactly once, on any thread, unless the method throws.
public protocol ManagedStoragePlugin: StoragePlugin {
    /// The name of every stream the storage holds, open or not (those recovered from disk too).
    func listStreams(completion: @escaping @Sendable (Result<[String], PluginError>) -> Void) throws

    /// Deletes the stream `stream` was opened on, with its events and consumer offsets, durably per
    /// `durability`. The kernel makes no other call on the handle afterwards but `closeStream`; opening the
    /// name again creates an empty stream.
    /// - Throws: `PluginError` (`PX_ERR_UNSUPPORTED`, `PX_ERR_FAILED_PRECONDITION`) when it cannot now.
    func deleteStream(_ stream: StreamHandle, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void)
        throws

    /// Every consumer group with a committed offset on the stream, with that offset.
    func listOffsets(
        _ stream: StreamHandle, completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void
    ) throws

    /// Forgets a group's committed offset (succeeds when it has none), durably per `durability`.
    func deleteOffset(
        _ stream: StreamHandle, group: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws
}

/// A consumer group's committed offset on a stream (`px_group_offset`).
public struct GroupOffset: Sendable, Equatable {
    /// The group's name.
    public var group: String
    /// The next offset the group consumes.
    public var offset: UInt64

    public init(group: String, offset: UInt64) {
        self.group = group
        self.offset = offset
    }
}
