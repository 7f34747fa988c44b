import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import Synchronization

/// The gRPC clients of an etcd cluster's endpoints, the one in use, and the authentication token.
///
/// One `GRPCClient` per endpoint is made up front (each connects on its first call); calls go to the current
/// endpoint, and a call that fails with a retriable error moves the current endpoint to the next one (in the
/// configured order, wrapping around), so a dead member is left for a live one. With `username` set, a token
/// from `Authenticate` travels in the `token` metadata of every call; a call refused for its token gets a new
/// one and is made again once.
final class EtcdConnection: Sendable {
    typealias Client = GRPCClient<HTTP2ClientTransport.Posix>

    struct Member: Sendable {
        let endpoint: EtcdConfiguration.Endpoint
        let client: Client
        let runner: Task<Void, Never>
    }

    struct State {
        var current = 0
        /// Whether a call on the current endpoint succeeded since it was chosen (the dial timeout applies
        /// until then).
        var verified = false
        /// The token of each endpoint (tokens may be local to the member that issued them).
        var tokens: [Int: String] = [:]
        /// The first call on an endpoint not yet verified, which the others wait for.
        var probes: [Int: Task<Void, any Error>] = [:]
        var closed = false
    }

    let configuration: EtcdConfiguration
    let members: [Member]
    private let state = Mutex(State())

    /// - Throws: `EtcdError` (`.invalidConfiguration`) without endpoints, or when a transport cannot be made
    ///   (an unreadable TLS file).
    init(_ configuration: EtcdConfiguration) throws {
        guard !configuration.endpoints.isEmpty else {
            throw EtcdError(.invalidConfiguration, operation: "connect", "no endpoints")
        }
        if let tls = configuration.tls, tls.certFile.isEmpty != tls.keyFile.isEmpty {
            throw EtcdError(.invalidConfiguration, operation: "connect", "tls needs both cert and key, or neither")
        }
        self.configuration = configuration
        var members: [Member] = []
        for endpoint in configuration.endpoints {
            let client: Client
            do {
                client = GRPCClient(transport: try Self.transport(endpoint, configuration))
            } catch {
                for member in members { member.client.beginGracefulShutdown() }
                throw EtcdError(
                    .invalidConfiguration, operation: "connect", endpoint: endpoint.description, "\(error)")
            }
            let runner = Task(executorPreference: EtcdExecutor.shared) { _ = try? await client.runConnections() }
            members.append(Member(endpoint: endpoint, client: client, runner: runner))
        }
        self.members = members
    }

    static func transport(_ endpoint: EtcdConfiguration.Endpoint, _ configuration: EtcdConfiguration) throws
        -> HTTP2ClientTransport.Posix
    {
        let target: any ResolvableTarget
        if endpoint.host.contains(":") {
            target = ResolvableTargets.IPv6.ipv6(address: endpoint.host, port: endpoint.port)
        } else if endpoint.host.split(separator: ".").count == 4, endpoint.host.allSatisfy({ $0.isNumber || $0 == "." })
        {
            target = ResolvableTargets.IPv4.ipv4(address: endpoint.host, port: endpoint.port)
        } else {
            target = ResolvableTargets.DNS.dns(host: endpoint.host, port: endpoint.port)
        }
        var security = HTTP2ClientTransport.Posix.TransportSecurity.plaintext
        if let tls = configuration.tls {
            security = .tls { config in
                if !tls.caFile.isEmpty { config.trustRoots = .certificates([.file(path: tls.caFile, format: .pem)]) }
                if !tls.certFile.isEmpty {
                    config.certificateChain = [.file(path: tls.certFile, format: .pem)]
                    config.privateKey = .file(path: tls.keyFile, format: .pem)
                }
            }
        }
        // Reconnect quickly: a restarted member is back within a fraction of a second.
        let config = HTTP2ClientTransport.Posix.Config.defaults { config in
            config.backoff = .init(initial: .milliseconds(50), max: .seconds(1), multiplier: 1.6, jitter: 0.2)
            config.connection.keepalive = nil
            config.connection.flushCoalescing = nil
        }
        return try HTTP2ClientTransport.Posix(target: target, transportSecurity: security, config: config)
    }

    /// Stops every client; calls in flight fail.
    func close() async {
        let wasClosed = state.withLock { s in
            defer { s.closed = true }
            return s.closed
        }
        guard !wasClosed else { return }
        for member in members {
            member.client.beginGracefulShutdown()
            member.runner.cancel()
        }
        for member in members { await member.runner.value }
    }

    var isClosed: Bool { state.withLock { $0.closed } }

    /// The endpoint in use and its client.
    func current() -> (index: Int, member: Member) {
        let index = state.withLock { $0.current }
        return (index, members[index])
    }

