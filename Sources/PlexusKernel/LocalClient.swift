import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization

/// A client inside the node's process that speaks to the kernel through the real host API table, exactly as
/// a plugin does: for tests, benchmarks and embedding.
public final class LocalClient: Sendable {
    /// A refused or failed call, with its status.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var status: px_status
        public var message: String
        public var description: String { "\(StatusText.name(status)): \(message)" }

        public init(status: px_status, message: String) {
            self.status = status
            self.message = message
        }
    }

    /// One delivery, copied out of the kernel's borrowed `px_delivery`.
    public struct Delivery: Sendable {
        public var deliveryID: UInt64
        public var subscriptionID: UInt64
        public var attempt: UInt32
        public var offset: UInt64
        public var topic: String
        public var event: CloudEvent
    }

    /// Delivery options of a subscription (`px_subscription_spec`); zero keeps the kernel's default.
    public struct Options: Sendable {
        public var broadcast = false
        public var filters: [(key: String, value: String)] = []
        public var retry: UInt32 = 0
        public var linearBackoff = false
        public var backoffDelayMs: UInt64 = 0
        public var backoffMaxMs: UInt64 = 0
        public var timeoutMs: UInt64 = 0
        public var deadLetterTopic: String?
        public var ordered = false
        public var maxInFlight: UInt32 = 0
        public var start: px_start_position = PX_START_EARLIEST
        public var startOffset: UInt64 = 0

        public init() {}
    }

    let context: PluginContext
    private let handlers = Mutex<[UInt64: Unmanaged<HandlerBox>]>([:])

    public init(kernel: Kernel, name: String = "local-client") {
        context = PluginContext(name: name, logger: kernel.logger, services: kernel.services)
    }

    private final class HandlerBox: Sendable {
        let handler: @Sendable (Delivery) -> Void
        init(_ handler: @escaping @Sendable (Delivery) -> Void) { self.handler = handler }
    }

    private final class PublishBox: Sendable {
        let completion: @Sendable (Result<UInt64, Failure>) -> Void
        init(_ completion: @escaping @Sendable (Result<UInt64, Failure>) -> Void) { self.completion = completion }
    }

    /// Publishes a batch; `completion` runs once it is stored (or refused).
    /// - Throws: `Failure` when the kernel refuses the batch outright (then `completion` never runs).
    public func publish(
        _ topic: String, _ events: [CloudEvent], completion: @escaping @Sendable (Result<UInt64, Failure>) -> Void
    ) throws {
        let box = Unmanaged.passRetained(PublishBox(completion))
        let batch = CEventBatch(events)
        let (status, message) = withExtendedLifetime(batch) {
            withPXStr(topic) { topicStr in
                ErrorBuffer.with { err in
                    let status = HostServices.api.pointee.publish(
                        context.handle, topicStr, batch.pointers.baseAddress, batch.pointers.count,
                        { user, status, first, error in
                            guard let user else { return }
                            let box = Unmanaged<PublishBox>.fromOpaque(user).takeRetainedValue()
                            box.completion(
                                status == PX_OK.status
                                    ? .success(first) : .failure(Failure(status: status, message: error.string)))
                        }, box.toOpaque(), err)
                    return (status, ErrorBuffer.text(err))
                }
            }
        }
        if status != PX_OK.status {
            box.release()
            throw Failure(status: status, message: message)
        }
    }

    /// Publishes and waits (at most `timeout` seconds) until the batch is stored.
    @discardableResult
    public func publishAndWait(_ topic: String, _ events: [CloudEvent], timeout: Double = 10) throws -> UInt64 {
        let result = Mutex<Result<UInt64, Failure>?>(nil)
        let done = DispatchSemaphore(value: 0)
        try publish(topic, events) { outcome in
            result.withLock { $0 = outcome }
            done.signal()
        }
        guard done.wait(timeout: .now() + timeout) == .success, let outcome = result.withLock({ $0 }) else {
            throw Failure(
                status: PX_ERR_TIMEOUT.status, message: "the publish was not acknowledged within \(timeout) s")
        }
        return try outcome.get()
    }

    /// Subscribes; `handler` gets each delivery (on a kernel thread) and must `ack` or `nack` it.
    public func subscribe(
        topic: String, group: String, options: Options = Options(), handler: @escaping @Sendable (Delivery) -> Void
    ) throws -> UInt64 {
        let box = Unmanaged.passRetained(HandlerBox(handler))
        var strings: [UnsafeMutablePointer<CChar>?] = []
        defer { strings.forEach { free($0) } }
        func str(_ s: String?) -> px_str {
            guard let s else { return px_str(ptr: nil, len: 0) }
            let copy = strdup(s)
            strings.append(copy)
            return px_str(ptr: copy, len: s.utf8.count)
        }
        let kvs = options.filters.map { px_kv(key: str($0.key), value: str($0.value)) }
        var spec = px_subscription_spec()
        spec.struct_size = UInt32(MemoryLayout<px_subscription_spec>.size)
        spec.group_mode = UInt32(options.broadcast ? PX_GROUP_BROADCAST.rawValue : PX_GROUP_CLUSTERING.rawValue)
        spec.topic = str(topic)
        spec.group = str(group)
        spec.retry = options.retry
        spec.backoff_policy = UInt32(
            options.linearBackoff ? PX_BACKOFF_LINEAR.rawValue : PX_BACKOFF_EXPONENTIAL.rawValue)
        spec.backoff_delay_ms = options.backoffDelayMs
        spec.backoff_max_ms = options.backoffMaxMs
        spec.timeout_ms = options.timeoutMs
        spec.dead_letter_topic = str(options.deadLetterTopic)
        spec.ordered = options.ordered ? 1 : 0
        spec.max_in_flight = options.maxInFlight
        spec.start_position = UInt32(options.start.rawValue)
        spec.start_offset = options.startOffset
        spec.user = box.toOpaque()
        spec.deliver = { user, delivery in
            guard let user, let delivery, let record = delivery.pointee.record, let event = record.pointee.event
            else { return }
            Unmanaged<HandlerBox>.fromOpaque(user).takeUnretainedValue().handler(
                Delivery(
                    deliveryID: delivery.pointee.delivery_id, subscriptionID: delivery.pointee.subscription_id,
                    attempt: delivery.pointee.attempt, offset: record.pointee.offset,
                    topic: delivery.pointee.topic.string,
                    event: CloudEvent(copying: event)))
        }
        var id: UInt64 = 0
        let (status, message) = kvs.withUnsafeBufferPointer { buffer in
            spec.filters = buffer.baseAddress
            spec.filter_count = buffer.count
            return ErrorBuffer.with { err in
                (HostServices.api.pointee.subscribe(context.handle, &spec, &id, err), ErrorBuffer.text(err))
            }
        }
        guard status == PX_OK.status else {
            box.release()
            throw Failure(status: status, message: message)
        }
        handlers.withLock { $0[id] = box }
        return id
    }

    /// Ends a subscription; after it returns its handler does not run (unless called from the handler).
    @discardableResult
    public func unsubscribe(_ id: UInt64) -> px_status {
        let status = HostServices.api.pointee.unsubscribe(context.handle, id)
        handlers.withLock { $0.removeValue(forKey: id) }?.release()
        return status
    }

    @discardableResult
    public func ack(_ delivery: Delivery) -> px_status {
        HostServices.api.pointee.ack(context.handle, delivery.deliveryID)
    }

    @discardableResult
    public func nack(_ delivery: Delivery, deadLetter: Bool = false, reason: String = "") -> px_status {
        withPXStr(reason) {
            HostServices.api.pointee.nack(
                context.handle, delivery.deliveryID,
                deadLetter ? PX_NACK_DEAD_LETTER.rawValue : PX_NACK_RETRY.rawValue, $0)
        }
    }

    /// Ends every subscription of this client.
    public func close() {
        for id in handlers.withLock({ Array($0.keys) }) { unsubscribe(id) }
    }
}
