import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The node's admin endpoint: a small HTTP/1.1 JSON API on loopback (docs/operations.md).
///
/// - `GET /v1/plugins`: every plugin's status; `GET /v1/plugins/NAME`: one.
/// - `POST /v1/plugins/NAME/operations/OP` with `{"args": ["…"]}`: calls a manifest operation.
/// - `POST /v1/plugins` `{"manifest": PATH}` or `{"archive": PATH}`: installs; `POST /v1/plugins/NAME/upgrade`
///   (the same body), `POST /v1/plugins/NAME/rollback`, `DELETE /v1/plugins/NAME` (docs/operations.md,
///   "Deploying").
/// - `POST /v1/plugins/NAME/stop|start|restart`: one plugin's lifecycle (`Kernel.stopPlugin` and the others).
/// - `GET /`: the dashboard (`Dashboard`), a page that polls the endpoints below.
/// - With `admin.token` set, every request but `GET`/`HEAD` needs `Authorization: Bearer <token>` (`AdminAuth`).
/// - `GET /v1/health`: the kernel is up (liveness); `GET /v1/ready`: 200 when every enabled plugin is active and
///   healthy (protocols accepting), else 503 with the reasons; `GET /metrics`: Prometheus text.
public final class AdminServer: Sendable {
    let kernel: Kernel
    private let channel: Channel

    /// The port actually bound (useful with port 0).
    public var port: Int { channel.localAddress?.port ?? 0 }

    /// Binds the endpoint.
    /// - Throws: when the address cannot be bound, with the address in the message; when `host` is beyond
    ///   loopback and the node has no `admin.token`.
    public init(kernel: Kernel, host: String, port: Int) throws {
        self.kernel = kernel
        try AdminAuth.requireToken(host: host, token: kernel.config.adminToken)
        // On the kernel pool, like every other kernel socket: no thread of its own.
        let bootstrap = ServerBootstrap(group: KernelPool.group)
            .serverChannelOption(.backlog, value: 64)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.pipeline.configureHTTPServerPipeline().flatMap {
                    channel.pipeline.addHandler(AdminHandler(kernel: kernel))
                }
            }
        do {
            self.channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            throw KernelError(.io, subject: "admin endpoint", "cannot listen on \(host):\(port): \(error)")
        }
    }

    public func close() {
        try? channel.close().wait()
    }
}

/// Answers one admin request at a time per connection; operation calls run off the event loop.
private final class AdminHandler: ChannelInboundHandler, @unchecked Sendable {
    // Safe: all state is touched on the channel's event loop only.
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let kernel: Kernel
    var head: HTTPRequestHead?
    var body = ByteBuffer()
    var tooLarge = false

    init(kernel: Kernel) { self.kernel = kernel }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body.clear()
        case .body(var chunk):
            if body.readableBytes + chunk.readableBytes <= 1 << 20 {
                body.writeBuffer(&chunk)
            } else {
                tooLarge = true
            }
        case .end:
            guard let head else { return }
            self.head = nil
            if tooLarge {
                tooLarge = false
                write(
                    context: context, status: .payloadTooLarge, contentType: "application/json",
                    text: AdminRoutes.problem("the request body is over 1 MiB"), keepAlive: false)
                return
            }
            if let refusal = AdminAuth.refusal(
                method: head.method.rawValue, authorization: head.headers.first(name: "Authorization"),
                token: kernel.config.adminToken)
            {
                write(
                    context: context, status: .unauthorized, contentType: "application/json",
                    text: AdminRoutes.problem(refusal, code: "unauthorized"), keepAlive: head.isKeepAlive)
                return
            }
            let request = (
                method: head.method, uri: head.uri, body: body.readString(length: body.readableBytes) ?? "",
                keepAlive: head.isKeepAlive
            )
            let kernel = self.kernel
            let loop = context.eventLoop
            let boundContext = NIOLoopBound(context, eventLoop: loop)
            let handler = NIOLoopBound(self, eventLoop: loop)
            // Answering waits for plugin code (health checks, operations) under deadlines, so it must leave the
            // event loop. Dispatch's global queue is a shared, bounded pool (no queue or thread per request); the
            // plugin calls themselves run on the lifecycle threads (`HookThreads`).
            DispatchQueue.global().async {
                let (status, contentType, text) = AdminRoutes.respond(
                    kernel: kernel, method: request.method, uri: request.uri, body: request.body)
                loop.execute {
                    handler.value.write(
                        context: boundContext.value, status: status, contentType: contentType, text: text,
                        keepAlive: request.keepAlive)
                }
            }
        }
    }

    func write(
        context: ChannelHandlerContext, status: HTTPResponseStatus, contentType: String, text: String, keepAlive: Bool
    ) {
        var buffer = context.channel.allocator.buffer(capacity: text.utf8.count)
        buffer.writeString(text)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(buffer.readableBytes))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        if contentType == Dashboard.contentType {
            for (name, value) in Dashboard.headers { headers.add(name: name, value: value) }
        } else {
            headers.add(name: "Cache-Control", value: "no-store")
        }
        if status == .unauthorized { headers.add(name: "WWW-Authenticate", value: #"Bearer realm="plexus-admin""#) }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive {
            let channel = context.channel
            done.whenComplete { _ in channel.close(promise: nil) }
        }
    }
}

