import CNats
import Foundation
import PlexusBench
import PlexusCore

/// A real nats-server with JetStream (file storage in a temporary directory) on a free loopback port.
final class NATSServer: @unchecked Sendable {
    // Safe: used from the one test that owns it.
    let port: Int
    let directory: URL
    private let server: ServerProcess

    var url: String { "nats://127.0.0.1:\(port)" }

    init() throws {
        guard
            let executable = which("nats-server")
                ?? ["/usr/sbin/nats-server"].first(where: FileManager.default.fileExists)
        else {
            throw HarnessError(description: "nats-server is not installed: run scripts/interop-deps")
        }
        port = try LoopbackPorts.free(1)[0]
        directory = try Repository.temporaryDirectory("plexus-nats")
        // nats-server (a Go program) unblocks the signals it handles itself: SIGTERM stops it cleanly.
        server = ServerProcess(
            executable: executable,
            arguments: ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", directory.path],
            log: directory.appendingPathComponent("nats.log"), stopSignal: SIGTERM)
        try start()
    }

    func start() throws {
        try server.start()
        let ready = Wait.until(seconds: 10) { (try? NATSTestClient(url: url)) != nil }
        guard ready else { throw HarnessError(description: "nats-server did not start:\n\(server.output)") }
    }

    func stop() { server.stop() }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// A plain libnats client for the tests (libnats reconnects it by itself after the server restarts).
final class NATSTestClient: @unchecked Sendable {
    // Safe: used from the one test that owns it; libnats's calls used here are thread-safe.
    let connection: OpaquePointer
    let jetStream: OpaquePointer
    private var subscription: OpaquePointer?

    init(url: String) throws {
        var options: OpaquePointer?
        guard natsOptions_Create(&options) == NATS_OK, let options else {
            throw HarnessError(description: "natsOptions_Create failed")
        }
        defer { natsOptions_Destroy(options) }
        natsOptions_SetURL(options, url)
        natsOptions_SetMaxReconnect(options, -1)
        natsOptions_SetReconnectWait(options, 100)
        var connection: OpaquePointer?
        let status = natsConnection_Connect(&connection, options)
        guard status == NATS_OK, let connection else {
            throw HarnessError(description: "cannot connect to \(url): \(String(cString: natsStatus_GetText(status)))")
        }
        var js: OpaquePointer?
        guard natsConnection_JetStream(&js, connection, nil) == NATS_OK, let js else {
            natsConnection_Destroy(connection)
            throw HarnessError(description: "no JetStream context")
        }
        self.connection = connection
        jetStream = js
    }

    deinit {
        if let subscription { natsSubscription_Destroy(subscription) }
        jsCtx_Destroy(jetStream)
        natsConnection_Destroy(connection)
    }

    /// Creates a stream over `subject` (file storage).
    func addStream(_ name: String, subject: String) throws {
        var config = jsStreamConfig()
        jsStreamConfig_Init(&config)
        var code = jsErrCode(rawValue: 0)
        let status = name.withCString { n in
            subject.withCString { s in
                var subjects: [UnsafePointer<CChar>?] = [s]
                return subjects.withUnsafeMutableBufferPointer { buffer in
                    config.Name = n
                    config.Subjects = buffer.baseAddress
                    config.SubjectsLen = 1
                    return js_AddStream(nil, jetStream, &config, nil, &code)
                }
            }
        }
        guard status == NATS_OK else { throw HarnessError(description: "cannot add stream \(name): \(code.rawValue)") }
    }

    /// Publishes each payload to JetStream, waiting for its PubAck.
    func publishToStream(_ subject: String, _ payloads: [[UInt8]]) throws {
        for payload in payloads {
            var code = jsErrCode(rawValue: 0)
            let status = payload.withUnsafeBytes {
                js_Publish(nil, jetStream, subject, $0.baseAddress, Int32($0.count), nil, &code)
            }
            guard status == NATS_OK else {
                throw HarnessError(description: "JetStream publish failed: \(code.rawValue)")
            }
        }
    }

