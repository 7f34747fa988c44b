import Dispatch
import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// What one completion carried, copied out of the borrowed arguments inside the callback.
enum CompletionPayload: Sendable {
    case done(status: px_status, error: String)
    case append(status: px_status, firstOffset: UInt64, error: String)
    case read(status: px_status, records: [ReadRecord], nextOffset: UInt64, error: String)
    case offset(status: px_status, offset: UInt64, error: String)
    case lookup(status: px_status, instances: [ServiceRecord], error: String)
    /// `px_read_batch_done_fn`: the batch as lent, read by the rule until it releases it.
    case lent(status: px_status, batch: LentBatch, error: String)
    /// `px_open_done_fn`: the stream handle's address.
    case opened(status: px_status, stream: UInt, error: String)
    /// `px_list_streams_done_fn` (1.3): the names listed.
    case names(status: px_status, names: [String], error: String)
    /// `px_list_offsets_done_fn` (1.3): each group's offset (a NULL entry or a too small struct lists as a
    /// group named `(invalid)`).
    case groupOffsets(status: px_status, offsets: [String: UInt64], error: String)
    /// `px_kv_get_done_fn` (1.4): the entry (`nil` for a NULL one) and the revision.
    case kvGet(status: px_status, entry: KVRecord?, revision: UInt64, error: String)
    /// `px_kv_write_done_fn` (1.4).
    case kvWrite(status: px_status, version: UInt64, revision: UInt64, error: String)
    /// `px_kv_list_done_fn` (1.4): the entries in the order listed.
    case kvList(status: px_status, entries: [KVRecord], revision: UInt64, error: String)

    var status: px_status {
        switch self {
        case .done(let status, _), .append(let status, _, _), .read(let status, _, _, _), .offset(let status, _, _),
            .lookup(let status, _, _), .lent(let status, _, _), .opened(let status, _, _), .names(let status, _, _),
            .groupOffsets(let status, _, _), .kvGet(let status, _, _, _), .kvWrite(let status, _, _, _),
            .kvList(let status, _, _, _):
            return status
        }
    }

    var error: String {
        switch self {
        case .done(_, let error), .append(_, _, let error), .read(_, _, _, let error), .offset(_, _, let error),
            .lookup(_, _, let error), .lent(_, _, let error), .opened(_, _, let error), .names(_, _, let error),
            .groupOffsets(_, _, let error), .kvGet(_, _, _, let error), .kvWrite(_, _, _, let error),
            .kvList(_, _, _, let error):
            return error
        }
    }
}

/// A `px_record_batch` a storage lent: the rule that asked for it reads it and releases it.
struct LentBatch: @unchecked Sendable {
    // Safe: the ABI lets the kernel (here, the rule) read a lent batch from any thread until it releases it.
    let pointer: UnsafeMutablePointer<px_record_batch>?
}

/// One record a read completion handed over, copied.
struct ReadRecord: Sendable {
    var offset: UInt64
    var appendTimeNanoseconds: UInt64
    /// `nil` when the record or its event pointer was NULL, or the record too small to hold one.
    var event: CloudEvent?
}

/// One service instance a lookup or a watch handed over, copied.
struct ServiceRecord: Sendable, Equatable, CustomStringConvertible {
    var service: String
    var instanceID: String
    var address: String
    /// In the order given; compared order-insensitively.
    var metadata: [(key: String, value: String)]
    var ttlMilliseconds: UInt64

    init(service: String, instanceID: String, address: String, metadata: [(String, String)], ttlMilliseconds: UInt64) {
        self.service = service
        self.instanceID = instanceID
        self.address = address
        self.metadata = metadata.map { (key: $0.0, value: $0.1) }
        self.ttlMilliseconds = ttlMilliseconds
    }

    /// Copies a borrowed instance; `nil` when it is NULL or smaller than ABI 1.0 makes it.
    init?(copying pointer: UnsafePointer<px_service_instance>?) {
        guard let pointer else { return nil }
        let size = Int(UnsafeRawPointer(pointer).load(as: UInt32.self))
        guard size >= MemoryLayout<px_service_instance>.size else { return nil }
        let i = pointer.pointee
        var metadata: [(String, String)] = []
        if let pairs = i.metadata, i.metadata_count > 0 {
            metadata = (0..<i.metadata_count).map { (pairs[$0].key.string, pairs[$0].value.string) }
        }
        self.init(
            service: i.service.string, instanceID: i.instance_id.string, address: i.address.string,
            metadata: metadata, ttlMilliseconds: i.ttl_ms)
    }

