import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization

/// The microkernel: reads manifests, verifies, resolves, loads and starts plugins, keeps their states, and
/// stops them in reverse order. Everything that does real work is a plugin.
public final class Kernel: Sendable {
    public let config: NodeConfig
    public let services: HostServices
    let logger: Logger
    let loader: PluginLoader
    let records = Mutex<[String: PluginRecord]>([:])
    /// Start order of the plugins that were resolved.
    let order = Mutex<[String]>([])
    /// Serialises start and stop.
    let lifecycleLock = Mutex<Void>(())
    /// Whether `start()` has run to its end (every plugin active or failed).
    private let started = Atomic<Bool>(false)
    /// What the manifest directories held when the node last applied them (`reconcile()`).
    let deployed = Mutex<DeploymentState>(DeploymentState())
    /// The leaders of replicated streams as storages last reported them, and when (`TopicAdmin`).
    let leaderCache = Mutex<(at: ContinuousClock.Instant, leaders: [String: String])?>(nil)
    /// This node's entry in the registry (`ClusterNode`).
    let clusterNode: ClusterNode

    public init(
        config: NodeConfig, logger: Logger, metrics: MetricsRegistry = MetricsRegistry(),
        clock: any DeliveryClock = SystemDeliveryClock(), tracing: KernelTracing = .off
    ) {
        self.config = config
        self.logger = logger
        self.services = HostServices(metrics: metrics, topics: config.topics, clock: clock, tracing: tracing)
        self.loader = PluginLoader(
            searchPath: config.pluginSearchPath, cacheDirectory: config.resolvedCacheDirectory,
            requireSHA256: config.requireSHA256,
            trust: PluginTrust(trustedKeys: config.trustedKeys, requireSigned: config.requireSigned))
        self.clusterNode = ClusterNode(services: services, logger: logger)
    }

    // MARK: Discovery

    /// The manifest files in the node's manifest directories (`*.yaml`, `*.yml`, not hidden), sorted.
    public func manifestFiles() -> [String] {
        config.manifestDirectories.flatMap { directory -> [String] in
            guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else {
                logger.warning("manifest directory \(directory) cannot be read; no plugins come from it")
                return []
            }
            // Hidden files are skipped: editors' and copiers' temporary files are not manifests yet.
            return names.filter { !$0.hasPrefix(".") && ($0.hasSuffix(".yaml") || $0.hasSuffix(".yml")) }.sorted()
                .map { directory + "/" + $0 }
        }
    }

    // MARK: Start

