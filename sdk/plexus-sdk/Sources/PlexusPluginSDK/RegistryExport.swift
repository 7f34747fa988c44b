import PlexusABI

/// The registry vtable of a `RegistryPlugin` image: C thunks over a dispatcher specialised for its type (see
/// `StorageExport` for why the dispatcher lives in a slot).
enum RegistryExport {
    nonisolated(unsafe) private static var dispatcher: (any RegistryDispatch)?
    nonisolated(unsafe) private static var vtable: UnsafeMutablePointer<px_registry_vtable>?

    /// The vtable for `type`, built on first use.
    static func install<R: RegistryPlugin>(_ type: R.Type) -> UnsafePointer<px_registry_vtable> {
        if let vtable { return UnsafePointer(vtable) }
        dispatcher = RegistryDispatcher<R>()
        let table = UnsafeMutablePointer<px_registry_vtable>.allocate(capacity: 1)
        table.initialize(to: px_registry_vtable())
        table.pointee.struct_size = UInt32(MemoryLayout<px_registry_vtable>.size)
        table.pointee.on_register = onRegister
        table.pointee.on_deregister = onDeregister
        table.pointee.on_lookup = onLookup
        table.pointee.on_watch = onWatch
        table.pointee.on_unwatch = onUnwatch
        vtable = table
        return UnsafePointer(table)
    }

    private static let invalid = PX_ERR_INVALID_ARGUMENT.status

    private static func target(
        _ instance: UnsafeMutableRawPointer?, _ hook: String, _ err: UnsafeMutablePointer<px_error>?
    ) -> (any RegistryDispatch, UnsafeMutableRawPointer)? {
        guard let dispatcher, let instance else {
            PluginExport.write(err, "\(hook): no plugin instance")
            return nil
        }
        return (dispatcher, instance)
    }

    private static let onRegister: px_registry_on_register = { instance, serviceInstance, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_register", err) else {
            return RegistryExport.invalid
        }
        guard let serviceInstance, let done else {
            PluginExport.write(err, "on_register needs a service instance and a completion")
            return RegistryExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        var copied: ServiceInstance?
        let status = PluginExport.guarded(err) { copied = try ServiceInstance(copying: serviceInstance) }
        guard status == PX_OK.status, let copied else { return status }
        return CompletionGate<Void>.run(err, deliver: completion.deliverStatus) { done in
            try dispatcher.register(instance, copied, completion: done)
        }
    }

    private static let onDeregister: px_registry_on_deregister = { instance, service, instanceID, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_deregister", err) else {
            return RegistryExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_deregister: the completion is NULL")
            return RegistryExport.invalid
        }
        let (serviceName, id) = (service.string, instanceID.string)
        return CompletionGate<Void>.run(err, deliver: CCompletion(fn: done, user: user).deliverStatus) { done in
            try dispatcher.deregister(instance, service: serviceName, instanceID: id, completion: done)
        }
    }

    private static let onLookup: px_registry_on_lookup = { instance, service, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_lookup", err) else {
            return RegistryExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_lookup: the completion is NULL")
            return RegistryExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        let serviceName = service.string
        return CompletionGate<[ServiceInstance]>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let found):
                    let batch = CServiceInstances(found)
                    withExtendedLifetime(batch) {
                        completion.fn(
                            completion.user, PX_OK.status, batch.pointers.baseAddress, batch.count,
                            px_str(ptr: nil, len: 0))
                    }
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, 0, $0) }
                }
            }
        ) { done in
            try dispatcher.lookup(instance, service: serviceName, completion: done)
        }
    }

    private static let onWatch: px_registry_on_watch = { instance, service, fn, user, out, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_watch", err) else {
            return RegistryExport.invalid
        }
        guard let fn, let out else {
            PluginExport.write(err, "on_watch needs a watch function and an out pointer")
            return RegistryExport.invalid
        }
        let target = CCompletion(fn: fn, user: user)
        let serviceName = service.string
        return PluginExport.guarded(err) {
            out.pointee = try dispatcher.watch(instance, service: serviceName) { event in
                let batch = CServiceInstances([event.instance])
                withExtendedLifetime(batch) { target.fn(target.user, event.kind, batch.instance(at: 0)) }
            }
        }
    }

    private static let onUnwatch: px_registry_on_unwatch = { instance, id in
        guard let dispatcher = RegistryExport.dispatcher, let instance else { return RegistryExport.invalid }
        return PluginExport.guarded(nil) { try dispatcher.unwatch(instance, id) }
    }
}

/// The registry calls of one plugin type, on a raw instance pointer.
protocol RegistryDispatch: Sendable {
    func register(
        _ instance: UnsafeMutableRawPointer, _ value: ServiceInstance,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws
    func deregister(
        _ instance: UnsafeMutableRawPointer, service: String, instanceID: String,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) throws
    func lookup(
        _ instance: UnsafeMutableRawPointer, service: String,
        completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void) throws
    func watch(_ instance: UnsafeMutableRawPointer, service: String, handler: @escaping @Sendable (WatchEvent) -> Void)
        throws -> UInt64
    func unwatch(_ instance: UnsafeMutableRawPointer, _ id: UInt64) throws
}

/// `RegistryDispatch` for `R`: the instance pointer is the retained plugin (see `PluginExport`).
struct RegistryDispatcher<R: RegistryPlugin>: RegistryDispatch {
    private func plugin(_ instance: UnsafeMutableRawPointer) -> R {
        Unmanaged<R>.fromOpaque(instance).takeUnretainedValue()
    }

    func register(
        _ instance: UnsafeMutableRawPointer, _ value: ServiceInstance,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try plugin(instance).register(value, completion: completion)
    }

    func deregister(
        _ instance: UnsafeMutableRawPointer, service: String, instanceID: String,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try plugin(instance).deregister(service: service, instanceID: instanceID, completion: completion)
    }

    func lookup(
        _ instance: UnsafeMutableRawPointer, service: String,
        completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void
    ) throws {
        try plugin(instance).lookup(service: service, completion: completion)
    }

    func watch(_ instance: UnsafeMutableRawPointer, service: String, handler: @escaping @Sendable (WatchEvent) -> Void)
        throws -> UInt64
    {
        try plugin(instance).watch(service: service, handler: handler)
    }

    func unwatch(_ instance: UnsafeMutableRawPointer, _ id: UInt64) throws {
        try plugin(instance).unwatch(id)
    }
}
