import CNats
import Foundation
import PlexusBench

/// nats-server (Debian's 2.9) with JetStream on a free loopback port, its file storage in `directory`. Its
/// file store syncs lazily (2.9 has no `sync_interval`): a PubAck means stored, not fsync'd.
final class NATSServer {
    let port: Int
    let server: ServerProcess

    var url: String { "nats://127.0.0.1:\(port)" }

    init(directory: String) throws {
        guard
            let executable = which("nats-server")
                ?? ["/usr/sbin/nats-server"].first(where: FileManager.default.isExecutableFile)
        else { throw BenchFailure("nats-server is not installed: run scripts/interop-deps") }
        port = try LoopbackPorts.one()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        // A Go program: it unblocks the signals it handles, so SIGTERM stops it cleanly.
        server = try ServerProcess(
            [executable, "-js", "-a", "127.0.0.1", "-p", String(port), "-sd", directory + "/store"],
            log: directory + "/nats.log", stopSignal: SIGTERM)
        guard waitUntil(seconds: 10, { (try? NATSBenchClient(url: url)) != nil }) else {
            throw BenchFailure("nats-server did not start (see \(directory)/nats.log)")
        }
    }

    deinit { server.stop() }
}

/// A plain libnats client: the baseline publisher (JetStream: one `js_Publish` per message with its
/// `Nats-Msg-Id`, each waiting for its PubAck, as the sink publishes), and the stream set-up and checks.
final class NATSBenchClient {
    let connection: OpaquePointer
    let jetStream: OpaquePointer

    init(url: String) throws {
        var options: OpaquePointer?
        guard natsOptions_Create(&options) == NATS_OK, let options else {
            throw BenchFailure("natsOptions_Create failed")
        }
        defer { natsOptions_Destroy(options) }
        natsOptions_SetURL(options, url)
        natsOptions_SetAllowReconnect(options, false)
        var connection: OpaquePointer?
        let status = natsConnection_Connect(&connection, options)
        guard status == NATS_OK, let connection else {
            throw BenchFailure("cannot connect to \(url): \(String(cString: natsStatus_GetText(status)))")
        }
        var js: OpaquePointer?
        var jsOptions = jsOptions()
        jsOptions_Init(&jsOptions)
        jsOptions.Wait = 5000
        guard natsConnection_JetStream(&js, connection, &jsOptions) == NATS_OK, let js else {
            natsConnection_Destroy(connection)
            throw BenchFailure("no JetStream context on \(url)")
        }
        self.connection = connection
        jetStream = js
    }

    deinit {
        jsCtx_Destroy(jetStream)
        natsConnection_Close(connection)
        natsConnection_Destroy(connection)
    }

    /// Creates a stream over `subject` with file storage (as the connector creates its own).
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
                    config.Storage = js_FileStorage
                    return js_AddStream(nil, jetStream, &config, nil, &code)
                }
            }
        }
        guard status == NATS_OK else { throw BenchFailure("cannot add stream \(name): \(code.rawValue)") }
    }

    /// How many messages `stream` holds.
    func count(_ stream: String) throws -> Int {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        guard js_GetStreamInfo(&info, jetStream, stream, nil, &code) == NATS_OK, let info else {
            throw BenchFailure("no stream info for \(stream): \(code.rawValue)")
        }
        defer { jsStreamInfo_Destroy(info) }
        return Int(info.pointee.State.Msgs)
    }

    /// Publishes each payload to JetStream with its message id, waiting for each PubAck (the sink's way).
    func publishToStream(_ subject: String, _ messages: ArraySlice<(id: String, payload: [UInt8])>) throws {
        for message in messages {
            var pubOptions = jsPubOptions()
            jsPubOptions_Init(&pubOptions)
            var ack: UnsafeMutablePointer<jsPubAck>?
            var code = jsErrCode(rawValue: 0)
            let status = message.id.withCString { msgID in
                pubOptions.MsgId = msgID
                pubOptions.MaxWait = 5000
                return message.payload.withUnsafeBytes {
                    js_Publish(&ack, jetStream, subject, $0.baseAddress, Int32($0.count), &pubOptions, &code)
                }
            }
            if let ack { jsPubAck_Destroy(ack) }
            guard status == NATS_OK else { throw BenchFailure("JetStream publish to \(subject): \(code.rawValue)") }
        }
    }

    /// Publishes each payload with core NATS, then flushes (the core sink's way per batch).
    func publish(_ subject: String, _ payloads: ArraySlice<[UInt8]>) throws {
        for payload in payloads {
            let status = payload.withUnsafeBytes {
                natsConnection_Publish(connection, subject, $0.baseAddress, Int32($0.count))
            }
            guard status == NATS_OK else { throw BenchFailure("publish to \(subject) failed") }
        }
        guard natsConnection_FlushTimeout(connection, 5000) == NATS_OK else {
            throw BenchFailure("flush to \(subject) failed")
        }
    }
}
