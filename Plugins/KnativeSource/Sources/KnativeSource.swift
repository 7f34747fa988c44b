import NIOCore
import NIOHTTP1
import NIOPosix
import PlexusNIOServer
import PlexusPluginSDK
import Synchronization

/// The source's configuration.
struct KnativeSettings: Sendable {
    var host: String
    var port: Int
    var path: String
    var topic: String
    var maxBodyBytes: Int
    var retryAfterSeconds: Int

    init(_ config: PluginConfig) throws {
        let entries = config.entries
        func text(_ key: String) -> String? { entries[key].flatMap { $0.isEmpty ? nil : $0 } }
        func integer(_ key: String, _ fallback: Int, _ range: ClosedRange<Int>) throws -> Int {
            guard let text = text(key) else { return fallback }
            guard let value = Int(text), range.contains(value) else {
                throw PluginError.invalidArgument(
                    "'\(key)' must be an integer from \(range.lowerBound) to \(range.upperBound), not '\(text)'")
            }
            return value
        }
        host = text("host") ?? "127.0.0.1"
        port = try integer("port", 8080, 0...65535)
        path = text("path") ?? "/"
        guard path.hasPrefix("/") else {
            throw PluginError.invalidArgument("'path' must start with '/', not '\(path)'")
        }
        guard let topic = text("topic") else { throw PluginError.invalidArgument("'topic' must name a topic") }
        self.topic = topic
        maxBodyBytes = try integer("maxBodyBytes", 4 << 20, 1...(256 << 20))
        retryAfterSeconds = try integer("retryAfterSeconds", 1, 0...3600)
    }
}

/// A Knative-style source: an addressable HTTP endpoint (what a SinkBinding injects as `K_SINK`) that takes
/// CloudEvents in binary, structured or batch mode and publishes them into one topic, answering `202 Accepted`
/// only once the node has stored them durably; `400` for an event that is not valid, `413` for a body over
/// `maxBodyBytes`, `415` for a request that is no CloudEvent, and `503`/`429` with `Retry-After` when the node
/// refuses (unavailable, or over its bound on pending publishes).
public final class KnativeSource: Plugin {
    public static let name = "knative-source"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    let host: Host
    let settings: KnativeSettings
    let name: String
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let accepted = Atomic<UInt64>(0)
    /// Set once `stop` shut the event loop down: a publish completing later has nobody to answer.
    let stopped = Atomic<Bool>(false)
    private let state = Mutex<State>(State())

    private struct State {
        var listener: (any Channel)?
        var connections: [ObjectIdentifier: any Channel] = [:]
        var stopping = false
    }

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        name = config.instanceName
        do {
            settings = try KnativeSettings(config)
        } catch let error as PluginError {
            throw PluginError(status: error.status, "\(config.instanceName): \(error.message)")
        }
    }

    public func start() throws {
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let open = state.withLock { s -> Bool in
                        if s.stopping { return false }
                        s.connections[ObjectIdentifier(channel)] = channel
                        return true
                    }
                    guard open else { throw ChannelError.ioOnClosedChannel }
                    channel.closeFuture.whenComplete { [self] _ in
                        _ = state.withLock { $0.connections.removeValue(forKey: ObjectIdentifier(channel)) }
                    }
                    // Pipelining assistance: one request at a time per connection, so one sender's events are
                    // published in the order it sent them.
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withPipeliningAssistance: true)
                    try channel.pipeline.syncOperations.addHandler(KnativeHandler(source: self))
                }
            }
        do {
            let listener: any Channel
            do {
                listener = try bindListener(
                    bootstrap, host: host, address: settings.host, port: settings.port, backlog: 256)
            } catch let error as PluginError where error.status == PX_ERR_UNSUPPORTED.status {
                // A host that offers no listening sockets (the conformance kit's): a socket of its own.
                listener = try bootstrap.bind(host: settings.host, port: settings.port).wait()
            }
            state.withLock { $0.listener = listener }
            host.log(
                .info,
                "\(name): accepting CloudEvents for \(settings.topic) at http://"
                    + "\(listener.localAddress.map { "\($0.ipAddress ?? settings.host):\($0.port ?? settings.port)" } ?? "")"
                    + settings.path)
        } catch {
            try? group.syncShutdownGracefully()
            throw PluginError(
                PX_ERR_UNAVAILABLE, "\(name): cannot listen on \(settings.host):\(settings.port): \(error)")
        }
    }

    /// Stops accepting, closes every connection (a request whose publish has not completed gets no answer, so
    /// its sender sends it again: at-least-once), then stops the event loop.
    public func stop(timeout: Duration) throws {
        let (listener, connections) = state.withLock { s in
            s.stopping = true
            defer {
                s.listener = nil
                s.connections = [:]
            }
            return (s.listener, Array(s.connections.values))
        }
        try? listener?.close().wait()
        for connection in connections { try? connection.close().wait() }
        stopped.store(true, ordering: .sequentiallyConsistent)
        try group.syncShutdownGracefully()
    }

    /// Events published and acknowledged (answered 202) since this instance started.
    var acceptedCount: UInt64 { accepted.load(ordering: .relaxed) }
}

@_cdecl("px_plugin_entry_v1")
public func knativeSourceEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(KnativeSource.self, api, out, err)
}

/// Operation `accepted`: events this instance published and answered 202 for.
@_cdecl("px_op_knative_source_accepted")
public func knativeSourceAccepted(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(KnativeSource.self, instance)?.acceptedCount ?? 0
}
