import CNats
import PlexusPluginSDK

/// Publishes each event as a CloudEvents JSON payload on `subject`. Core NATS: a batch is published, then
/// flushed (the server has read every message of it) before it is acknowledged. JetStream: each message is
/// published with its event id as `Nats-Msg-Id` and acknowledged after the stream's PubAck, so a batch written
/// again after a failure is deduplicated by the stream (within its duplicate window, two minutes by default).
final class NATSSink: SinkDriver, @unchecked Sendable {
    // Safe: `SinkConnector` calls a driver for worker `w` from that worker's thread only, and each worker
    // has its own slot of `connections`, allocated before the workers start and never resized.
    let options: NATSOptions
    private let connections: UnsafeMutableBufferPointer<NATSConnection?>

    init(options: NATSOptions, workers: Int) {
        self.options = options
        connections = .allocate(capacity: workers)
        connections.initialize(repeating: nil)
    }

    deinit {
        _ = connections.deinitialize()
        connections.deallocate()
    }

    func connect(worker: Int) throws {
        let connection = try NATSConnection(
            url: options.url, timeoutMs: options.timeoutMs, name: "\(options.durable)-\(worker)")
        if options.jetStream { try connection.ensureStream(options.stream, subject: options.subject) }
        connections[worker] = connection
    }

    func write(worker: Int, _ batch: [Delivery]) throws {
        guard let connection = connections[worker] else {
            throw NATSError(context: options.subject, reason: "not connected")
        }
        try connection.checkConnected()
        for delivery in batch {
            let payload = MessageEvent.payload(of: delivery.event)
            if options.jetStream {
                try publishToStream(connection, payload, id: delivery.event.id)
            } else {
                let status = payload.withUnsafeBytes {
                    natsConnection_Publish(connection.connection, options.subject, $0.baseAddress, Int32($0.count))
                }
                guard status == NATS_OK else { throw NATSError(context: "publish \(options.subject)", status: status) }
            }
        }
        if !options.jetStream { try connection.flush() }
    }

    private func publishToStream(_ connection: NATSConnection, _ payload: [UInt8], id: String) throws {
        var pubOptions = jsPubOptions()
        jsPubOptions_Init(&pubOptions)
        var ack: UnsafeMutablePointer<jsPubAck>?
        var code = jsErrCode(rawValue: 0)
        let status = id.withCString { msgID in
            pubOptions.MsgId = msgID
            pubOptions.MaxWait = Int64(options.timeoutMs)
            return payload.withUnsafeBytes {
                js_Publish(
                    &ack, connection.jetStream, options.subject, $0.baseAddress, Int32($0.count), &pubOptions, &code)
            }
        }
        if let ack { jsPubAck_Destroy(ack) }
        guard status == NATS_OK else {
            throw NATSError(context: "JetStream publish \(options.subject)", status: status, jetStream: code)
        }
    }

    func disconnect(worker: Int) { connections[worker] = nil }
}
