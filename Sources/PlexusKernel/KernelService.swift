import Foundation
import Logging
import ServiceLifecycle

/// Runs a kernel under swift-service-lifecycle: starts the plugins and the admin endpoint, waits for a
/// graceful shutdown (SIGINT/SIGTERM through the service group), then stops plugins in reverse order.
public struct KernelService: Service {
    public let kernel: Kernel
    let onReady: @Sendable (AdminServer) -> Void
    /// Stop and fail when the node is not ready once every plugin has started (`plexus serve --strict`).
    let strict: Bool

    public init(kernel: Kernel, strict: Bool = false, onReady: @escaping @Sendable (AdminServer) -> Void = { _ in }) {
        self.kernel = kernel
        self.strict = strict
        self.onReady = onReady
    }

    public func run() async throws {
        let kernel = self.kernel
        // Bound first: if the port is taken, no plugin has started yet.
        let admin = try AdminServer(kernel: kernel, host: kernel.config.adminHost, port: kernel.config.adminPort)
        // Plugin hooks block (under deadlines); keep them off the cooperative thread pool.
        await Self.onThread { kernel.start() }
        if strict {
            let readiness = kernel.readiness()
            if !readiness.ready {
                for reason in readiness.reasons { kernel.logger.critical("not ready (--strict): \(reason)") }
                admin.close()
                await Self.onThread { kernel.stop() }
                throw KernelError(
                    .invalidState, subject: "node \(kernel.config.nodeID)",
                    "not ready after start, and --strict is set: \(readiness.reasons.joined(separator: "; "))")
            }
        }
        kernel.rememberStartedFiles()
        var watcher: ManifestWatcher?
        if kernel.config.watchPlugins {
            let directories = kernel.config.manifestDirectories + kernel.config.pluginSearchPath
            watcher = ManifestWatcher(directories: directories, rescan: kernel.config.rescanInterval) { [weak kernel] in
                kernel?.reconcile().pending ?? false
            }
            kernel.logger.notice(
                "watching \(kernel.config.manifestDirectories.joined(separator: ", ")) for plugins dropped in, changed or removed"
            )
        }
        kernel.logger.notice("admin endpoint listening on \(kernel.config.adminHost):\(admin.port)")
        await Self.onThread { kernel.registerNode(admin: "\(kernel.config.adminHost):\(admin.port)") }
        onReady(admin)
        try? await gracefulShutdown()
        kernel.logger.notice("shutting down")
        watcher?.stop()
        admin.close()
        await Self.onThread {
            kernel.deregisterNode()
            kernel.stop()
        }
    }

    /// Runs a node-wide lifecycle step (start every plugin, stop every plugin) on a thread of its own.
    ///
    /// One thread per node start or stop, not per plugin or hook: the hooks themselves run on `HookThreads`
    /// under their deadlines; this thread only waits for them in start order, which must not tie up a
    /// cooperative-pool thread, a kernel pool loop, or one of the lifecycle threads it waits on.
    static func onThread(_ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let thread = Thread {
                body()
                continuation.resume()
            }
            thread.name = "plexus.lifecycle"
            thread.start()
        }
    }
}
