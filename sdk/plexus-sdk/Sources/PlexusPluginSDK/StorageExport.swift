import PlexusABI

/// The storage vtable of a `StoragePlugin` image: C thunks that check their arguments, convert them, and call
/// the plugin through a dispatcher specialised for its type.
///
/// C function pointers cannot capture the plugin type, so the image's one dispatcher lives in a slot that
/// `install` fills before the entry hands out its descriptor and that nothing changes afterwards.
enum StorageExport {
    nonisolated(unsafe) private static var dispatcher: (any StorageDispatch)?
    nonisolated(unsafe) private static var vtable: UnsafeMutablePointer<px_storage_vtable>?

    /// The vtable for `type`, built on first use.
    static func install<S: StoragePlugin>(_ type: S.Type) -> UnsafePointer<px_storage_vtable> {
        if let vtable { return UnsafePointer(vtable) }
        let dispatcher = StorageDispatcher<S>()
        StorageExport.dispatcher = dispatcher
        let table = UnsafeMutablePointer<px_storage_vtable>.allocate(capacity: 1)
        table.initialize(to: px_storage_vtable())
        table.pointee.struct_size = UInt32(MemoryLayout<px_storage_vtable>.size)
        table.pointee.durability = type.durability.rawValue
        table.pointee.on_open_stream = onOpenStream
        table.pointee.on_close_stream = onCloseStream
        table.pointee.on_append = onAppend
        table.pointee.on_read = onRead
        table.pointee.on_commit_offset = onCommitOffset
        table.pointee.on_fetch_offset = onFetchOffset
        table.pointee.on_trim = onTrim
        table.pointee.on_stream_info = onStreamInfo
        table.pointee.on_open_stream_async = onOpenStreamAsync
        table.pointee.on_read_batch = dispatcher.lends ? onReadBatch : nil
        if dispatcher.manages {
            table.pointee.on_list_streams = onListStreams
            table.pointee.on_delete_stream = onDeleteStream
            table.pointee.on_list_offsets = onListOffsets
            table.pointee.on_delete_offset = onDeleteOffset
        }
        vtable = table
        return UnsafePointer(table)
    }

    /// The dispatcher and the checked instance and stream pointers, or a status with the reason written.
    private static func target(
        _ instance: UnsafeMutableRawPointer?, _ stream: OpaquePointer?, _ hook: String,
        _ err: UnsafeMutablePointer<px_error>?
    ) -> (any StorageDispatch, UnsafeMutableRawPointer, UnsafeMutableRawPointer)? {
        guard let dispatcher, let instance else {
            PluginExport.write(err, "\(hook): no plugin instance")
            return nil
        }
        guard let stream else {
            PluginExport.write(err, "\(hook): the stream handle is NULL")
            return nil
        }
        return (dispatcher, instance, UnsafeMutableRawPointer(stream))
    }

    private static let invalid = PX_ERR_INVALID_ARGUMENT.status

    private static let onOpenStream: px_storage_on_open_stream = { instance, name, options, out, err in
        guard let dispatcher = StorageExport.dispatcher, let instance, let out else {
            PluginExport.write(err, "on_open_stream needs an instance and an out pointer")
            return StorageExport.invalid
        }
        return PluginExport.guarded(err) {
            let stream = try dispatcher.openStream(
                instance, name: name.string, options: StreamOptions(copying: options))
            out.pointee = OpaquePointer(stream)
        }
    }

