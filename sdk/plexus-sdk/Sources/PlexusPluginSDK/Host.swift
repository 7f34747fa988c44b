import PlexusABI
import Synchronization

/// The kernel's services as seen from a Swift plugin: logging, metrics, publish, subscribe, ack/nack, timers.
///
/// - Important: Every method may be called from any thread.
public final class Host: @unchecked Sendable {
    // Safe: `api` is the kernel's immutable table for the process lifetime and `handle` is the kernel's
    // thread-safe handle for this instance; neither is mutated here.
    public let api: UnsafePointer<px_host_api>
    public let handle: OpaquePointer?
    /// The handlers of this instance's metadata watches (`kvWatch`), retained until `kvUnwatch`.
    let kvWatchHandlers = Mutex<[UInt64: UInt]>([:])

    init(api: UnsafePointer<px_host_api>, handle: OpaquePointer?) {
        self.api = api
        self.handle = handle
    }

    public enum LogLevel: Int32, Sendable {
        case trace, debug, info, notice, warning, error, critical
    }

    public func log(_ level: LogLevel, _ message: String) {
        withPXStr(message) { api.pointee.log(handle, level.rawValue, $0) }
    }

    public func count(_ name: String, by delta: UInt64 = 1) {
        withPXStr(name) { api.pointee.counter_add(handle, $0, delta) }
    }

    public func gauge(_ name: String, _ value: Double) {
        withPXStr(name) { api.pointee.gauge_set(handle, $0, value) }
    }

    /// Publishes events to a topic; `completion` gets the first offset once the batch is durable.
    /// - Throws: `PluginError` when the kernel refuses the batch outright.
    public func publish(
        topic: String, _ events: [CloudEvent], completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        // The kernel copies the events during the call; the batch only has to outlive it.
        let batch = CEventBatch(events)
        try withExtendedLifetime(batch) {
            try publish(
                topic: topic, events: batch.pointers.baseAddress, count: batch.pointers.count, completion: completion)
        }
    }

