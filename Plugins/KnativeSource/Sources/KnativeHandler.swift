import NIOCore
import NIOHTTP1
import PlexusPluginSDK

/// One connection's requests: collects a request's body (bounded), turns it into events, publishes them and
/// answers once the publish completed.
final class KnativeHandler: ChannelInboundHandler, @unchecked Sendable {
    // Safe: NIO calls a handler on its channel's event loop only; the publish completion hops back to it.
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let source: KnativeSource
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []
    private var tooLarge = false

    init(source: KnativeSource) { self.source = source }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let request):
            head = request
            body = []
            tooLarge = false
        case .body(var chunk):
            if body.count + chunk.readableBytes > source.settings.maxBodyBytes {
                tooLarge = true
            } else if let bytes = chunk.readBytes(length: chunk.readableBytes) {
                body += bytes
            }
        case .end:
            guard let request = head else { return }
            head = nil
            handle(request, context: context)
        }
    }

    private func handle(_ request: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = request.uri.split(separator: "?", maxSplits: 1).first.map(String.init) ?? request.uri
        guard path == source.settings.path else {
            return respond(context, request, .notFound, "no event endpoint at \(path); POST to \(source.settings.path)")
        }
        guard request.method == .POST else {
            return respond(context, request, .methodNotAllowed, "POST CloudEvents here", extra: [("Allow", "POST")])
        }
        if tooLarge {
            return respond(
                context, request, .payloadTooLarge,
                "the body is over \(source.settings.maxBodyBytes) bytes (maxBodyBytes)")
        }
        let events: [CloudEvent]
        switch KnativeIngress.events(headers: request.headers.map { ($0.name, $0.value) }, body: body) {
        case .success(let decoded): events = decoded
        case .failure(let status, let message):
            source.host.count("knative_requests_rejected")
            return respond(context, request, status, message)
        }
        body = []
        guard !events.isEmpty else { return respond(context, request, .accepted, nil) }
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let source = self.source
        do {
            try source.host.publish(topic: source.settings.topic, events) { result in
                // After stop the connection is closed and the loop gone: the sender, unanswered, sends again.
                if source.stopped.load(ordering: .sequentiallyConsistent) { return }
                loop.execute {
                    let (handler, context) = bound.value
                    handler.published(result, count: events.count, context: context, request: request)
                }
            }
        } catch let error as PluginError {
            published(.failure(error), count: events.count, context: context, request: request)
        } catch {
            published(
                .failure(PluginError(PX_ERR_INTERNAL, "\(error)")), count: events.count, context: context,
                request: request)
        }
    }

    /// Answers a request once its publish completed (or was refused).
    private func published(
        _ result: Result<UInt64, PluginError>, count: Int, context: ChannelHandlerContext, request: HTTPRequestHead
    ) {
        let settings = source.settings
        switch result {
        case .success:
            source.accepted.add(UInt64(count), ordering: .relaxed)
            source.host.count("connector_events_published", by: UInt64(count))
            respond(context, request, .accepted, nil)
        case .failure(let error):
            source.host.count("connector_publish_refusals")
            let retryAfter = [("Retry-After", String(settings.retryAfterSeconds))]
            switch error.status {
            case PX_ERR_RESOURCE_EXHAUSTED.status:
                respond(
                    context, request, .tooManyRequests, "the node is over its bound: \(error.message)",
                    extra: retryAfter)
            case PX_ERR_INVALID_ARGUMENT.status:
                respond(context, request, .badRequest, "the node refused the events: \(error.message)")
            case PX_ERR_UNAVAILABLE.status, PX_ERR_TIMEOUT.status:
                respond(
                    context, request, .serviceUnavailable, "the node cannot store the events now: \(error.message)",
                    extra: retryAfter)
            default:
                respond(
                    context, request, .internalServerError, "the events were not stored: \(error.message)",
                    extra: retryAfter)
            }
        }
    }

    private func respond(
        _ context: ChannelHandlerContext, _ request: HTTPRequestHead, _ status: HTTPResponseStatus, _ message: String?,
        extra: [(String, String)] = []
    ) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders(extra)
        var buffer = context.channel.allocator.buffer(capacity: 0)
        if let message {
            headers.add(name: "Content-Type", value: "application/problem+json")
            buffer.writeString(
                #"{"status":\#(status.code),"title":"\#(status.reasonPhrase)","detail":\#(CloudEventJSON.quote(message))}"#
            )
        }
        headers.add(name: "Content-Length", value: String(buffer.readableBytes))
        let keepAlive = request.isKeepAlive
        if !keepAlive { headers.add(name: "Connection", value: "close") }
        let head = HTTPResponseHead(version: request.version, status: status, headers: headers)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if buffer.readableBytes > 0 { context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil) }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { _ in context.close(promise: nil) } }
    }
}
