import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization

/// One plugin library loaded outside a node, through the kernel's own loader, so that a single instance of
/// it can be created, started, stopped and destroyed on its own: what the conformance kit and plugin
/// authors' tests drive.
///
/// The library is verified, copied to its content-addressed path and mapped exactly as a node would
/// (`PluginLoader`), and the descriptor is checked against a manifest. That manifest is either a real one
/// (`manifest:`), or one derived from the descriptor itself (name, version, kinds, ABI and toolchain), so a
/// bare `.so` can be exercised without writing a manifest first. Each instance gets the same
/// `px_plugin_config`, host table and deadlines a node gives it.
///
/// ```swift
/// let plugin = try StandalonePlugin(library: "libMemoryStorage.so", cacheDirectory: cache)
/// let instance = try plugin.start(dataDirectory: data)
/// defer { try? instance.stop() }
/// let storage = plugin.storage  // call its hooks with instance.pointer
/// ```
///
/// - Important: Like a node, this never unmaps the image (`dlclose` is never called).
public final class StandalonePlugin: Sendable {
    /// The manifest the plugin is run with: the one given, or the one derived from its descriptor.
    public let manifest: Manifest
    /// Whether `manifest` was derived from the descriptor rather than read from a file.
    public let manifestIsSynthetic: Bool
    /// The library as given.
    public let library: String
    /// The library's SHA-256, lowercase hex.
    public let sha256: String
    let loaded: LoadedPlugin
    let services: HostServices
    let logger: Logger

    /// Loads a plugin library through the kernel's loader.
    ///
    /// - Parameters:
    ///   - library: the plugin's `.so`.
    ///   - manifestPath: a manifest to check the library against (its `sha256` pin, `toolchain`, name,
    ///     version, kinds and ABI) and to take the configuration schema, values and deadlines from. Without
    ///     it, a manifest is derived from the descriptor: same name, version, kinds, ABI and toolchain, no
    ///     configuration schema, 10 s deadlines.
    ///   - configJSON: the configuration as one JSON object. With a manifest it replaces the manifest's
    ///     `config.values` and is validated against its schema (defaults filled in); without one it is
    ///     passed to the plugin as it is.
    ///   - cacheDirectory: where the content-addressed copy of the library is mapped from.
    ///   - logger: where the plugin's log lines go.
    /// - Throws: `KernelError` naming what the kernel would refuse, exactly as a node would report it.
    public init(
        library: String, manifest manifestPath: String? = nil, configJSON: String? = nil, cacheDirectory: String,
        logger: Logger = Logger(label: "plexus.standalone", factory: { _ in SwiftLogNoOpLogHandler() })
    ) throws {
        guard FileManager.default.isReadableFile(atPath: library) else {
            throw KernelError(.libraryNotFound, subject: library, "does not exist or is not readable")
        }
        let config = try configJSON.map(Self.parseConfig)
        let loader = PluginLoader(searchPath: [], cacheDirectory: cacheDirectory, requireSHA256: false)
        let loaded: LoadedPlugin
        var manifest: Manifest
        if let manifestPath {
            manifest = try ManifestParser.load(path: manifestPath)
            if let config {
                manifest.config = try manifest.configSchema.validate(
                    config, subject: manifestPath, field: "config.values")
            }
            let digest = try loader.verify(manifest, library: library)
            let mapped = try loader.cache(library, sha256: digest, subject: manifest.path)
            loaded = try loader.load(manifest, path: mapped, sha256: digest, deadline: manifest.startTimeout)
        } else {
            let digest = try PluginLoader.sha256(ofFile: library)
            let mapped = try loader.cache(library, sha256: digest, subject: library)
            let (handle, descriptor) = try Self.open(mapped, subject: library)
            manifest = try Self.manifest(describing: descriptor, library: library, config: config ?? .object([]))
            _ = try loader.verify(manifest, library: mapped)
            try PluginLoader.check(descriptor, against: manifest)
            loaded = LoadedPlugin(descriptor: descriptor, mappedPath: mapped, sha256: digest, handle: handle)
        }
        self.manifest = manifest
        self.manifestIsSynthetic = manifestPath == nil
        self.library = library
        self.sha256 = loaded.sha256
        self.loaded = loaded
        self.services = HostServices(metrics: MetricsRegistry())
        self.logger = logger
    }

    /// The descriptor the plugin returned, as the kernel copied it.
    public var descriptor: px_plugin_descriptor { loaded.descriptor }

