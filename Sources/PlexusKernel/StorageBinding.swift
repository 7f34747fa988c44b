import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// The kernel's side of one active storage plugin: its vtable and instance, with Swift completions.
///
/// Completions travel through a token table, so a storage plugin that breaks the completion rule cannot
/// make the kernel run a completion twice. Calls in flight are counted so that the kernel stops the plugin
/// only when none runs.
///
/// While the storage is replaced on a running node (`Kernel.replaceStorage`) the binding is paused: appends,
/// reads, offset calls and stream opens wait in order (bounded in number) instead of reaching the instance,
/// and are handed, in the same order, to the instance that replaces it (`release(to:)`), with each stream
/// handle mapped to the one the new instance opened for the same topic.
final class StorageBinding: @unchecked Sendable {
    // Safe: the vtable is a static table in a never-unmapped image; the instance is only passed back to the
    // plugin, whose storage hooks are thread-safe by contract; `calls` is atomic; `gate` is a mutex.
    let name: String
    let durability: UInt32
    let vtable: UnsafePointer<px_storage_vtable>
    let instance: UnsafeMutableRawPointer?
    let calls = Atomic<Int>(0)

    /// Where the calls of a paused binding go: the instance that replaced it, each old stream handle mapped to
    /// the new one of the same topic (or, for a pause that ended without a replacement, this binding itself).
    struct Handoff: Sendable {
        let binding: StorageBinding
        /// Old stream handle (its bit pattern) -> the stream the new instance opened; unused when `identity`.
        let streams: [UInt: Stream]
        let identity: Bool

        /// The stream that takes over `old`; `nil` when the new instance has none for it.
        func stream(for old: Stream) -> Stream? { identity ? old : streams[UInt(bitPattern: old.pointer)] }
    }

    /// A call that waits while the binding is paused; called with `nil` when no instance takes over.
    typealias Waiting = @Sendable (Handoff?) -> Void

    private struct Gate {
        var paused = false
        /// Calls admitted and not yet completed (their completion has not run).
        var outstanding = 0
        var waiting: [Waiting] = []
        /// Set once a pause ended in a handoff (or in failure, `.some(nil)`): later calls go there at once.
        var after: Handoff??
    }

    private let gate = Mutex(Gate())

    /// The most calls that wait while a storage is replaced; later ones fail with `PX_ERR_UNAVAILABLE`.
    static let maxWaiting = 65_536

    /// A failure reported by the storage plugin.
    struct Failure: Error, CustomStringConvertible {
        var status: px_status
        var message: String
        var description: String { "\(StatusText.name(status)): \(message)" }
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
    private static let reads = TokenTable<@Sendable (Result<RecordBatch, Failure>) -> Void>()
    private static let batchReads = TokenTable<
        (binding: StorageBinding, maxRecords: Int, completion: @Sendable (Result<RecordBatch, Failure>) -> Void)
    >()
    private static let opens = TokenTable<@Sendable (Result<Stream, Failure>) -> Void>()
    private static let dones = TokenTable<@Sendable (Result<Void, Failure>) -> Void>()
    private static let offsets = TokenTable<@Sendable (Result<UInt64?, Failure>) -> Void>()

    // MARK: Pausing (replacement on a running node)

    /// Admits a call into the instance (counted as outstanding until `leave`), or, when the binding is paused
    /// or replaced, queues `later` (made only then) or runs it now with the binding that took over. False when
    /// the caller must not call the instance.
    private func admit(_ later: () -> Waiting) -> Bool {
        let open = gate.withLock { g -> Bool in
            guard !g.paused else { return false }
            g.outstanding += 1
            return true
        }
        if open { return true }
        let call = later()
        enum Next {
            case admitted
            case queued
            case now(Handoff?)
        }
        let next = gate.withLock { g -> Next in
            if !g.paused {
                g.outstanding += 1
                return .admitted
            }
            if let after = g.after { return .now(after) }
            guard g.waiting.count < Self.maxWaiting else { return .now(nil) }
            g.waiting.append(call)
            return .queued
        }
        switch next {
        case .admitted: return true
        case .queued: return false
        case .now(let handoff):
            call(handoff)
            return false
        }
    }