/// The admin API's routes, separate from the transport so that tests can call them directly.
enum AdminRoutes {
    static func respond(kernel: Kernel, method: HTTPMethod, uri: String, body: String) -> (
        HTTPResponseStatus, String, String
    ) {
        let path = uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? uri
        let parts = path.split(separator: "/").map { $0.removingPercentEncoding ?? String($0) }
        let json = "application/json"
        if let answer = AdminTopics.respond(kernel: kernel, method: method, parts: parts, body: body) { return answer }
        switch (method, parts) {
        case (.GET, []):
            return (.ok, Dashboard.contentType, Dashboard.page)
        case (.GET, ["v1", "health"]):
            return (.ok, json, #"{"status":"up","node":\#(ConfigValue.quote(kernel.config.nodeID))}"#)
        case (.GET, ["v1", "ready"]):
            let readiness = kernel.readiness()
            return (
                readiness.ready ? .ok : .serviceUnavailable, json,
                encode(
                    ReadyResponse(
                        status: readiness.ready ? "ready" : "not-ready", node: kernel.config.nodeID,
                        reasons: readiness.reasons))
            )
        case (.GET, ["v1", "cluster"]):
            return (.ok, json, encode(kernel.clusterStatus()))
        case (.GET, ["metrics"]):
            return (.ok, "text/plain; version=0.0.4; charset=utf-8", kernel.services.metrics.prometheusText())
        case (.GET, ["v1", "plugins"]):
            return (.ok, json, encode(kernel.statuses()))
        case (.GET, let p) where p.count == 3 && p[0] == "v1" && p[1] == "plugins":
            guard let status = kernel.status(of: p[2]) else {
                return (.notFound, json, problem("no plugin named '\(p[2])' on this node"))
            }
            return (.ok, json, encode(status))
        case (.POST, ["v1", "plugins"]):
            return deployment(kernel: kernel, plugin: nil) { try deploy(kernel, body, replacing: nil) }
        case (.POST, let p) where p.count == 4 && p[0] == "v1" && p[1] == "plugins" && p[3] == "upgrade":
            return deployment(kernel: kernel, plugin: p[2]) { try deploy(kernel, body, replacing: p[2]) }
        case (.POST, let p) where p.count == 4 && p[0] == "v1" && p[1] == "plugins" && p[3] == "rollback":
            return deployment(kernel: kernel, plugin: p[2]) { [try kernel.rollback(p[2])] }
        case (.POST, let p)
        where p.count == 4 && p[0] == "v1" && p[1] == "plugins" && ["stop", "start", "restart"].contains(p[3]):
            return deployment(kernel: kernel, plugin: p[2]) { [try kernel.lifecycle(p[3], plugin: p[2])] }
        case (.DELETE, let p) where p.count == 3 && p[0] == "v1" && p[1] == "plugins":
            return deployment(kernel: kernel, plugin: p[2]) { try kernel.undeploy(p[2]) }
        case (.POST, let p) where p.count == 5 && p[0] == "v1" && p[1] == "plugins" && p[3] == "operations":
            let arguments: [String]
            if body.isEmpty {
                arguments = []
            } else {
                guard let request = try? JSONDecoder().decode(OperationRequest.self, from: Data(body.utf8)) else {
                    return (.badRequest, json, problem(#"expected a JSON body {"args": ["…"]}"#))
                }
                arguments = request.args
            }
            do {
                let result = try kernel.callOperation(plugin: p[2], operation: p[4], arguments: arguments)
                return (.ok, json, encode(OperationResponse(result: result)))
            } catch let error as KernelError {
                let status: HTTPResponseStatus
                switch error.code {
                case .notFound: status = .notFound
                case .invalidState: status = .conflict
                case .deadlineExceeded: status = .gatewayTimeout
                case .operationFailed: status = .unprocessableEntity
                default: status = .badRequest
                }
                return (status, json, problem(error.description, code: error.code.rawValue))
            } catch {
                return (.internalServerError, json, problem("\(error)"))
            }
        case (_, let p)
        where p.isEmpty || p == ["v1", "health"] || p == ["v1", "ready"] || p == ["metrics"] || p == ["v1", "cluster"]
            || (p.count <= 3 && p.starts(with: ["v1", "plugins"]))
            || (p.count == 4 && p.starts(with: ["v1", "plugins"])
                && ["stop", "start", "restart", "upgrade", "rollback"].contains(p[3])):
            return (.methodNotAllowed, json, problem("method \(method) is not allowed on \(path)"))
        default:
            return (.notFound, json, problem("no such endpoint: \(method) \(path)"))
        }
    }

    struct OperationRequest: Codable { var args: [String] }
    struct DeployRequest: Codable {
        var manifest: String?
        var archive: String?
    }
    struct DeployResponse: Codable {
        var changes: [DeploymentChange]
        var plugin: PluginStatus?
    }

    /// The manifest path of an install or upgrade request body.
    /// Deploys what a request body names: `{"manifest": PATH}` (a manifest, its library beside it) or
    /// `{"archive": PATH}` (a plugin archive), an absolute path on the node's machine.
    static func deploy(_ kernel: Kernel, _ body: String, replacing name: String?) throws -> [DeploymentChange] {
        let request = try? JSONDecoder().decode(DeployRequest.self, from: Data(body.utf8))
        if let archive = request?.archive, archive.hasPrefix("/"), request?.manifest == nil {
            return try kernel.deploy(archiveFrom: archive, replacing: name)
        }
        guard let manifest = request?.manifest, manifest.hasPrefix("/"), request?.archive == nil else {
            throw KernelError(
                .manifestInvalid, subject: "request",
                #"expected a JSON body {"manifest": "/absolute/path.yaml"} or {"archive": "/absolute/path.pxp"}"#)
        }
        return try kernel.deploy(manifestFrom: manifest, replacing: name)
    }

    /// Runs a deployment command: 200 with the changes and the plugin's status afterwards; 409 when a change
    /// was refused; 404, 409 or 400 for the command's own errors.
    static func deployment(kernel: Kernel, plugin: String?, _ body: () throws -> [DeploymentChange]) -> (
        HTTPResponseStatus, String, String
    ) {
        let json = "application/json"
        do {
            let changes = try body()
            let name = plugin ?? changes.last?.plugin
            let response = DeployResponse(changes: changes, plugin: name.flatMap { kernel.status(of: $0) })
            return (changes.contains { $0.action == .refuse } ? .conflict : .ok, json, encode(response))
        } catch let error as KernelError {
            let status: HTTPResponseStatus =
                switch error.code {
                case .notFound: .notFound
                case .invalidState: .conflict
                default: .badRequest
                }
            return (status, json, problem(error.description, code: error.code.rawValue))
        } catch {
            return (.internalServerError, json, problem("\(error)"))
        }
    }
    struct ReadyResponse: Codable {
        var status: String
        var node: String
        var reasons: [String]
    }
    struct OperationResponse: Codable { var result: String }
    struct Problem: Codable {
        var error: String
        var code: String?
    }

    static func problem(_ text: String, code: String? = nil) -> String { encode(Problem(error: text, code: code)) }

    static func encode<T: Encodable>(_ value: T) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return (try? encoder.encode(value)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }
}
