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
        table.pointee.on_keepalive = onKeepAlive
        table.pointee.on_kv_get = onKVGet
        table.pointee.on_kv_put = onKVPut
        table.pointee.on_kv_delete = onKVDelete
        table.pointee.on_kv_list = onKVList
        table.pointee.on_kv_watch = onKVWatch
        table.pointee.on_kv_unwatch = onKVUnwatch
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

    // MARK: ABI 1.4

    private static let onKeepAlive: px_registry_on_keepalive = { instance, service, instanceID, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_keepalive", err) else {
            return RegistryExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_keepalive: the completion is NULL")
            return RegistryExport.invalid
        }
        let (serviceName, id) = (service.string, instanceID.string)
        return CompletionGate<Void>.run(err, deliver: CCompletion(fn: done, user: user).deliverStatus) { done in
            try dispatcher.plugin(instance).keepAlive(service: serviceName, instanceID: id, completion: done)
        }
    }

    private static let onKVGet: px_registry_on_kv_get = { instance, key, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_kv_get", err) else {
            return RegistryExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_kv_get: the completion is NULL")
            return RegistryExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        let keyText = key.string
        return CompletionGate<KVRead>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let read):
                    if let entry = read.entry {
                        entry.withC {
                            completion.fn(completion.user, PX_OK.status, $0, read.revision, px_str(ptr: nil, len: 0))
                        }
                    } else {
                        withPXStr("key '\(keyText)' is absent") {
                            completion.fn(completion.user, PX_ERR_NOT_FOUND.status, nil, read.revision, $0)
                        }
                    }
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, 0, $0) }
                }
            }
        ) { done in
            try dispatcher.plugin(instance).kvGet(keyText, completion: done)
        }
    }

    /// Delivers a write's result to its C completion: a conflict's current version and revision travel in
    /// the version and revision arguments.
    private static func deliverWrite(_ completion: CCompletion<px_kv_write_done_fn>) -> (Result<KVWrite, PluginError>)
        -> Void
    {
        { result in
            switch result {
            case .success(let write):
                completion.fn(completion.user, PX_OK.status, write.version, write.revision, px_str(ptr: nil, len: 0))
            case .failure(let error):
                let conflict = error.conflict
                withPXStr(error.message) {
                    completion.fn(
                        completion.user, error.failureStatus, conflict?.currentVersion ?? 0, conflict?.revision ?? 0,
                        $0)
                }
            }
        }
    }

    private static let onKVPut: px_registry_on_kv_put = { instance, key, value, expected, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_kv_put", err) else {
            return RegistryExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_kv_put: the completion is NULL")
            return RegistryExport.invalid
        }
        let keyText = key.string
        let bytes: [UInt8] = value.ptr.map { Array(UnsafeBufferPointer(start: $0, count: value.len)) } ?? []
        return CompletionGate<KVWrite>.run(err, deliver: deliverWrite(CCompletion(fn: done, user: user))) { done in
            try dispatcher.plugin(instance).kvPut(
                keyText, bytes, expectedVersion: KVVersion(raw: expected), completion: done)
        }
    }

    private static let onKVDelete: px_registry_on_kv_delete = { instance, key, expected, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_kv_delete", err) else {
            return RegistryExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_kv_delete: the completion is NULL")
            return RegistryExport.invalid
        }
        let keyText = key.string
        return CompletionGate<KVWrite>.run(err, deliver: deliverWrite(CCompletion(fn: done, user: user))) { done in
            try dispatcher.plugin(instance).kvDelete(
                keyText, expectedVersion: KVVersion(raw: expected), completion: done)
        }
    }

    private static let onKVList: px_registry_on_kv_list = { instance, prefix, done, user, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_kv_list", err) else {
            return RegistryExport.invalid
        }
        guard let done else {
            PluginExport.write(err, "on_kv_list: the completion is NULL")
            return RegistryExport.invalid
        }
        let completion = CCompletion(fn: done, user: user)
        let prefixText = prefix.string
        return CompletionGate<KVList>.run(
            err,
            deliver: { result in
                switch result {
                case .success(let list):
                    withCEntries(list.entries) { pointers, count in
                        completion.fn(
                            completion.user, PX_OK.status, pointers, count, list.revision, px_str(ptr: nil, len: 0))
                    }
                case .failure(let error):
                    withPXStr(error.message) { completion.fn(completion.user, error.failureStatus, nil, 0, 0, $0) }
                }
            }
        ) { done in
            try dispatcher.plugin(instance).kvList(prefix: prefixText, completion: done)
        }
    }

    private static let onKVWatch: px_registry_on_kv_watch = { instance, prefix, from, fn, user, out, err in
        guard case let (dispatcher, instance)? = RegistryExport.target(instance, "on_kv_watch", err) else {
            return RegistryExport.invalid
        }
        guard let fn, let out else {
            PluginExport.write(err, "on_kv_watch needs a watch function and an out pointer")
            return RegistryExport.invalid
        }
        let target = CCompletion(fn: fn, user: user)
        let prefixText = prefix.string
        return PluginExport.guarded(err) {
            out.pointee = try dispatcher.plugin(instance).kvWatch(prefix: prefixText, fromRevision: from) { change in
                change.entry.withC { target.fn(target.user, change.kind, $0) }
            }
        }
    }

    private static let onKVUnwatch: px_registry_on_kv_unwatch = { instance, id in
        guard let dispatcher = RegistryExport.dispatcher, let instance else { return RegistryExport.invalid }
        return PluginExport.guarded(nil) { try dispatcher.plugin(instance).kvUnwatch(id) }
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
    /// The plugin behind a raw instance pointer, for the 1.4 hooks.
    func plugin(_ instance: UnsafeMutableRawPointer) -> any RegistryPlugin
}

/// `RegistryDispatch` for `R`: the instance pointer is the retained plugin (see `PluginExport`).
struct RegistryDispatcher<R: RegistryPlugin>: RegistryDispatch {
    private func typed(_ instance: UnsafeMutableRawPointer) -> R {
        Unmanaged<R>.fromOpaque(instance).takeUnretainedValue()
    }

    func plugin(_ instance: UnsafeMutableRawPointer) -> any RegistryPlugin { typed(instance) }

    func register(
        _ instance: UnsafeMutableRawPointer, _ value: ServiceInstance,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try typed(instance).register(value, completion: completion)
    }

    func deregister(
        _ instance: UnsafeMutableRawPointer, service: String, instanceID: String,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try typed(instance).deregister(service: service, instanceID: instanceID, completion: completion)
    }

    func lookup(
        _ instance: UnsafeMutableRawPointer, service: String,
        completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void
    ) throws {
        try typed(instance).lookup(service: service, completion: completion)
    }

    func watch(_ instance: UnsafeMutableRawPointer, service: String, handler: @escaping @Sendable (WatchEvent) -> Void)
        throws -> UInt64
    {
        try typed(instance).watch(service: service, handler: handler)
    }

    func unwatch(_ instance: UnsafeMutableRawPointer, _ id: UInt64) throws {
        try typed(instance).unwatch(id)
    }
}
