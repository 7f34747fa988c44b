import PlexusPluginSDK

/// Publishes each event at QoS 1 as a CloudEvents JSON payload; a batch is acknowledged once the broker
/// acknowledged (PUBACK) every message of it.
final class MQTTSink: SinkDriver, @unchecked Sendable {
    // Safe: `SinkConnector` calls a driver for worker `w` from that worker's thread only, and each worker
    // has its own slot of `clients`, allocated before the workers start and never resized.
    let options: MQTTOptions
    private let clients: UnsafeMutableBufferPointer<MQTTClient?>

    init(options: MQTTOptions, workers: Int) {
        self.options = options
        clients = .allocate(capacity: workers)
        clients.initialize(repeating: nil)
    }

    deinit {
        _ = clients.deinitialize()
        clients.deallocate()
    }

    func connect(worker: Int) throws {
        clients[worker] = try MQTTClient(
            host: options.host, port: options.port, clientID: "\(options.clientID)-\(worker)", cleanSession: true,
            keepAlive: options.keepAlive, timeoutMs: options.timeoutMs)
    }

    func write(worker: Int, _ batch: [Delivery]) throws {
        guard let client = clients[worker] else { throw MQTTError(context: options.mqttTopic, reason: "not connected") }
        var mids: [Int32] = []
        mids.reserveCapacity(batch.count)
        for delivery in batch {
            mids.append(try client.publish(options.mqttTopic, MessageEvent.payload(of: delivery.event), qos: 1))
        }
        try client.loop(until: { client.takeAcknowledged(mids) }, what: "PUBACK of \(batch.count) messages")
    }

    func disconnect(worker: Int) { clients[worker] = nil }
}