    /// Discovers, verifies, resolves, loads, creates and starts every plugin. A plugin that fails is marked
    /// failed with the reason; the others go on. Returns when every plugin is active or failed.
    public func start() {
        lifecycleLock.withLock { _ in
            startTopicAdmin()
            var manifests: [Manifest] = []
            for path in manifestFiles() {
                do {
                    let manifest = try config.pluginConfig.applied(to: ManifestParser.load(path: path))
                    if !manifest.configOverridden.isEmpty {
                        logger.info(
                            "\(manifest.name): the node file sets \(manifest.configOverridden.joined(separator: ", ")) over \(path)"
                        )
                    }
                    if let first = record(manifest.name) {
                        let duplicate = PluginRecord(
                            name: URL(fileURLWithPath: path).lastPathComponent, manifestPath: path, manifest: manifest)
                        register(duplicate)
                        fail(
                            duplicate,
                            KernelError(
                                .duplicatePlugin, subject: path, field: "name",
                                "plugin '\(manifest.name)' is already declared by \(first.manifestPath)"))
                        continue
                    }
                    register(PluginRecord(name: manifest.name, manifestPath: path, manifest: manifest))
                    manifests.append(manifest)
                } catch let error as KernelError {
                    let record = PluginRecord(
                        name: URL(fileURLWithPath: path).lastPathComponent, manifestPath: path, manifest: nil)
                    register(record)
                    fail(record, error)
                } catch {
                    let record = PluginRecord(
                        name: URL(fileURLWithPath: path).lastPathComponent, manifestPath: path, manifest: nil)
                    register(record)
                    fail(record, KernelError(.manifestInvalid, subject: path, "\(error)"))
                }
            }

            let declared = Set(manifests.map(\.name))
            for (plugin, _) in config.pluginConfig.values where !declared.contains(plugin) {
                logger.warning(
                    "\(config.pluginConfig.subject): plugins.config.\(plugin) names no plugin of this node's manifests; its values apply to nothing"
                )
            }

            // Verify: library found, hash, toolchain.
            var verified: [Manifest] = []
            var libraries: [String: (path: String, sha256: String)] = [:]
            for manifest in manifests {
                guard let record = record(manifest.name), record.state == .discovered else { continue }
                do {
                    let library = try loader.locate(manifest)
                    let digest = try loader.verify(manifest, library: library)
                    libraries[manifest.name] = (library, digest)
                    record.update {
                        $0.library = library; $0.sha256 = digest
                    }
                    transition(record, to: .verified)
                    verified.append(manifest)
                } catch let error as KernelError {
                    fail(record, error)
                } catch {
                    fail(record, KernelError(.io, subject: manifest.path, "\(error)"))
                }
            }

            // Resolve.
            let resolution = Resolver.resolve(verified)
            for (manifest, error) in resolution.failures {
                if let record = record(manifest.name), record.manifestPath == manifest.path {
                    fail(record, error)
                } else {
                    // A duplicate name: report it under its file.
                    let record = PluginRecord(
                        name: URL(fileURLWithPath: manifest.path).lastPathComponent, manifestPath: manifest.path,
                        manifest: manifest)
                    register(record)
                    fail(record, error)
                }
            }
            order.withLock { $0 = resolution.order.map(\.name) }
            for manifest in resolution.order {
                guard let record = record(manifest.name) else { continue }
                transition(record, to: .resolved)
            }

            // Topics without a binding need a storage from the first publish on; until the plugins have
            // started, take the one that will be chosen if they all start.
            if config.topics.defaultStorage == nil {
                services.router.choose(
                    defaultStorage: DefaultStorage.choose(
                        among: resolution.order.filter { $0.enabled && $0.kinds.contains(.storage) }.map {
                            DefaultStorage.Candidate($0)
                        }))
            }

            // Load, create and start, in dependency order.
            for manifest in resolution.order {
                guard let record = record(manifest.name), let library = libraries[manifest.name] else { continue }
                // Each non-optional requirement needs at least one of its providers active.
                if let unmet = resolution.dependencies[manifest.name]?.first(where: { providers in
                    !providers.contains { self.record($0)?.state == .active }
                }) {
                    let states = unmet.sorted().map { "'\($0)' (\(self.record($0)?.state.rawValue ?? "missing"))" }
                    fail(
                        record,
                        KernelError(
                            .dependencyFailed, subject: manifest.path, field: "requires",
                            "depends on plugin \(states.joined(separator: " or ")), which is not active"))
                    continue
                }
                guard manifest.enabled else {
                    logger.info("plugin \(manifest.name) is disabled by its manifest; left resolved")
                    continue
                }
                bringUp(record, manifest: manifest, library: library.path, sha256: library.sha256)
            }
            let active = records.withLock { $0.values.filter { $0.state == .active }.count }
            let failed = records.withLock { $0.values.filter { $0.state == .failed }.count }
            logger.notice("kernel started: \(active) plugin(s) active, \(failed) failed")
            settleDefaultStorage()
            started.store(true, ordering: .releasing)
        }
    }