    var sortedMetadata: [String] { metadata.map { "\($0.key)=\($0.value)" }.sorted() }

    static func == (lhs: ServiceRecord, rhs: ServiceRecord) -> Bool {
        lhs.service == rhs.service && lhs.instanceID == rhs.instanceID && lhs.address == rhs.address
            && lhs.sortedMetadata == rhs.sortedMetadata && lhs.ttlMilliseconds == rhs.ttlMilliseconds
    }

    var description: String {
        "{service \(service), id \(instanceID), address \(address), metadata [\(sortedMetadata.joined(separator: ", "))], ttl_ms \(ttlMilliseconds)}"
    }
}

/// One asynchronous call into the plugin: what it returned and every completion it got.
///
/// The plugin receives a token, not a pointer to this object, as its `user`: a completion called twice,
/// after an error return, or after the suite ended finds the token's entry (or no entry) and is counted,
/// never a dangling pointer.
final class CallRecord: Sendable {
    /// The hook, e.g. `on_append`.
    let operation: String
    /// The rule that made the call.
    let rule: String
    let token: UInt64
    private let state = Mutex<State>(State())
    private let arrived = DispatchSemaphore(value: 0)

    private struct State {
        var returned: px_status?
        var returnedMessage = ""
        var completions: [CompletionPayload] = []
    }

    init(operation: String, rule: String, token: UInt64) {
        self.operation = operation
        self.rule = rule
        self.token = token
    }

    func complete(_ payload: CompletionPayload) {
        let first = state.withLock { s -> Bool in
            s.completions.append(payload)
            return s.completions.count == 1
        }
        if first { arrived.signal() }
    }

    func returned(_ status: px_status, message: String) {
        state.withLock {
            $0.returned = status
            $0.returnedMessage = message
        }
    }

    /// What the hook returned; `nil` while it is still running.
    var returnedStatus: px_status? { state.withLock { $0.returned } }
    var returnedMessage: String { state.withLock { $0.returnedMessage } }
    var completionCount: Int { state.withLock { $0.completions.count } }

    /// The first completion, waiting up to `timeout` for it.
    func wait(_ timeout: Duration) -> CompletionPayload? {
        if let first = state.withLock({ $0.completions.first }) { return first }
        _ = arrived.wait(timeout: .now() + .nanoseconds(timeout.nanoseconds))
        return state.withLock { $0.completions.first }
    }
}

/// Receives the callbacks of one watch: every event in arrival order, whether two ever overlapped, and
/// whether any came after `on_unwatch` returned.
final class WatchRecorder: Sendable {
    struct Event: Sendable, CustomStringConvertible {
        var kind: UInt32
        var instance: ServiceRecord?

        var kindName: String {
            kind == UInt32(PX_WATCH_PUT.rawValue)
                ? "PUT" : kind == UInt32(PX_WATCH_DELETE.rawValue) ? "DELETE" : "kind \(kind)"
        }

        var description: String { "\(kindName) \(instance?.instanceID ?? "(no instance)")" }
    }

    let token: UInt64
    private let events = Mutex<[Event]>([])
    private let inFlight = Atomic<Int>(0)
    private let overlapped = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    private let late = Atomic<Int>(0)
    /// How long each callback lingers, in microseconds, to give overlapping callbacks a chance to meet.
    private let dwellMicroseconds: Int

    init(token: UInt64, dwellMicroseconds: Int) {
        self.token = token
        self.dwellMicroseconds = dwellMicroseconds
    }

    func receive(kind: UInt32, instance: UnsafePointer<px_service_instance>?) {
        if inFlight.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue != 0 {
            overlapped.store(true, ordering: .relaxed)
        }
        if closed.load(ordering: .acquiring) { late.add(1, ordering: .relaxed) }
        let event = Event(kind: kind, instance: ServiceRecord(copying: instance))
        events.withLock { $0.append(event) }
        if dwellMicroseconds > 0 {
            let until = ContinuousClock.now + .microseconds(dwellMicroseconds)
            while ContinuousClock.now < until {}
        }
        inFlight.subtract(1, ordering: .releasing)
    }