    /// Admits a call that cannot wait (the admin API's catalog calls): false when the binding is paused.
    func admitNow() -> Bool {
        gate.withLock { g in
            guard !g.paused else { return false }
            g.outstanding += 1
            return true
        }
    }

    /// An admitted call completed.
    func leave() { gate.withLock { $0.outstanding -= 1 } }

    /// The failure of a call that no instance took over.
    func unavailable(_ what: String = "") -> Failure {
        Failure(
            status: PX_ERR_UNAVAILABLE.status,
            message: "storage '\(name)' is being replaced\(what.isEmpty ? "" : " (\(what))"); try again")
    }

    /// Whether calls wait now (a replacement is under way).
    var isPaused: Bool { gate.withLock { $0.paused } }

    /// The binding that serves this one's calls now: itself, or the one it was handed to (and so on).
    var current: StorageBinding {
        var binding = self
        while let next = binding.gate.withLock({ $0.after })??.binding, next !== binding { binding = next }
        return binding
    }

    /// Makes new calls wait, then waits until every admitted call has completed (or `deadline` passes).
    /// - Returns: true when none is outstanding; false leaves the binding paused (`resume` or `release`).
    func pause(until deadline: ContinuousClock.Instant) -> Bool {
        gate.withLock { $0.paused = true }
        while gate.withLock({ $0.outstanding }) > 0 {
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.001)
        }
        return true
    }

    /// Ends a pause without a replacement (the replacement gave up before stopping the instance): the calls
    /// that waited run on this instance, in order; a call arriving meanwhile may run before the last of them.
    func resume() {
        let waiting = gate.withLock { g -> [Waiting] in
            g.paused = false
            defer { g.waiting = [] }
            return g.waiting
        }
        let handoff = Handoff(binding: self, streams: [:], identity: true)
        for call in waiting { call(handoff) }
    }

    /// Ends a pause by handing every waiting call, in order, to `handoff` (`nil`: they fail with
    /// `PX_ERR_UNAVAILABLE`); calls that arrive later go there at once. Calls arriving while the queue drains
    /// queue behind it, so none overtakes one that waited.
    func release(to handoff: Handoff?) {
        while true {
            let waiting = gate.withLock { g -> [Waiting] in
                if g.waiting.isEmpty { g.after = .some(handoff) }
                defer { g.waiting = [] }
                return g.waiting
            }
            if waiting.isEmpty { return }
            for call in waiting { call(handoff) }
        }
    }

    /// Closes a stream without passing the gate (the replacement closes the old instance's streams itself).
    func closeStreamNow(_ stream: Stream) {
        counted { vtable.pointee.on_close_stream?(instance, stream.pointer) }
    }

    /// A stream's extent without passing the gate (the replacement checks a paused memory storage with it).
    func extentNow(_ stream: Stream) -> Extent? {
        counted {
            var info = px_stream_info()
            info.struct_size = UInt32(MemoryLayout<px_stream_info>.size)
            let status = ErrorBuffer.with { err in
                vtable.pointee.on_stream_info?(instance, stream.pointer, &info, err) ?? PX_ERR_UNSUPPORTED.status
            }
            guard status == PX_OK.status else { return nil }
            return Extent(first: info.first_offset, next: info.next_offset, bytes: info.size_bytes)
        }
    }

    func counted<R>(_ body: () throws -> R) rethrows -> R {
        calls.add(1, ordering: .relaxed)
        defer { calls.subtract(1, ordering: .releasing) }
        return try body()
    }

