import PlexusABI

/// Turns a `Plugin` type into the C descriptor and hooks the kernel calls.
///
/// Each plugin image links its own copy of the SDK, so the one plugin type of the image is kept in a
/// process-wide (image-wide) slot that the C thunks read; C function pointers cannot capture it.
public enum PluginExport {
    nonisolated(unsafe) private static var pluginType: (any Plugin.Type)?
    nonisolated(unsafe) private static var descriptor: UnsafeMutablePointer<px_plugin_descriptor>?

    /// The body of a plugin's `px_plugin_entry_v1`: negotiates the ABI and hands out the descriptor.
    public static func entry(
        _ type: any Plugin.Type, _ api: UnsafePointer<px_host_api>?,
        _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?, _ err: UnsafeMutablePointer<px_error>?
    ) -> px_status {
        let negotiated = px_negotiate(api, err)
        guard negotiated == PX_OK.status else { return negotiated }
        guard let out else {
            write(err, "the entry needs somewhere to put the descriptor")
            return PX_ERR_INVALID_ARGUMENT.status
        }
        if descriptor == nil {
            let storage = type as? any StoragePlugin.Type
            let registry = type as? any RegistryPlugin.Type
            for (kind, word, conforms) in [
                (PluginKinds.storage, "Storage", storage != nil), (PluginKinds.registry, "Registry", registry != nil),
            ] where type.kinds.contains(kind) && !conforms {
                write(
                    err,
                    "\(type.name) declares the \(word.lowercased()) kind but \(type) does not conform to \(word)Plugin")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            pluginType = type
            let d = UnsafeMutablePointer<px_plugin_descriptor>.allocate(capacity: 1)
            d.initialize(to: px_plugin_descriptor())
            d.pointee.struct_size = UInt32(MemoryLayout<px_plugin_descriptor>.size)
            d.pointee.abi_major = UInt16(PX_ABI_VERSION_MAJOR)
            d.pointee.abi_minor = UInt16(PX_ABI_VERSION_MINOR)
            d.pointee.name = UnsafePointer(strdup(type.name))
            d.pointee.version = UnsafePointer(strdup(type.version))
            var kinds = type.kinds
            // A kind's vtable is filled in exactly when the type adopts that kind's protocol.
            if let storage {
                kinds.insert(.storage)
                d.pointee.storage = StorageExport.install(storage)
            }
            if let registry {
                kinds.insert(.registry)
                d.pointee.registry = RegistryExport.install(registry)
            }
            d.pointee.kinds = kinds.rawValue
            d.pointee.toolchain = UnsafePointer(strdup(Toolchain.current))
            d.pointee.on_create = onCreate
            d.pointee.on_start = onStart
            d.pointee.on_stop = onStop
            d.pointee.on_destroy = onDestroy
            d.pointee.on_health = onHealth
            descriptor = d
        }
        out.pointee = UnsafePointer(descriptor)
        return PX_OK.status
    }

    /// The plugin object behind an instance pointer, for a plugin's `px_op_*` operations.
    public static func instance<P: Plugin>(_ type: P.Type, _ pointer: UnsafeMutableRawPointer?) -> P? {
        guard let pointer else { return nil }
        return Unmanaged<AnyObject>.fromOpaque(pointer).takeUnretainedValue() as? P
    }

    static func write(_ err: UnsafeMutablePointer<px_error>?, _ text: String) {
        text.withCString { px_error_set(err, $0) }
    }

    /// Runs a hook body, turning any thrown error into a status and text.
    static func guarded(_ err: UnsafeMutablePointer<px_error>?, _ body: () throws -> Void) -> px_status {
        do {
            try body()
            return PX_OK.status
        } catch let error as PluginError {
            write(err, error.message)
            return error.failureStatus
        } catch {
            write(err, "\(error)")
            return PX_ERR_INTERNAL.status
        }
    }

    private static func object(_ instance: UnsafeMutableRawPointer?) -> (any Plugin)? {
        guard let instance else { return nil }
        return Unmanaged<AnyObject>.fromOpaque(instance).takeUnretainedValue() as? any Plugin
    }

    private static let onCreate: px_plugin_on_create = { api, host, config, out, err in
        guard let api, let config, let out, let type = PluginExport.pluginType else {
            PluginExport.write(err, "on_create needs the host API, a config and an out pointer")
            return PX_ERR_INVALID_ARGUMENT.status
        }
        return PluginExport.guarded(err) {
            let plugin = try type.init(host: Host(api: api, handle: host), config: PluginConfig(copying: config))
            out.pointee = Unmanaged<AnyObject>.passRetained(plugin).toOpaque()
        }
    }

    private static let onStart: px_plugin_on_start = { instance, err in
        guard let plugin = PluginExport.object(instance) else { return PX_ERR_INVALID_ARGUMENT.status }
        return PluginExport.guarded(err) { try plugin.start() }
    }

    private static let onStop: px_plugin_on_stop = { instance, timeout, err in
        guard let plugin = PluginExport.object(instance) else { return PX_ERR_INVALID_ARGUMENT.status }
        return PluginExport.guarded(err) { try plugin.stop(timeout: .milliseconds(Int64(clamping: timeout))) }
    }

    private static let onDestroy: px_plugin_on_destroy = { instance in
        guard let instance else { return }
        Unmanaged<AnyObject>.fromOpaque(instance).release()
    }

    private static let onHealth: px_plugin_on_health = { instance, err in
        guard let plugin = PluginExport.object(instance) else { return PX_ERR_INVALID_ARGUMENT.status }
        return PluginExport.guarded(err) { try plugin.health() }
    }
}
