import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// The calls of ABI 1.3 and a few older ones that the topic and consumer-group admin API makes on a storage
/// (`on_list_streams`, `on_delete_stream`, `on_list_offsets`, `on_delete_offset`, `on_trim`,
/// `on_stream_info`), blocking the caller until the storage completes (the admin API runs off the event
/// loops and the delivery path). A hook the storage leaves NULL (an older plugin) is a `Failure` with
/// `PX_ERR_UNSUPPORTED` and the text "not supported by storage 'X'".
extension StorageBinding {
    /// How long an admin call waits for a storage's completion.
    static let adminDeadline: DispatchTimeInterval = .seconds(30)

    /// The extent and size of a stream.
    struct Extent: Sendable {
        var first: UInt64
        var next: UInt64
        var bytes: UInt64
    }

    private func unsupported(_ hook: String, _ what: String) -> Failure {
        Failure(
            status: PX_ERR_UNSUPPORTED.status,
            message: "\(what) is not supported by storage '\(name)' (it has no \(hook), ABI 1.3)")
    }

    /// Runs `start` with a completion and waits for the result (or the deadline).
    private func wait<T: Sendable>(
        _ hook: String, _ start: (@escaping @Sendable (Result<T, Failure>) -> Void) -> Void
    ) throws(Failure) -> T {
        let slot = Mutex<Result<T, Failure>?>(nil)
        let done = DispatchSemaphore(value: 0)
        start { result in
            let first = slot.withLock { value -> Bool in
                guard value == nil else { return false }
                value = result
                return true
            }
            if first { done.signal() }
        }
        guard done.wait(timeout: .now() + Self.adminDeadline) == .success, let result = slot.withLock({ $0 }) else {
            throw Failure(status: PX_ERR_TIMEOUT.status, message: "storage '\(name)' did not complete \(hook) in time")
        }
        return try result.get()
    }

    /// Calls a hook that returns a status and completes through a token; an error status completes now.
    private func call<T: Sendable>(
        _ table: TokenTable<@Sendable (Result<T, Failure>) -> Void>,
        _ completion: @escaping @Sendable (Result<T, Failure>) -> Void,
        _ body: (UnsafeMutableRawPointer?, UnsafeMutablePointer<px_error>) -> px_status
    ) {
        // The admin API does not wait out a replacement: it is told to try again.
        guard admitNow() else { return completion(.failure(unavailable())) }
        let completion: @Sendable (Result<T, Failure>) -> Void = { [self] result in
            completion(result)
            leave()
        }
        counted {
            let token = table.add(completion)
            let (status, message) = ErrorBuffer.with { err in (body(token, err), ErrorBuffer.text(err)) }
            if status != PX_OK.status, let completion = table.take(token) {
                completion(.failure(Failure(status: status, message: message)))
            }
        }
    }

    /// Every stream the storage holds, sorted.
    func listStreams() throws(Failure) -> [String] {
        guard let hook = vtable.pointee.on_list_streams else {
            throw unsupported("on_list_streams", "listing topics")
        }
        let names: [String] = try wait("on_list_streams") { completion in
            call(Catalog.names, completion) { token, err in
                hook(
                    instance,
                    { user, status, names, count, error in
                        guard let completion = Catalog.names.take(user) else { return }
                        guard status == PX_OK.status else {
                            return completion(.failure(Failure(status: status, message: error.string)))
                        }
                        let list = (0..<count).map { index in names?[index].string ?? "" }
                        completion(.success(list))
                    }, token, err)
            }
        }
        return names.sorted()
    }

    /// Deletes a stream the kernel holds a handle on; the caller then only closes the handle.
    func deleteStream(_ stream: Stream) throws(Failure) {
        guard let hook = vtable.pointee.on_delete_stream else {
            throw unsupported("on_delete_stream", "deleting a topic")
        }
        let _: Void = try wait("on_delete_stream") { completion in
            call(Catalog.dones, completion) { token, err in
                hook(instance, stream.pointer, Catalog.statusDone, token, err)
            }
        }
    }