    /// Chooses, once the plugins have started, the storage of topics without a binding when the node file
    /// names none, and says in the log which one and why; warns when it does not survive a restart.
    private func settleDefaultStorage() {
        let router = services.router
        let origin = config.topics.isDeclared ? "no topics.defaultStorage in the node file" : "no topics section"
        if let configured = config.topics.defaultStorage {
            guard let durability = router.durability(of: configured) else {
                logger.error(
                    "topics: default storage \(configured) (configured) is not active; publishes to topics without a binding are refused"
                )
                return
            }
            if DefaultStorage.isDurable(durability) {
                logger.notice("topics: default storage \(configured) (configured; durable)")
            } else {
                logger.warning(
                    "topics: default storage \(configured) (configured; not durable: events are kept in memory and lost when the node stops)"
                )
            }
            return
        }
        let active = records.withLock { all in
            all.values.compactMap { record -> DefaultStorage.Candidate? in
                guard record.state == .active, let manifest = record.snapshot.manifest,
                    manifest.kinds.contains(.storage)
                else { return nil }
                return DefaultStorage.Candidate(manifest)
            }
        }
        let chosen = DefaultStorage.choose(among: active)
        router.choose(defaultStorage: chosen)
        guard let chosen, let durability = router.durability(of: chosen) else {
            logger.error(
                "topics: \(origin), and neither \(DefaultStorage.durable) nor \(DefaultStorage.volatile) is active; publishes to topics without a binding are refused"
            )
            return
        }
        if DefaultStorage.isDurable(durability) {
            logger.notice("topics: \(origin); default storage \(chosen) (durable)")
        } else {
            logger.warning(
                "topics: \(origin); default storage \(chosen) (not durable: events are kept in memory and lost when the node stops; \(DefaultStorage.durable) is not active)"
            )
        }
    }

    func bringUp(_ record: PluginRecord, manifest: Manifest, library: String, sha256: String) {
        let loaded: LoadedPlugin
        do {
            let mapped = try loader.cache(library, sha256: sha256, subject: manifest.path)
            if config.probe, manifest.sha256 == nil {
                guard let executable = config.probeExecutable else {
                    throw KernelError(
                        .loadFailed, subject: manifest.path, field: "library",
                        "plugins.probe is on but this node has no executable to probe with; pin the library's sha256 or turn the probe off"
                    )
                }
                try PluginProbe.check(
                    path: mapped, name: manifest.name, subject: manifest.path, executable: executable,
                    deadline: manifest.startTimeout)
            }
            if manifest.isolation == .process {
                loaded = try ProcessIsolation.load(
                    manifest, path: mapped, sha256: sha256, executable: config.probeExecutable,
                    observer: { [weak self, weak record] event in
                        guard let self, let record else { return }
                        self.isolationEvent(event, record: record)
                    })
            } else {
                loaded = try loader.load(manifest, path: mapped, sha256: sha256, deadline: manifest.startTimeout)
            }
        } catch let error as KernelError {
            return fail(record, error)
        } catch {
            return fail(record, KernelError(.loadFailed, subject: manifest.path, "\(error)"))
        }
        record.update { $0.loaded = loaded }
        transition(record, to: .loaded)

        let context = PluginContext(
            name: manifest.name, logger: Self.pluginLogger(logger, name: manifest.name), services: services)
        record.update { $0.context = context }
        let dataDirectory = config.dataDirectory + "/plugins/" + manifest.name
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            return fail(
                record,
                KernelError(
                    .io, subject: manifest.name,
                    "cannot create its data directory \(dataDirectory): \(error.localizedDescription)"))
        }

        let lifecycle = PluginLifecycle(manifest: manifest, loaded: loaded, context: context)
        record.update { $0.lifecycle = lifecycle }
        let instance: InstancePointer?
        switch lifecycle.create(nodeID: config.nodeID, dataDirectory: dataDirectory) {
        case .success(let created):
            instance = created
        case .failure(let failure):
            if case .abandoned = failure { record.update { $0.abandoned = true } }
            return fail(record, failure.error)
        }
        record.update { $0.instance = instance }
        transition(record, to: .created)