    /// Publishes each payload with core NATS, then flushes.
    func publish(_ subject: String, _ payloads: [[UInt8]]) throws {
        for payload in payloads {
            _ = payload.withUnsafeBytes {
                natsConnection_Publish(connection, subject, $0.baseAddress, Int32($0.count))
            }
        }
        guard natsConnection_FlushTimeout(connection, 5000) == NATS_OK else {
            throw HarnessError(description: "flush failed")
        }
    }

    /// Every message a stream holds, in order, as events (an ephemeral ordered read through `js_GetMsg`).
    func streamEvents(_ stream: String) throws -> [CloudEvent] {
        var events: [CloudEvent] = []
        var sequence: UInt64 = 1
        while true {
            var message: OpaquePointer?
            var code = jsErrCode(rawValue: 0)
            let status = js_GetMsg(&message, jetStream, stream, sequence, nil, &code)
            if status == NATS_NOT_FOUND || code == JSNoMessageFoundErr { break }
            guard status == NATS_OK, let message else {
                throw HarnessError(description: "js_GetMsg \(stream) #\(sequence): \(code.rawValue)")
            }
            let length = Int(natsMsg_GetDataLength(message))
            let bytes = natsMsg_GetData(message).map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
            natsMsg_Destroy(message)
            if let event = try? CloudEventJSON.decode(bytes) { events.append(event) }
            sequence += 1
        }
        return events
    }

    /// Subscribes (core NATS) for `next`.
    func subscribe(_ subject: String) throws {
        var subscription: OpaquePointer?
        guard natsConnection_SubscribeSync(&subscription, connection, subject) == NATS_OK,
            natsConnection_FlushTimeout(connection, 5000) == NATS_OK
        else { throw HarnessError(description: "cannot subscribe to \(subject)") }
        self.subscription = subscription
    }

    /// The events that arrived on the subscription within `seconds`, up to `count`.
    func next(_ count: Int, seconds: Double = 10) -> [CloudEvent] {
        guard let subscription else { return [] }
        var events: [CloudEvent] = []
        let deadline = Date().addingTimeInterval(seconds)
        while events.count < count && Date() < deadline {
            var message: OpaquePointer?
            guard natsSubscription_NextMsg(&message, subscription, 100) == NATS_OK, let message else { continue }
            let length = Int(natsMsg_GetDataLength(message))
            let bytes = natsMsg_GetData(message).map { Array(UnsafeRawBufferPointer(start: $0, count: length)) } ?? []
            natsMsg_Destroy(message)
            if let event = try? CloudEventJSON.decode(bytes) { events.append(event) }
        }
        return events
    }

    /// Fetches `count` messages of `stream` through the durable pull consumer `durable` (filter `filter`, ack
    /// wait `ackWaitMs`, as the connector creates it) and acknowledges none: what a crashed reader leaves.
    func fetchWithoutAck(stream: String, filter: String, durable: String, ackWaitMs: Int, count: Int) throws {
        var options = jsSubOptions()
        jsSubOptions_Init(&options)
        var code = jsErrCode(rawValue: 0)
        var subscription: OpaquePointer?
        let status = stream.withCString { name in
            options.Stream = name
            options.Config.AckPolicy = js_AckExplicit
            options.Config.AckWait = Int64(ackWaitMs) * 1_000_000
            return js_PullSubscribe(&subscription, jetStream, filter, durable, nil, &options, &code)
        }
        guard status == NATS_OK, let subscription else {
            throw HarnessError(description: "pull subscribe \(durable): \(code.rawValue)")
        }
        defer { natsSubscription_Destroy(subscription) }
        var list = natsMsgList()
        guard natsSubscription_Fetch(&list, subscription, Int32(count), 5000, &code) == NATS_OK, list.Count == count
        else { throw HarnessError(description: "fetch of \(count) from \(durable) failed: \(code.rawValue)") }
        natsMsgList_Destroy(&list)
    }
}