    var received: [Event] { events.withLock { $0 } }
    var isRunning: Bool { inFlight.load(ordering: .acquiring) > 0 }
    var didOverlap: Bool { overlapped.load(ordering: .relaxed) }
    var lateCalls: Int { late.load(ordering: .relaxed) }

    /// Marks the point after which no callback may start (`on_unwatch` returned).
    func close() { closed.store(true, ordering: .releasing) }

    /// Waits up to `timeout` until at least `count` events arrived; returns what arrived.
    func wait(for count: Int, _ timeout: Duration) -> [Event] {
        let deadline = ContinuousClock.now + timeout
        while received.count < count, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.001) }
        return received
    }
}

/// Every call one suite made into a plugin, and the process-wide token tables its completions are routed by.
final class CallLedger: Sendable {
    private static let calls = Mutex<[UInt64: CallRecord]>([:])
    private static let watches = Mutex<[UInt64: WatchRecorder]>([:])
    private static let nextToken = Atomic<UInt64>(1)

    private let mine = Mutex<[CallRecord]>([])
    private let myWatches = Mutex<[UInt64]>([])
    private let rule = Mutex<String>("")

    /// The rule that calls are attributed to from now on.
    var currentRule: String {
        get { rule.withLock { $0 } }
        set { rule.withLock { $0 = newValue } }
    }

    /// Registers a call about to be made; pass `user(token)` as its `user`.
    func begin(_ operation: String) -> CallRecord {
        let token = Self.nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
        let record = CallRecord(operation: operation, rule: currentRule, token: token)
        Self.calls.withLock { $0[token] = record }
        mine.withLock { $0.append(record) }
        return record
    }

    func beginWatch(dwellMicroseconds: Int) -> WatchRecorder {
        let token = Self.nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
        let recorder = WatchRecorder(token: token, dwellMicroseconds: dwellMicroseconds)
        Self.watches.withLock { $0[token] = recorder }
        myWatches.withLock { $0.append(token) }
        return recorder
    }

    /// Every call made so far, in the order made.
    var records: [CallRecord] { mine.withLock { $0 } }

    /// Forgets this suite's tokens: a completion or callback arriving later finds no entry and is ignored.
    func close() {
        let tokens = mine.withLock { $0.map(\.token) }
        let watchTokens = myWatches.withLock { $0 }
        Self.calls.withLock { all in for token in tokens { all[token] = nil } }
        Self.watches.withLock { all in for token in watchTokens { all[token] = nil } }
    }

    static func user(_ token: UInt64) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: UInt(token)) }

    static func token(_ user: UnsafeMutableRawPointer?) -> UInt64 { UInt64(UInt(bitPattern: user)) }

    /// Routes a completion to its call; `payload` runs (copying the borrowed arguments) only for a known one.
    static func deliver(_ user: UnsafeMutableRawPointer?, _ payload: () -> CompletionPayload) {
        guard let record = calls.withLock({ $0[token(user)] }) else { return }
        record.complete(payload())
    }

    static func deliverWatch(
        _ user: UnsafeMutableRawPointer?, kind: UInt32, instance: UnsafePointer<px_service_instance>?
    ) {
        guard let recorder = watches.withLock({ $0[token(user)] }) else { return }
        recorder.receive(kind: kind, instance: instance)
    }
}

// MARK: The C completions handed to the plugin.

let doneCompletion: px_done_fn = { user, status, error in
    CallLedger.deliver(user) { .done(status: status, error: error.string) }
}

let appendCompletion: px_append_done_fn = { user, status, first, error in
    CallLedger.deliver(user) { .append(status: status, firstOffset: first, error: error.string) }
}

let readBatchCompletion: px_read_batch_done_fn = { user, status, batch, error in
    CallLedger.deliver(user) { .lent(status: status, batch: LentBatch(pointer: batch), error: error.string) }
}

let openCompletion: px_open_done_fn = { user, status, stream, error in
    CallLedger.deliver(user) { .opened(status: status, stream: UInt(bitPattern: stream), error: error.string) }
}

