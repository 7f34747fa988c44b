import NIOCore

/// Routes decoded NATS frames to their ``NATSConnection``: answers `PING`, matches `PONG`s, delivers messages.
final class NATSClientHandler: ChannelInboundHandler {
    typealias InboundIn = NATSFrame
    typealias OutboundOut = ByteBuffer

    private let connection: NATSConnection

    init(connection: NATSConnection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .message(let message):
            connection.received(message)
        case .ping:
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: "PONG\r\n")), promise: nil)
        case .pong:
            connection.receivedPong()
        case .info, .ok:
            break
        case .error(let text):
            connection.fail(BenchError(.serverError, subject: connection.label, "-ERR '\(text)'"))
            context.close(promise: nil)
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.fail(BenchError(.connectionClosed, subject: connection.label, "the server closed the connection"))
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.fail(BenchError(.protocolViolation, subject: connection.label, "\(error)"))
        context.close(promise: nil)
    }
}
