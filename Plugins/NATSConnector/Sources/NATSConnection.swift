import CNats
import PlexusPluginSDK

/// A failed NATS call: what was attempted, against which server, and libnats's reason.
struct NATSError: Error, CustomStringConvertible {
    var context: String
    var reason: String

    var description: String { "\(context): \(reason)" }

    init(context: String, reason: String) {
        self.context = context
        self.reason = reason
    }

    /// From a libnats status (and JetStream's error code when there is one), with the thread's last error text.
    init(context: String, status: natsStatus, jetStream code: jsErrCode = jsErrCode(rawValue: 0)) {
        self.context = context
        var text = String(cString: natsStatus_GetText(status))
        if let last = nats_GetLastError(nil), last.pointee != 0 {
            let detail = String(cString: last)
            if detail != text { text += " (\(detail))" }
        }
        if code.rawValue != 0 { text += " [JetStream error \(code.rawValue)]" }
        reason = text
    }
}

/// One connection to a NATS server (and its JetStream context), without automatic reconnection: a lost
/// connection fails the next call, and the connector framework connects afresh (and reports it unhealthy).
///
/// - Important: One thread at a time (a source's thread, or one sink worker); libnats's own threads read
///   the socket.
final class NATSConnection {
    let connection: OpaquePointer
    let jetStream: OpaquePointer
    let url: String
    let timeoutMs: Int

    init(url: String, timeoutMs: Int, name: String) throws {
        self.url = url
        self.timeoutMs = timeoutMs
        var options: OpaquePointer?
        var status = natsOptions_Create(&options)
        guard status == NATS_OK, let options else { throw NATSError(context: url, status: status) }
        defer { natsOptions_Destroy(options) }
        natsOptions_SetURL(options, url)
        natsOptions_SetTimeout(options, Int64(timeoutMs))
        natsOptions_SetName(options, name)
        natsOptions_SetAllowReconnect(options, false)
        var connection: OpaquePointer?
        status = natsConnection_Connect(&connection, options)
        guard status == NATS_OK, let connection else { throw NATSError(context: "connect to \(url)", status: status) }
        var js: OpaquePointer?
        var jsOptions = jsOptions()
        jsOptions_Init(&jsOptions)
        jsOptions.Wait = Int64(timeoutMs)
        status = natsConnection_JetStream(&js, connection, &jsOptions)
        guard status == NATS_OK, let js else {
            natsConnection_Destroy(connection)
            throw NATSError(context: "JetStream context on \(url)", status: status)
        }
        self.connection = connection
        jetStream = js
    }

    deinit {
        jsCtx_Destroy(jetStream)
        natsConnection_Close(connection)
        natsConnection_Destroy(connection)
    }

    /// Throws unless the connection is up.
    func checkConnected() throws {
        let status = natsConnection_Status(connection)
        guard status == NATS_CONN_STATUS_CONNECTED else {
            throw NATSError(context: url, reason: "not connected (connection status \(status.rawValue))")
        }
    }

    /// Waits until the server processed everything sent so far (a PING answered by a PONG).
    func flush() throws {
        let status = natsConnection_FlushTimeout(connection, Int64(timeoutMs))
        guard status == NATS_OK else { throw NATSError(context: "flush to \(url)", status: status) }
    }

    /// Creates the JetStream stream `name` over `subject` (file storage) unless it exists.
    func ensureStream(_ name: String, subject: String) throws {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        var status = js_GetStreamInfo(&info, jetStream, name, nil, &code)
        if status == NATS_OK {
            jsStreamInfo_Destroy(info)
            return
        }
        guard status == NATS_NOT_FOUND else {
            throw NATSError(context: "stream info \(name)", status: status, jetStream: code)
        }
        var config = jsStreamConfig()
        jsStreamConfig_Init(&config)
        status = name.withCString { namePointer in
            subject.withCString { subjectPointer in
                var subjects: [UnsafePointer<CChar>?] = [subjectPointer]
                return subjects.withUnsafeMutableBufferPointer { buffer in
                    config.Name = namePointer
                    config.Subjects = buffer.baseAddress
                    config.SubjectsLen = 1
                    config.Storage = js_FileStorage
                    return js_AddStream(&info, jetStream, &config, nil, &code)
                }
            }
        }
        // Another instance may have created it in between.
        if status == NATS_OK { jsStreamInfo_Destroy(info) }
        guard status == NATS_OK || code == JSStreamNameExistErr else {
            throw NATSError(context: "create stream \(name) over \(subject)", status: status, jetStream: code)
        }
    }
}
