import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// The kernel's side of one active storage plugin: its vtable and instance, with Swift completions.
///
/// Completions travel through a token table, so a storage plugin that breaks the completion rule cannot
/// make the kernel run a completion twice. Calls in flight are counted so that the kernel stops the plugin
/// only when none runs.
final class StorageBinding: @unchecked Sendable {
    // Safe: the vtable is a static table in a never-unmapped image; the instance is only passed back to the
    // plugin, whose storage hooks are thread-safe by contract; `calls` is atomic.
    let name: String
    let durability: UInt32
    private let vtable: UnsafePointer<px_storage_vtable>
    private let instance: UnsafeMutableRawPointer?
    let calls = Atomic<Int>(0)

    /// A failure reported by the storage plugin.
    struct Failure: Error, CustomStringConvertible {
        var status: px_status
        var message: String
        var description: String { "\(StatusText.name(status)): \(message)" }
    }

    /// One stored event.
    struct Record: Sendable {
        var offset: UInt64
        var event: CloudEvent
        /// Unix time in ns when the storage stored it; 0 if unknown.
        var appendTimeNs: UInt64 = 0
    }

    init(name: String, vtable: UnsafePointer<px_storage_vtable>, instance: UnsafeMutableRawPointer?) {
        self.name = name
        self.vtable = vtable
        self.instance = instance
        self.durability = vtable.pointee.durability
    }

    /// A stream handle of this plugin.
    struct Stream: @unchecked Sendable {
        // Safe: an opaque handle only passed back to the plugin that made it.
        let pointer: OpaquePointer
    }

    private static let appends = TokenTable<@Sendable (Result<UInt64, Failure>) -> Void>()
    private static let reads = TokenTable<@Sendable (Result<([Record], UInt64), Failure>) -> Void>()
    private static let dones = TokenTable<@Sendable (Result<Void, Failure>) -> Void>()
    private static let offsets = TokenTable<@Sendable (Result<UInt64?, Failure>) -> Void>()

    private func counted<R>(_ body: () throws -> R) rethrows -> R {
        calls.add(1, ordering: .relaxed)
        defer { calls.subtract(1, ordering: .releasing) }
        return try body()
    }

    func openStream(_ name: String, retentionBytes: UInt64 = 0, retentionMs: UInt64 = 0) throws -> Stream {
        try counted {
            var options = px_stream_options(
                struct_size: UInt32(MemoryLayout<px_stream_options>.size), reserved: 0, retention_bytes: retentionBytes,
                retention_ms: retentionMs)
            var out: OpaquePointer?
            let (status, message) = ErrorBuffer.with { err in
                let status = withPXStr(name) { vtable.pointee.on_open_stream?(instance, $0, &options, &out, err) }
                return (status ?? PX_ERR_UNSUPPORTED.status, ErrorBuffer.text(err))
            }
            guard status == PX_OK.status, let out else {
                throw Failure(
                    status: status == PX_OK.status ? PX_ERR_INTERNAL.status : status,
                    message: message.isEmpty ? "no stream handle" : message)
            }
            return Stream(pointer: out)
        }
    }

    /// Appends a batch; `completion` runs once the storage reports it durable.
    func append(
        _ stream: Stream, _ events: [CloudEvent], completion: @escaping @Sendable (Result<UInt64, Failure>) -> Void
    ) {
        counted {
            let batch = CEventBatch(events)
            let token = Self.appends.add(completion)
            let (status, message) = withExtendedLifetime(batch) {
                ErrorBuffer.with { err in
                    let status =
                        vtable.pointee.on_append?(
                            instance, stream.pointer, batch.pointers.baseAddress, batch.pointers.count,
                            { user, status, first, error in
                                guard let completion = StorageBinding.appends.take(user) else { return }
                                completion(
                                    status == PX_OK.status
                                        ? .success(first) : .failure(Failure(status: status, message: error.string)))
                            }, token, err) ?? PX_ERR_UNSUPPORTED.status
                    return (status, ErrorBuffer.text(err))
                }
            }
            if status != PX_OK.status, let completion = Self.appends.take(token) {
                completion(.failure(Failure(status: status, message: message)))
            }
        }
    }

