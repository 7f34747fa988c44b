import Foundation
import PlexusABI
import PlexusCore
import PlexusKernel

/// A stream handle a storage plugin returned from `on_open_stream`.
struct StreamHandle: @unchecked Sendable {
    // Safe: the handle is opaque to us and only passed back to the plugin, whose hooks may be called on
    // any thread, concurrently (ABI).
    let raw: OpaquePointer?
    let name: String
}

/// Calls the hooks of one storage plugin instance, recording every call in the suite's ledger.
///
/// The low-level calls (`append`, `read`, …) return the call's record and never throw; the `…OK` forms
/// wait for the completion and throw a `Violation` unless both the return and the completion say `PX_OK`.
final class StorageClient: @unchecked Sendable {
    // Safe: the vtable is a static table in a never-unmapped image; the instance pointer is only passed back
    // to the plugin, whose storage hooks may be called from any thread, concurrently (ABI).
    let vtable: px_storage_vtable
    let instance: UnsafeMutableRawPointer?
    let ledger: CallLedger
    let timeout: Duration

    init(
        vtable: UnsafePointer<px_storage_vtable>, instance: UnsafeMutableRawPointer?, ledger: CallLedger,
        timeout: Duration
    ) {
        self.vtable = vtable.pointee
        self.instance = instance
        self.ledger = ledger
        self.timeout = timeout
    }

    // MARK: Streams

    func open(_ name: String) throws -> StreamHandle {
        guard let hook = vtable.on_open_stream else { throw Violation("the storage vtable's on_open_stream is NULL") }
        var options = px_stream_options(
            struct_size: UInt32(MemoryLayout<px_stream_options>.size), reserved: 0, retention_bytes: 0, retention_ms: 0)
        var stream: OpaquePointer?
        let (status, message) = withPXStr(name) { text in
            StandalonePlugin.withErrorBuffer { err in hook(instance, text, &options, &stream, err) }
        }
        try check(
            status == PX_OK.status, expected: "on_open_stream(\"\(name)\") to open the stream",
            observed: "\(statusName(status))\(Self.reason(message))")
        try check(
            stream != nil, expected: "on_open_stream(\"\(name)\") to set *out_stream",
            observed: "PX_OK with a NULL stream")
        return StreamHandle(raw: stream, name: name)
    }

    func close(_ stream: StreamHandle) {
        vtable.on_close_stream?(instance, stream.raw)
    }

    // MARK: Calls

