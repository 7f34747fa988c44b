import Dispatch
import NIOCore
import NIOPosix
import PlexusNIOServer
import PlexusPluginSDK
import PlexusWire
import Synchronization

/// The listening socket and the sessions it accepted.
final class TCPServer: Sendable {
    let host: Host
    let settings: TCPProtocol.Settings
    private let group: MultiThreadedEventLoopGroup
    /// Work taken off the event loops (the kernel's unsubscribe waits for running deliveries); `stop` waits
    /// for it, so that nothing calls the host after the instance is stopped.
    private let offLoopWork = DispatchGroup()
    private let state = Mutex<State>(State())

    private struct State {
        var listener: (any Channel)?
        var sessions: [UInt64: Session] = [:]
        var nextSession: UInt64 = 1
    }

    init(host: Host, settings: TCPProtocol.Settings) {
        self.host = host
        self.settings = settings
        group = MultiThreadedEventLoopGroup(numberOfThreads: settings.threads)
    }

    var sessionCount: Int { state.withLock { $0.sessions.count } }

    /// The address the server listens on, once bound.
    var localAddress: SocketAddress? { state.withLock { $0.listener?.localAddress } }
    /// The listening socket's accept queue (a flood of connections waits here, not in SYN retries).
    static let backlog: Int32 = 1024

    /// Whether the listening socket is open and accepting.
    var isListening: Bool { state.withLock { $0.listener?.isActive ?? false } }

    /// Binds and starts accepting.
    /// - Throws: `PluginError` naming the address when it cannot be bound.
    func start() throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: Self.backlog)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // A client that shuts its write side still gets the answers it is owed (ConnectionHandler).
            .childChannelOption(.allowRemoteHalfClosure, value: true)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let (session, open) = register(channel)
                    try channel.pipeline.syncOperations.addHandler(Linger())
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(FrameDecoder(maxFrameSize: settings.maxFrameSize)))
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(server: self, session: session, overLimit: open > maxConnections))
                }
            }
        do {
            let listener = try bindListener(
                bootstrap, host: host, address: settings.host, port: settings.port, backlog: Self.backlog)
            state.withLock { $0.listener = listener }
            host.log(
                .info, "listening on \(listener.localAddress.map { "\($0)" } ?? "\(settings.host):\(settings.port)")")
        } catch {
            try? group.syncShutdownGracefully()
            throw PluginError(
                PX_ERR_UNAVAILABLE, "tcp-protocol: cannot listen on \(settings.host):\(settings.port): \(error)")
        }
    }

    /// Client connections served at once (`maxConnections`).
    var maxConnections: Int { settings.maxConnections ?? 4096 }

    /// Records a new connection's session; returns it and how many connections are open with it.
    private func register(_ channel: any Channel) -> (Session, Int) {
        let (session, open) = state.withLock { s -> (Session, Int) in
            let session = Session(id: s.nextSession, channel: channel, host: host)
            s.nextSession += 1
            s.sessions[session.id] = session
            return (session, s.sessions.count)
        }
        host.count("connections_accepted")
        host.gauge("connections", Double(open))
        return (session, open)
    }

    /// Runs `work` on a Dispatch worker, counted so that `stop` can wait for it.
    func offLoop(_ work: @escaping @Sendable () -> Void) {
        offLoopWork.enter()
        DispatchQueue.global().async { [offLoopWork] in
            work()
            offLoopWork.leave()
        }
    }

    func forget(_ session: Session) {
        state.withLock { _ = $0.sessions.removeValue(forKey: session.id) }
        host.gauge("connections", Double(sessionCount))
    }

    /// Whether `token` may connect: any token when none are configured.
    func accepts(token: String) -> Bool {
        guard !settings.tokens.isEmpty else { return true }
        // Compare every configured token in full, so the time taken says nothing about how much matched.
        var matched = false
        for candidate in settings.tokens where Self.constantTimeEqual(candidate, token) { matched = true }
        return matched
    }

    private static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8)
        let y = Array(b.utf8)
        var difference = UInt8(truncatingIfNeeded: x.count ^ y.count)
        for i in 0..<max(x.count, y.count) {
            difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
        }
        return difference == 0
    }

    /// Stops accepting, says goodbye to every client, closes their connections (ending their
    /// subscriptions) and stops the event loops.
    func stop(timeout: Duration) {
        let (listener, sessions) = state.withLock { s in (s.listener, Array(s.sessions.values)) }
        try? listener?.close().wait()
        for session in sessions {
            session.send(Frame(.goodbye(reason: "node stopping")))
            session.close()
            session.flushThenClose()
        }
        let deadline = ContinuousClock.now + timeout
        while sessionCount > 0, ContinuousClock.now < deadline {
            usleep(10_000)
        }
        let left = deadline - ContinuousClock.now
        let nanos = max(0, left.components.seconds * 1_000_000_000 + left.components.attoseconds / 1_000_000_000)
        if offLoopWork.wait(timeout: .now() + .nanoseconds(Int(nanos))) == .timedOut {
            host.log(.warning, "stopping with subscriptions still being ended")
        }
        try? group.syncShutdownGracefully()
    }
}
