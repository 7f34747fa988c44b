import NIOCore
import PlexusPluginSDK
import PlexusWire

/// Serves the Plexus TCP protocol (docs/protocols/tcp.md): producers publish, consumers subscribe,
/// receive deliveries under credit-based flow control and acknowledge them.
public final class TCPProtocol: Plugin {
    public static let name = "tcp-protocol"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.protocolKind]

    struct Settings: Decodable, Sendable {
        var host: String
        var port: Int
        var node: String
        var threads: Int
        var maxFrameSize: Int
        var heartbeatMs: UInt32
        var handshakeTimeoutMs: Int
        var maxPendingEvents: Int
        /// Client connections served at once (absent in an older manifest: 4096).
        var maxConnections: Int?
        var defaultCredits: UInt32
        var tokens: [String]
    }

    let host: Host
    let settings: Settings
    private let server: TCPServer

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        let settings = try config.decode(Settings.self)
        guard (0...65535).contains(settings.port) else {
            throw PluginError.invalidArgument("tcp-protocol: port \(settings.port) is not 0 to 65535")
        }
        guard settings.maxFrameSize >= Frame.minimumMaxFrameSize else {
            throw PluginError.invalidArgument(
                "tcp-protocol: maxFrameSize \(settings.maxFrameSize) is below \(Frame.minimumMaxFrameSize)")
        }
        guard settings.threads >= 1, settings.heartbeatMs >= 100, settings.handshakeTimeoutMs >= 1,
            settings.maxPendingEvents >= 1, settings.defaultCredits >= 1, (settings.maxConnections ?? 1) >= 1
        else {
            throw PluginError.invalidArgument(
                "tcp-protocol: threads, maxPendingEvents, maxConnections and defaultCredits must be at least 1, "
                    + "heartbeatMs at least 100"
            )
        }
        self.settings = settings
        server = TCPServer(host: host, settings: settings)
    }

    public func start() throws { try server.start() }

    public func stop(timeout: Duration) throws { server.stop(timeout: timeout) }

    /// Unhealthy when the listener is not accepting connections (so the node is not ready).
    public func health() throws {
        guard server.isListening else { throw PluginError(PX_ERR_UNAVAILABLE, "tcp-protocol: not listening") }
    }

    var connections: Int { server.sessionCount }
    var port: Int { server.localAddress?.port ?? 0 }
}

@_cdecl("px_plugin_entry_v1")
public func tcpProtocolEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(TCPProtocol.self, api, out, err)
}

/// Operation `connections`: how many client connections are open.
@_cdecl("px_op_tcp_protocol_connections")
public func tcpProtocolConnections(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(TCPProtocol.self, instance)?.connections ?? 0)
}

/// Operation `port`: the port the server listens on (useful with `port: 0`).
@_cdecl("px_op_tcp_protocol_port")
public func tcpProtocolPort(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(TCPProtocol.self, instance)?.port ?? 0)
}
