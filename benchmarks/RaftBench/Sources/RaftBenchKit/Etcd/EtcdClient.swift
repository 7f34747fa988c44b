import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOCore

/// Serializes a hand-encoded protobuf message for grpc-swift.
struct ProtobufSerializer<Message: ProtobufEncodable>: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: Message) throws -> Bytes {
        Bytes(message.protobufBytes)
    }
}

/// Deserializes a hand-decoded protobuf message for grpc-swift.
struct ProtobufDeserializer<Message: ProtobufDecodable>: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> Message {
        try serializedMessageBytes.withUnsafeBytes { buffer in try Message(decoding: buffer) }
    }
}

/// One member of an etcd 3.4 cluster over its gRPC v3 API (`etcdserverpb.KV`, `etcdserverpb.Maintenance`),
/// on one HTTP/2 connection, plaintext, with grpc-swift's default client settings and ``GoServerFrameFilter``
/// in front of the HTTP/2 handler.
///
/// Calls may run concurrently: each is one HTTP/2 stream on the shared connection, as with etcd's own Go
/// client.
public final class EtcdClient: Sendable {
    static let put = MethodDescriptor(fullyQualifiedService: "etcdserverpb.KV", method: "Put")
    static let range = MethodDescriptor(fullyQualifiedService: "etcdserverpb.KV", method: "Range")
    static let status = MethodDescriptor(fullyQualifiedService: "etcdserverpb.Maintenance", method: "Status")

    private let client: GRPCClient<HTTP2ClientTransport.Posix>
    private let connections: Task<Void, any Error>
    /// The member's client address, `host:port`.
    public let address: String

    /// Starts connecting to the member at `host:port` (an IPv4 address).
    ///
    /// - Throws: What the transport throws for an unusable address.
    public init(host: String, port: Int) throws {
        var config = HTTP2ClientTransport.Posix.Config.defaults
        // grpc-go's PINGs and RST_STREAM(NO_ERROR)s would trip swift-nio-http2's limits: see GoServerFrameFilter.
        config.channelDebuggingCallbacks.onCreateTCPConnection = { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(GoServerFrameFilter(), position: .first)
            }
        }
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port), transportSecurity: .plaintext, config: config)
        let client = GRPCClient(transport: transport)
        self.client = client
        self.address = "\(host):\(port)"
        connections = Task { try await client.runConnections() }
    }

    /// `KV/Put`: stores `value` under `key`; returns once the cluster committed it (etcd answers a put after
    /// its Raft entry is committed by a quorum, each member having fsynced its WAL, and applied).
    ///
    /// - Throws: `RPCError` when the call fails or times out.
    public func put(key: [UInt8], value: [UInt8], timeout: Duration = .seconds(10)) async throws -> EtcdPutResponse {
        try await call(Self.put, EtcdPutRequest(key: key, value: value), timeout: timeout)
    }

    /// `KV/Range` for one key (linearizable read).
    ///
    /// - Throws: `RPCError` when the call fails or times out.
    public func range(key: [UInt8], timeout: Duration = .seconds(10)) async throws -> EtcdRangeResponse {
        try await call(Self.range, EtcdRangeRequest(key: key), timeout: timeout)
    }

    /// `Maintenance/Status`: the member's id, the leader's id and the Raft indexes.
    ///
    /// - Throws: `RPCError` when the call fails or times out.
    public func status(timeout: Duration = .seconds(2)) async throws -> EtcdStatusResponse {
        try await call(Self.status, EtcdStatusRequest(), timeout: timeout)
    }

    private func call<Request: ProtobufEncodable, Response: ProtobufDecodable>(
        _ method: MethodDescriptor, _ request: Request, timeout: Duration
    ) async throws -> Response {
        var options = CallOptions.defaults
        options.timeout = timeout
        return try await client.unary(
            request: ClientRequest(message: request), descriptor: method, serializer: ProtobufSerializer<Request>(),
            deserializer: ProtobufDeserializer<Response>(), options: options
        ) { response in try response.message }
    }

    /// Lets calls in flight finish, then closes the connection.
    public func close() async {
        client.beginGracefulShutdown()
        _ = try? await connections.value
    }
}
