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
    public typealias Options = SubscriptionOptions

    let context: PluginContext
    private let handlers = Mutex<[UInt64: Unmanaged<HandlerBox>]>([:])

    public init(kernel: Kernel, name: String = "local-client") {
        context = PluginContext(name: name, logger: kernel.logger, services: kernel.services)
    }

    private final class HandlerBox: Sendable {
        let handler: @Sendable (UnsafePointer<px_delivery>) -> Void
        init(_ handler: @escaping @Sendable (UnsafePointer<px_delivery>) -> Void) { self.handler = handler }
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
        try publish(topic, batch: CEventBatch(events), completion: completion)
    }

    /// Publishes events already laid out in C (as a protocol plugin lays them over its receive buffer); the
    /// batch may be published again.
    /// - Throws: `Failure` when the kernel refuses the batch outright (then `completion` never runs).
    public func publish(
        _ topic: String, batch: CEventBatch, completion: @escaping @Sendable (Result<UInt64, Failure>) -> Void
    ) throws {
        let box = Unmanaged.passRetained(PublishBox(completion))
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

    /// Subscribes; `handler` gets each delivery (on a kernel thread), copied out of the kernel's borrowed
    /// one, and must `ack` or `nack` it.
    public func subscribe(
        topic: String, group: String, options: Options = Options(), handler: @escaping @Sendable (Delivery) -> Void
    ) throws -> UInt64 {
        try subscribeBorrowing(topic: topic, group: group, options: options) { delivery in
            guard let record = delivery.pointee.record, let event = record.pointee.event else { return }
            handler(
                Delivery(
                    deliveryID: delivery.pointee.delivery_id, subscriptionID: delivery.pointee.subscription_id,
                    attempt: delivery.pointee.attempt, offset: record.pointee.offset,
                    topic: delivery.pointee.topic.string, event: CloudEvent(copying: event)))
        }
    }

    /// Subscribes; `handler` gets each delivery as the kernel lends it, as a plugin's `px_deliver_fn` does,
    /// and must `ack(deliveryID:)` or `nack` it.
    ///
    /// - Important: The delivery and everything it points at are valid only during the call.
    public func subscribeBorrowing(
        topic: String, group: String, options: Options = Options(),
        handler: @escaping @Sendable (UnsafePointer<px_delivery>) -> Void
    ) throws -> UInt64 {
        let box = Unmanaged.passRetained(HandlerBox(handler))
        var options = options
        options.group = group
        var id: UInt64 = 0
        let (status, message) = options.withSpec(topic: topic) { spec in
            spec.user = box.toOpaque()
            spec.deliver = { user, delivery in
                guard let user, let delivery else { return }
                Unmanaged<HandlerBox>.fromOpaque(user).takeUnretainedValue().handler(delivery)
            }
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

    /// Acknowledges a delivery by its id.
    @discardableResult
    public func ack(deliveryID: UInt64) -> px_status {
        HostServices.api.pointee.ack(context.handle, deliveryID)
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
