import Dispatch
import GRPCCore
import PlexusPluginSDK
import Synchronization

/// The host API as the services use it: publish awaiting durability, unsubscribe off the caller's thread,
/// credentials, and the mapping of kernel statuses to gRPC status codes.
final class Kernel: Sendable {
    let host: Host
    let settings: GRPCProtocol.Settings
    /// Open streaming calls.
    let streams = Atomic<Int>(0)

    init(host: Host, settings: GRPCProtocol.Settings) {
        self.host = host
        self.settings = settings
    }

    /// Publishes `events` to `topic`; returns the first offset once the storage reports them durable.
    /// - Throws: `RPCError` with the kernel's refusal mapped to a gRPC status.
    func publish(topic: String, _ events: [CloudEvent]) async throws -> UInt64 {
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<UInt64, PluginError>, Never>) in
            publish(topic: topic, events) { continuation.resume(returning: $0) }
        }
        switch result {
        case .success(let offset): return offset
        case .failure(let error): throw Self.rpcError(error)
        }
    }

    /// Publishes `events` to `topic`; `completion` runs once they are durable or refused (on any thread).
    func publish(
        topic: String, _ events: [CloudEvent], completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) {
        guard !topic.isEmpty else {
            return completion(.failure(PluginError.invalidArgument("the topic is empty")))
        }
        guard !events.isEmpty else {
            return completion(.failure(PluginError.invalidArgument("a publish needs at least one event")))
        }
        do {
            try host.publish(topic: topic, events, completion: completion)
        } catch let error as PluginError {
            completion(.failure(error))
        } catch {
            completion(.failure(PluginError(PX_ERR_INTERNAL, "\(error)")))
        }
    }

    /// The bytes of events' attributes, extension keys and values, and data.
    static func byteCount(_ events: [CloudEvent]) -> Int {
        events.reduce(0) { total, e in
            var n = e.id.utf8.count + e.source.utf8.count + e.specversion.utf8.count + e.type.utf8.count + e.data.count
            for text in [e.datacontenttype, e.dataschema, e.subject, e.time] { n += text?.utf8.count ?? 0 }
            for (key, value) in e.extensions { n += key.utf8.count + value.utf8.count }
            return total + n
        }
    }

    /// Refuses a request whose events are larger than `maxMessageBytes` (the transport cuts off messages over
    /// four times that with a stream reset before any handler runs).
    /// - Throws: `RPCError` `resourceExhausted`.
    func checkSize(_ events: [CloudEvent]) throws {
        let bytes = Self.byteCount(events)
        guard bytes <= settings.maxMessageBytes else {
            throw RPCError(
                code: .resourceExhausted,
                message:
                    "the request's events take \(bytes) bytes, more than maxMessageBytes \(settings.maxMessageBytes)")
        }
    }

    /// Ends a subscription on a thread of its own (the kernel waits for running deliveries) and waits.
    func unsubscribe(_ subscription: Subscription) async {
        let host = self.host
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            DispatchQueue.global().async {
                host.unsubscribe(subscription)
                continuation.resume()
            }
        }
    }

    /// The token a call presents in its metadata: `authorization: Bearer <token>` or `x-plexus-token`.
    static func token(in metadata: Metadata) -> String? {
        for value in metadata[stringValues: "authorization"] {
            let parts = value.split(separator: " ", maxSplits: 1)
            if parts.count == 2, parts[0].lowercased() == "bearer" { return String(parts[1]) }
        }
        return metadata[stringValues: "x-plexus-token"].first(where: { _ in true })
    }

    /// Checks a call's credentials: with `tokens` configured, the metadata must carry one of them.
    /// - Throws: `RPCError` `unauthenticated`.
    func authorize(_ metadata: Metadata, attributeToken: String? = nil) throws {
        guard !settings.tokens.isEmpty else { return }
        if let token = Self.token(in: metadata), settings.tokens.contains(token) { return }
        if settings.allowAttributeCredentials, let attributeToken, settings.tokens.contains(attributeToken) { return }
        throw RPCError(code: .unauthenticated, message: "the call's metadata carries no accepted token")
    }

    /// The gRPC status of a kernel refusal.
    static func code(_ status: px_status) -> RPCError.Code {
        switch px_status_code(rawValue: UInt32(bitPattern: status)) {
        case PX_ERR_INVALID_ARGUMENT: return .invalidArgument
        case PX_ERR_NOT_FOUND: return .notFound
        case PX_ERR_ALREADY_EXISTS: return .alreadyExists
        case PX_ERR_UNSUPPORTED: return .unimplemented
        case PX_ERR_TIMEOUT: return .deadlineExceeded
        case PX_ERR_UNAVAILABLE, PX_ERR_IO: return .unavailable
        case PX_ERR_RESOURCE_EXHAUSTED: return .resourceExhausted
        case PX_ERR_OUT_OF_RANGE: return .outOfRange
        case PX_ERR_FAILED_PRECONDITION: return .failedPrecondition
        case PX_ERR_CORRUPTION: return .dataLoss
        case PX_ERR_CANCELLED: return .cancelled
        case PX_ERR_PERMISSION_DENIED: return .permissionDenied
        default: return .internalError
        }
    }

    static func rpcError(_ error: PluginError) -> RPCError {
        RPCError(code: code(error.status), message: error.message)
    }

    /// The gRPC status code number (google.rpc.Code) of an error.
    static func codeNumber(_ error: any Error) -> Int32 {
        if let rpc = error as? RPCError { return Int32(rpc.code.rawValue) }
        if let plugin = error as? PluginError { return Int32(code(plugin.status).rawValue) }
        return Int32(RPCError.Code.internalError.rawValue)
    }
}