    /// Reads up to `maxRecords` from `offset`.
    func read(
        _ stream: Stream, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<([Record], UInt64), Failure>) -> Void
    ) {
        counted {
            let token = Self.reads.add(completion)
            let (status, message) = ErrorBuffer.with { err in
                let status =
                    vtable.pointee.on_read?(
                        instance, stream.pointer, offset, maxRecords, maxBytes,
                        { user, status, records, count, next, error in
                            guard let completion = StorageBinding.reads.take(user) else { return }
                            guard status == PX_OK.status else {
                                return completion(.failure(Failure(status: status, message: error.string)))
                            }
                            var copied: [Record] = []
                            if let records, count > 0 {
                                copied.reserveCapacity(count)
                                for i in 0..<count {
                                    guard let record = records[i], let event = record.pointee.event else { continue }
                                    copied.append(
                                        Record(
                                            offset: record.pointee.offset, event: CloudEvent(copying: event),
                                            appendTimeNs: record.pointee.append_time_ns))
                                }
                            }
                            completion(.success((copied, next)))
                        }, token, err) ?? PX_ERR_UNSUPPORTED.status
                return (status, ErrorBuffer.text(err))
            }
            if status != PX_OK.status, let completion = Self.reads.take(token) {
                completion(.failure(Failure(status: status, message: message)))
            }
        }
    }

    func commitOffset(
        _ stream: Stream, group: String, offset: UInt64, completion: @escaping @Sendable (Result<Void, Failure>) -> Void
    ) {
        counted {
            let token = Self.dones.add(completion)
            let (status, message) = ErrorBuffer.with { err in
                let status = withPXStr(group) { groupStr in
                    vtable.pointee.on_commit_offset?(
                        instance, stream.pointer, groupStr, offset,
                        { user, status, error in
                            guard let completion = StorageBinding.dones.take(user) else { return }
                            completion(
                                status == PX_OK.status
                                    ? .success(()) : .failure(Failure(status: status, message: error.string)))
                        }, token, err) ?? PX_ERR_UNSUPPORTED.status
                }
                return (status, ErrorBuffer.text(err))
            }
            if status != PX_OK.status, let completion = Self.dones.take(token) {
                completion(.failure(Failure(status: status, message: message)))
            }
        }
    }

    /// The committed offset of a group; `nil` when none is committed.
    func fetchOffset(
        _ stream: Stream, group: String, completion: @escaping @Sendable (Result<UInt64?, Failure>) -> Void
    ) {
        counted {
            let token = Self.offsets.add(completion)
            let (status, message) = ErrorBuffer.with { err in
                let status = withPXStr(group) { groupStr in
                    vtable.pointee.on_fetch_offset?(
                        instance, stream.pointer, groupStr,
                        { user, status, offset, error in
                            guard let completion = StorageBinding.offsets.take(user) else { return }
                            completion(
                                status == PX_OK.status
                                    ? .success(offset == UInt64.max ? nil : offset)
                                    : .failure(Failure(status: status, message: error.string)))
                        }, token, err) ?? PX_ERR_UNSUPPORTED.status
                }
                return (status, ErrorBuffer.text(err))
            }
            if status != PX_OK.status, let completion = Self.offsets.take(token) {
                completion(.failure(Failure(status: status, message: message)))
            }
        }
    }

    /// The stream's first and next offsets.
    func info(_ stream: Stream) throws -> (first: UInt64, next: UInt64) {
        try counted {
            var info = px_stream_info()
            info.struct_size = UInt32(MemoryLayout<px_stream_info>.size)
            let (status, message) = ErrorBuffer.with { err in
                (
                    vtable.pointee.on_stream_info?(instance, stream.pointer, &info, err) ?? PX_ERR_UNSUPPORTED.status,
                    ErrorBuffer.text(err)
                )
            }
            guard status == PX_OK.status else { throw Failure(status: status, message: message) }
            return (info.first_offset, info.next_offset)
        }
    }

    func closeStream(_ stream: Stream) {
        counted { vtable.pointee.on_close_stream?(instance, stream.pointer) }
    }
}