    /// `on_append` with `events` laid out as the ABI's array of pointers; `nullArray` passes NULL instead
    /// of the array, and `count` overrides the count passed.
    func append(_ stream: OpaquePointer?, _ events: [CloudEvent], nullArray: Bool = false, count: Int? = nil)
        -> CallRecord
    {
        let call = ledger.begin("on_append")
        guard let hook = vtable.on_append else { return missing(call) }
        let batch = CEventBatch(events)
        let (status, message) = withExtendedLifetime(batch) {
            StandalonePlugin.withErrorBuffer { err in
                hook(
                    instance, stream, nullArray ? nil : batch.pointers.baseAddress, count ?? events.count,
                    appendCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func read(_ stream: OpaquePointer?, from offset: UInt64, maxRecords: Int = 1000, maxBytes: Int = 64 << 20)
        -> CallRecord
    {
        let call = ledger.begin("on_read")
        guard let hook = vtable.on_read else { return missing(call) }
        let (status, message) = StandalonePlugin.withErrorBuffer { err in
            hook(instance, stream, offset, maxRecords, maxBytes, readCompletion, CallLedger.user(call.token), err)
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_read_batch` (since 1.1; `missing` when the vtable has none).
    func readBatch(_ stream: OpaquePointer?, from offset: UInt64, maxRecords: Int = 1000, maxBytes: Int = 64 << 20)
        -> CallRecord
    {
        let call = ledger.begin("on_read_batch")
        guard let hook = vtable.on_read_batch else { return missing(call) }
        let (status, message) = StandalonePlugin.withErrorBuffer { err in
            hook(instance, stream, offset, maxRecords, maxBytes, readBatchCompletion, CallLedger.user(call.token), err)
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_open_stream_async` (since 1.1; `missing` when the vtable has none).
    func openAsync(_ name: String) -> CallRecord {
        let call = ledger.begin("on_open_stream_async")
        guard let hook = vtable.on_open_stream_async else { return missing(call) }
        var options = px_stream_options(
            struct_size: UInt32(MemoryLayout<px_stream_options>.size), reserved: 0, retention_bytes: 0, retention_ms: 0)
        let (status, message) = withPXStr(name) { text in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, text, &options, openCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_list_streams` (since 1.3; `missing` when the vtable has none).
    func listStreams() -> CallRecord {
        let call = ledger.begin("on_list_streams")
        guard let hook = vtable.on_list_streams else { return missing(call) }
        let (status, message) = StandalonePlugin.withErrorBuffer { err in
            hook(instance, listStreamsCompletion, CallLedger.user(call.token), err)
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_delete_stream` (since 1.3; `missing` when the vtable has none).
    func deleteStream(_ stream: OpaquePointer?) -> CallRecord {
        let call = ledger.begin("on_delete_stream")
        guard let hook = vtable.on_delete_stream else { return missing(call) }
        let (status, message) = StandalonePlugin.withErrorBuffer { err in
            hook(instance, stream, doneCompletion, CallLedger.user(call.token), err)
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_list_offsets` (since 1.3; `missing` when the vtable has none).
    func listOffsets(_ stream: OpaquePointer?) -> CallRecord {
        let call = ledger.begin("on_list_offsets")
        guard let hook = vtable.on_list_offsets else { return missing(call) }
        let (status, message) = StandalonePlugin.withErrorBuffer { err in
            hook(instance, stream, listOffsetsCompletion, CallLedger.user(call.token), err)
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_delete_offset` (since 1.3; `missing` when the vtable has none).
    func deleteOffset(_ stream: OpaquePointer?, group: String) -> CallRecord {
        let call = ledger.begin("on_delete_offset")
        guard let hook = vtable.on_delete_offset else { return missing(call) }
        let (status, message) = withPXStr(group) { text in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, stream, text, doneCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func commit(_ stream: OpaquePointer?, group: String, offset: UInt64) -> CallRecord {
        let call = ledger.begin("on_commit_offset")
        guard let hook = vtable.on_commit_offset else { return missing(call) }
        let (status, message) = withPXStr(group) { text in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, stream, text, offset, doneCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func fetch(_ stream: OpaquePointer?, group: String) -> CallRecord {
        let call = ledger.begin("on_fetch_offset")
        guard let hook = vtable.on_fetch_offset else { return missing(call) }
        let (status, message) = withPXStr(group) { text in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, stream, text, offsetCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func trim(_ stream: OpaquePointer?, before offset: UInt64) -> CallRecord {
        let call = ledger.begin("on_trim")
        guard let hook = vtable.on_trim else { return missing(call) }
        let (status, message) = StandalonePlugin.withErrorBuffer { err in
            hook(instance, stream, offset, doneCompletion, CallLedger.user(call.token), err)
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_stream_info`: what it returned, its reason, and what it wrote (`struct_size` set by us).
    func info(_ stream: OpaquePointer?) -> (status: px_status, message: String, info: px_stream_info) {
        guard let hook = vtable.on_stream_info else {
            return (PX_ERR_UNSUPPORTED.status, "the storage vtable's on_stream_info is NULL", px_stream_info())
        }
        var info = px_stream_info()
        info.struct_size = UInt32(MemoryLayout<px_stream_info>.size)
        let (status, message) = StandalonePlugin.withErrorBuffer { err in hook(instance, stream, &info, err) }
        return (status, message, info)
    }

    private func missing(_ call: CallRecord) -> CallRecord {
        call.returned(PX_ERR_UNSUPPORTED.status, message: "the storage vtable's \(call.operation) is NULL")
        return call
    }

    // MARK: Expectations

    /// The completion of a call that must succeed; see `CallRecord.completed`.
    func completed(_ call: CallRecord, _ what: String) throws -> CompletionPayload {
        try call.completed(what, timeout: timeout)
    }

    /// How a call answered; see `CallRecord.answer`.
    func answer(_ call: CallRecord) -> Answer { call.answer(timeout: timeout) }

    /// Checks that a call failed with `expected`; see `CallRecord.expectFailure`.
    func expectFailure(_ call: CallRecord, _ expected: px_status, _ what: String) throws {
        try call.expectFailure(expected, what, timeout: timeout)
    }

    static func reason(_ message: String) -> String { CallRecord.reason(message) }

    // MARK: Successful calls

    /// Appends and returns the batch's first offset.
    func appendOK(_ stream: StreamHandle, _ events: [CloudEvent], _ what: String) throws -> UInt64 {
        let payload = try completed(append(stream.raw, events), what)
        guard case .append(_, let first, _) = payload else { throw Violation("on_append completed with \(payload)") }
        return first
    }

    func readOK(
        _ stream: StreamHandle, from offset: UInt64, maxRecords: Int = 1000, maxBytes: Int = 64 << 20, _ what: String
    )
        throws -> (records: [ReadRecord], next: UInt64)
    {
        let payload = try completed(read(stream.raw, from: offset, maxRecords: maxRecords, maxBytes: maxBytes), what)
        guard case .read(_, let records, let next, _) = payload else {
            throw Violation("on_read completed with \(payload)")
        }
        return (records, next)
    }

    func commitOK(_ stream: StreamHandle, group: String, offset: UInt64) throws {
        _ = try completed(
            commit(stream.raw, group: group, offset: offset), "committing offset \(offset) for group '\(group)'")
    }

    func fetchOK(_ stream: StreamHandle, group: String) throws -> UInt64 {
        let payload = try completed(fetch(stream.raw, group: group), "fetching the offset of group '\(group)'")
        guard case .offset(_, let offset, _) = payload else {
            throw Violation("on_fetch_offset completed with \(payload)")
        }
        return offset
    }

    /// The names `on_list_streams` lists.
    func listStreamsOK(_ what: String) throws -> [String] {
        let payload = try completed(listStreams(), what)
        guard case .names(_, let names, _) = payload else {
            throw Violation("on_list_streams completed with \(payload)")
        }
        return names
    }

    /// The offsets `on_list_offsets` lists, by group.
    func listOffsetsOK(_ stream: StreamHandle, _ what: String) throws -> [String: UInt64] {
        let payload = try completed(listOffsets(stream.raw), what)
        guard case .groupOffsets(_, let offsets, _) = payload else {
            throw Violation("on_list_offsets completed with \(payload)")
        }
        return offsets
    }

    func trimOK(_ stream: StreamHandle, before offset: UInt64) throws {
        _ = try completed(trim(stream.raw, before: offset), "trimming '\(stream.name)' before offset \(offset)")
    }

    /// The stream's extent; checks that the plugin left `struct_size` as we set it.
    func infoOK(_ stream: StreamHandle, _ what: String) throws -> px_stream_info {
        let (status, message, info) = info(stream.raw)
        try check(
            status == PX_OK.status, expected: "on_stream_info (\(what)) to succeed",
            observed: "\(statusName(status))\(Self.reason(message))")
        try check(
            Int(info.struct_size) == MemoryLayout<px_stream_info>.size,
            expected: "on_stream_info to leave struct_size as the caller set it (\(MemoryLayout<px_stream_info>.size))",
            observed: "struct_size \(info.struct_size)")
        return info
    }

    /// Reads every record from `start` up to (not including) `end`, following `next_offset`.
    /// - Throws: `Violation` when a read makes no progress before `end` or goes backwards.
    func readRange(_ stream: StreamHandle, from start: UInt64, to end: UInt64, _ what: String) throws -> [ReadRecord] {
        var records: [ReadRecord] = []
        var offset = start
        while offset < end {
            let (batch, next) = try readOK(stream, from: offset, "reading \(what) from offset \(offset)")
            try check(
                !batch.isEmpty,
                expected: "reading from offset \(offset) to return records, as offsets up to \(end - 1) were assigned",
                observed: "zero records (next_offset \(next))")
            try check(
                next > offset, expected: "next_offset after reading from \(offset) to be past it",
                observed: "next_offset \(next)")
            records += batch
            offset = next
        }
        return records
    }
}
