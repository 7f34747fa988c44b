import Foundation
import Logging
import PlexusABI
import PlexusKernel

/// The plugin kinds the kit has suites for.
public enum ConformanceKind: String, Sendable, CaseIterable {
    case storage
    case registry
    case connector
    /// Protocol plugins: run through `Conformance.runProtocol`, which starts a node around the plugin.
    case `protocol`
}

/// Limits and sizes the suites run with.
public struct ConformanceOptions: Sendable {
    /// How long a completion may take after its hook returned `PX_OK` before the rule fails.
    public var completionTimeout: Duration = .seconds(5)
    /// How long to wait after the last completion for a second (forbidden) call of it, and for watch
    /// callbacks that must not come.
    public var grace: Duration = .milliseconds(100)
    /// How long one rule may take in all; a rule still inside a hook then fails, and the instance is
    /// abandoned.
    public var ruleTimeout: Duration = .seconds(60)
    /// `storage.append.concurrent-appenders`: threads, and batches each of them appends.
    public var appenders = 8
    public var batchesPerAppender = 50
    /// `storage.append.large-event`: the size of the event's data (at least 1 MiB).
    public var largeEventBytes = (1 << 20) + 7
    /// `registry.ttl.expires` and `registry.keepalive.renews`: the TTL registered (1 s: renewed every third of
    /// it, an instance must outlive the stalls of a loaded machine), and how long past it an instance may linger.
    public var ttlMilliseconds: UInt64 = 1000
    public var ttlSlack: Duration = .seconds(5)
    /// Connectors: how long after `on_start` the kit waits for a subscribe or a publish (which tells a sink
    /// from a source), and for a restarted instance to subscribe again.
    public var connectorObserve: Duration = .seconds(5)
    /// Connectors: how long one `px_deliver_fn` call may take (a sink must not block the kernel's thread).
    public var deliverBound: Duration = .milliseconds(100)
    /// Connectors: the configuration (one JSON object) that points the connector at an unreachable external
    /// system, for `connector.sink.fault-nacks-never-acks`; `nil`: that rule does not apply.
    public var faultConfigJSON: String?
    /// Connectors: the topic the connector is configured with, when its configuration names it otherwise
    /// than `topic` or `topics`.
    public var connectorTopic: String?
    /// Connectors: the most events of the `connector.sink.max-in-flight-no-loss` burst.
    public var connectorBurst = 300

    public init() {}
}

/// The conformance kit: named rules, one per MUST of a plugin kind's contract in plexus.h, run against a
/// plugin library loaded through the kernel's own loader.
///
/// ```swift
/// let report = try Conformance.run(.storage, library: "libMemoryStorage.so", dataDirectory: dir, cacheDirectory: cache)
/// print(report.text)  // PASS/FAIL per rule, then "N passed, M failed"
/// ```
public enum Conformance {
    /// The rules of a suite, in the order they run.
    public static func rules(for kind: ConformanceKind) -> [RuleDescription] {
        switch kind {
        case .storage:
            return StorageSuite.rules.map { RuleDescription(name: $0.name, summary: $0.summary) } + [
                RuleDescription(name: StorageSuite.lifecycleRule, summary: lifecycleSummary)
            ]
        case .registry:
            return RegistrySuite.rules.map { RuleDescription(name: $0.name, summary: $0.summary) } + [
                RuleDescription(name: RegistrySuite.lifecycleRule, summary: lifecycleSummary)
            ]
        case .connector:
            return ConnectorSuite.rules
        case .protocol:
            return ProtocolSuite.descriptions()
        }
    }

    static let lifecycleSummary =
        "on_stop returns PX_OK within the deadline, every completion has run, and on_destroy returns"

