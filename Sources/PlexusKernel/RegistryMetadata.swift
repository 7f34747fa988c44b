import PlexusABI
import PlexusCore

// The registry's metadata store and leases as host services (ABI 1.4): `registry_keepalive` and `kv_*`, each
// routed to the node's active registry. A node without a registry, or whose registry's table lacks the hook
// (a registry built against 1.3 or earlier, whose shorter table the loader copied into a full-size one with
// the missing hooks NULL), answers PX_ERR_UNSUPPORTED synchronously and says why.

/// Fills the 1.4 entries of the host table.
func installMetadataStore(_ table: UnsafeMutablePointer<px_host_api>) {
    table.pointee.registry_keepalive = hostRegistryKeepAlive
    table.pointee.kv_get = hostKVGet
    table.pointee.kv_put = hostKVPut
    table.pointee.kv_delete = hostKVDelete
    table.pointee.kv_list = hostKVList
    table.pointee.kv_watch = hostKVWatch
    table.pointee.kv_unwatch = hostKVUnwatch
}

/// What a missing hook means to the caller, for the UNSUPPORTED text.
enum MetadataFeature {
    case metadataStore, keepAlive

    func missing(in registry: String) -> String {
        switch self {
        case .metadataStore: return "registry '\(registry)' has no metadata store"
        case .keepAlive: return "registry '\(registry)' has no keep-alive"
        }
    }

    var noRegistry: String {
        switch self {
        case .metadataStore: return "no registry plugin is active on this node, so it has no metadata store"
        case .keepAlive: return "no registry plugin is active on this node, so it has no keep-alive"
        }
    }
}

/// Runs `call` with the active registry's `hook`, or answers PX_ERR_UNSUPPORTED with the reason in `err`
/// when there is no registry or the hook is NULL.
func withRegistryHook<Hook>(
    _ services: HostServices, _ hook: KeyPath<px_registry_vtable, Hook?>, _ feature: MetadataFeature,
    _ err: UnsafeMutablePointer<px_error>?, _ call: (HostServices.RegistryBinding, Hook) -> px_status
) -> px_status {
    let status = services.withRegistry { binding -> px_status in
        guard let function = binding.vtable.pointee[keyPath: hook] else {
            setError(err, feature.missing(in: binding.name))
            return PX_ERR_UNSUPPORTED.status
        }
        return call(binding, function)
    }
    guard let status else {
        setError(err, feature.noRegistry)
        return PX_ERR_UNSUPPORTED.status
    }
    return status
}

/// Forwards a call with a completion the kernel owes the plugin until it runs (see `OwedCompletions`).
private func forwardOwed<Hook>(
    _ context: PluginContext, _ kind: OwedCompletions.Kind, _ hook: KeyPath<px_registry_vtable, Hook?>,
    _ feature: MetadataFeature, _ err: UnsafeMutablePointer<px_error>?,
    _ call: (HostServices.RegistryBinding, Hook, UnsafeMutableRawPointer?) -> px_status
) -> px_status {
    let services = context.services
    return withRegistryHook(services, hook, feature, err) { binding, function in
        let token = services.owed.add(.init(context: context, kind: kind))
        let status = call(binding, function, token)
        if status != PX_OK.status { services.owed.cancel(token) }
        return status
    }
}

private let kvGetDone: px_kv_get_done_fn = { user, status, entry, revision, error in
    guard let owed = OwedCompletions.shared.take(user), case .kvGet(let c) = owed.kind else { return }
    c.fn(c.user, status, entry, revision, error)
    owed.context.paid()
}

private let kvWriteDone: px_kv_write_done_fn = { user, status, version, revision, error in
    guard let owed = OwedCompletions.shared.take(user), case .kvWrite(let c) = owed.kind else { return }
    c.fn(c.user, status, version, revision, error)
    owed.context.paid()
}

private let kvListDone: px_kv_list_done_fn = { user, status, entries, count, revision, error in
    guard let owed = OwedCompletions.shared.take(user), case .kvList(let c) = owed.kind else { return }
    c.fn(c.user, status, entries, count, revision, error)
    owed.context.paid()
}

private let hostRegistryKeepAlive: px_host_registry_keepalive = { host, service, instanceID, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "registry_keepalive needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    return forwardOwed(context, .done(Completion(fn: done, user: user)), \.on_keepalive, .keepAlive, err) {
        binding, keepAlive, token in
        keepAlive(binding.instance, service, instanceID, registryDone, token, err)
    }
}

private let hostKVGet: px_host_kv_get = { host, key, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "kv_get needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    return forwardOwed(context, .kvGet(Completion(fn: done, user: user)), \.on_kv_get, .metadataStore, err) {
        binding, get, token in
        get(binding.instance, key, kvGetDone, token, err)
    }
}

private let hostKVPut: px_host_kv_put = { host, key, value, expected, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "kv_put needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    return forwardOwed(context, .kvWrite(Completion(fn: done, user: user)), \.on_kv_put, .metadataStore, err) {
        binding, put, token in
        put(binding.instance, key, value, expected, kvWriteDone, token, err)
    }
}

private let hostKVDelete: px_host_kv_delete = { host, key, expected, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "kv_delete needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    return forwardOwed(context, .kvWrite(Completion(fn: done, user: user)), \.on_kv_delete, .metadataStore, err) {
        binding, delete, token in
        delete(binding.instance, key, expected, kvWriteDone, token, err)
    }
}

private let hostKVList: px_host_kv_list = { host, prefix, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "kv_list needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    return forwardOwed(context, .kvList(Completion(fn: done, user: user)), \.on_kv_list, .metadataStore, err) {
        binding, list, token in
        list(binding.instance, prefix, kvListDone, token, err)
    }
}

private let hostKVWatch: px_host_kv_watch = { host, prefix, from, fn, user, outID, err in
    guard let context = PluginContext.from(host), fn != nil, let outID else {
        setError(err, "kv_watch needs a host handle, a function and an out id")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    // The plugin's function goes to the registry as it is: the registry calls it directly, in revision order.
    return withRegistryHook(context.services, \.on_kv_watch, .metadataStore, err) { binding, watch in
        let status = watch(binding.instance, prefix, from, fn, user, outID, err)
        if status == PX_OK.status {
            let id = outID.pointee
            context.services.kvWatches.withLock { $0[id] = context.id }
        }
        return status
    }
}

private let hostKVUnwatch: px_host_kv_unwatch = { host, id in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    let mine = context.services.kvWatches.withLock { all -> Bool in
        guard all[id] == context.id else { return false }
        all[id] = nil
        return true
    }
    guard mine else { return PX_ERR_NOT_FOUND.status }
    return context.services.withRegistry { binding in
        binding.vtable.pointee.on_kv_unwatch?(binding.instance, id) ?? PX_ERR_UNSUPPORTED.status
    } ?? PX_ERR_UNSUPPORTED.status
}
