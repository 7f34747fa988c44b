import NIOCore
import NIOHTTP1
import PlexusNIOServer
import PlexusPluginSDK

/// Serves one connection on its event loop: reads each request (bounded in size and time), routes it, and
/// writes its response; keep-alive and pipelining as HTTP/1.1 has them (one request at a time, in order).
final class RequestHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum Phase {
        /// Between requests.
        case idle
        /// Reading a request's body.
        case receiving
        /// The request is complete; its answer is being worked out.
        case responding
        /// A pull stream owns the connection.
        case streaming
        /// A response that ends the connection was written.
        case closing
    }

    let server: HTTPServer
    private let watch: ByteWatch
    private var phase = Phase.idle
    private var head: HTTPRequestHead?
    private var headAt: Int64 = 0
    private var body = ByteBuffer()
    private var context: ChannelHandlerContext?
    private var ticker: RepeatedTask?
    private var stream: PullStream?
    /// The client shut its write side: answer what it sent, then close.
    private var inputClosed = false

    init(server: HTTPServer, watch: ByteWatch) {
        self.server = server
        self.watch = watch
    }

    var settings: HTTPProtocol.Settings { server.settings }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let period = max(20, min(1000, min(settings.requestTimeoutMs, settings.idleTimeoutMs) / 4))
        let tick = TimeAmount.milliseconds(Int64(period))
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        ticker = context.eventLoop.scheduleRepeatedTask(initialDelay: tick, delay: tick) { _ in bound.value.tick() }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        ticker?.cancel()
        ticker = nil
        stream?.end()
        stream = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard phase == .idle else { return }
            self.head = head
            headAt = HTTPServer.now()
            body.clear()
            phase = .receiving
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > settings.maxBodyBytes
            {
                return respond(tooLarge(length))
            }
            if head.headers.first(name: "expect")?.lowercased() == "100-continue" {
                context.writeAndFlush(
                    wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
        case .body(var chunk):
            guard phase == .receiving else { return }
            guard body.readableBytes + chunk.readableBytes <= settings.maxBodyBytes else {
                return respond(tooLarge(body.readableBytes + chunk.readableBytes))
            }
            body.writeBuffer(&chunk)
        case .end:
            guard phase == .receiving, let head else { return }
            phase = .responding
            route(head, body: Array(body.readableBytesView))
            body = ByteBuffer()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard let event = event as? ChannelEvent, event == .inputClosed else {
            return context.fireUserInboundEventTriggered(event)
        }
        // The client will send nothing more (a half-close, or a close seen first as one). A request being
        // answered still gets its answer, whose write then closes. Between requests, in the middle of one
        // that can never end, or on a pull stream (whose consumer is gone: its deliveries go to the rest
        // of its group), close now.
        inputClosed = true
        switch phase {
        case .idle, .receiving, .streaming: context.close(promise: nil)
        case .responding, .closing: break
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is ByteToMessageDecoderError || (phase == .closing && !(error is HTTPParserError)) {
            // More bytes after the parser gave up (its error was handled), or anything while the connection
            // is ending: the answer still being written, then `Linger`, close it. A reset closes it by itself.
            return
        }
        guard let parserError = error as? HTTPParserError else {
            // A reset or a write to a closed socket: nothing to tell the client.
            context.close(promise: nil)
            return
        }
        // The request being answered ends the connection (`Connection: close`, or HTTP/1.0 without
        // keep-alive): what the client sent after it is ignored, and the parser's complaint about it
        // (`closedConnection`) must not close the connection before that answer is flushed. The answer's
        // own write closes it.
        if phase == .closing || parserError == .closedConnection {
            if parserError == .closedConnection { server.host.count("bytes_after_close_ignored") }
            return
        }
        server.host.count("requests_malformed")
        // Only a connection between responses can still be told what went wrong.
        guard phase == .idle || phase == .receiving else {
            context.close(promise: nil)
            return
        }
        phase = .closing
        let response: Response
        switch parserError {
        case .headerOverflow:
            response = .problem(
                .init(statusCode: 431, reasonPhrase: "Request Header Fields Too Large"),
                "the request's headers are over \(settings.maxHeaderBytes) bytes", close: true)
        default:
            response = .problem(.badRequest, "the request is not valid HTTP/1.1: \(parserError)", close: true)
        }
        watch.fail(with: response)
    }

    private func tooLarge(_ size: Int) -> Response {
        .problem(
            .payloadTooLarge, "the body (\(size) bytes) is over the limit of \(settings.maxBodyBytes) bytes",
            close: true)
    }

    // MARK: Routing

    private func route(_ head: HTTPRequestHead, body: [UInt8]) {
        let (path, query) = Self.split(head.uri)
        guard let segments = Self.segments(path) else {
            return respond(.problem(.badRequest, "the path is not valid percent-encoded UTF-8"))
        }
        let method = head.method
        switch segments.count {
        case 1 where segments[0] == "health":
            guard method == .GET || method == .HEAD else { return respond(.methodNotAllowed(method, allowed: ["GET"])) }
            respond(.json(.ok, #"{"status":"ok"}"#))
        case 1 where segments[0] == "ready":
            guard method == .GET || method == .HEAD else { return respond(.methodNotAllowed(method, allowed: ["GET"])) }
            respond(
                server.ready.load(ordering: .relaxed)
                    ? .json(.ok, #"{"status":"ready"}"#) : .problem(.serviceUnavailable, "the node is not ready"))
        case 2 where segments[0] == "topics":
            guard method == .POST else { return respond(.methodNotAllowed(method, allowed: ["POST"])) }
            publish(topic: segments[1], head: head, body: body)
        case 3 where segments[0] == "topics" && segments[2] == "events":
            guard method == .GET else { return respond(.methodNotAllowed(method, allowed: ["GET"])) }
            openStream(topic: segments[1], query: query, head: head)
        case 3 where segments[0] == "topics" && segments[2] == "acks":
            guard method == .POST else { return respond(.methodNotAllowed(method, allowed: ["POST"])) }
            respond(server.pull.settle(topic: segments[1], body: body))
        case 5 where segments[0] == "topics" && segments[2] == "deliveries" && ["ack", "nack"].contains(segments[4]):
            guard method == .POST else { return respond(.methodNotAllowed(method, allowed: ["POST"])) }
            guard let id = UInt64(segments[3]) else {
                return respond(.problem(.badRequest, "'\(segments[3])' is not a delivery id"))
            }
            respond(
                server.pull.settle(
                    topic: segments[1], delivery: id, ack: segments[4] == "ack",
                    deadLetter: Self.flag(query["deadLetter"]), reason: String(decoding: body, as: UTF8.self)))
        case 1 where segments[0] == "subscriptions":
            switch method {
            case .GET: respond(server.push.list())
            case .POST: whenDone { done in self.server.push.create(body: body, completion: done) }
            default: respond(.methodNotAllowed(method, allowed: ["GET", "POST"]))
            }
        case 2 where segments[0] == "subscriptions":
            switch method {
            case .GET: respond(server.push.describe(id: segments[1]))
            case .DELETE: whenDone { done in self.server.push.delete(id: segments[1], completion: done) }
            default: respond(.methodNotAllowed(method, allowed: ["GET", "DELETE"]))
            }
        default:
            respond(.problem(.notFound, "no resource at \(path)"))
        }
    }

    /// Answers with what `work` completes with, on any thread, later.
    private func whenDone(_ work: (@escaping @Sendable (Response) -> Void) -> Void) {
        guard let loop = context?.eventLoop else { return }
        let bound = NIOLoopBound(self, eventLoop: loop)
        work { response in loop.execute { bound.value.respond(response) } }
    }

    // MARK: Publish

    private func publish(topic: String, head: HTTPRequestHead, body: [UInt8]) {
        let events: [CloudEvent]
        switch Ingress.events(headers: head.headers, body: body) {
        case .failure(let problem): return respond(problem)
        case .success(let decoded): events = decoded
        }
        guard !events.isEmpty else { return respond(.accepted) }
        let count = events.count
        let pending = server.pendingEvents.add(count, ordering: .relaxed).newValue
        guard pending <= settings.maxPendingEvents else {
            server.pendingEvents.subtract(count, ordering: .relaxed)
            server.host.count("publishes_overloaded")
            return respond(
                .problem(
                    .tooManyRequests,
                    "the node holds \(settings.maxPendingEvents) events awaiting storage; retry later",
                    headers: [("Retry-After", String(settings.overloadRetryAfterSeconds))]))
        }
        let server = self.server
        let retryAfter = settings.overloadRetryAfterSeconds
        whenDone { done in
            do {
                try server.host.publish(topic: topic, events) { result in
                    server.pendingEvents.subtract(count, ordering: .relaxed)
                    switch result {
                    case .success(let first):
                        server.host.count("events_accepted", by: UInt64(count))
                        done(Response(status: .accepted, headers: [("Plexus-Offset", String(first))]))
                    case .failure(let error):
                        done(.problem(for: error, overloadRetryAfter: retryAfter))
                    }
                }
            } catch {
                server.pendingEvents.subtract(count, ordering: .relaxed)
                let failure = error as? PluginError ?? PluginError(PX_ERR_INTERNAL, "\(error)")
                done(.problem(for: failure, overloadRetryAfter: retryAfter))
            }
        }
    }

    // MARK: Pull

    private func openStream(topic: String, query: [String: String], head: HTTPRequestHead) {
        guard let context else { return }
        switch server.pull.open(topic: topic, query: query, channel: context.channel, settings: settings) {
        case .failure(let problem):
            respond(problem)
        case .success(let stream):
            phase = .streaming
            self.stream = stream
            var headers = HTTPHeaders()
            headers.add(name: "Content-Type", value: "text/event-stream")
            headers.add(name: "Cache-Control", value: "no-cache")
            headers.add(name: "Plexus-Group", value: stream.group)
            let responseHead = HTTPResponseHead(version: head.version, status: .ok, headers: headers)
            context.writeAndFlush(wrapOutboundOut(.head(responseHead)), promise: nil)
            stream.start()
        }
    }

    // MARK: Writing

    /// Writes the response to the current request; on the event loop.
    private func respond(_ response: Response) {
        guard phase == .receiving || phase == .responding, let head else { return }
        self.head = nil
        write(response, version: head.version, keepAlive: head.isKeepAlive && !response.close && !inputClosed)
    }

    private func write(_ response: Response, version: HTTPVersion, keepAlive: Bool) {
        guard let context else { return }
        var headers = HTTPHeaders(response.headers)
        headers.add(name: "Content-Length", value: String(response.body.count))
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if version == .http1_0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: version, status: response.status, headers: headers))),
            promise: nil)
        if !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            buffer.writeBytes(response.body)
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        if keepAlive {
            phase = .idle
            watch.idle()
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            phase = .closing
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { result in
                guard case .success = result else { return channel.close(promise: nil) }
                Linger.start(on: channel)
            }
        }
    }

    /// Closes connections whose request takes too long to arrive (a slow or stalled client) with 408, and
    /// idle keep-alive connections silently.
    private func tick() {
        let now = HTTPServer.now()
        let requestLimit = Int64(settings.requestTimeoutMs) * 1_000_000
        switch phase {
        case .idle:
            if let first = watch.firstByteAt, now - first > requestLimit {
                timeOut()
            } else if watch.firstByteAt == nil, now - watch.lastActivityAt > Int64(settings.idleTimeoutMs) * 1_000_000 {
                server.host.count("connections_idle_closed")
                context?.close(promise: nil)
            }
        case .receiving:
            if now - min(watch.firstByteAt ?? headAt, headAt) > requestLimit { timeOut() }
        case .responding, .streaming, .closing:
            break
        }
    }

    private func timeOut() {
        server.host.count("requests_timed_out")
        let problem = Response.problem(
            .requestTimeout, "the request did not arrive within \(settings.requestTimeoutMs) ms", close: true)
        if phase == .receiving {
            respond(problem)
        } else {
            // The head is not complete: the HTTP handlers have no request to answer.
            phase = .closing
            watch.fail(with: problem)
        }
    }

    // MARK: Parsing the target

    /// Splits a request target into its path and its query parameters (percent-decoded; `+` is a space).
    static func split(_ uri: String) -> (path: String, query: [String: String]) {
        guard let mark = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: mark)...].split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ s: Substring) -> String? {
                CloudEventHTTP.percentDecode(String(s.map { $0 == "+" ? " " : $0 }))
            }
            guard let name = decode(parts[0]) else { continue }
            query[name] = parts.count > 1 ? decode(parts[1]) ?? "" : ""
        }
        return (String(uri[..<mark]), query)
    }

    /// The path's segments, percent-decoded; `nil` when one does not decode.
    static func segments(_ path: String) -> [String]? {
        var out: [String] = []
        for segment in path.split(separator: "/", omittingEmptySubsequences: true) {
            guard let decoded = CloudEventHTTP.percentDecode(String(segment)), !decoded.isEmpty else { return nil }
            out.append(decoded)
        }
        return out
    }

    static func flag(_ value: String?) -> Bool {
        guard let value else { return false }
        return ["", "1", "true", "yes"].contains(value.lowercased())
    }
}