    private static let onOpenStreamAsync: px_storage_on_open_stream_async = {
        instance, name, options, done, user, err in
        guard let dispatcher = StorageExport.dispatcher, let instance, let done else {
            PluginExport.write(err, "on_open_stream_async needs an instance and a completion")
            return StorageExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        return CompletionGate<any AnyObject & Sendable>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let handle):
                    // The kernel's reference, dropped by on_close_stream.
                    let stream = Unmanaged<AnyObject>.passRetained(handle).toOpaque()
                    completion.fn(completion.user, PX_OK.status, OpaquePointer(stream), px_str(ptr: nil, len: 0))
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, $0) }
                }
            }
        ) { done in
            try dispatcher.openStream(
                instance, name: name.string, options: StreamOptions(copying: options), completion: done)
        }
    }

    private static let onCloseStream: px_storage_on_close_stream = { instance, stream in
        guard let dispatcher = StorageExport.dispatcher, let instance, let stream else { return }
        dispatcher.closeStream(instance, UnsafeMutableRawPointer(stream))
    }

    private static let onAppend: px_storage_on_append = { instance, stream, events, count, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_append", err) else {
            return StorageExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_append: the completion is NULL")
            return StorageExport.invalid
        }
        guard count >= 0, count == 0 || events != nil else {
            PluginExport.write(err, "on_append: \(count) events but no event array")
            return StorageExport.invalid
        }
        for index in 0..<count where events?[index] == nil {
            PluginExport.write(err, "on_append: event \(index) of \(count) is NULL")
            return StorageExport.invalid
        }
        // Borrowed, not copied: the plugin copies what it stores, once.
        let batch = EventBatchView(events, count: count)
        let completion = CCompletion(fn: done, user: user)
        return CompletionGate<UInt64>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let first):
                    completion.fn(completion.user, PX_OK.status, first, px_str(ptr: nil, len: 0))
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, 0, $0) }
                }
            }
        ) { done in
            try dispatcher.append(instance, stream, batch, completion: done)
        }
    }

    /// A read's limits, checked: at least one record (a size_t above Int.max arrives negative and means "as
    /// many as there are"). `nil`, with the reason in `err`, when the completion is missing or asks for none.
    private static func readLimits<F>(
        _ hook: String, _ done: F?, _ maxRecords: Int, _ maxBytes: Int, _ err: UnsafeMutablePointer<px_error>?
    ) -> (records: Int, bytes: Int)? {
        guard done != nil else {
            PluginExport.write(err, "\(hook): the completion is NULL")
            return nil
        }
        guard maxRecords != 0 else {
            PluginExport.write(err, "\(hook): max_records must be at least 1")
            return nil
        }
        return (maxRecords < 0 ? Int.max : maxRecords, maxBytes < 0 ? Int.max : maxBytes)
    }

    private static let onRead: px_storage_on_read = {
        instance, stream, from, maxRecords, maxBytes, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_read", err) else {
            return StorageExport.invalid
        }
        guard let done, let (records, bytes) = StorageExport.readLimits("on_read", done, maxRecords, maxBytes, err)
        else {
            return StorageExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        if dispatcher.lends {
            // The lent records go to the callback as they are; the batch is let go of once it returns.
            return CompletionGate<LentRecordBatch>.run(
                err,
                deliver: { result in
                    switch result {
                    case .success(let batch):
                        withExtendedLifetime(batch) {
                            completion.fn(
                                completion.user, PX_OK.status, batch.records.baseAddress, batch.count,
                                batch.nextOffset, px_str(ptr: nil, len: 0))
                        }
                    case .failure(let error):
                        withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, 0, 0, $0) }
                    }
                }
            ) { done in
                try dispatcher.readBatch(
                    instance, stream, from: from, maxRecords: records, maxBytes: bytes, completion: done)
            }
        }
        return CompletionGate<ReadResult>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let (stored, next)):
                    let batch = CRecordBatch(stored)
                    withExtendedLifetime(batch) {
                        completion.fn(
                            completion.user, PX_OK.status, batch.pointers.baseAddress, batch.count, next,
                            px_str(ptr: nil, len: 0))
                    }
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, 0, 0, $0) }
                }
            }
        ) { done in
            try dispatcher.read(instance, stream, from: from, maxRecords: records, maxBytes: bytes, completion: done)
        }
    }

    private static let onReadBatch: px_storage_on_read_batch = {
        instance, stream, from, maxRecords, maxBytes, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_read_batch", err)
        else {
            return StorageExport.invalid
        }
        guard let done,
            let (records, bytes) = StorageExport.readLimits("on_read_batch", done, maxRecords, maxBytes, err)
        else {
            return StorageExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        return CompletionGate<LentRecordBatch>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let batch):
                    // The kernel holds the batch until it calls release.
                    completion.fn(completion.user, PX_OK.status, batch.lend(), px_str(ptr: nil, len: 0))
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, $0) }
                }
            }
        ) { done in
            try dispatcher.readBatch(
                instance, stream, from: from, maxRecords: records, maxBytes: bytes, completion: done)
        }
    }

    private static let onCommitOffset: px_storage_on_commit_offset = {
        instance, stream, group, offset, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_commit_offset", err)
        else {
            return StorageExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_commit_offset: the completion is NULL")
            return StorageExport.invalid
        }
        let name = group.string
        return CompletionGate<Void>.run(err, deliver: CCompletion(fn: done, user: user).deliverStatus) { done in
            try dispatcher.commitOffset(instance, stream, group: name, offset: offset, completion: done)
        }
    }

    private static let onFetchOffset: px_storage_on_fetch_offset = { instance, stream, group, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_fetch_offset", err)
        else {
            return StorageExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_fetch_offset: the completion is NULL")
            return StorageExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        let name = group.string
        return CompletionGate<UInt64?>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let offset):
                    completion.fn(completion.user, PX_OK.status, offset ?? UInt64.max, px_str(ptr: nil, len: 0))
                case .failure(let error):
                    withPXStr(error.message) {
                        completion.fn(completion.user, error.failureStatus, UInt64.max, $0)
                    }
                }
            }
        ) { done in
            try dispatcher.fetchOffset(instance, stream, group: name, completion: done)
        }
    }

    private static let onTrim: px_storage_on_trim = { instance, stream, before, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_trim", err) else {
            return StorageExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_trim: the completion is NULL")
            return StorageExport.invalid
        }
        return CompletionGate<Void>.run(err, deliver: CCompletion(fn: done, user: user).deliverStatus) { done in
            try dispatcher.trim(instance, stream, before: before, completion: done)
        }
    }

    private static let onStreamInfo: px_storage_on_stream_info = { instance, stream, out, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_stream_info", err)
        else {
            return StorageExport.invalid
        }
        guard let out else {
            PluginExport.write(err, "on_stream_info: the out pointer is NULL")
            return StorageExport.invalid
        }
        return PluginExport.guarded(err) {
            let info = try dispatcher.streamInfo(instance, stream)
            var full = px_stream_info(
                struct_size: UInt32(MemoryLayout<px_stream_info>.size), reserved: 0, first_offset: info.firstOffset,
                next_offset: info.nextOffset, size_bytes: info.sizeBytes)
            // Fill only what the caller's struct holds, and leave its struct_size as it set it.
            let callerSize = Int(UnsafeRawPointer(out).load(as: UInt32.self))
            let header = MemoryLayout<UInt32>.size
            let length = min(callerSize, MemoryLayout<px_stream_info>.size) - header
            if length > 0 {
                withUnsafeBytes(of: &full) { bytes in
                    UnsafeMutableRawPointer(out).advanced(by: header).copyMemory(
                        from: bytes.baseAddress! + header, byteCount: length)
                }
            }
        }
    }

    private static let onListStreams: px_storage_on_list_streams = { instance, done, user, err in
        guard let dispatcher = StorageExport.dispatcher, let instance, let done else {
            PluginExport.write(err, "on_list_streams needs an instance and a completion")
            return StorageExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        return CompletionGate<[String]>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let names):
                    CStrings.with(names) {
                        completion.fn(completion.user, PX_OK.status, $0.baseAddress, $0.count, px_str(ptr: nil, len: 0))
                    }
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, 0, $0) }
                }
            }
        ) { done in
            try dispatcher.listStreams(instance, completion: done)
        }
    }

    private static let onDeleteStream: px_storage_on_delete_stream = { instance, stream, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_delete_stream", err)
        else {
            return StorageExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_delete_stream: the completion is NULL")
            return StorageExport.invalid
        }
        return CompletionGate<Void>.run(err, deliver: CCompletion(fn: done, user: user).deliverStatus) { done in
            try dispatcher.deleteStream(instance, stream, completion: done)
        }
    }

    private static let onListOffsets: px_storage_on_list_offsets = { instance, stream, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_list_offsets", err)
        else {
            return StorageExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_list_offsets: the completion is NULL")
            return StorageExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        return CompletionGate<[GroupOffset]>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let offsets):
                    CStrings.with(offsets.map(\.group)) { names in
                        let structs = UnsafeMutablePointer<px_group_offset>.allocate(capacity: max(offsets.count, 1))
                        let pointers = UnsafeMutablePointer<UnsafePointer<px_group_offset>?>.allocate(
                            capacity: max(offsets.count, 1))
                        defer {
                            structs.deallocate()
                            pointers.deallocate()
                        }
                        for (index, entry) in offsets.enumerated() {
                            (structs + index).initialize(
                                to: px_group_offset(
                                    struct_size: UInt32(MemoryLayout<px_group_offset>.size), reserved: 0,
                                    group: names[index], offset: entry.offset))
                            pointers[index] = UnsafePointer(structs + index)
                        }
                        completion.fn(completion.user, PX_OK.status, pointers, offsets.count, px_str(ptr: nil, len: 0))
                    }
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, 0, $0) }
                }
            }
        ) { done in
            try dispatcher.listOffsets(instance, stream, completion: done)
        }
    }

    private static let onDeleteOffset: px_storage_on_delete_offset = { instance, stream, group, done, user, err in
        guard case let (dispatcher, instance, stream)? = StorageExport.target(instance, stream, "on_delete_offset", err)
        else {
            return StorageExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_delete_offset: the completion is NULL")
            return StorageExport.invalid
        }
        let name = group.string
        return CompletionGate<Void>.run(err, deliver: CCompletion(fn: done, user: user).deliverStatus) { done in
            try dispatcher.deleteOffset(instance, stream, group: name, completion: done)
        }
    }
}