        if case .failure(let failure) = lifecycle.start(instance) {
            switch failure {
            case .abandoned(let error):
                record.update { $0.abandoned = true }
                return fail(record, error)
            case .failed(let error):
                fail(record, error)
                destroy(record, manifest: manifest)
                return
            }
        }
        if manifest.kinds.contains(.storage), let storage = loaded.descriptor.storage {
            services.router.bind(StorageBinding(name: manifest.name, vtable: storage, instance: instance?.raw))
        }
        if manifest.kinds.contains(.registry), let registry = loaded.descriptor.registry {
            services.registry.withLock { binding in
                if binding == nil {
                    binding = .init(vtable: registry, instance: instance?.raw, name: manifest.name)
                }
            }
        }
        transition(record, to: .active)
    }

    // MARK: Stop

    /// Stops every active plugin in reverse start order, each within its manifest's stop deadline.
    public func stop() {
        lifecycleLock.withLock { _ in
            started.store(false, ordering: .releasing)
            for name in order.withLock({ $0 }).reversed() {
                guard let record = record(name), let manifest = record.snapshot.manifest else { continue }
                guard record.state == .active || record.state == .quarantined else { continue }
                stop(record, manifest: manifest)
            }
            services.listeners.releaseAll()
            services.router.rates.stop()
            logger.notice("kernel stopped")
        }
    }

    /// Stops a plugin within its stop deadline.
    /// - Parameter keepingTopics: a storage being replaced (`replaceStorage`): its topics and consumer groups
    ///   stay with the router, which the replacement has already paused and detached from the instance.
    func stop(_ record: PluginRecord, manifest: Manifest, keepingTopics: Bool = false) {
        guard let lifecycle = record.snapshot.lifecycle else { return }
        transition(record, to: .stopping)
        let deadline = ContinuousClock.now + manifest.stopTimeout
        let storageUnbound = keepingTopics || services.router.unbind(manifest.name, until: deadline)
        guard storageUnbound, services.unbindRegistry(manifest.name, until: deadline), record.close(until: deadline)
        else {
            record.update { $0.abandoned = true }
            cleanUp(record)
            return fail(
                record,
                KernelError(
                    .deadlineExceeded, subject: manifest.name,
                    "calls into the plugin (registry hooks, health checks or operations) were still running after \(manifest.stopTimeout.milliseconds) ms; the instance is abandoned"
                ))
        }
        switch lifecycle.stop(record.snapshot.instance) {
        case .success:
            break
        case .failure(.abandoned(let error)):
            record.update { $0.abandoned = true }
            lifecycle.abandon()
            return fail(record, error)
        case .failure(.failed(let error)):
            logger.warning("plugin \(manifest.name): \(error.message)")
        }
        transition(record, to: .stopped)
        destroy(record, manifest: manifest)
    }

    /// Cancels what the plugin left behind (timers, subscriptions, registry watches) and refuses it new
    /// ones, without waiting for its callbacks: for an abandoned plugin, whose callbacks may never return.
    private func cleanUp(_ record: PluginRecord) {
        record.snapshot.lifecycle?.abandon()
    }

    /// Calls on_destroy once every completion owed to the instance has run (`PluginLifecycle.destroy`).
    private func destroy(_ record: PluginRecord, manifest: Manifest) {
        guard let lifecycle = record.snapshot.lifecycle, let instance = record.snapshot.instance else { return }
        let outcome = lifecycle.destroy(instance)
        record.update { $0.instance = nil }
        if case .failure(let failure) = outcome {
            if case .abandoned = failure { record.update { $0.abandoned = true } }
            fail(record, failure.error)
        }
    }

    // MARK: Readiness

    /// Whether the node serves: `start()` has finished, every enabled plugin is active, and each answers its
    /// health check as healthy or degraded (a protocol plugin is unhealthy while its listener does not accept).
    public struct Readiness: Sendable, Codable, Equatable {
        public var ready: Bool
        /// One line per reason the node is not ready, naming the plugin.
        public var reasons: [String]
    }

    /// Whether `start()` has finished and `stop()` has not begun.
    var isStarted: Bool { started.load(ordering: .acquiring) }

    /// The node's readiness now (`GET /v1/ready`, `plexus serve --strict`).
    public func readiness() -> Readiness {
        guard started.load(ordering: .acquiring) else {
            return Readiness(ready: false, reasons: ["the node is still starting its plugins"])
        }
        var reasons: [String] = []
        for status in statuses() {
            let enabled = records.withLock { $0[status.name]?.snapshot.manifest?.enabled } ?? true
            guard enabled else { continue }
            guard status.state == .active else {
                reasons.append(
                    "\(status.name) is \(status.state.rawValue)\(status.lastError.map { ": \($0)" } ?? "")")
                continue
            }
            if let health = status.health, !health.hasPrefix("healthy"), !health.hasPrefix("degraded") {
                reasons.append("\(status.name) is \(health)")
            }
        }
        return Readiness(ready: reasons.isEmpty, reasons: reasons)
    }

    // MARK: Status

    /// Every plugin's status, in start order then by name.
    public func statuses() -> [PluginStatus] {
        let startOrder = order.withLock { $0 }
        let all = records.withLock { Array($0.values) }
        return all.map { $0.status(health: health(of: $0)) }.sorted { a, b in
            let ia = startOrder.firstIndex(of: a.name) ?? Int.max
            let ib = startOrder.firstIndex(of: b.name) ?? Int.max
            return ia != ib ? ia < ib : a.name < b.name
        }
    }

    /// One plugin's status.
    public func status(of name: String) -> PluginStatus? {
        guard let record = record(name) else { return nil }
        return record.status(health: health(of: record))
    }

    /// Asks an active plugin for its health (`on_health`), within a short deadline. One check runs at a
    /// time per plugin; while one is still running, the last answer is reported.
    private func health(of record: PluginRecord) -> String? {
        guard record.state == .active else { return nil }
        let admitted = record.snapshot.healthInFlight ? nil : record.beginCall()
        guard let (_, instance) = admitted, let lifecycle = record.snapshot.lifecycle else {
            if admitted != nil { record.endCall() }
            return record.snapshot.lastHealth.map { "\($0) (a newer check is still running)" }
        }
        record.update { $0.healthInFlight = true }
        let answer = lifecycle.health(instance) {
            record.update { $0.healthInFlight = false }
            record.endCall()
        }
        record.update { $0.lastHealth = answer }
        return answer
    }

    // MARK: Operations

    /// Calls a manifest operation of an active or created plugin with arguments given as text.
    /// - Throws: `KernelError` naming the plugin, the operation and the argument that is wrong.
    public func callOperation(plugin: String, operation: String, arguments: [String]) throws -> String {
        guard let record = record(plugin) else {
            throw KernelError(
                .notFound, subject: plugin, "no plugin of that name on this node; see `plexus plugin list`")
        }
        let snapshot = record.snapshot
        guard let manifest = snapshot.manifest else {
            throw KernelError(.invalidState, subject: plugin, "its manifest did not parse")
        }
        guard let declaration = manifest.operations.first(where: { $0.name == operation }) else {
            let known = manifest.operations.map(\.name).joined(separator: ", ")
            throw KernelError(
                .notFound, subject: plugin, field: "operations",
                "no operation '\(operation)'; the manifest declares: \(known.isEmpty ? "none" : known)")
        }
        guard let (loaded, instance) = record.beginCall() else {
            throw KernelError(
                .invalidState, subject: plugin,
                "is \(record.state.rawValue); operations run only on a created or active plugin")
        }
        let invocation: OperationInvoker
        let values: [OperationInvoker.Value]
        guard record.snapshot.manifest?.isolation != .process else {
            record.endCall()
            throw KernelError(
                .operationInvalid, subject: plugin, field: "operations",
                "operations are not proxied to a process-isolated plugin (isolation: process); run it in-process to call them"
            )
        }
        do {
            invocation = try OperationInvoker(declaration: declaration, handle: loaded.handle, plugin: plugin)
            values = try invocation.convert(arguments)
        } catch {
            record.endCall()
            throw error
        }
        let target = instance
        let outcome = Deadline.run(.seconds(30), name: "plexus.op.\(plugin).\(operation)") {
            () -> Result<String, KernelError> in
            defer { record.endCall() }
            return Result { try invocation.call(instance: target.raw, arguments: values) }.mapError {
                $0 as? KernelError ?? KernelError(.operationInvalid, subject: plugin, "\($0)")
            }
        }
        guard case .finished(let result) = outcome else {
            throw KernelError(.deadlineExceeded, subject: plugin, "operation '\(operation)' did not return within 30 s")
        }
        return try result.get()
    }

    // MARK: Records

    func record(_ name: String) -> PluginRecord? { records.withLock { $0[name] } }

    func register(_ record: PluginRecord) {
        records.withLock { all in
            var name = record.name
            var n = 2
            while all[name] != nil {
                name = "\(record.name)#\(n)"
                n += 1
            }
            record.update { $0.name = name }
            all[name] = record
        }
        logger.info("plugin \(record.name): discovered (\(record.manifestPath))")
    }

    func transition(_ record: PluginRecord, to state: PluginState) {
        let from = record.state
        record.update {
            $0.state = state
            $0.history.append(.init(state: state, at: Date().timeIntervalSince1970))
        }
        logger.info("plugin \(record.name): \(from.rawValue) -> \(state.rawValue)")
    }

    func fail(_ record: PluginRecord, _ error: KernelError) {
        record.update {
            $0.lastError = error
        }
        transition(record, to: .failed)
        logger.error("plugin \(record.name) failed: [\(error.code.rawValue)] \(error)")
    }

    static func pluginLogger(_ base: Logger, name: String) -> Logger {
        var logger = base
        logger[metadataKey: "plugin"] = "\(name)"
        return logger
    }
}

