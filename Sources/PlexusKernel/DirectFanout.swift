import PlexusCore
import Dispatch
import PlexusABI
import Synchronization

/// The event path before storage is bound: a publish is handed straight to every matching subscription,
/// with per-topic offsets kept in memory. Nothing is stored, so nothing survives a restart and there is no
/// redelivery; the router with storage bindings and the delivery contract replaces it (docs/delivery.md).
final class DirectFanout: Sendable {
    struct Subscription: Sendable {
        let id: UInt64
        let owner: ObjectIdentifier
        let topic: String
        let filters: [(String, String)]
        let queue: DispatchQueue
        let deliver: @Sendable (UnsafePointer<px_delivery>) -> Void
    }

    private struct State {
        var nextOffset: [String: UInt64] = [:]
        var subscriptions: [UInt64: Subscription] = [:]
        var outstanding: [UInt64: UInt64] = [:]  // delivery id -> subscription id
    }

    private static let currentSubscription = DispatchSpecificKey<UInt64>()
    private let state = Mutex(State())
    private let nextID = Atomic<UInt64>(1)

    /// Hands `events` to the subscribers of `topic`; returns the first offset assigned.
    func publish(topic: String, events: [CloudEvent]) -> UInt64 {
        let (first, targets) = state.withLock { s -> (UInt64, [Subscription]) in
            let first = s.nextOffset[topic, default: 0]
            s.nextOffset[topic] = first + UInt64(events.count)
            return (first, s.subscriptions.values.filter { $0.topic == topic })
        }
        for subscription in targets {
            for (index, event) in events.enumerated()
            where subscription.filters.allSatisfy({ event.attribute($0.0) == $0.1 }) {
                let deliveryID = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
                state.withLock { $0.outstanding[deliveryID] = subscription.id }
                let offset = first + UInt64(index)
                subscription.queue.async {
                    guard self.state.withLock({ $0.subscriptions[subscription.id] != nil }) else { return }
                    event.withCEvent { cEvent in
                        var record = px_record(
                            struct_size: UInt32(MemoryLayout<px_record>.size), reserved: 0, offset: offset,
                            append_time_ns: 0, event: cEvent)
                        withUnsafePointer(to: &record) { recordPointer in
                            withPXStr(topic) { topicStr in
                                var delivery = px_delivery(
                                    struct_size: UInt32(MemoryLayout<px_delivery>.size), attempt: 1,
                                    delivery_id: deliveryID, subscription_id: subscription.id, topic: topicStr,
                                    record: recordPointer)
                                withUnsafePointer(to: &delivery) { subscription.deliver($0) }
                            }
                        }
                    }
                }
            }
        }
        return first
    }

    func subscribe(owner: ObjectIdentifier, topic: String, filters: [(String, String)], deliver: @escaping @Sendable (UnsafePointer<px_delivery>) -> Void) -> UInt64 {
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let queue = DispatchQueue(label: "plexus.subscription.\(id)")
        queue.setSpecific(key: Self.currentSubscription, value: id)
        let subscription = Subscription(id: id, owner: owner, topic: topic, filters: filters, queue: queue, deliver: deliver)
        state.withLock { $0.subscriptions[id] = subscription }
        return id
    }

    /// Ends a subscription; waits for a running delivery unless called from inside one.
    @discardableResult
    func unsubscribe(_ id: UInt64) -> Bool {
        guard let subscription = state.withLock({ s -> Subscription? in
            s.outstanding = s.outstanding.filter { $0.value != id }
            return s.subscriptions.removeValue(forKey: id)
        }) else { return false }
        if DispatchQueue.getSpecific(key: Self.currentSubscription) != id { subscription.queue.sync {} }
        return true
    }

    func unsubscribeAll(owner: ObjectIdentifier) {
        let ids = state.withLock { $0.subscriptions.values.filter { $0.owner == owner }.map(\.id) }
        for id in ids { unsubscribe(id) }
    }

    /// Settles a delivery; false when the id is unknown or already settled.
    func settle(_ deliveryID: UInt64) -> Bool {
        state.withLock { $0.outstanding.removeValue(forKey: deliveryID) != nil }
    }
}