/// Strings laid out as `px_str`s in one allocation, for the length of a callback.
enum CStrings {
    static func with<R>(_ strings: [String], _ body: (UnsafeBufferPointer<px_str>) -> R) -> R {
        let total = strings.reduce(0) { $0 + $1.utf8.count }
        let bytes = UnsafeMutablePointer<UInt8>.allocate(capacity: max(total, 1))
        let strs = UnsafeMutablePointer<px_str>.allocate(capacity: max(strings.count, 1))
        defer {
            bytes.deallocate()
            strs.deallocate()
        }
        var position = 0
        for (index, string) in strings.enumerated() {
            let utf8 = Array(string.utf8)
            utf8.withUnsafeBufferPointer { source in
                if let base = source.baseAddress { (bytes + position).initialize(from: base, count: source.count) }
            }
            let start = UnsafeRawPointer(bytes + position).assumingMemoryBound(to: CChar.self)
            (strs + index).initialize(to: px_str(ptr: utf8.isEmpty ? nil : start, len: utf8.count))
            position += utf8.count
        }
        return body(UnsafeBufferPointer(start: strs, count: strings.count))
    }
}

/// A C completion and its `user` pointer, carried to whichever thread completes.
struct CCompletion<F>: @unchecked Sendable {
    // Safe: the ABI lets a completion run on any thread, and the caller keeps `user` valid until it runs.
    let fn: F
    let user: UnsafeMutableRawPointer?
}

