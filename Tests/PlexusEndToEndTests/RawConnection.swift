import Foundation
import NIOCore
import NIOPosix
import PlexusWire
import Synchronization

/// A bare TCP connection that speaks frames (or raw bytes) to a node, for tests that must misbehave
/// as no real client would: frames before HELLO, garbage, half frames, vanishing without GOODBYE.
final class RawConnection: Sendable {
    let channel: any Channel
    private let inbox: Inbox

    final class Inbox: ChannelInboundHandler, Sendable {
        typealias InboundIn = InboundFrame
        let frames = Mutex<[InboundFrame]>([])
        let closed = Atomic<Bool>(false)

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            frames.withLock { $0.append(frame) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            closed.store(true, ordering: .relaxed)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }

    private init(channel: any Channel, inbox: Inbox) {
        self.channel = channel
        self.inbox = inbox
    }

    static func connect(port: Int) async throws -> RawConnection {
        let inbox = Inbox()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxFrameSize: 8 << 20)))
                    try channel.pipeline.syncOperations.addHandler(inbox)
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, inbox: inbox)
    }

    /// Connects and completes the handshake.
    static func open(port: Int, heartbeatMs: UInt32 = 0) async throws -> (RawConnection, Welcome) {
        let connection = try await connect(port: port)
        try await connection.send(Frame(id: 1, .hello(Hello(client: "raw-test", heartbeatMs: heartbeatMs))))
        guard case .frame(let frame)? = try await connection.next(), case .welcome(let welcome) = frame.body else {
            throw SetupError(description: "no WELCOME after HELLO")
        }
        return (connection, welcome)
    }

    func send(_ frame: Frame) async throws {
        var buffer = channel.allocator.buffer(capacity: 64)
        try FrameCodec.encode(frame, into: &buffer)
        try await channel.writeAndFlush(buffer)
    }

    func send(bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
    }

    /// The next frame, or nil when none arrives within `timeout` or the connection closed.
    func next(timeout: Duration = .seconds(5)) async throws -> InboundFrame? {
        // Answered: a frame, or none because the connection closed.
        let answer: InboundFrame?? = try await poll(upTo: timeout, every: .milliseconds(5)) {
            if let frame = inbox.frames.withLock({ $0.isEmpty ? nil : $0.removeFirst() }) { return .some(frame) }
            return inbox.closed.load(ordering: .relaxed) ? .some(nil) : nil
        }
        return answer ?? nil
    }

    /// The next frame that is not a heartbeat.
    func nextFrame(timeout: Duration = .seconds(5)) async throws -> Frame? {
        while let inbound = try await next(timeout: timeout) {
            guard case .frame(let frame) = inbound else { continue }
            if case .heartbeat(let reply) = frame.body {
                if !reply { try await send(Frame(id: frame.id, .heartbeat(reply: true))) }
                continue
            }
            return frame
        }
        return nil
    }

    /// Whether the server closed the connection within `timeout`.
    func closedByServer(within timeout: Duration) async throws -> Bool {
        try await eventually(timeout, every: .milliseconds(10)) { inbox.closed.load(ordering: .relaxed) }
    }

    /// Drops the connection without GOODBYE, as a crashed client would.
    func vanish() async {
        try? await channel.close()
    }
}
