import CNats
import PlexusPluginSDK

/// Reads a JetStream stream through a durable pull consumer (explicit acks): a fetched batch is acknowledged
/// only after the node acknowledged its publish; what was fetched but not acknowledged when the connector
/// stops is nacked (redelivered at once), and after a crash the server redelivers it when `ackWaitMs`
/// expires. Delivery into the topic is at-least-once, in stream order.
final class JetStreamSource: SourceDriver, @unchecked Sendable {
    // Safe: `SourceConnector` calls a driver from its one thread only.
    let options: NATSOptions
    private var connection: NATSConnection?
    private var subscription: OpaquePointer?
    /// The messages of the batch handed out and not yet acknowledged.
    private var held = natsMsgList()

    init(options: NATSOptions) { self.options = options }

    func connect(position: [UInt8]?) throws {
        let connection = try NATSConnection(url: options.url, timeoutMs: options.timeoutMs, name: options.durable)
        try connection.ensureStream(options.stream, subject: options.subject)
        var subOptions = jsSubOptions()
        jsSubOptions_Init(&subOptions)
        var subscription: OpaquePointer?
        var code = jsErrCode(rawValue: 0)
        let status = options.stream.withCString { stream in
            subOptions.Stream = stream
            subOptions.Config.AckPolicy = js_AckExplicit
            subOptions.Config.AckWait = Int64(options.ackWaitMs) * 1_000_000
            return js_PullSubscribe(
                &subscription, connection.jetStream, options.subject, options.durable, nil, &subOptions, &code)
        }
        guard status == NATS_OK, let subscription else {
            throw NATSError(
                context: "pull consumer \(options.durable) on \(options.stream)", status: status, jetStream: code)
        }
        self.connection = connection
        self.subscription = subscription
    }

    func read(max: Int, wait: Duration) throws -> SourceBatch {
        guard let connection, let subscription else {
            throw NATSError(context: options.stream, reason: "not connected")
        }
        try connection.checkConnected()
        let (seconds, attoseconds) = wait.components
        let waitMs = Int64(seconds) * 1000 + attoseconds / 1_000_000_000_000_000
        var list = natsMsgList()
        var code = jsErrCode(rawValue: 0)
        let status = natsSubscription_Fetch(&list, subscription, Int32(max), Swift.max(1, waitMs), &code)
        if status == NATS_TIMEOUT {
            natsMsgList_Destroy(&list)
            // A fetch that times out also on a dead connection: tell the two apart.
            try connection.checkConnected()
            return SourceBatch(events: [], position: nil)
        }
        guard status == NATS_OK else {
            natsMsgList_Destroy(&list)
            throw NATSError(context: "fetch from \(options.durable)", status: status, jetStream: code)
        }
        var events: [CloudEvent] = []
        for index in 0..<Int(list.Count) {
            guard let message = list.Msgs[index] else { continue }
            var meta: UnsafeMutablePointer<jsMsgMetaData>?
            var fallback = "\(options.stream)-?"
            if natsMsg_GetMetaData(&meta, message) == NATS_OK, let meta {
                fallback = "\(options.stream)-\(meta.pointee.Sequence.Stream)"
                jsMsgMetaData_Destroy(meta)
            }
            events.append(NATSMessage.event(message, fallbackID: fallback))
        }
        // The framework releases (or abandons, stopping) a batch before it reads the next: nothing is held here.
        natsMsgList_Destroy(&held)
        held = list
        return SourceBatch(events: events, position: nil, handles: events.isEmpty ? [] : ["held"])
    }

    func published(_ batch: SourceBatch) throws {
        guard let connection else { throw NATSError(context: options.stream, reason: "not connected") }
        for index in 0..<Int(held.Count) {
            guard let message = held.Msgs[index] else { continue }
            let status = natsMsg_Ack(message, nil)
            guard status == NATS_OK else { throw NATSError(context: "ack on \(options.durable)", status: status) }
        }
        // The acks are on the server once it answered the flush's PING.
        try connection.flush()
        natsMsgList_Destroy(&held)
    }

    func disconnect() {
        // What was handed out and never acknowledged: redelivered at once rather than after the ack wait.
        for index in 0..<Int(held.Count) {
            if let message = held.Msgs[index] { _ = natsMsg_Nak(message, nil) }
        }
        if let connection, held.Count > 0 { try? connection.flush() }
        natsMsgList_Destroy(&held)
        if let subscription { natsSubscription_Destroy(subscription) }
        subscription = nil
        connection = nil
    }
}

/// Subscribes to a core NATS subject. Core NATS keeps nothing: a message published while the connector is
/// not subscribed (stopped, disconnected) is never seen, and one received but not yet published into the
/// node when the process dies is lost. **At most once**, by the nature of core NATS; use JetStream for more.
final class CoreNATSSource: SourceDriver, @unchecked Sendable {
    // Safe: `SourceConnector` calls a driver from its one thread only.
    let options: NATSOptions
    private var connection: NATSConnection?
    private var subscription: OpaquePointer?
    private var counter: UInt64 = 0
    private let session = UInt64.random(in: 0...UInt64.max)

    init(options: NATSOptions) { self.options = options }

    func connect(position: [UInt8]?) throws {
        let connection = try NATSConnection(url: options.url, timeoutMs: options.timeoutMs, name: options.durable)
        var subscription: OpaquePointer?
        let status = natsConnection_SubscribeSync(&subscription, connection.connection, options.subject)
        guard status == NATS_OK, let subscription else {
            throw NATSError(context: "subscribe \(options.subject)", status: status)
        }
        try connection.flush()
        self.connection = connection
        self.subscription = subscription
    }

    func read(max: Int, wait: Duration) throws -> SourceBatch {
        guard let connection, let subscription else {
            throw NATSError(context: options.subject, reason: "not connected")
        }
        try connection.checkConnected()
        let (seconds, attoseconds) = wait.components
        var timeoutMs = Int64(seconds) * 1000 + attoseconds / 1_000_000_000_000_000
        var events: [CloudEvent] = []
        while events.count < max {
            var message: OpaquePointer?
            let status = natsSubscription_NextMsg(&message, subscription, events.isEmpty ? Swift.max(1, timeoutMs) : 0)
            if status == NATS_TIMEOUT { break }
            guard status == NATS_OK, let message else {
                throw NATSError(context: "next message on \(options.subject)", status: status)
            }
            counter += 1
            events.append(NATSMessage.event(message, fallbackID: "nats-\(String(session, radix: 16))-\(counter)"))
            natsMsg_Destroy(message)
            timeoutMs = 0
        }
        if events.isEmpty { try connection.checkConnected() }
        return SourceBatch(events: events, position: nil)
    }

    func disconnect() {
        if let subscription { natsSubscription_Destroy(subscription) }
        subscription = nil
        connection = nil
    }
}

/// A received NATS message as an event (see `MessageEvent`).
enum NATSMessage {
    static func event(_ message: OpaquePointer, fallbackID: String) -> CloudEvent {
        let subject = natsMsg_GetSubject(message).map { String(cString: $0) } ?? ""
        let length = Int(natsMsg_GetDataLength(message))
        let payload = natsMsg_GetData(message).map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
        return MessageEvent.event(subject: subject, payload: payload, fallbackID: fallbackID)
    }
}
