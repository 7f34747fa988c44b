import NIOCore
import PlexusPluginSDK

/// The SDK's host, named so in this module even where Foundation (which has a `Host` of its own) is imported.
public typealias Host = PlexusPluginSDK.Host

/// Serves the CloudEvents HTTP protocol binding (docs/protocols/http.md): producers POST events in binary,
/// structured or batch mode; push subscriptions deliver to webhooks; pull consumers stream server-sent
/// events and acknowledge them.
public final class HTTPProtocol: Plugin {
    public static let name = "http-protocol"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.protocolKind]

    struct Settings: Decodable, Sendable {
        var host: String
        var port: Int
        var threads: Int
        var maxBodyBytes: Int
        var maxHeaderBytes: Int
        var maxPendingEvents: Int
        var overloadRetryAfterSeconds: Int
        var requestTimeoutMs: Int
        var idleTimeoutMs: Int
        var webhookTimeoutMs: Int
        var maxConnectionsPerSink: Int
        var maxRetryAfterMs: Int
        var pullCredits: Int
        var pullHeartbeatMs: Int
        /// Client connections served at once (absent in an older manifest: 4096).
        var maxConnections: Int?
    }

    let host: Host
    let settings: Settings
    private let server: HTTPServer

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        let settings = try config.decode(Settings.self)
        guard (0...65535).contains(settings.port) else {
            throw PluginError.invalidArgument("http-protocol: port \(settings.port) is not 0 to 65535")
        }
        let positive: [(String, Int)] = [
            ("threads", settings.threads), ("maxBodyBytes", settings.maxBodyBytes),
            ("maxHeaderBytes", settings.maxHeaderBytes), ("maxPendingEvents", settings.maxPendingEvents),
            ("overloadRetryAfterSeconds", settings.overloadRetryAfterSeconds),
            ("requestTimeoutMs", settings.requestTimeoutMs), ("idleTimeoutMs", settings.idleTimeoutMs),
            ("webhookTimeoutMs", settings.webhookTimeoutMs), ("maxConnectionsPerSink", settings.maxConnectionsPerSink),
            ("pullCredits", settings.pullCredits), ("pullHeartbeatMs", settings.pullHeartbeatMs),
            ("maxConnections", settings.maxConnections ?? 1),
        ]
        if let (key, value) = positive.first(where: { $0.1 < 1 }) {
            throw PluginError.invalidArgument("http-protocol: \(key) must be at least 1, found \(value)")
        }
        guard settings.maxRetryAfterMs >= 0 else {
            throw PluginError.invalidArgument("http-protocol: maxRetryAfterMs must not be negative")
        }
        self.settings = settings
        server = try HTTPServer(host: host, settings: settings, dataDirectory: config.dataDirectory)
    }

    public func start() throws { try server.start() }

    public func stop(timeout: Duration) throws { server.stop(timeout: timeout) }

    public func health() throws {
        guard server.isListening else { throw PluginError(PX_ERR_UNAVAILABLE, "http-protocol: not listening") }
    }

    var port: Int { server.localAddress?.port ?? 0 }
    var connections: Int { server.connectionCount }
    var subscriptions: Int { server.push.count }
}

@_cdecl("px_plugin_entry_v1")
public func httpProtocolEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(HTTPProtocol.self, api, out, err)
}

/// Operation `port`: the port the server listens on (useful with `port: 0`).
@_cdecl("px_op_http_protocol_port")
public func httpProtocolPort(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(HTTPProtocol.self, instance)?.port ?? 0)
}

/// Operation `connections`: how many client connections are open.
@_cdecl("px_op_http_protocol_connections")
public func httpProtocolConnections(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(HTTPProtocol.self, instance)?.connections ?? 0)
}

/// Operation `subscriptions`: how many push subscriptions are active.
@_cdecl("px_op_http_protocol_subscriptions")
public func httpProtocolSubscriptions(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(HTTPProtocol.self, instance)?.subscriptions ?? 0)
}