/// An instance pointer the kernel holds on the plugin's behalf.
struct InstancePointer: @unchecked Sendable {
    // Safe: the kernel never dereferences it; it only passes it back to the plugin's hooks and operations,
    // which the ABI requires to be callable from kernel threads.
    let raw: UnsafeMutableRawPointer?
    init?(_ raw: UnsafeMutableRawPointer?) {
        self.raw = raw
    }
}

/// The kernel's record of one plugin.
final class PluginRecord: Sendable {
    struct State: @unchecked Sendable {
        // Safe: guarded by the record's mutex; pointers inside are only passed back to the plugin.
        var name: String
        var manifest: Manifest?
        var state: PluginState = .discovered
        var lastError: KernelError?
        var history: [PluginStatus.Transition] = [.init(state: .discovered, at: Date().timeIntervalSince1970)]
        var library: String?
        var sha256: String?
        var loaded: LoadedPlugin?
        var instance: InstancePointer?
        var context: PluginContext?
        var lifecycle: PluginLifecycle?
        var abandoned = false
        /// Health checks and operations running in the instance now.
        var calls = 0
        /// Set when the kernel begins to stop the instance: no new call starts.
        var closing = false
        var healthInFlight = false
        var lastHealth: String?
        /// The image this instance replaced (what `rollback` returns to).
        var previous: DeployedImage?
        /// The last deployment change applied to or refused for this plugin, for `plugin list`.
        var deployment: String?
    }