    /// Every group's committed offset on a stream, by group name.
    func listOffsets(_ stream: Stream) throws(Failure) -> [String: UInt64] {
        guard let hook = vtable.pointee.on_list_offsets else {
            throw unsupported("on_list_offsets", "listing consumer offsets")
        }
        let found: [String: UInt64] = try wait("on_list_offsets") { completion in
            call(Catalog.offsets, completion) { token, err in
                hook(
                    instance, stream.pointer,
                    { user, status, offsets, count, error in
                        guard let completion = Catalog.offsets.take(user) else { return }
                        guard status == PX_OK.status else {
                            return completion(.failure(Failure(status: status, message: error.string)))
                        }
                        var found: [String: UInt64] = [:]
                        for index in 0..<count {
                            guard let entry = offsets?[index] else { continue }
                            // A plugin built against a later minor may hand a larger struct: read 1.3's fields.
                            guard entry.pointee.struct_size >= UInt32(MemoryLayout<px_group_offset>.size) else {
                                return completion(
                                    .failure(
                                        Failure(
                                            status: PX_ERR_INTERNAL.status,
                                            message: "px_group_offset \(index) has struct_size "
                                                + "\(entry.pointee.struct_size)")))
                            }
                            found[entry.pointee.group.string] = entry.pointee.offset
                        }
                        completion(.success(found))
                    }, token, err)
            }
        }
        return found
    }

    /// Forgets a group's committed offset.
    func deleteOffset(_ stream: Stream, group: String) throws(Failure) {
        guard let hook = vtable.pointee.on_delete_offset else {
            throw unsupported("on_delete_offset", "deleting a consumer group's offset")
        }
        let _: Void = try wait("on_delete_offset") { completion in
            call(Catalog.dones, completion) { token, err in
                withPXStr(group) { hook(instance, stream.pointer, $0, Catalog.statusDone, token, err) }
            }
        }
    }

    /// Commits a group's offset and waits until the storage has it.
    func commitOffsetNow(_ stream: Stream, group: String, offset: UInt64) throws(Failure) {
        let _: Void = try wait("on_commit_offset") { completion in
            commitOffset(stream, group: group, offset: offset, completion: completion)
        }
    }

    /// Discards events below `offset` and waits until the storage has.
    func trimNow(_ stream: Stream, before offset: UInt64) throws(Failure) {
        guard let hook = vtable.pointee.on_trim else { throw unsupported("on_trim", "trimming a topic") }
        let _: Void = try wait("on_trim") { completion in
            call(Catalog.dones, completion) { token, err in
                hook(instance, stream.pointer, offset, Catalog.statusDone, token, err)
            }
        }
    }

    /// The stream's first and next offsets and its size in bytes.
    func extent(_ stream: Stream) throws(Failure) -> Extent {
        guard admitNow() else { throw unavailable() }
        defer { leave() }
        calls.add(1, ordering: .relaxed)
        defer { calls.subtract(1, ordering: .releasing) }
        var info = px_stream_info()
        info.struct_size = UInt32(MemoryLayout<px_stream_info>.size)
        let (status, message) = ErrorBuffer.with { err in
            (
                vtable.pointee.on_stream_info?(instance, stream.pointer, &info, err) ?? PX_ERR_UNSUPPORTED.status,
                ErrorBuffer.text(err)
            )
        }
        guard status == PX_OK.status else { throw Failure(status: status, message: message) }
        return Extent(first: info.first_offset, next: info.next_offset, bytes: info.size_bytes)
    }
}

/// The token tables of the catalog calls' completions.
private enum Catalog {
    static let names = TokenTable<@Sendable (Result<[String], StorageBinding.Failure>) -> Void>()
    static let offsets = TokenTable<@Sendable (Result<[String: UInt64], StorageBinding.Failure>) -> Void>()
    static let dones = TokenTable<@Sendable (Result<Void, StorageBinding.Failure>) -> Void>()

    static let statusDone: px_done_fn = { user, status, error in
        guard let completion = dones.take(user) else { return }
        completion(
            status == PX_OK.status
                ? .success(()) : .failure(StorageBinding.Failure(status: status, message: error.string)))
    }
}