    /// Publishes borrowed C events (for plugins that lay `px_event`s over their own buffers, such as a
    /// protocol plugin over its receive buffer); `completion` gets the first offset once the batch is durable.
    /// - Parameters:
    ///   - events: `count` event pointers, borrowed for this call only: the kernel copies them.
    /// - Throws: `PluginError` when the kernel refuses the batch outright; `completion` is then not called.
    public func publish(
        topic: String, events: UnsafePointer<UnsafePointer<px_event>?>?, count: Int,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        typealias Completion = Box<@Sendable (Result<UInt64, PluginError>) -> Void>
        let box = Unmanaged.passRetained(Completion(completion)).toOpaque()
        let (status, message) = withPXStr(topic) { topicStr in
            Self.errorBuffer { err in
                api.pointee.publish(
                    handle, topicStr, events, count,
                    { user, status, offset, error in
                        guard let user else { return }
                        let box = Unmanaged<Completion>.fromOpaque(user).takeRetainedValue()
                        if status == PX_OK.status {
                            box.value(.success(offset))
                        } else {
                            box.value(.failure(PluginError(status: status, error.string)))
                        }
                    }, box, err)
            }
        }
        if status != PX_OK.status {
            Unmanaged<Completion>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }

    /// Subscribes to a topic; `handler` gets each delivery and must acknowledge it with `ack` or `nack`.
    /// - Returns: the subscription, to pass to `unsubscribe`.
    public func subscribe(
        topic: String, group: String = "", filters: [String: String] = [:],
        handler: @escaping @Sendable (Delivery) -> Void
    ) throws -> Subscription {
        var options = SubscriptionOptions()
        options.group = group
        options.filters = filters.sorted { $0.key < $1.key }
        return try subscribe(topic: topic, options: options) { handler(Delivery(copying: $0)) }
    }

    /// Subscribes with every delivery option; `handler` gets each delivery as the kernel's borrowed
    /// `px_delivery` (valid for the call only: copy what you keep) and must acknowledge it by id.
    /// - Returns: the subscription, to pass to `unsubscribe`.
    /// - Important: `handler` runs on kernel threads, possibly concurrently, and must not block.
    public func subscribe(
        topic: String, options: SubscriptionOptions, handler: @escaping @Sendable (UnsafePointer<px_delivery>) -> Void
    ) throws -> Subscription {
        let box = Unmanaged.passRetained(Box(handler))
        var id: UInt64 = 0
        let (status, message) = options.withSpec(topic: topic) { spec in
            spec.user = box.toOpaque()
            spec.deliver = { user, delivery in
                guard let user, let delivery else { return }
                Unmanaged<Box<@Sendable (UnsafePointer<px_delivery>) -> Void>>.fromOpaque(user)
                    .takeUnretainedValue().value(delivery)
            }
            return Self.errorBuffer { err in api.pointee.subscribe(handle, &spec, &id, err) }
        }
        guard status == PX_OK.status else {
            box.release()
            throw PluginError(status: status, message)
        }
        return Subscription(id: id, box: box.toOpaque())
    }

    /// Ends a subscription and releases its handler.
    ///
    /// Only the first call for a subscription does anything; later calls, from any thread, are no-ops.
    /// - Important: Not from inside that subscription's own handler (the kernel waits for it to return).
    public func unsubscribe(_ subscription: Subscription) {
        guard subscription.claim() else { return }
        _ = api.pointee.unsubscribe(handle, subscription.id)
        Unmanaged<Box<@Sendable (UnsafePointer<px_delivery>) -> Void>>.fromOpaque(subscription.box).release()
    }

    @discardableResult
    public func ack(_ delivery: Delivery) -> px_status { ack(deliveryID: delivery.deliveryID) }

    @discardableResult
    public func ack(deliveryID: UInt64) -> px_status { api.pointee.ack(handle, deliveryID) }

    @discardableResult
    public func nack(_ delivery: Delivery, deadLetter: Bool = false, reason: String) -> px_status {
        nack(deliveryID: delivery.deliveryID, deadLetter: deadLetter, reason: reason)
    }

    @discardableResult
    public func nack(deliveryID: UInt64, deadLetter: Bool = false, reason: String) -> px_status {
        withPXStr(reason) {
            api.pointee.nack(handle, deliveryID, deadLetter ? PX_NACK_DEAD_LETTER.rawValue : PX_NACK_RETRY.rawValue, $0)
        }
    }

    /// A listening TCP socket for `host:port` that the kernel owns (`px_host_api.listen`, ABI 1.2), as a
    /// descriptor of this instance's own: accept on it (SwiftNIO: `ServerBootstrap.withBoundSocket`) and close
    /// it when stopping. The kernel keeps the socket open while the plugin is replaced on a running node, so
    /// the next instance accepts from it and no connection is refused. `nil` when the kernel is older than
    /// 1.2: bind a socket of your own then.
    /// - Throws: `PluginError` with the kernel's status and reason (an address in use, a bad port).
    public func listen(host: String, port: Int, backlog: Int = 256) throws -> Int32? {
        let end = MemoryLayout<px_host_api>.offset(of: \px_host_api.listen)! + MemoryLayout<px_host_listen?>.size
        guard Int(api.pointee.struct_size) >= end, let listen = api.pointee.listen else { return nil }
        var fd: Int32 = -1
        let (status, message) = withPXStr(host) { address in
            Self.errorBuffer { err in listen(handle, address, Int32(clamping: port), Int32(clamping: backlog), &fd, err)
            }
        }
        guard status == PX_OK.status else { throw PluginError(status: status, message) }
        return fd
    }

    /// Calls `body` with a fresh error buffer; returns its status and, on failure, the text written.
    static func errorBuffer(_ body: (UnsafeMutablePointer<px_error>) -> px_status) -> (px_status, String) {
        let capacity = Int(PX_ERROR_CAPACITY)
        let message = UnsafeMutablePointer<CChar>.allocate(capacity: capacity)
        message.initialize(repeating: 0, count: capacity)
        defer { message.deallocate() }
        var err = px_error(
            struct_size: UInt32(MemoryLayout<px_error>.size), reserved: 0, message: message, capacity: capacity)
        let status = body(&err)
        return (status, status == PX_OK.status ? "" : String(cString: message))
    }
}

/// A subscription made through `Host.subscribe`; pass it to `Host.unsubscribe` to end it.
///
/// A reference: copies share one subscription, and only the first `unsubscribe` of any of them acts.
/// Dropping it without unsubscribing leaves the subscription running until the kernel ends it when the
/// instance is destroyed, and its handler is then never released.
public final class Subscription: @unchecked Sendable {
    // Safe: `id` and `box` are immutable; `box` is an opaque retained reference that `Host.unsubscribe`
    // releases only after winning `ended`, so at most once.
    public let id: UInt64
    let box: UnsafeMutableRawPointer
    private let ended = Atomic<Bool>(false)

    init(id: UInt64, box: UnsafeMutableRawPointer) {
        self.id = id
        self.box = box
    }

    /// Marks the subscription ended; `true` only for the first caller.
    func claim() -> Bool {
        ended.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }
}

/// One event handed to a subscriber, copied out of the kernel's borrowed `px_delivery`.
public struct Delivery: Sendable {
    public var deliveryID: UInt64
    public var subscriptionID: UInt64
    public var attempt: UInt32
    public var topic: String
    public var offset: UInt64
    public var event: CloudEvent

    init(copying d: UnsafePointer<px_delivery>) {
        deliveryID = d.pointee.delivery_id
        subscriptionID = d.pointee.subscription_id
        attempt = d.pointee.attempt
        topic = d.pointee.topic.string
        offset = d.pointee.record?.pointee.offset ?? 0
        if let event = d.pointee.record?.pointee.event {
            self.event = CloudEvent(copying: event)
        } else {
            self.event = CloudEvent(id: "", source: "", type: "")
        }
    }
}

/// A reference box for values handed through `void *user`.
final class Box<T>: @unchecked Sendable {
    // Safe: only ever holds @Sendable closures, read-only after init.
    let value: T
    init(_ value: T) { self.value = value }
}