let listStreamsCompletion: px_list_streams_done_fn = { user, status, names, count, error in
    CallLedger.deliver(user) {
        .names(status: status, names: (0..<count).map { names?[$0].string ?? "" }, error: error.string)
    }
}

let listOffsetsCompletion: px_list_offsets_done_fn = { user, status, offsets, count, error in
    CallLedger.deliver(user) {
        var copies: [String: UInt64] = [:]
        for index in 0..<count {
            guard let entry = offsets?[index],
                Int(entry.pointee.struct_size) >= MemoryLayout<px_group_offset>.size
            else {
                copies["(invalid)"] = UInt64.max
                continue
            }
            copies[entry.pointee.group.string] = entry.pointee.offset
        }
        return .groupOffsets(status: status, offsets: copies, error: error.string)
    }
}

let readCompletion: px_read_done_fn = { user, status, records, count, next, error in
    CallLedger.deliver(user) {
        .read(status: status, records: ReadRecord.copies(records, count), nextOffset: next, error: error.string)
    }
}

extension ReadRecord {
    /// Copies of `count` borrowed records (a NULL record, or one too small to hold its event, copies as a record
    /// at `PX_OFFSET_NONE` or without an event).
    static func copies(_ records: UnsafePointer<UnsafePointer<px_record>?>?, _ count: Int) -> [ReadRecord] {
        guard count > 0 else { return [] }
        var copies: [ReadRecord] = []
        copies.reserveCapacity(count)
        for index in 0..<count {
            guard let record = records?[index] else {
                copies.append(ReadRecord(offset: offsetNone, appendTimeNanoseconds: 0, event: nil))
                continue
            }
            let size = Int(UnsafeRawPointer(record).load(as: UInt32.self))
            let event = size >= MemoryLayout<px_record>.size ? record.pointee.event.map(CloudEvent.init(copying:)) : nil
            copies.append(
                ReadRecord(
                    offset: record.pointee.offset, appendTimeNanoseconds: record.pointee.append_time_ns, event: event))
        }
        return copies
    }
}

let offsetCompletion: px_offset_done_fn = { user, status, offset, error in
    CallLedger.deliver(user) { .offset(status: status, offset: offset, error: error.string) }
}

let lookupCompletion: px_lookup_done_fn = { user, status, instances, count, error in
    CallLedger.deliver(user) {
        let copies = count > 0 ? (0..<count).map { ServiceRecord(copying: instances?[$0]) } : []
        return .lookup(
            status: status,
            instances: copies.map {
                $0 ?? ServiceRecord(service: "", instanceID: "(NULL)", address: "", metadata: [], ttlMilliseconds: 0)
            },
            error: error.string)
    }
}

let watchCallback: px_watch_fn = { user, kind, instance in
    CallLedger.deliverWatch(user, kind: kind, instance: instance)
}

let kvGetCompletion: px_kv_get_done_fn = { user, status, entry, revision, error in
    CallLedger.deliver(user) {
        .kvGet(status: status, entry: KVRecord(copying: entry), revision: revision, error: error.string)
    }
}

let kvWriteCompletion: px_kv_write_done_fn = { user, status, version, revision, error in
    CallLedger.deliver(user) { .kvWrite(status: status, version: version, revision: revision, error: error.string) }
}

let kvListCompletion: px_kv_list_done_fn = { user, status, entries, count, revision, error in
    CallLedger.deliver(user) {
        let copies = (0..<count).map {
            KVRecord(copying: entries?[$0])
                ?? KVRecord(key: "(NULL)", value: [], version: 0, createRevision: 0, modRevision: 0)
        }
        return .kvList(status: status, entries: copies, revision: revision, error: error.string)
    }
}

let kvWatchCallback: px_kv_watch_fn = { user, kind, entry in
    KVWatchRecorder.deliver(user, kind: kind, entry: entry)
}

extension Duration {
    /// Whole nanoseconds, clamped to `Int`.
    var nanoseconds: Int {
        let (seconds, attoseconds) = components
        let total = Double(seconds) * 1e9 + Double(attoseconds) / 1e9
        return Int(max(0, min(total, Double(Int.max / 2))))
    }
}
