import GRPCCore

/// A failed etcd operation: what was asked of which endpoint, and what went wrong.
public struct EtcdError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure it is, for callers that react differently.
    public enum Code: String, Sendable, Equatable {
        /// No endpoint answered (connection refused or lost, no leader, timed out): try again later.
        case unavailable
        /// The requested revision is older than etcd's compacted history (`compactRevision` says how far).
        case compacted
        /// A lease or key that etcd does not have.
        case notFound
        /// The credentials were refused or the token expired.
        case unauthenticated
        /// etcd refused the request (too large, malformed, not permitted).
        case rejected
        /// etcd answered something the client cannot use.
        case invalidResponse
        /// The configuration given to the client is unusable.
        case invalidConfiguration
        /// The client was closed.
        case closed
    }

    public var code: Code
    /// The operation, e.g. `Range plexus/kv/a`.
    public var operation: String
    /// `host:port` of the endpoint that failed, empty when none was involved.
    public var endpoint: String
    public var message: String
    /// For `.compacted`: the oldest revision etcd still keeps.
    public var compactRevision: Int64 = 0

    public init(_ code: Code, operation: String, endpoint: String = "", _ message: String) {
        self.code = code
        self.operation = operation
        self.endpoint = endpoint
        self.message = message
    }

    public var description: String {
        let at = endpoint.isEmpty ? "" : " at \(endpoint)"
        return "etcd \(operation)\(at): \(code.rawValue): \(message)"
    }

    /// Classifies a gRPC failure of `operation` against `endpoint`.
    static func from(_ error: any Error, operation: String, endpoint: String) -> EtcdError {
        if let error = error as? EtcdError { return error }
        guard let rpc = error as? RPCError else {
            return EtcdError(.unavailable, operation: operation, endpoint: endpoint, "\(error)")
        }
        let text = rpc.message
        let code: Code
        switch rpc.code {
        case .unavailable, .deadlineExceeded, .aborted, .cancelled, .resourceExhausted, .unknown, .internalError:
            code = .unavailable
        case .outOfRange where text.contains("compacted"):
            code = .compacted
        case .notFound:
            code = .notFound
        case .unauthenticated:
            code = .unauthenticated
        case .permissionDenied where text.contains("token"):
            code = .unauthenticated
        default:
            code = .rejected
        }
        return EtcdError(code, operation: operation, endpoint: endpoint, "\(rpc.code): \(text)")
    }

    /// Whether another endpoint (or the same one later) may succeed where this failed.
    public var isRetriable: Bool { code == .unavailable }
}
