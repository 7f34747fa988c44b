import PlexusPluginSDK
import Synchronization

/// Subscribes at QoS 1 with a persistent session (clean session off, a fixed client id) and turns each message
/// into an event.
///
/// libmosquitto 2.0.11 (Debian's) has no manual acknowledgement (`mosquitto_manual_ack` is not in it): it
/// sends the PUBACK of a QoS 1 message itself while it reads the packet, before this driver sees it. So that a
/// message the broker no longer holds is not lost by a restart, each batch is written to a spool file in the instance's data
/// directory (atomically, fsync'd) before it is handed over for publishing, and cleared only once the node
/// acknowledged it; `connect` publishes a spooled batch first. What remains uncovered is a crash of the
/// process between libmosquitto's PUBACKs and the spool's fsync (at most the batch being read).
final class MQTTSource: SourceDriver, @unchecked Sendable {
    // Safe: `SourceConnector` calls a driver from its one thread only.
    let options: MQTTOptions
    let spool: FilePositionStore
    private var client: MQTTClient?
    private var spooled: [CloudEvent] = []
    private var counter: UInt64 = 0
    private let session = UInt64.random(in: 0...UInt64.max)

    init(options: MQTTOptions, dataDirectory: String) throws {
        self.options = options
        spool = try FilePositionStore(directory: dataDirectory, name: "mqtt-spool")
    }

    func connect(position: [UInt8]?) throws {
        let client = try MQTTClient(
            host: options.host, port: options.port, clientID: options.clientID, cleanSession: false,
            keepAlive: options.keepAlive, timeoutMs: options.timeoutMs)
        try client.subscribe(options.mqttTopic, qos: 1)
        if let bytes = try spool.load(), !bytes.isEmpty {
            do {
                spooled = try CloudEventJSON.decodeBatch(bytes)
            } catch {
                throw MQTTError(context: "the spool \(spool.path)", reason: "unreadable: \(error)")
            }
        }
        // The SUBACK's loop may already have received messages: they are spooled with the next read.
        self.client = client
    }

    func read(max: Int, wait: Duration) throws -> SourceBatch {
        if !spooled.isEmpty {
            defer { spooled = [] }
            return SourceBatch(events: spooled, position: nil, handles: ["spool"])
        }
        guard let client else { throw MQTTError(context: options.mqttTopic, reason: "not connected") }
        let (seconds, attoseconds) = wait.components
        let waitMs = Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000)
        let deadline = ConnectorClock.nowMs() + UInt64(Swift.max(1, waitMs))
        // Every message received is spooled below, so the loop stops reading once a batch is full; after the
        // first message it only takes what is already there.
        while client.receivedCount < max {
            let before = client.receivedCount
            if before == 0 {
                let now = ConnectorClock.nowMs()
                if now >= deadline { break }
                try client.poll(timeoutMs: Int(deadline - now))
            } else {
                try client.poll(timeoutMs: 0)
                if client.receivedCount == before { break }
            }
        }
        let messages = client.takeMessages()
        if messages.isEmpty { return SourceBatch(events: [], position: nil) }
        let events = messages.map { message in
            counter += 1
            return MessageEvent.event(
                topic: message.topic, payload: message.payload,
                fallbackID: "mqtt-\(String(session, radix: 16))-\(counter)")
        }
        try spool.save(MessageEvent.batch(events))
        return SourceBatch(events: events, position: nil, handles: ["spool"])
    }

    func published(_ batch: SourceBatch) throws {
        try spool.save([])
    }

    func disconnect() { client = nil }
}
