import NIOCore

/// The first handler of every connection: passes bytes on until the connection is ending, then discards them.
///
/// Closing a socket while the client's bytes lie unread in it makes the kernel answer with a reset, and a
/// reset can destroy what was just written before the client reads it (TCP: the fatal `ERROR` frame after
/// junk, a `GOODBYE`; HTTP: a 413 while the client still sends the oversized body, the answer to a
/// `Connection: close` request followed by more bytes). So a connection ends in three steps: the last bytes
/// are written and flushed, the write side is shut (the client reads them, then end-of-stream), and what the client still
/// sends is read and dropped until it closes its side, `maxBytes` have been dropped, or `timeout` passed,
/// whichever comes first; then the socket is closed.
public final class Linger: ChannelInboundHandler, RemovableChannelHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer

    public init() {}

    /// How long an ending connection reads and drops the client's bytes at most.
    public static let timeout = TimeAmount.milliseconds(2000)
    /// How many of the client's bytes an ending connection drops at most before it closes anyway.
    public static let maxBytes = 1 << 20

    private var discarding = false
    private var discarded = 0
    /// The client shut its write side: nothing is left to read, so the socket can close at once.
    private var inputClosed = false

    /// Ends `channel` as described above; on its event loop, after its last bytes were flushed.
    public static func start(on channel: any Channel) {
        channel.pipeline.handler(type: Linger.self).whenComplete { result in
            guard case .success(let linger) = result else { return channel.close(promise: nil) }
            linger.begin(channel)
        }
    }

    private func begin(_ channel: any Channel) {
        guard !discarding else { return }
        discarding = true
        guard !inputClosed else { return channel.close(promise: nil) }
        channel.close(mode: .output, promise: nil)
        channel.eventLoop.scheduleTask(in: Self.timeout) { channel.close(promise: nil) }
        // Backpressure may have paused reading: the client's bytes must be read to be dropped.
        channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in channel.read() }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard discarding else { return context.fireChannelRead(data) }
        discarded += unwrapInboundIn(data).readableBytes
        if discarded > Self.maxBytes { context.close(promise: nil) }
    }

    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? ChannelEvent, event == .inputClosed {
            inputClosed = true
            if discarding { return context.close(promise: nil) }
        }
        context.fireUserInboundEventTriggered(event)
    }

    public func channelReadComplete(context: ChannelHandlerContext) {
        if !discarding { context.fireChannelReadComplete() }
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // While ending, a reset or a refused shutdown only means the client is gone.
        guard discarding else { return context.fireErrorCaught(error) }
        context.close(promise: nil)
    }
}