    /// Opens (creating if needed) a stream. A storage with `on_open_stream_async` opens it without blocking
    /// the caller; one without runs its 1.0 `on_open_stream` on the caller's thread. Either way the caller
    /// holds no lock: the router keeps a future per opening stream.
    func openStream(
        _ name: String, retentionBytes: UInt64 = 0, retentionMs: UInt64 = 0,
        completion: @escaping @Sendable (Result<Stream, Failure>) -> Void
    ) {
        guard
            admit({
                { handoff in
                    guard let handoff else { return completion(.failure(self.unavailable())) }
                    handoff.binding.openStream(
                        name, retentionBytes: retentionBytes, retentionMs: retentionMs, completion: completion)
                }
            })
        else { return }
        let completion: @Sendable (Result<Stream, Failure>) -> Void = { [self] result in
            completion(result)
            leave()
        }
        counted {
            var options = px_stream_options(
                struct_size: UInt32(MemoryLayout<px_stream_options>.size), reserved: 0, retention_bytes: retentionBytes,
                retention_ms: retentionMs)
            if let openAsync = vtable.pointee.on_open_stream_async {
                let token = Self.opens.add(completion)
                let (status, message) = ErrorBuffer.with { err in
                    let status = withPXStr(name) { nameStr in
                        openAsync(
                            instance, nameStr, &options,
                            { user, status, stream, error in
                                guard let completion = StorageBinding.opens.take(user) else { return }
                                guard status == PX_OK.status, let stream else {
                                    return completion(
                                        .failure(
                                            Failure(
                                                status: status == PX_OK.status ? PX_ERR_INTERNAL.status : status,
                                                message: status == PX_OK.status ? "no stream handle" : error.string)))
                                }
                                completion(.success(Stream(pointer: stream)))
                            }, token, err)
                    }
                    return (status, ErrorBuffer.text(err))
                }
                if status != PX_OK.status, let completion = Self.opens.take(token) {
                    completion(.failure(Failure(status: status, message: message)))
                }
                return
            }
            var out: OpaquePointer?
            let (status, message) = ErrorBuffer.with { err in
                let status = withPXStr(name) { vtable.pointee.on_open_stream?(instance, $0, &options, &out, err) }
                return (status ?? PX_ERR_UNSUPPORTED.status, ErrorBuffer.text(err))
            }
            guard status == PX_OK.status, let out else {
                return completion(
                    .failure(
                        Failure(
                            status: status == PX_OK.status ? PX_ERR_INTERNAL.status : status,
                            message: message.isEmpty ? "no stream handle" : message)))
            }
            completion(.success(Stream(pointer: out)))
        }
    }

    /// Appends a batch, handing the caller's borrowed events to the storage as they are (no copy); they need
    /// to live only for this call. `completion` runs once the storage reports the batch durable.
    func append(
        _ stream: Stream, _ events: UnsafeBufferPointer<UnsafePointer<px_event>?>,
        completion: @escaping @Sendable (Result<UInt64, Failure>) -> Void
    ) {
        guard
            admit({
                // The caller's events are borrowed for this call only: a waiting append keeps a copy.
                let copy = CEventBatch(copying: events)
                return { handoff in
                    guard let handoff, let target = handoff.stream(for: stream) else {
                        return completion(.failure(self.unavailable()))
                    }
                    withExtendedLifetime(copy) { handoff.binding.append(target, copy.pointers, completion: completion) }
                }
            })
        else { return }
        let completion: @Sendable (Result<UInt64, Failure>) -> Void = { [self] result in
            completion(result)
            leave()
        }
        counted {
            let token = Self.appends.add(completion)
            let (status, message) = ErrorBuffer.with { err in
                let status =
                    vtable.pointee.on_append?(
                        instance, stream.pointer, events.baseAddress, events.count,
                        { user, status, first, error in
                            guard let completion = StorageBinding.appends.take(user) else { return }
                            completion(
                                status == PX_OK.status
                                    ? .success(first) : .failure(Failure(status: status, message: error.string)))
                        }, token, err) ?? PX_ERR_UNSUPPORTED.status
                return (status, ErrorBuffer.text(err))
            }
            if status != PX_OK.status, let completion = Self.appends.take(token) {
                completion(.failure(Failure(status: status, message: message)))
            }
        }
    }

