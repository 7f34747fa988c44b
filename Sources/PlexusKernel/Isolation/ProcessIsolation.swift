import Foundation
import PlexusABI
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// `isolation: process`: the plugin runs in a `plexus plugin-host` child that maps the same image (the
/// content-addressed copy, checked as an ELF image, entry called and ABI negotiated there), and the kernel
/// drives it through a descriptor whose hooks and storage vtable are messages over a socket pair
/// (`IsolationWire`). To the rest of the kernel the plugin is a `LoadedPlugin` like any other.
///
/// A child that crashes, hangs in a hook past its manifest deadline, or loses its socket is killed alone: the
/// calls in flight fail with `PX_ERR_UNAVAILABLE` and the reason ("plugin-host exited: signal 11"), and the
/// instance is restarted with exponential backoff, or quarantined after the manifest's `restart.maxFailures`
/// failures within `restart.windowSeconds` (`IsolatedInstance`).
enum ProcessIsolation {
    /// What a node tells the kernel about an isolated instance.
    enum Event: Sendable {
        /// A restart succeeded (with the failure that caused it).
        case restarted(String)
        /// The instance failed too often and is no longer restarted.
        case quarantined(String)
    }

    /// Everything needed to start children for one loaded plugin.
    struct Spec: Sendable {
        var manifest: Manifest
        var mappedPath: String
        var executable: String
        var observer: @Sendable (Event) -> Void
    }

    /// Specs of loaded isolated plugins by name: `on_create` finds its own by the instance name in its config.
    static let specs = Mutex<[String: (spec: Spec, warm: PluginHostProcess?)]>([:])

    /// What a child reported about the image it mapped.
    struct Hello: Sendable {
        var name: String
        var version: String
        var kinds: UInt32
        var abiMajor: UInt16
        var abiMinor: UInt16
        var toolchain: String?
        var hasStorage: Bool
        var durability: UInt32
        var hasRegistry: Bool
    }

    /// Starts a child that maps `path` and reports its descriptor, which is checked against the manifest as an
    /// in-process load is; returns the kernel's proxy descriptor for it. The child stays up for `on_create`.
    /// - Throws: `KernelError` when the child cannot start, dies, or refuses the image, or the descriptor does
    ///   not match the manifest.
    static func load(
        _ manifest: Manifest, path: String, sha256: String, executable: String?,
        observer: @escaping @Sendable (Event) -> Void
    ) throws -> LoadedPlugin {
        guard let executable else {
            throw KernelError(
                .loadFailed, subject: manifest.path, field: "isolation",
                "isolation: process needs the plexus executable to run plugin-host children, and this node has none (it is set by `plexus serve`)"
            )
        }
        let spec = Spec(manifest: manifest, mappedPath: path, executable: executable, observer: observer)
        let (child, hello) = try startChild(spec)
        var descriptor = px_plugin_descriptor()
        descriptor.struct_size = UInt32(MemoryLayout<px_plugin_descriptor>.size)
        descriptor.abi_major = hello.abiMajor
        descriptor.abi_minor = hello.abiMinor
        descriptor.name = UnsafePointer(strdup(hello.name))
        descriptor.version = UnsafePointer(strdup(hello.version))
        descriptor.kinds = hello.kinds
        descriptor.toolchain = hello.toolchain.flatMap { UnsafePointer(strdup($0)) }
        descriptor.on_create = IsolatedHooks.create
        descriptor.on_start = IsolatedHooks.start
        descriptor.on_stop = IsolatedHooks.stop
        descriptor.on_destroy = IsolatedHooks.destroy
        descriptor.on_health = IsolatedHooks.health
        if hello.hasStorage {
            // Never freed: a descriptor's tables live as long as the process, as an image's would.
            let table = UnsafeMutablePointer<px_storage_vtable>.allocate(capacity: 1)
            table.initialize(to: IsolatedStorage.vtable(durability: hello.durability))
            descriptor.storage = UnsafePointer(table)
        }
        if hello.hasRegistry {
            child.kill(because: "plugin-host killed: the registry kind is not proxied")
            throw KernelError(
                .loadFailed, subject: manifest.path, field: "isolation",
                "the image declares the registry kind, which process isolation does not proxy; run it in-process")
        }
        do {
            try PluginLoader.check(descriptor, against: manifest)
        } catch {
            child.kill(because: "plugin-host killed: the image does not match its manifest")
            throw error
        }
        let previous = specs.withLock { all -> PluginHostProcess? in
            defer { all[manifest.name] = (spec, child) }
            return all[manifest.name]?.warm
        }
        previous?.kill(because: "plugin-host killed: a newer image was loaded")
        // The handle is only used to look up operations, which isolation refuses before using it.
        let handle = dlopen(nil, RTLD_NOW) ?? UnsafeMutableRawPointer(bitPattern: 1)!
        return LoadedPlugin(descriptor: descriptor, mappedPath: path, sha256: sha256, handle: handle)
    }

