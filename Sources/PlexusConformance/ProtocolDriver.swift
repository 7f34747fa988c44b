import Foundation
import PlexusClient
import PlexusCore
import Synchronization

/// How a protocol refused a request, in its own terms (`HTTP 400 …`, `refused (status 1)`).
struct Refusal: Sendable, CustomStringConvertible {
    var description: String
}

/// One delivery as a protocol's client received it.
struct DriverDelivery: Sendable {
    var event: CloudEvent
    /// The attempt, when the protocol says it.
    var attempt: UInt32?
    /// The id to settle it with.
    var id: UInt64
}

/// A subscription through a protocol's client.
protocol DriverSubscription: Sendable {
    /// The next delivery, or `nil` when none came within `timeout`.
    func next(timeout: Duration) async throws -> DriverDelivery?
    func ack(_ delivery: DriverDelivery) async throws
    func nack(_ delivery: DriverDelivery) async throws
    func cancel() async
}

/// A client of one protocol, as the protocol suite drives it: one body of scenarios, one small driver per
/// protocol.
protocol ProtocolDriver: Sendable {
    var name: String { get }
    /// Publishes events in order; `nil` when the node stored them, else the protocol's refusal.
    /// - Throws: when the connection failed (not a refusal).
    func publish(topic: String, _ events: [CloudEvent]) async throws -> Refusal?
    /// Subscribes from the earliest event (ordered: one in flight per partition key).
    func subscribe(topic: String, group: String, ordered: Bool) async throws -> any DriverSubscription
    /// Sends input the protocol must refuse, in its own terms (an event without an id, a malformed topic).
    /// - Returns: what it was, and the refusal (`nil`: it was accepted).
    func publishInvalid(topic: String) async throws -> (what: String, refusal: Refusal?)
    func close() async
}

/// Deliveries received in the background, handed out by `next(timeout:)`.
final class DeliveryInbox: Sendable {
    private let queue = Mutex<(items: [DriverDelivery], ended: String?)>(([], nil))

    func put(_ delivery: DriverDelivery) { queue.withLock { $0.items.append(delivery) } }
    func end(_ reason: String) { queue.withLock { $0.ended = $0.ended ?? reason } }

    func next(timeout: Duration) async throws -> DriverDelivery? {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (item, ended) = queue.withLock { q -> (DriverDelivery?, String?) in
                q.items.isEmpty ? (nil, q.ended) : (q.items.removeFirst(), nil)
            }
            if let item { return item }
            if let ended { throw Violation("the subscription ended: \(ended)") }
            if ContinuousClock.now >= deadline { return nil }
            try await Task.sleep(for: .milliseconds(2))
        }
    }
}

// MARK: TCP

/// The TCP protocol through `PlexusClient`.
final class TCPDriver: ProtocolDriver {
    let name = "tcp"
    let client: PlexusClient

    init(port: Int) async throws {
        var configuration = ClientConfiguration()
        configuration.host = "127.0.0.1"
        configuration.port = port
        configuration.reconnect = false
        client = try await PlexusClient.connect(configuration)
    }

    func publish(topic: String, _ events: [CloudEvent]) async throws -> Refusal? {
        do {
            _ = try await client.publish(topic: topic, events)
            return nil
        } catch let error as PlexusClientError where error.code == .refused {
            return Refusal(description: "\(error)")
        }
    }

    func subscribe(topic: String, group: String, ordered: Bool) async throws -> any DriverSubscription {
        let inbox = DeliveryInbox()
        let received = TCPSubscription.Unsettled()
        let subscription = try await client.subscribe(
            topic: topic,
            options: SubscribeOptions(group: group, start: .earliest, ordered: ordered, backoffDelayMs: 50)
        ) { event in
            received.events.withLock { $0[event.deliveryID] = event }
            inbox.put(DriverDelivery(event: event.event, attempt: event.attempt, id: event.deliveryID))
        }
        return TCPSubscription(subscription: subscription, inbox: inbox, received: received)
    }

    func publishInvalid(topic: String) async throws -> (what: String, refusal: Refusal?) {
        let bad = "conformance//bad\\topic"
        let refusal = try await publish(topic: bad, [CloudEvent(id: "bad-1", source: "/s", type: "t")])
        return ("a publish to the malformed topic name '\(bad)'", refusal)
    }

    func close() async { await client.close(timeout: .seconds(2)) }
}

final class TCPSubscription: DriverSubscription {
    let subscription: ClientSubscription
    let inbox: DeliveryInbox
    let received: Unsettled

    /// Deliveries received and not yet settled, by id.
    final class Unsettled: Sendable {
        let events = Mutex<[UInt64: ReceivedEvent]>([:])
    }

    init(subscription: ClientSubscription, inbox: DeliveryInbox, received: Unsettled) {
        self.subscription = subscription
        self.inbox = inbox
        self.received = received
    }

    func next(timeout: Duration) async throws -> DriverDelivery? { try await inbox.next(timeout: timeout) }

    func ack(_ delivery: DriverDelivery) async throws {
        received.events.withLock { $0.removeValue(forKey: delivery.id) }?.ack()
    }

    func nack(_ delivery: DriverDelivery) async throws {
        received.events.withLock { $0.removeValue(forKey: delivery.id) }?.nack(reason: "conformance nack")
    }

    func cancel() async { await subscription.cancel() }
}
