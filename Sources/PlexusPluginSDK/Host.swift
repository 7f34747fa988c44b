import PlexusABI

/// The kernel's services as seen from a Swift plugin: logging, metrics, publish, subscribe, ack/nack, timers.
///
/// - Important: Every method may be called from any thread.
public final class Host: @unchecked Sendable {
    // Safe: `api` is the kernel's immutable table for the process lifetime and `handle` is the kernel's
    // thread-safe handle for this instance; neither is mutated here.
    public let api: UnsafePointer<px_host_api>
    public let handle: OpaquePointer?

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
        let box = Unmanaged.passRetained(Box(completion)).toOpaque()
        let (status, message) = withPXStr(topic) { topicStr in
            withCEvents(events) { pointers in
                Self.errorBuffer { err in
                    api.pointee.publish(handle, topicStr, pointers.baseAddress, pointers.count, { user, status, offset, error in
                        guard let user else { return }
                        let box = Unmanaged<Box<@Sendable (Result<UInt64, PluginError>) -> Void>>.fromOpaque(user).takeRetainedValue()
                        box.value(status == PX_OK.status ? .success(offset) : .failure(PluginError(status: status, error.string)))
                    }, box, err)
                }
            }
        }
        if status != PX_OK.status {
            Unmanaged<Box<@Sendable (Result<UInt64, PluginError>) -> Void>>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }

    /// Subscribes to a topic; `handler` gets each delivery and must acknowledge it with `ack` or `nack`.
    /// - Returns: the subscription, to pass to `unsubscribe`.
    public func subscribe(
        topic: String, group: String = "", filters: [String: String] = [:],
        handler: @escaping @Sendable (Delivery) -> Void
    ) throws -> Subscription {
        let box = Unmanaged.passRetained(Box(handler))
        var id: UInt64 = 0
        let pairs = filters.sorted { $0.key < $1.key }
        let (status, message) = withPXStr(topic) { topicStr in
            withPXStr(group) { groupStr in
                withKVs(pairs) { kvs in
                    var spec = px_subscription_spec()
                    spec.struct_size = UInt32(MemoryLayout<px_subscription_spec>.size)
                    spec.topic = topicStr
                    spec.group = groupStr
                    spec.filters = kvs.baseAddress
                    spec.filter_count = kvs.count
                    spec.user = box.toOpaque()
                    spec.deliver = { user, delivery in
                        guard let user, let delivery else { return }
                        let handler = Unmanaged<Box<@Sendable (Delivery) -> Void>>.fromOpaque(user).takeUnretainedValue()
                        handler.value(Delivery(copying: delivery))
                    }
                    return Self.errorBuffer { err in api.pointee.subscribe(handle, &spec, &id, err) }
                }
            }
        }
        guard status == PX_OK.status else {
            box.release()
            throw PluginError(status: status, message)
        }
        return Subscription(id: id, box: box.toOpaque())
    }

    /// Ends a subscription and releases its handler.
    public func unsubscribe(_ subscription: Subscription) {
        _ = api.pointee.unsubscribe(handle, subscription.id)
        Unmanaged<Box<@Sendable (Delivery) -> Void>>.fromOpaque(subscription.box).release()
    }

    @discardableResult
    public func ack(_ delivery: Delivery) -> px_status { api.pointee.ack(handle, delivery.deliveryID) }

    @discardableResult
    public func nack(_ delivery: Delivery, deadLetter: Bool = false, reason: String) -> px_status {
        withPXStr(reason) {
            api.pointee.nack(handle, delivery.deliveryID, deadLetter ? PX_NACK_DEAD_LETTER.rawValue : PX_NACK_RETRY.rawValue, $0)
        }
    }

    /// Calls `body` with a fresh error buffer; returns its status and, on failure, the text written.
    static func errorBuffer(_ body: (UnsafeMutablePointer<px_error>) -> px_status) -> (px_status, String) {
        let capacity = Int(PX_ERROR_CAPACITY)
        let message = UnsafeMutablePointer<CChar>.allocate(capacity: capacity)
        message.initialize(repeating: 0, count: capacity)
        defer { message.deallocate() }
        var err = px_error(struct_size: UInt32(MemoryLayout<px_error>.size), reserved: 0, message: message, capacity: capacity)
        let status = body(&err)
        return (status, status == PX_OK.status ? "" : String(cString: message))
    }
}

/// A subscription made through `Host.subscribe`.
public struct Subscription: @unchecked Sendable {
    // Safe: `box` is an opaque retained reference released exactly once by `Host.unsubscribe`.
    public let id: UInt64
    let box: UnsafeMutableRawPointer
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

/// Lends `pairs` as a `px_kv` array.
func withKVs<R>(_ pairs: [(key: String, value: String)], _ body: (UnsafeBufferPointer<px_kv>) -> R) -> R {
    var storage: [[UInt8]] = []
    for (k, v) in pairs {
        storage.append(Array(k.utf8))
        storage.append(Array(v.utf8))
    }
    return withPinned(storage, index: 0, pinned: []) { pointers in
        let kvs = (0..<pairs.count).map { i in
            px_kv(key: pointers[2 * i], value: pointers[2 * i + 1])
        }
        return kvs.withUnsafeBufferPointer(body)
    }
}

private func withPinned<R>(_ arrays: [[UInt8]], index: Int, pinned: [px_str], _ body: ([px_str]) -> R) -> R {
    guard index < arrays.count else { return body(pinned) }
    return arrays[index].withUnsafeBufferPointer { buffer in
        let str = px_str(ptr: UnsafeRawPointer(buffer.baseAddress)?.assumingMemoryBound(to: CChar.self), len: buffer.count)
        return withPinned(arrays, index: index + 1, pinned: pinned + [str], body)
    }
}

/// Lends events as an array of `px_event` pointers.
func withCEvents<R>(_ events: [CloudEvent], _ body: (UnsafeBufferPointer<UnsafePointer<px_event>?>) -> R) -> R {
    func step(_ index: Int, _ pointers: [UnsafePointer<px_event>?]) -> R {
        guard index < events.count else { return pointers.withUnsafeBufferPointer(body) }
        return events[index].withCEvent { step(index + 1, pointers + [$0]) }
    }
    return step(0, [])
}
