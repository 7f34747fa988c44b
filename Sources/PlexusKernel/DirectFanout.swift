import Dispatch
import PlexusABI
import PlexusCore
import Synchronization

/// The event path before storage is bound: a publish is handed straight to every matching subscription,
/// with per-topic offsets kept in memory. Nothing is stored, so nothing survives a restart and there is no
/// redelivery: an ack or a nack only settles a delivery. The router with storage bindings and the delivery
/// contract replaces it.
final class DirectFanout: Sendable {
    /// Unacknowledged deliveries a subscription may have before further events to it are dropped (and
    /// counted): a subscriber that never acknowledges cannot make the node run out of memory.
    static let maxUnacknowledged = 10_000

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
        /// delivery id -> subscription id
        var outstanding: [UInt64: UInt64] = [:]
        var unacknowledged: [UInt64: Int] = [:]
        var closedOwners: Set<ObjectIdentifier> = []
        var nextID: UInt64 = 1
    }

    private static let currentSubscription = DispatchSpecificKey<UInt64>()
    private let state = Mutex(State())

    /// Hands `events` to the subscribers of `topic`; returns the first offset assigned and how many
    /// deliveries were dropped because a subscriber had too many unacknowledged.
    func publish(topic: String, events: [CloudEvent]) -> (first: UInt64, dropped: Int) {
        state.withLock { s in
            let first = s.nextOffset[topic, default: 0]
            s.nextOffset[topic] = first + UInt64(events.count)
            var dropped = 0
            // Queued under the lock, so deliveries follow offset order even with concurrent publishers.
            for subscription in s.subscriptions.values where subscription.topic == topic {
                for (index, event) in events.enumerated()
                where subscription.filters.allSatisfy({ event.attribute($0.0) == $0.1 }) {
                    guard s.unacknowledged[subscription.id, default: 0] < Self.maxUnacknowledged else {
                        dropped += 1
                        continue
                    }
                    let deliveryID = s.nextID
                    s.nextID += 1
                    s.outstanding[deliveryID] = subscription.id
                    s.unacknowledged[subscription.id, default: 0] += 1
                    let offset = first + UInt64(index)
                    subscription.queue.async {
                        guard self.state.withLock({ $0.subscriptions[subscription.id] != nil }) else { return }
                        Self.deliver(event, topic: topic, offset: offset, deliveryID: deliveryID, to: subscription)
                    }
                }
            }
            return (first, dropped)
        }
    }

    private static func deliver(
        _ event: CloudEvent, topic: String, offset: UInt64, deliveryID: UInt64, to subscription: Subscription
    ) {
        event.withCEvent { cEvent in
            var record = px_record(
                struct_size: UInt32(MemoryLayout<px_record>.size), reserved: 0, offset: offset, append_time_ns: 0,
                event: cEvent)
            withUnsafePointer(to: &record) { recordPointer in
                withPXStr(topic) { topicStr in
                    var delivery = px_delivery(
                        struct_size: UInt32(MemoryLayout<px_delivery>.size), attempt: 1, delivery_id: deliveryID,
                        subscription_id: subscription.id, topic: topicStr, record: recordPointer)
                    withUnsafePointer(to: &delivery) { subscription.deliver($0) }
                }
            }
        }
    }

    /// A new subscription; `nil` when the owner is being torn down.
    func subscribe(
        owner: ObjectIdentifier, topic: String, filters: [(String, String)],
        deliver: @escaping @Sendable (UnsafePointer<px_delivery>) -> Void
    ) -> UInt64? {
        state.withLock { s in
            guard !s.closedOwners.contains(owner) else { return nil }
            let id = s.nextID
            s.nextID += 1
            let queue = DispatchQueue(label: "plexus.subscription.\(id)")
            queue.setSpecific(key: Self.currentSubscription, value: id)
            s.subscriptions[id] = Subscription(
                id: id, owner: owner, topic: topic, filters: filters, queue: queue, deliver: deliver)
            return id
        }
    }

    /// Ends one of `owner`'s subscriptions; waits for a running delivery unless called from inside one,
    /// or unless `wait` is false.
    @discardableResult
    func unsubscribe(_ id: UInt64, owner: ObjectIdentifier, wait: Bool = true) -> Bool {
        let removed = state.withLock { s -> Subscription? in
            guard s.subscriptions[id]?.owner == owner else { return nil }
            s.outstanding = s.outstanding.filter { $0.value != id }
            s.unacknowledged[id] = nil
            return s.subscriptions.removeValue(forKey: id)
        }
        guard let removed else { return false }
        if wait && DispatchQueue.getSpecific(key: Self.currentSubscription) != id { removed.queue.sync {} }
        return true
    }

    /// Ends every subscription of an owner and refuses it new ones.
    func unsubscribeAll(owner: ObjectIdentifier, wait: Bool) {
        let ids = state.withLock { s in
            s.closedOwners.insert(owner)
            return s.subscriptions.values.filter { $0.owner == owner }.map(\.id)
        }
        for id in ids { unsubscribe(id, owner: owner, wait: wait) }
    }

    /// Settles a delivery made to one of `owner`'s subscriptions; false when unknown or already settled.
    func settle(_ deliveryID: UInt64, owner: ObjectIdentifier) -> Bool {
        state.withLock { s in
            guard let subscription = s.outstanding[deliveryID], s.subscriptions[subscription]?.owner == owner else {
                return false
            }
            s.outstanding[deliveryID] = nil
            s.unacknowledged[subscription, default: 1] -= 1
            return true
        }
    }
}
