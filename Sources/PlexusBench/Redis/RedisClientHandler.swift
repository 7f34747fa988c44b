import NIOCore

/// Hands decoded RESP replies to their ``RedisConnection`` and fails it when the connection ends.
final class RedisClientHandler: ChannelInboundHandler {
    typealias InboundIn = RESPValue

    private let connection: RedisConnection

    init(connection: RedisConnection) {
        self.connection = connection
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.received(unwrapInboundIn(data))
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