    /// Loads a library through the kernel's loader and runs the suite of `kind` against one instance of it.
    ///
    /// - Parameters:
    ///   - kind: which suite.
    ///   - library: the plugin's `.so`.
    ///   - manifest: a manifest to load it with; without one, a manifest is derived from its descriptor.
    ///   - configJSON: the instance's configuration, one JSON object (see `StandalonePlugin`).
    ///   - dataDirectory: the instance's data directory (created if missing).
    ///   - cacheDirectory: where the loader keeps its content-addressed copy of the library.
    ///   - options: timeouts and sizes.
    ///   - logger: where the plugin's own log lines go.
    ///   - progress: called with each rule's result as soon as it is known.
    /// - Throws: `KernelError` when the library cannot be loaded, is not of `kind`, or its instance cannot
    ///   be created and started: then no rule can run.
    public static func run(
        _ kind: ConformanceKind, library: String, manifest: String? = nil, configJSON: String? = nil,
        dataDirectory: String, cacheDirectory: String, options: ConformanceOptions = ConformanceOptions(),
        logger: Logger = Logger(label: "plexus.conformance", factory: { _ in SwiftLogNoOpLogHandler() }),
        progress: (RuleResult) -> Void = { _ in }
    ) throws -> ConformanceReport {
        let plugin = try StandalonePlugin(
            library: library, manifest: manifest, configJSON: configJSON, cacheDirectory: cacheDirectory,
            logger: logger)
        return try run(kind, plugin: plugin, dataDirectory: dataDirectory, options: options, progress: progress)
    }

    /// Runs the suite of `kind` against one instance of an already loaded plugin.
    /// - Throws: `KernelError` when the plugin is not of `kind` or its instance cannot be created and started.
    public static func run(
        _ kind: ConformanceKind, plugin: StandalonePlugin, dataDirectory: String,
        options: ConformanceOptions = ConformanceOptions(), progress: (RuleResult) -> Void = { _ in }
    ) throws -> ConformanceReport {
        try requireKind(kind, of: plugin)
        let results: [RuleResult]
        var durability: String?
        switch kind {
        case .storage:
            guard let vtable = plugin.storage else {
                throw KernelError(.descriptorInvalid, subject: plugin.library, "the plugin has no storage vtable")
            }
            durability = StorageSuite.durabilityName(vtable.pointee.durability)
            results = try StorageSuite.run(plugin, dataDirectory: dataDirectory, options: options, progress: progress)
        case .registry:
            guard plugin.registry != nil else {
                throw KernelError(.descriptorInvalid, subject: plugin.library, "the plugin has no registry vtable")
            }
            results = try RegistrySuite.run(plugin, dataDirectory: dataDirectory, options: options, progress: progress)
        case .protocol:
            throw KernelError(
                .invalidState, subject: plugin.library,
                "a protocol plugin is checked on a node of its own: use Conformance.runProtocol")
        case .connector:
            let cache = FileManager.default.temporaryDirectory.path + "/plexus-conformance-cache"
            results = try ConnectorSuite.run(
                plugin, dataDirectory: dataDirectory, options: options,
                reload: { config in
                    try StandalonePlugin(
                        library: plugin.library, manifest: plugin.manifestIsSynthetic ? nil : plugin.manifest.path,
                        configJSON: config, cacheDirectory: cache)
                }, progress: progress)
        }
        return ConformanceReport(
            kind: kind.rawValue, plugin: plugin.manifest.name, version: "\(plugin.manifest.version)",
            library: plugin.library, durability: durability, results: results)
    }

    /// Starts a node in this process with memory storage and the protocol plugin on a free 127.0.0.1 port, and
    /// runs the protocol scenarios against it through the client `driver`.
    ///
    /// - Parameters:
    ///   - library: the protocol plugin's `.so`; `manifest` its manifest (which must declare a `port` key and
    ///     the `port` operation, as the shipped protocol manifests do).
    ///   - storage: the memory-storage library and manifest the node stores topics in.
    ///   - configJSON: configuration values over the manifest's (`port` and `host` are the suite's).
    /// - Throws: `KernelError` when the node or the driver cannot start: then no rule can run.
    public static func runProtocol(
        library: String, manifest: String, driver: ProtocolDriverKind, storage: (library: String, manifest: String),
        configJSON: String? = nil, options: ConformanceOptions = ConformanceOptions(),
        logger: Logger = Logger(label: "plexus.conformance", factory: { _ in SwiftLogNoOpLogHandler() }),
        progress: (RuleResult) -> Void = { _ in }
    ) throws -> ConformanceReport {
        let parsed = try ManifestParser.load(path: manifest)
        guard parsed.kinds.contains(.protocolKind) else {
            throw KernelError(
                .descriptorInvalid, subject: manifest, field: "kind",
                "the manifest declares \(parsed.kinds.map(\.rawValue).joined(separator: ", ")), not protocol")
        }
        let results = try ProtocolSuite.run(
            library: library, manifest: manifest, storage: storage, driver: driver, configJSON: configJSON,
            options: options, logger: logger, progress: progress)
        return ConformanceReport(
            kind: "protocol", plugin: parsed.name, version: "\(parsed.version)", library: library,
            durability: nil, results: results)
    }

