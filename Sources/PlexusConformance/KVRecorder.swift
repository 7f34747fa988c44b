import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// One key of a registry's metadata store (`px_kv_entry`, ABI 1.4), copied out of a completion or a watch.
struct KVRecord: Sendable, Equatable, CustomStringConvertible {
    var key: String
    var value: [UInt8]
    var version: UInt64
    var createRevision: UInt64
    var modRevision: UInt64

    /// Copies a borrowed entry; `nil` when it is NULL or smaller than ABI 1.4 makes it.
    init?(copying pointer: UnsafePointer<px_kv_entry>?) {
        guard let pointer else { return nil }
        let size = Int(UnsafeRawPointer(pointer).load(as: UInt32.self))
        guard size >= MemoryLayout<px_kv_entry>.size else { return nil }
        let e = pointer.pointee
        let value = e.value.ptr.map { Array(UnsafeBufferPointer(start: $0, count: e.value.len)) } ?? []
        self.init(
            key: e.key.string, value: value, version: e.version, createRevision: e.create_revision,
            modRevision: e.mod_revision)
    }

    init(key: String, value: [UInt8], version: UInt64, createRevision: UInt64, modRevision: UInt64) {
        self.key = key
        self.value = value
        self.version = version
        self.createRevision = createRevision
        self.modRevision = modRevision
    }

    var text: String { String(decoding: value, as: UTF8.self) }

    var description: String {
        "{key \(key), value \"\(text)\", version \(version), create_revision \(createRevision), mod_revision \(modRevision)}"
    }
}

/// Receives the callbacks of one metadata watch (`px_kv_watch_fn`): every change in arrival order, whether
/// two ever overlapped, and whether any came after `on_kv_unwatch` returned.
final class KVWatchRecorder: Sendable {
    struct Event: Sendable, Equatable, CustomStringConvertible {
        var kind: UInt32
        var entry: KVRecord?

        var isPut: Bool { kind == UInt32(PX_WATCH_PUT.rawValue) }
        var isDelete: Bool { kind == UInt32(PX_WATCH_DELETE.rawValue) }

        var description: String {
            let name = isPut ? "PUT" : isDelete ? "DELETE" : "kind \(kind)"
            guard let entry else { return "\(name) (no entry)" }
            return isPut
                ? "\(name) \(entry.key)=\"\(entry.text)\"@\(entry.modRevision)"
                : "\(name) \(entry.key)@\(entry.modRevision)"
        }
    }

    private static let recorders = Mutex<[UInt64: KVWatchRecorder]>([:])
    private static let nextToken = Atomic<UInt64>(1 << 40)

    let token: UInt64
    private let events = Mutex<[Event]>([])
    private let inFlight = Atomic<Int>(0)
    private let overlapped = Atomic<Bool>(false)
    private let closed = Atomic<Bool>(false)
    private let late = Atomic<Int>(0)

    init() {
        token = Self.nextToken.wrappingAdd(1, ordering: .relaxed).oldValue
        Self.recorders.withLock { $0[token] = self }
    }

    static func deliver(_ user: UnsafeMutableRawPointer?, kind: UInt32, entry: UnsafePointer<px_kv_entry>?) {
        guard let recorder = recorders.withLock({ $0[CallLedger.token(user)] }) else { return }
        recorder.receive(kind: kind, entry: entry)
    }

    private func receive(kind: UInt32, entry: UnsafePointer<px_kv_entry>?) {
        if inFlight.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue != 0 {
            overlapped.store(true, ordering: .relaxed)
        }
        if closed.load(ordering: .acquiring) { late.add(1, ordering: .relaxed) }
        let event = Event(kind: kind, entry: KVRecord(copying: entry))
        events.withLock { $0.append(event) }
        inFlight.subtract(1, ordering: .releasing)
    }

    var received: [Event] { events.withLock { $0 } }
    var didOverlap: Bool { overlapped.load(ordering: .relaxed) }
    var lateCalls: Int { late.load(ordering: .relaxed) }

    /// Marks the point after which no callback may start (`on_kv_unwatch` returned).
    func close() { closed.store(true, ordering: .releasing) }

    /// Forgets the recorder: later callbacks are ignored.
    func forget() { _ = Self.recorders.withLock { $0.removeValue(forKey: token) } }

    /// Waits up to `timeout` until at least `count` events arrived; returns what arrived.
    func wait(for count: Int, _ timeout: Duration) -> [Event] {
        let deadline = ContinuousClock.now + timeout
        while received.count < count, ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.001) }
        return received
    }
}