    /// Moves off endpoint `index` to the next one, unless another call already moved.
    func failover(from index: Int) {
        state.withLock { s in
            guard s.current == index else { return }
            s.current = (index + 1) % members.count
            s.verified = false
        }
    }

    /// The call options of a unary call on endpoint `index`: the request timeout, plus the dial timeout until
    /// the endpoint has answered once.
    func unaryOptions(_ index: Int) -> CallOptions {
        var options = CallOptions.defaults
        let verified = state.withLock { $0.current == index && $0.verified }
        options.timeout = configuration.requestTimeout + (verified ? .zero : configuration.dialTimeout)
        options.waitForReady = !verified
        return options
    }

    /// Before the first calls on an endpoint not yet verified, one cheap read alone on the new connection (a
    /// burst of streams opened while the connection is being made sometimes loses one); the others wait for it.
    private func dial(_ index: Int) async throws {
        let probe = state.withLock { s -> Task<Void, any Error>? in
            if s.current == index, s.verified { return nil }
            if let probe = s.probes[index] { return probe }
            let client = members[index].client
            var options = CallOptions.defaults
            options.timeout = configuration.requestTimeout + configuration.dialTimeout
            options.waitForReady = true
            let probe = Task(executorPreference: EtcdExecutor.shared) {
                var request = Etcdserverpb_RangeRequest()
                request.key = Data("\0".utf8)
                request.countOnly = true
                request.serializable = true
                _ = try await Etcdserverpb_KV.Client(wrapping: client).range(request, options: options)
            }
            s.probes[index] = probe
            return probe
        }
        guard let probe else { return }
        defer { state.withLock { s in if s.probes[index] == probe { s.probes[index] = nil } } }
        do {
            try await probe.value
        } catch let error as RPCError where error.code == .unauthenticated || error.code == .permissionDenied {
            return  // the endpoint answered; the call itself authenticates
        }
        markVerified(index)
    }

    private func markVerified(_ index: Int) {
        state.withLock { s in if s.current == index { s.verified = true } }
    }

    /// The metadata of a call on endpoint `index`: the token, fetched with `Authenticate` when missing.
    func metadata(_ index: Int) async throws -> Metadata {
        guard !configuration.username.isEmpty else { return [:] }
        if let token = state.withLock({ $0.tokens[index] }) { return ["token": .string(token)] }
        var request = Etcdserverpb_AuthenticateRequest()
        request.name = configuration.username
        request.password = configuration.password
        let auth = Etcdserverpb_Auth.Client(wrapping: members[index].client)
        let response: Etcdserverpb_AuthenticateResponse
        do {
            response = try await auth.authenticate(request, options: unaryOptions(index))
        } catch {
            throw EtcdError.from(
                error, operation: "Authenticate \(configuration.username)",
                endpoint: members[index].endpoint.description)
        }
        state.withLock { $0.tokens[index] = response.token }
        return ["token": .string(response.token)]
    }

    private func dropToken(_ index: Int) {
        _ = state.withLock { $0.tokens.removeValue(forKey: index) }
    }

    /// Runs a unary call on the current endpoint; on a retriable failure moves to the next endpoint and tries
    /// again after a short pause, up to once per endpoint plus once (at least three attempts) when `retry` is
    /// set. A refused
    /// token is renewed and the call made again once.
    /// - Throws: `EtcdError` of the last attempt.
    func unary<R: Sendable>(
        _ operation: String, retry: Bool = true,
        _ call: (Client, Metadata, CallOptions) async throws -> R
    ) async throws -> R {
        let attempts = retry ? max(3, members.count + 1) : 1
        var last: EtcdError?
        var renewedToken = false
        var attempt = 0
        while attempt < attempts {
            guard !isClosed else { throw EtcdError(.closed, operation: operation, "the client is closed") }
            let (index, member) = current()
            do {
                try await dial(index)
                let metadata = try await self.metadata(index)
                let result = try await call(member.client, metadata, unaryOptions(index))
                markVerified(index)
                return result
            } catch {
                let failure = EtcdError.from(error, operation: operation, endpoint: member.endpoint.description)
                last = failure
                if failure.code == .unauthenticated, !configuration.username.isEmpty, !renewedToken {
                    renewedToken = true
                    dropToken(index)
                    continue
                }
                guard failure.isRetriable else { throw failure }
                failover(from: index)
                attempt += 1
                if attempt < attempts { try? await Task.sleep(for: .milliseconds(50 * attempt)) }
            }
        }
        throw last ?? EtcdError(.unavailable, operation: operation, "no endpoint answered")
    }
}