    /// Spawns a child for `spec` and has it map the image (`hello`).
    static func startChild(_ spec: Spec) throws -> (PluginHostProcess, Hello) {
        let manifest = spec.manifest
        let child = try PluginHostProcess.spawn(executable: spec.executable, name: manifest.name)
        var w = WireWriter()
        w.text(spec.mappedPath)
        w.text(manifest.name)
        w.u64(UInt64(manifest.startTimeout.milliseconds))
        guard let answer = child.channel.call(.hello, w.bytes, timeout: manifest.startTimeout + .seconds(5)) else {
            child.kill(
                because: "plugin-host killed: it did not map the image within \(manifest.startTimeout + .seconds(5))")
            throw KernelError(
                .loadFailed, subject: manifest.path, field: "library",
                "the plugin-host did not map \(spec.mappedPath) within \(manifest.startTimeout + .seconds(5)) (a constructor or the entry hangs)"
            )
        }
        do {
            switch answer.outcome() {
            case .failure(let error):
                throw KernelError(
                    .loadFailed, subject: manifest.path, field: "library",
                    "the plugin-host mapping \(spec.mappedPath) died: \(error.description)")
            case .success(let (status, error, reader)):
                guard status == PX_OK.status else {
                    throw KernelError(.loadFailed, subject: manifest.path, field: "library", "plugin-host: \(error)")
                }
                var r = reader
                let name = try r.text()
                let version = try r.text()
                let kinds = try r.u32()
                let abiMajor = UInt16(truncatingIfNeeded: try r.u32())
                let abiMinor = UInt16(truncatingIfNeeded: try r.u32())
                let toolchain = try r.optionalText()
                _ = try r.u8()  // on_health: the proxy always has one
                let hasStorage = try r.u8() == 1
                let durability = try r.u32()
                let hasRegistry = try r.u8() == 1
                try r.finish()
                let hello = Hello(
                    name: name, version: version, kinds: kinds, abiMajor: abiMajor, abiMinor: abiMinor,
                    toolchain: toolchain, hasStorage: hasStorage, durability: durability, hasRegistry: hasRegistry)
                return (child, hello)
            }
        } catch {
            child.kill(because: "plugin-host killed: its image was refused")
            if let kernelError = error as? KernelError { throw kernelError }
            throw KernelError(.loadFailed, subject: manifest.path, "the plugin-host's hello was malformed: \(error)")
        }
    }

    /// Takes the child `load` left running for the first `on_create` of `name`.
    static func takeWarm(_ name: String) -> (Spec, PluginHostProcess?)? {
        specs.withLock { all in
            guard let entry = all[name] else { return nil }
            all[name] = (entry.spec, nil)
            return (entry.spec, entry.warm)
        }
    }
}

extension Kernel {
    /// What an isolated instance reports: a restart is logged; a quarantine moves the plugin to `quarantined`
    /// with the reason as its last error.
    func isolationEvent(_ event: ProcessIsolation.Event, record: PluginRecord) {
        switch event {
        case .restarted(let reason):
            logger.warning("plugin \(record.name): the plugin-host was restarted after: \(reason)")
            record.update { $0.deployment = "restarted after: \(reason)" }
        case .quarantined(let message):
            guard record.state == .active else { return }
            // The record's own lock is held inside `update`: its name is read before.
            let error = KernelError(.hookFailed, subject: record.name, "quarantined: \(message)")
            record.update { $0.lastError = error }
            transition(record, to: .quarantined)
            logger.error("plugin \(record.name) quarantined: \(message)")
        }
    }
}