    /// Reads up to `maxRecords` from `offset`. A storage with `on_read_batch` lends its records to the batch
    /// until the batch is released (no copy); one with only the 1.0 `on_read` has its records copied once
    /// into the batch, inside the callback that lends them.
    func read(
        _ stream: Stream, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<RecordBatch, Failure>) -> Void
    ) {
        guard
            admit({
                { handoff in
                    guard let handoff, let target = handoff.stream(for: stream) else {
                        return completion(.failure(self.unavailable()))
                    }
                    handoff.binding.read(
                        target, from: offset, maxRecords: maxRecords, maxBytes: maxBytes, completion: completion)
                }
            })
        else { return }
        let completion: @Sendable (Result<RecordBatch, Failure>) -> Void = { [self] result in
            completion(result)
            leave()
        }
        counted {
            if let readBatch = vtable.pointee.on_read_batch {
                let token = Self.batchReads.add((self, maxRecords, completion))
                let (status, message) = ErrorBuffer.with { err in
                    let status = readBatch(
                        instance, stream.pointer, offset, maxRecords, maxBytes,
                        { user, status, batch, error in
                            guard let (binding, maxRecords, completion) = StorageBinding.batchReads.take(user) else {
                                return
                            }
                            guard status == PX_OK.status else {
                                return completion(.failure(Failure(status: status, message: error.string)))
                            }
                            completion(binding.adopt(batch, maxRecords: maxRecords))
                        }, token, err)
                    return (status, ErrorBuffer.text(err))
                }
                if status != PX_OK.status, let (_, _, completion) = Self.batchReads.take(token) {
                    completion(.failure(Failure(status: status, message: message)))
                }
                return
            }
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
                            let borrowed = UnsafeBufferPointer(start: records, count: records == nil ? 0 : count)
                            if let problem = RecordBatch.problem(borrowed) {
                                return completion(.failure(Failure(status: PX_ERR_INTERNAL.status, message: problem)))
                            }
                            completion(.success(RecordBatch(copying: borrowed, nextOffset: next)))
                        }, token, err) ?? PX_ERR_UNSUPPORTED.status
                return (status, ErrorBuffer.text(err))
            }
            if status != PX_OK.status, let completion = Self.reads.take(token) {
                completion(.failure(Failure(status: status, message: message)))
            }
        }
    }

    /// Takes over a batch the storage lent: checked, then owned until the `RecordBatch` is released. A batch
    /// that breaks the contract is released at once and reported as the storage's internal error.
    private func adopt(_ batch: UnsafeMutablePointer<px_record_batch>?, maxRecords: Int) -> Result<RecordBatch, Failure>
    {
        guard let batch else {
            return .failure(
                Failure(status: PX_ERR_INTERNAL.status, message: "on_read_batch completed PX_OK without a batch"))
        }
        let size = batch.pointee.struct_size
        var problem = ABIStruct.sizeProblem(
            size, of: "px_record_batch", known: MemoryLayout<px_record_batch>.size, what: "the read batch")
        if problem == nil, batch.pointee.release == nil { problem = "the read batch has no release function" }
        let records = UnsafeBufferPointer(
            start: batch.pointee.records, count: batch.pointee.records == nil ? 0 : batch.pointee.count)
        if problem == nil, batch.pointee.count != records.count || records.count > maxRecords {
            problem = "the read batch holds \(batch.pointee.count) records (at most \(maxRecords) were asked for)"
        }
        if problem == nil { problem = RecordBatch.problem(records) }
        if let problem {
            if batch.pointee.release != nil, Int(size) >= MemoryLayout<px_record_batch>.offset(of: \.storage_data)! {
                batch.pointee.release?(batch)
            }
            return .failure(Failure(status: PX_ERR_INTERNAL.status, message: problem))
        }
        calls.add(1, ordering: .relaxed)
        return .success(RecordBatch(lent: batch, binding: self))
    }

    /// A lent batch was released: one call fewer keeps the storage from stopping.
    fileprivate func released() { calls.subtract(1, ordering: .releasing) }

    func commitOffset(
        _ stream: Stream, group: String, offset: UInt64, completion: @escaping @Sendable (Result<Void, Failure>) -> Void
    ) {
        guard
            admit({
                { handoff in
                    guard let handoff, let target = handoff.stream(for: stream) else {
                        return completion(.failure(self.unavailable()))
                    }
                    handoff.binding.commitOffset(target, group: group, offset: offset, completion: completion)
                }
            })
        else { return }
        let completion: @Sendable (Result<Void, Failure>) -> Void = { [self] result in
            completion(result)
            leave()
        }
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
        guard
            admit({
                { handoff in
                    guard let handoff, let target = handoff.stream(for: stream) else {
                        return completion(.failure(self.unavailable()))
                    }
                    handoff.binding.fetchOffset(target, group: group, completion: completion)
                }
            })
        else { return }
        let completion: @Sendable (Result<UInt64?, Failure>) -> Void = { [self] result in
            completion(result)
            leave()
        }
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
    /// - Throws: `Failure` (`PX_ERR_UNAVAILABLE`) while the storage is being replaced.
    func info(_ stream: Stream) throws -> (first: UInt64, next: UInt64) {
        guard admitNow() else { throw unavailable() }
        defer { leave() }
        return try counted {
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

    /// Closes a stream; while the storage is being replaced, its successor's stream of the same topic.
    func closeStream(_ stream: Stream) {
        guard
            admit({
                { handoff in
                    guard let handoff, let target = handoff.stream(for: stream) else { return }
                    handoff.binding.closeStream(target)
                }
            })
        else { return }
        defer { leave() }
        counted { vtable.pointee.on_close_stream?(instance, stream.pointer) }
    }
}

/// Records read from a storage, kept for as long as the delivery engine needs them: lent by the storage
/// (`on_read_batch`, released when the last reference goes) or copied once from a 1.0 storage's read.
///
/// The delivery engine keeps the batch until every delivery made from it is settled, and hands each
/// record's `px_record` to subscribers as it lies here: no event is rebuilt between storage and subscriber.
final class RecordBatch: @unchecked Sendable {
    // Safe: immutable after init; the records it points at are immutable until release (the ABI's promise for
    // a lent batch; the kernel's own copy is never written after init); release runs once, in deinit.
    let count: Int
    let nextOffset: UInt64
    private let records: UnsafePointer<UnsafePointer<px_record>?>?
    private let lent: UnsafeMutablePointer<px_record_batch>?
    private let binding: StorageBinding?
    private let owned: CRecordBatch?

    init(lent batch: UnsafeMutablePointer<px_record_batch>, binding: StorageBinding) {
        count = batch.pointee.count
        nextOffset = batch.pointee.next_offset
        records = batch.pointee.records
        lent = batch
        self.binding = binding
        owned = nil
    }

    init(copying borrowed: UnsafeBufferPointer<UnsafePointer<px_record>?>, nextOffset: UInt64) {
        let copy = CRecordBatch(copying: borrowed)
        count = copy.count
        self.nextOffset = nextOffset
        records = copy.pointers.baseAddress
        lent = nil
        binding = nil
        owned = copy
    }

    deinit {
        if let lent, let release = lent.pointee.release {
            release(lent)
            binding?.released()
        }
    }

    /// This batch, or, when the storage lent it, a copy the kernel owns: what a consumer group keeps while
    /// its storage is replaced (the old instance stops only once its lent batches are released).
    func detached() -> RecordBatch {
        guard lent != nil else { return self }
        return RecordBatch(copying: UnsafeBufferPointer(start: records, count: count), nextOffset: nextOffset)
    }

    /// The record at `index`, as the storage (or the copy) laid it out.
    func record(at index: Int) -> UnsafePointer<px_record> {
        precondition(index >= 0 && index < count, "RecordBatch: index \(index) out of 0..<\(count)")
        return records![index]!
    }

    /// What is wrong with records a storage handed over, or `nil`: each present, with an event the kernel can
    /// read without tripping (`EventCheck`).
    static func problem(_ records: UnsafeBufferPointer<UnsafePointer<px_record>?>) -> String? {
        for (index, record) in records.enumerated() {
            guard let record, let event = record.pointee.event else {
                return "record \(index) of the read is NULL or has no event"
            }
            if let problem = ABIStruct.sizeProblem(
                record.pointee.struct_size, of: "px_record", known: MemoryLayout<px_record>.size,
                what: "record \(index)")
            {
                return problem
            }
            if let problem = ABIStruct.sizeProblem(
                event.pointee.struct_size, of: "px_event", known: MemoryLayout<px_event>.size,
                what: "the event of record \(index)")
            {
                return problem
            }
        }
        return nil
    }
}
