import Dispatch
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import NIOPosix
import PlexusPluginSDK
import Synchronization

/// The gRPC server: its own event loops, the services, and the task that runs it.
final class Server: Sendable {
    let host: Host
    let settings: GRPCProtocol.Settings
    private let group: MultiThreadedEventLoopGroup
    private let state = Mutex<State>(State())
    let kernel: Kernel

    private struct State {
        var server: GRPCServer<HTTP2ServerTransport.Posix>?
        var task: Task<Void, Never>?
        var port = 0
    }

    init(host: Host, settings: GRPCProtocol.Settings) {
        self.host = host
        self.settings = settings
        group = MultiThreadedEventLoopGroup(numberOfThreads: settings.threads)
        kernel = Kernel(host: host, settings: settings)
    }

    var port: Int { state.withLock { $0.port } }
    var activeCalls: Int { kernel.streams.load(ordering: .relaxed) }

    /// Binds and starts serving; returns once the port is bound.
    /// - Throws: `PluginError` naming the address when it cannot be bound.
    func start() throws {
        let settings = self.settings
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: settings.host, port: settings.port), transportSecurity: .plaintext,
            config: .defaults { config in
                // Up to four times the limit is read and refused by the handlers with RESOURCE_EXHAUSTED; beyond
                // that the transport resets the stream.
                config.rpc.maxRequestPayloadSize =
                    settings.maxMessageBytes.multipliedReportingOverflow(by: 4).overflow
                    ? Int.max : settings.maxMessageBytes * 4
            },
            eventLoopGroup: group)
        let kernel = self.kernel
        let server = GRPCServer(
            transport: transport,
            services: [
                PlexusService(kernel: kernel), EventMeshPublisher(kernel: kernel), EventMeshConsumer(kernel: kernel),
                EventMeshHeartbeat(kernel: kernel),
            ])
        let host = self.host
        let task = Task {
            do {
                try await server.serve()
            } catch {
                host.log(.error, "grpc-protocol: the server stopped: \(error)")
            }
        }
        let bound = Mutex<Result<Int, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            do {
                let address = try await transport.listeningAddress
                bound.withLock { $0 = .success(address.ipv4?.port ?? address.ipv6?.port ?? 0) }
            } catch {
                bound.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        let waited = done.wait(timeout: .now() + .seconds(5))
        switch (waited, bound.withLock { $0 }) {
        case (.success, .success(let port)?):
            state.withLock {
                $0.server = server
                $0.task = task
                $0.port = port
            }
            host.log(.info, "listening on \(settings.host):\(port) (gRPC)")
        case (_, let result):
            server.beginGracefulShutdown()
            task.cancel()
            try? group.syncShutdownGracefully()
            var reason = "it did not bind within 5 s"
            if case .failure(let error)? = result { reason = "\(error)" }
            throw PluginError(
                PX_ERR_UNAVAILABLE, "grpc-protocol: cannot listen on \(settings.host):\(settings.port): \(reason)")
        }
    }

    /// Stops accepting, lets open calls end within `timeout`, then cancels the rest.
    func stop(timeout: Duration) {
        guard endServing(timeout: timeout) else { return }
        // Only now, with the server and its transport released (some of their deinits still use the loops).
        try? group.syncShutdownGracefully()
    }

    /// Shuts the server down gracefully, then cancels what is left; false when it was not serving.
    private func endServing(timeout: Duration) -> Bool {
        let taken = state.withLock { state in
            defer {
                state.server = nil
                state.task = nil
            }
            return (state.server, state.task)
        }
        guard let server = taken.0, let task = taken.1 else { return false }
        server.beginGracefulShutdown()
        let done = DispatchSemaphore(value: 0)
        Task {
            await task.value
            done.signal()
        }
        let millis = max(100, Int(timeout.components.seconds * 1000) * 8 / 10)
        if done.wait(timeout: .now() + .milliseconds(millis / 2)) == .timedOut {
            // Open streams (subscriptions) do not end on their own: cancel them.
            task.cancel()
            _ = done.wait(timeout: .now() + .milliseconds(millis / 2))
        }
        return true
    }
}
