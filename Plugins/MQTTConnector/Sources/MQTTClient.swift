import CMosquitto
import PlexusPluginSDK

/// A failed MQTT call: what was attempted, against which broker, and libmosquitto's reason.
struct MQTTError: Error, CustomStringConvertible {
    var context: String
    var reason: String

    var description: String { "\(context): \(reason)" }

    init(context: String, reason: String) {
        self.context = context
        self.reason = reason
    }

    init(context: String, code: Int32) {
        self.context = context
        reason = String(cString: mosquitto_strerror(code))
    }
}

/// What libmosquitto's callbacks reported during `mosquitto_loop`, read back by the client on the same thread.
final class MQTTEvents: @unchecked Sendable {
    // Safe: the callbacks run inside `mosquitto_loop`, which only the thread that owns the client calls.
    var connack: Int32?
    var lost: Int32?
    var subscribed: Set<Int32> = []
    var acknowledged: Set<Int32> = []
    var messages: [(topic: String, payload: [UInt8])] = []
}

/// One libmosquitto client, driven without a thread of its own (`mosquitto_loop` on the caller's thread).
///
/// - Important: Not thread-safe: one thread owns a client (a source's thread, or one sink worker).
final class MQTTClient {
    private let handle: OpaquePointer
    private let events = MQTTEvents()
    private let box: Unmanaged<MQTTEvents>
    let broker: String
    let timeoutMs: Int

    /// `mosquitto_lib_init`, once per process.
    private static let initialized: Int32 = mosquitto_lib_init()

    /// Connects and waits for the broker's CONNACK.
    /// - Parameters:
    ///   - cleanSession: `false` keeps the session (subscriptions and queued QoS 1 messages) at the broker
    ///     across disconnections, under `clientID`.
    /// - Throws: `MQTTError` when the broker cannot be reached or refuses the connection.
    init(host: String, port: Int, clientID: String, cleanSession: Bool, keepAlive: Int, timeoutMs: Int) throws {
        _ = Self.initialized
        broker = "mqtt://\(host):\(port)"
        self.timeoutMs = timeoutMs
        box = Unmanaged.passRetained(events)
        guard let handle = mosquitto_new(clientID, cleanSession, box.toOpaque()) else {
            box.release()
            throw MQTTError(context: broker, reason: "mosquitto_new failed for client id '\(clientID)'")
        }
        self.handle = handle
        mosquitto_connect_callback_set(handle) { _, context, rc in
            guard let context else { return }
            Unmanaged<MQTTEvents>.fromOpaque(context).takeUnretainedValue().connack = rc
        }
        mosquitto_disconnect_callback_set(handle) { _, context, rc in
            guard let context else { return }
            Unmanaged<MQTTEvents>.fromOpaque(context).takeUnretainedValue().lost = rc
        }
        mosquitto_subscribe_callback_set(handle) { _, context, mid, _, _ in
            guard let context else { return }
            Unmanaged<MQTTEvents>.fromOpaque(context).takeUnretainedValue().subscribed.insert(mid)
        }
        mosquitto_publish_callback_set(handle) { _, context, mid in
            guard let context else { return }
            Unmanaged<MQTTEvents>.fromOpaque(context).takeUnretainedValue().acknowledged.insert(mid)
        }
        mosquitto_message_callback_set(handle) { _, context, message in
            guard let context, let message else { return }
            let m = message.pointee
            let topic = m.topic.map { String(cString: $0) } ?? ""
            let payload = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(m.payloadlen))) } ?? []
            Unmanaged<MQTTEvents>.fromOpaque(context).takeUnretainedValue().messages.append((topic, payload))
        }
        // From here on the instance is whole: a throw runs `deinit`, which disconnects and frees.
        let rc = mosquitto_connect(handle, host, Int32(port), Int32(keepAlive))
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(context: "connect to \(broker)", code: rc) }
        try loop(until: { self.events.connack != nil }, what: "CONNACK")
        if let refused = events.connack, refused != 0 {
            throw MQTTError(context: "connect to \(broker)", reason: String(cString: mosquitto_connack_string(refused)))
        }
    }

    deinit {
        mosquitto_disconnect(handle)
        mosquitto_destroy(handle)
        box.release()
    }

    /// Runs the network loop once, waiting at most `timeoutMs` for traffic.
    /// - Throws: `MQTTError` when the connection is lost.
    func poll(timeoutMs: Int) throws {
        let rc = mosquitto_loop(handle, Int32(max(0, timeoutMs)), 1)
        if rc != MOSQ_ERR_SUCCESS.rawValue { throw MQTTError(context: broker, code: rc) }
        if let lost = events.lost { throw MQTTError(context: broker, reason: "disconnected (\(lost))") }
    }

    /// Runs the network loop until `done` holds, at most `timeoutMs`.
    /// - Throws: `MQTTError` when the connection is lost or `what` did not come in time.
    func loop(until done: () -> Bool, what: String) throws {
        let deadline = ConnectorClock.nowMs() + UInt64(timeoutMs)
        while !done() {
            let now = ConnectorClock.nowMs()
            guard now < deadline else {
                throw MQTTError(context: broker, reason: "no \(what) within \(timeoutMs) ms")
            }
            try poll(timeoutMs: Int(min(100, deadline - now)))
        }
    }

    /// Subscribes at `qos` and waits for the SUBACK.
    func subscribe(_ filter: String, qos: Int32) throws {
        var mid: Int32 = 0
        let rc = mosquitto_subscribe(handle, &mid, filter, qos)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(context: "subscribe \(filter)", code: rc) }
        try loop(until: { self.events.subscribed.contains(mid) }, what: "SUBACK for \(filter)")
    }

    /// Sends a PUBLISH; its message id (QoS 1: acknowledged once `acknowledged(_:)` says so).
    func publish(_ topic: String, _ payload: [UInt8], qos: Int32) throws -> Int32 {
        var mid: Int32 = 0
        let rc = payload.withUnsafeBytes {
            mosquitto_publish(handle, &mid, topic, Int32($0.count), $0.baseAddress, qos, false)
        }
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(context: "publish to \(topic)", code: rc) }
        return mid
    }

    /// Whether the broker acknowledged (PUBACK) each of `mids`; forgets them when it did.
    func takeAcknowledged(_ mids: [Int32]) -> Bool {
        guard mids.allSatisfy(events.acknowledged.contains) else { return false }
        events.acknowledged.subtract(mids)
        return true
    }

    /// The messages received so far, removed from the client.
    func takeMessages() -> [(topic: String, payload: [UInt8])] {
        defer { events.messages.removeAll() }
        return events.messages
    }

    /// How many received messages wait to be taken.
    var receivedCount: Int { events.messages.count }
}