    /// The plugin's storage vtable, when it is a storage plugin (a static table in the mapped image).
    public var storage: UnsafePointer<px_storage_vtable>? { loaded.descriptor.storage }

    /// The plugin's registry vtable, when it is a registry plugin (a static table in the mapped image).
    public var registry: UnsafePointer<px_registry_vtable>? { loaded.descriptor.registry }

    /// Creates and starts an instance, as a node does: `on_create` with the manifest's configuration, then
    /// `on_start`, each within the manifest's start deadline. When `on_start` fails, the instance is
    /// destroyed before this throws.
    ///
    /// - Parameters:
    ///   - dataDirectory: the instance's `data_dir`; created if missing. Start a second instance on the same
    ///     directory (after stopping the first) to test what survives a restart.
    ///   - nodeID: the `node_id` the instance is told.
    ///   - host: a host table of the caller's own to give the instance instead of the kernel's: the
    ///     conformance kit hosts a connector itself, to see every publish, subscribe and acknowledgement.
    ///     `nil` (the default) gives the kernel's table, as a node does.
    /// - Throws: `KernelError` (`hookFailed`, `deadlineExceeded`, `io`) with the plugin's own reason.
    public func start(dataDirectory: String, nodeID: String = "standalone", host: HostTable? = nil) throws
        -> Instance
    {
        let name = manifest.name
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw KernelError(
                .io, subject: name, "cannot create its data directory \(dataDirectory): \(error.localizedDescription)")
        }
        let context = PluginContext(
            name: name, logger: Kernel.pluginLogger(logger, name: name), services: services)
        let lifecycle = PluginLifecycle(manifest: manifest, loaded: loaded, context: context)
        let pointer: InstancePointer?
        switch lifecycle.create(nodeID: nodeID, dataDirectory: dataDirectory, host: host) {
        case .success(let created): pointer = created
        case .failure(let failure): throw failure.error
        }
        let instance = Instance(plugin: self, lifecycle: lifecycle, pointer: pointer, dataDirectory: dataDirectory)
        switch lifecycle.start(pointer) {
        case .success:
            return instance
        case .failure(.abandoned(let error)):
            instance.abandon()
            throw error
        case .failure(.failed(let error)):
            // As a node does: a failed start is followed by on_destroy, without on_stop.
            try? instance.destroy()
            throw error
        }
    }

    /// Runs `body` with a `px_error` of the kernel's standard capacity (`PX_ERROR_CAPACITY`) and returns its
    /// result with the text the callee wrote (read within the buffer, even without a terminating NUL).
    ///
    /// For callers that drive a plugin's hooks themselves, as the kernel does.
    public static func withErrorBuffer<R>(_ body: (UnsafeMutablePointer<px_error>) -> R) -> (result: R, message: String)
    {
        ErrorBuffer.with { err in
            let result = body(err)
            return (result, ErrorBuffer.text(err))
        }
    }

    // MARK: Loading without a manifest

    /// Maps the (already cached) image and asks its entry for the descriptor, as the kernel's loader does.
    private static func open(_ path: String, subject: String) throws -> (UnsafeMutableRawPointer, px_plugin_descriptor)
    {
        try PluginLoader.open(path, subject: subject, library: subject, entryName: "standalone", deadline: .seconds(10))
    }

    /// The manifest a descriptor implies: its name, version, kinds, ABI and toolchain.
    static func manifest(describing d: px_plugin_descriptor, library: String, config: ConfigValue) throws -> Manifest {
        let name = d.name.map { String(cString: $0) } ?? ""
        guard ManifestParser.isValidName(name) else {
            throw KernelError(
                .descriptorInvalid, subject: library, field: "name",
                "the library calls itself '\(name)', which no manifest can name; expected lowercase letters, digits and '-', starting with a letter, at most 64 characters"
            )
        }
        let versionText = d.version.map { String(cString: $0) } ?? ""
        guard let version = SemanticVersion(versionText) else {
            throw KernelError(
                .descriptorInvalid, subject: library, field: "version",
                "the library's version '\(versionText)' is not a SemVer version")
        }
        let kinds = Manifest.Kind.kinds(in: d.kinds)
        guard !kinds.isEmpty else {
            throw KernelError(
                .descriptorInvalid, subject: library, field: "kind",
                "the library declares no kind (bits 0x\(String(d.kinds, radix: 16)))")
        }
        let toolchain = d.toolchain.map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        return Manifest(
            path: library, name: name, version: version, description: "derived from the library's descriptor",
            kinds: kinds, library: library, sha256: nil, abiMajor: Int(d.abi_major), abiMinor: Int(d.abi_minor),
            toolchain: toolchain, requires: [], provides: [], configSchema: ConfigSchema(), config: config,
            isolation: .inProcess, operations: [], startTimeout: .seconds(10), stopTimeout: .seconds(10),
            enabled: true)
    }

    /// Parses configuration given as JSON text (which YAML reads as it is) into a configuration value.
    static func parseConfig(_ text: String) throws -> ConfigValue {
        do {
            return try YAMLReader(subject: "config", code: .configInvalid).document(text).configValue()
        } catch let error as KernelError {
            throw KernelError(
                .configInvalid, subject: "config", "expected one JSON object such as {\"key\": 1}: \(error.message)")
        }
    }

    // MARK: Instances

    /// A host table and `px_host *` handle to create an instance with in place of the kernel's (see
    /// `start(dataDirectory:nodeID:host:)`).
    ///
    /// - Important: Both must stay valid, and the table unchanged, until the instance's `on_destroy` has
    ///   returned and for as long as the plugin may still call in (an abandoned instance may).
    public struct HostTable: @unchecked Sendable {
        // Safe: the table is read-only once made and the handle is opaque to this module; the caller
        // promises both outlive the instance.
        public let api: UnsafePointer<px_host_api>
        public let handle: OpaquePointer

        public init(api: UnsafePointer<px_host_api>, handle: OpaquePointer) {
            self.api = api
            self.handle = handle
        }
    }

    /// One created and started instance of a `StandalonePlugin`.
    public final class Instance: Sendable {
        public let plugin: StandalonePlugin
        /// The instance's `data_dir`.
        public let dataDirectory: String
        let lifecycle: PluginLifecycle
        private let raw: InstancePointer?
        private let state = Mutex<Phase>(.running)

        private enum Phase { case running, stopping, gone }

        init(plugin: StandalonePlugin, lifecycle: PluginLifecycle, pointer: InstancePointer?, dataDirectory: String) {
            self.plugin = plugin
            self.lifecycle = lifecycle
            self.raw = pointer
            self.dataDirectory = dataDirectory
        }

        var context: PluginContext { lifecycle.context }

        /// The `void *` the plugin returned from `on_create`: the first argument of its storage and registry
        /// hooks.
        ///
        /// - Important: Valid until `stop()` begins. Hooks may be called from any thread, concurrently, but
        ///   none may be running when `stop()` is called.
        public var pointer: UnsafeMutableRawPointer? { raw?.raw }

        /// Stops the instance as a node does: `on_stop` within the manifest's stop deadline; then what the
        /// plugin left behind with the host (timers, subscriptions, watches) is cancelled, every completion
        /// the host owes it runs, and `on_destroy` frees it. Calling it again does nothing.
        ///
        /// - Parameter afterStop: called once `on_stop` has returned (whatever it returned) and before the
        ///   instance is destroyed, so that a caller can tell calls made during `on_stop` from calls made after.
        /// - Throws: `KernelError` when a hook overran its deadline (the instance is then abandoned, as a
        ///   node abandons it) or `on_stop` reported an error (the instance is destroyed all the same).
        public func stop(afterStop: () -> Void = {}) throws {
            let proceed = state.withLock { phase -> Bool in
                guard phase == .running else { return false }
                phase = .stopping
                return true
            }
            guard proceed else { return }
            let stopped = lifecycle.stop(raw)
            if case .failure(.abandoned) = stopped {} else { afterStop() }
            switch stopped {
            case .success:
                try destroy()
            case .failure(.abandoned(let error)):
                abandon()
                throw error
            case .failure(.failed(let error)):
                try destroy()
                throw error
            }
        }

        /// Cancels what the instance left with the host, waits for the completions owed to it, then calls
        /// `on_destroy` (`PluginLifecycle.destroy`).
        func destroy() throws {
            state.withLock { $0 = .gone }
            if case .failure(let failure) = lifecycle.destroy(raw) { throw failure.error }
        }

        /// Gives the instance up without calling another hook, as a node does with one that overran a deadline.
        func abandon() {
            state.withLock { $0 = .gone }
            lifecycle.abandon()
        }
    }
}