    let manifestPath: String
    private let guarded: Mutex<State>

    init(name: String, manifestPath: String, manifest: Manifest?) {
        self.manifestPath = manifestPath
        self.guarded = Mutex(State(name: name, manifest: manifest))
    }

    var name: String { guarded.withLock { $0.name } }
    var snapshot: State { guarded.withLock { $0 } }
    var state: PluginState { guarded.withLock { $0.state } }

    func update(_ body: (inout State) -> Void) { guarded.withLock { body(&$0) } }

    /// Admits a call into the instance (a health check or an operation) unless it is closing or not
    /// created/active; returns the instance to call. Pair with `endCall`.
    func beginCall() -> (LoadedPlugin, InstancePointer)? {
        guarded.withLock { s in
            guard !s.closing, s.state == .active || s.state == .created, let loaded = s.loaded,
                let instance = s.instance
            else {
                return nil
            }
            s.calls += 1
            return (loaded, instance)
        }
    }

    func endCall() { guarded.withLock { $0.calls -= 1 } }

    /// Stops admitting calls and waits until none runs, or the deadline passes; true when none runs.
    func close(until deadline: ContinuousClock.Instant) -> Bool {
        guarded.withLock { $0.closing = true }
        while guarded.withLock({ $0.calls }) > 0 {
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.002)
        }
        return true
    }

    func status(health: String?) -> PluginStatus {
        let s = snapshot
        return PluginStatus(
            name: s.name, version: s.manifest.map { "\($0.version)" } ?? "",
            kinds: s.manifest?.kinds.map(\.rawValue) ?? [], state: s.state, lastError: s.lastError?.description,
            errorCode: s.lastError?.code.rawValue, manifest: manifestPath, library: s.library, sha256: s.sha256,
            health: health,
            operations: s.manifest?.operations.map {
                .init(name: $0.name, signature: $0.signature.description, description: $0.description)
            } ?? [],
            history: s.history, deployment: s.deployment, previousVersion: s.previous.map { "\($0.manifest.version)" })
    }
}