extension CCompletion where F == px_done_fn {
    /// Calls a status-only completion with a result.
    func deliverStatus(_ result: Result<Void, PluginError>) {
        switch result {
        case .success:
            fn(user, PX_OK.status, px_str(ptr: nil, len: 0))
        case .failure(let error):
            withPXStr(error.message) { fn(user, error.failureStatus, $0) }
        }
    }
}

/// The storage calls of one plugin type, on raw instance and stream pointers.
protocol StorageDispatch: ManagedStorageCalls {
    func openStream(_ instance: UnsafeMutableRawPointer, name: String, options: StreamOptions) throws
        -> UnsafeMutableRawPointer
    func openStream(
        _ instance: UnsafeMutableRawPointer, name: String, options: StreamOptions,
        completion: @escaping @Sendable (Result<any AnyObject & Sendable, PluginError>) -> Void) throws
    func closeStream(_ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer)
    func append(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, _ events: EventBatchView,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void) throws
    func read(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, from offset: UInt64,
        maxRecords: Int, maxBytes: Int, completion: @escaping @Sendable (Result<ReadResult, PluginError>) -> Void
    ) throws
    /// Whether the plugin lends read batches (`LendingStoragePlugin`): then `readBatch` serves both reads.
    var lends: Bool { get }
    func readBatch(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, from offset: UInt64,
        maxRecords: Int, maxBytes: Int, completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
    ) throws
    func commitOffset(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws
    func fetchOffset(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, group: String,
        completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void) throws
    func trim(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, before offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws
    func streamInfo(_ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer) throws -> StreamInfo
    /// Whether the plugin lists and deletes streams and offsets (`ManagedStoragePlugin`, ABI 1.3); the calls
    /// themselves are `ManagedStorageCalls`'.
    var manages: Bool { get }
}

/// `StorageDispatch` for `S`: the instance pointer is the retained plugin (see `PluginExport`), the stream
/// pointer a retained `S.StreamHandle`.
struct StorageDispatcher<S: StoragePlugin>: StorageDispatch {
    /// `readBatch` of `S` when it is a `LendingStoragePlugin`, found once when the vtable is built.
    private let lender: ReadBatchCall?

    typealias ReadBatchCall =
        @Sendable (
            _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, _ offset: UInt64, _ maxRecords: Int,
            _ maxBytes: Int, _ completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
        ) throws -> Void

    /// The `ManagedStoragePlugin` calls of `S`, when it adopts it.
    private let manager: (any ManagedStorageCalls)?

    init() {
        if let lending = S.self as? any LendingStoragePlugin.Type {
            lender = Self.readBatchCall(lending)
        } else {
            lender = nil
        }
        if let managed = S.self as? any ManagedStoragePlugin.Type {
            manager = Self.managerCalls(managed)
        } else {
            manager = nil
        }
    }

    private static func managerCalls<M: ManagedStoragePlugin>(_ type: M.Type) -> any ManagedStorageCalls {
        ManagedCalls<M>()
    }

    var manages: Bool { manager != nil }

    private func managed() throws -> any ManagedStorageCalls {
        guard let manager else {
            throw PluginError(PX_ERR_UNSUPPORTED, "\(S.name) does not list or delete streams and offsets")
        }
        return manager
    }

    func listStreams(
        _ instance: UnsafeMutableRawPointer, completion: @escaping @Sendable (Result<[String], PluginError>) -> Void
    ) throws {
        try managed().listStreams(instance, completion: completion)
    }

    func deleteStream(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try managed().deleteStream(instance, stream, completion: completion)
    }

    func listOffsets(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer,
        completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void
    ) throws {
        try managed().listOffsets(instance, stream, completion: completion)
    }

    func deleteOffset(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, group: String,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try managed().deleteOffset(instance, stream, group: group, completion: completion)
    }

    /// `readBatch` of `L` (which is `S`) on raw pointers.
    private static func readBatchCall<L: LendingStoragePlugin>(_ type: L.Type) -> ReadBatchCall {
        { instance, stream, offset, maxRecords, maxBytes, completion in
            let plugin = Unmanaged<L>.fromOpaque(instance).takeUnretainedValue()
            let handle = Unmanaged<L.StreamHandle>.fromOpaque(stream).takeUnretainedValue()
            try plugin.readBatch(
                handle, from: offset, maxRecords: maxRecords, maxBytes: maxBytes, completion: completion)
        }
    }

    var lends: Bool { lender != nil }

    func readBatch(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, from offset: UInt64,
        maxRecords: Int, maxBytes: Int, completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
    ) throws {
        guard let lender else {
            throw PluginError(PX_ERR_UNSUPPORTED, "\(S.name) does not lend read batches")
        }
        try lender(instance, stream, offset, maxRecords, maxBytes, completion)
    }

    func openStream(
        _ instance: UnsafeMutableRawPointer, name: String, options: StreamOptions,
        completion: @escaping @Sendable (Result<any AnyObject & Sendable, PluginError>) -> Void
    ) throws {
        try plugin(instance).openStream(name: name, options: options) { result in
            completion(result.map { $0 })
        }
    }

    private func plugin(_ instance: UnsafeMutableRawPointer) -> S {
        Unmanaged<S>.fromOpaque(instance).takeUnretainedValue()
    }

    private func handle(_ stream: UnsafeMutableRawPointer) -> S.StreamHandle {
        Unmanaged<S.StreamHandle>.fromOpaque(stream).takeUnretainedValue()
    }

    func openStream(_ instance: UnsafeMutableRawPointer, name: String, options: StreamOptions) throws
        -> UnsafeMutableRawPointer
    {
        Unmanaged.passRetained(try plugin(instance).openStream(name: name, options: options)).toOpaque()
    }

    func closeStream(_ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer) {
        let handle = Unmanaged<S.StreamHandle>.fromOpaque(stream).takeRetainedValue()
        plugin(instance).closeStream(handle)
    }

    func append(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, _ events: EventBatchView,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        try plugin(instance).append(handle(stream), events, completion: completion)
    }

    func read(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, from offset: UInt64,
        maxRecords: Int, maxBytes: Int, completion: @escaping @Sendable (Result<ReadResult, PluginError>) -> Void
    ) throws {
        try plugin(instance).read(
            handle(stream), from: offset, maxRecords: maxRecords, maxBytes: maxBytes, completion: completion)
    }

    func commitOffset(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try plugin(instance).commitOffset(handle(stream), group: group, offset: offset, completion: completion)
    }

    func fetchOffset(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, group: String,
        completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
    ) throws {
        try plugin(instance).fetchOffset(handle(stream), group: group, completion: completion)
    }

    func trim(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, before offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try plugin(instance).trim(handle(stream), before: offset, completion: completion)
    }

    func streamInfo(_ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer) throws -> StreamInfo {
        try plugin(instance).streamInfo(handle(stream))
    }
}

/// The `ManagedStoragePlugin` calls on raw pointers (a protocol, so that `StorageDispatcher<S>` holds them
/// without `S` itself conforming).
protocol ManagedStorageCalls: Sendable {
    func listStreams(
        _ instance: UnsafeMutableRawPointer, completion: @escaping @Sendable (Result<[String], PluginError>) -> Void)
        throws
    func deleteStream(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws
    func listOffsets(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer,
        completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void) throws
    func deleteOffset(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, group: String,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws
}

/// `ManagedStorageCalls` for `M`: the instance pointer is the retained plugin, the stream a retained handle.
struct ManagedCalls<M: ManagedStoragePlugin>: ManagedStorageCalls {
    private func plugin(_ instance: UnsafeMutableRawPointer) -> M {
        Unmanaged<M>.fromOpaque(instance).takeUnretainedValue()
    }

    private func handle(_ stream: UnsafeMutableRawPointer) -> M.StreamHandle {
        Unmanaged<M.StreamHandle>.fromOpaque(stream).takeUnretainedValue()
    }

    func listStreams(
        _ instance: UnsafeMutableRawPointer, completion: @escaping @Sendable (Result<[String], PluginError>) -> Void
    ) throws {
        try plugin(instance).listStreams(completion: completion)
    }

    func deleteStream(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try plugin(instance).deleteStream(handle(stream), completion: completion)
    }

    func listOffsets(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer,
        completion: @escaping @Sendable (Result<[GroupOffset], PluginError>) -> Void
    ) throws {
        try plugin(instance).listOffsets(handle(stream), completion: completion)
    }

    func deleteOffset(
        _ instance: UnsafeMutableRawPointer, _ stream: UnsafeMutableRawPointer, group: String,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try plugin(instance).deleteOffset(handle(stream), group: group, completion: completion)
    }
}
