import PlexusPluginSDK

/// Serves CloudEvents over gRPC (docs/protocols/grpc.md): the Plexus service (`plexus.v1.Plexus`) and Apache
/// EventMesh's publisher, consumer and heartbeat services, on one HTTP/2 port.
public final class GRPCProtocol: Plugin {
    public static let name = "grpc-protocol"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.protocolKind]

    struct Settings: Decodable, Sendable {
        var host: String
        var port: Int
        var threads: Int
        var maxMessageBytes: Int
        var defaultCredits: UInt32
        var maxPendingEvents: Int
        var requestReplyTimeoutMs: Int
        var tokens: [String]
        var allowAttributeCredentials: Bool
    }

    let host: Host
    let settings: Settings
    private let server: Server

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        let settings = try config.decode(Settings.self)
        guard (0...65535).contains(settings.port) else {
            throw PluginError.invalidArgument("grpc-protocol: port \(settings.port) is not 0 to 65535")
        }
        guard settings.threads >= 1, settings.maxMessageBytes >= 4096, settings.defaultCredits >= 1,
            settings.maxPendingEvents >= 1, settings.requestReplyTimeoutMs >= 1
        else {
            throw PluginError.invalidArgument(
                "grpc-protocol: threads, defaultCredits, maxPendingEvents and requestReplyTimeoutMs must be at least 1,"
                    + " maxMessageBytes at least 4096")
        }
        self.settings = settings
        server = Server(host: host, settings: settings)
    }

    public func start() throws { try server.start() }

    public func stop(timeout: Duration) throws { server.stop(timeout: timeout) }

    var port: Int { server.port }
    var calls: Int { server.activeCalls }
}

@_cdecl("px_plugin_entry_v1")
public func grpcProtocolEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(GRPCProtocol.self, api, out, err)
}

/// Operation `port`: the port the server listens on (useful with `port: 0`).
@_cdecl("px_op_grpc_protocol_port")
public func grpcProtocolPort(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(GRPCProtocol.self, instance)?.port ?? 0)
}

/// Operation `calls`: how many streaming calls (publish and subscribe streams) are open.
@_cdecl("px_op_grpc_protocol_calls")
public func grpcProtocolCalls(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    UInt64(PluginExport.instance(GRPCProtocol.self, instance)?.calls ?? 0)
}