    /// Checks that `plugin` declares `kind`, so that its suite can run.
    /// - Throws: `KernelError` naming the kinds it declares.
    public static func requireKind(_ kind: ConformanceKind, of plugin: StandalonePlugin) throws {
        let declared = plugin.manifest.kinds.map(\.rawValue)
        guard declared.contains(kind.rawValue) else {
            throw KernelError(
                .descriptorInvalid, subject: plugin.library, field: "kind",
                "the plugin declares \(declared.joined(separator: ", ")), not \(kind.rawValue); run the suite of one of its kinds"
            )
        }
    }

    /// The storage plugin's durability as the header names it (`NONE`, `LOCAL`, `REPLICATED`); `nil` for a
    /// plugin without a storage vtable.
    public static func durability(of plugin: StandalonePlugin) -> String? {
        plugin.storage.map { StorageSuite.durabilityName($0.pointee.durability) }
    }

    /// Runs a suite's rules against `instance`, then stops it (the lifecycle rule) unless a rule hung.
    /// Starts the plugin, builds a suite's harness on the instance (stopping it again if that fails), and runs
    /// the rules: the part every suite's `run` shares.
    static func runSuite<H: Sendable>(
        _ rules: [Rule<H>], plugin: StandalonePlugin, dataDirectory: String, lifecycleRule: String,
        options: ConformanceOptions,
        makeHarness: (StandalonePlugin.Instance, CallLedger) throws -> H,
        currentInstance: @escaping (H, StandalonePlugin.Instance) -> StandalonePlugin.Instance?,
        beforeStop: @escaping (H) -> Void, progress: (RuleResult) -> Void
    ) throws -> [RuleResult] {
        let instance = try plugin.start(dataDirectory: dataDirectory)
        let ledger = CallLedger()
        let harness: H
        do {
            harness = try makeHarness(instance, ledger)
        } catch {
            try? instance.stop()
            throw error
        }
        return runRules(
            rules, harness: harness, ledger: ledger, lifecycleRule: lifecycleRule, options: options,
            currentInstance: { currentInstance(harness, instance) }, beforeStop: { beforeStop(harness) },
            progress: progress)
    }

    static func runRules<H: Sendable>(
        _ rules: [Rule<H>], harness: H, ledger: CallLedger, lifecycleRule: String, options: ConformanceOptions,
        currentInstance: () -> StandalonePlugin.Instance?, beforeStop: () -> Void, progress: (RuleResult) -> Void
    ) -> [RuleResult] {
        let (results, hung) = RuleRunner.run(
            rules, harness: harness, ledger: ledger, ruleTimeout: options.ruleTimeout, progress: progress)
        let started = ContinuousClock.now
        let lifecycle: RuleResult
        if hung {
            lifecycle = RuleResult(
                rule: lifecycleRule, passed: false,
                reason: "not run: a hook never returned, so the instance was abandoned without on_stop", milliseconds: 0
            )
        } else if let instance = currentInstance() {
            beforeStop()
            do {
                try instance.stop()
                lifecycle = RuleResult(
                    rule: lifecycleRule, passed: true, reason: nil,
                    milliseconds: (ContinuousClock.now - started).wholeMilliseconds)
            } catch {
                lifecycle = RuleResult(
                    rule: lifecycleRule, passed: false,
                    reason: "expected the instance to stop and be destroyed; observed \(error)",
                    milliseconds: (ContinuousClock.now - started).wholeMilliseconds)
            }
        } else {
            lifecycle = RuleResult(
                rule: lifecycleRule, passed: false,
                reason: "not run: the instance could not be created again after a restart", milliseconds: 0)
        }
        progress(lifecycle)
        ledger.close()
        return results + [lifecycle]
    }
}
