import PlexusABI

/// A service registry: instances of services registered, deregistered, looked up and watched.
///
/// Adopt it on your `Plugin` type and `PluginExport.entry` hangs a registry vtable off the descriptor (and
/// adds the registry kind). Instances arrive copied into `ServiceInstance`s; instances you hand back are laid
/// out in C memory for the kernel's callback. A thrown error becomes the hook's status and text (and the
/// completion is then never called); a method that returns normally calls its completion exactly once, now or
/// later, from any thread (see `StoragePlugin` for how the SDK enforces it).
///
/// Before your method runs, the SDK refuses with `PX_ERR_INVALID_ARGUMENT` a NULL instance, completion,
/// watch function or out pointer.
///
/// - Important: Every method may be called from any thread, concurrently. Completions must not block.
public protocol RegistryPlugin: Plugin {
    /// Registers or replaces an instance (same service and instance id).
    func register(_ instance: ServiceInstance, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void)
        throws

    /// Removes an instance.
    /// - Throws: `PluginError` with `PX_ERR_NOT_FOUND` when it is not registered.
    func deregister(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws

    /// Lists the live instances of a service; none is not an error.
    func lookup(service: String, completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void)
        throws

    /// Watches a service until `unwatch`.
    ///
    /// `handler` must see a `.put` for every live instance first, then every change in the order it
    /// happened, never two calls at once for one watch.
    /// - Returns: the watch's id, unique among this instance's live watches.
    func watch(service: String, handler: @escaping @Sendable (WatchEvent) -> Void) throws -> UInt64

    /// Ends a watch. When it returns, its handler is not running and will not run again, unless `unwatch` is
    /// called from inside that handler.
    /// - Throws: `PluginError` with `PX_ERR_NOT_FOUND` for an unknown id.
    func unwatch(_ id: UInt64) throws

    // MARK: ABI 1.4: leases and the metadata store. Each default throws PX_ERR_UNSUPPORTED.

    /// Renews a registered instance's TTL (its lease) for another `ttlMilliseconds`.
    /// - Throws: `PluginError` with `PX_ERR_NOT_FOUND` when it expired or was never registered.
    func keepAlive(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws

    /// Reads one key: the entry (`nil` when absent) and the store's revision the read saw.
    func kvGet(_ key: String, completion: @escaping @Sendable (Result<KVRead, PluginError>) -> Void) throws

    /// Writes one key if `expectedVersion` admits its current version; completes once the change is durable
    /// with the key's new version and the change's revision. A failed condition completes with
    /// `PluginError.kvConflict(key:currentVersion:revision:)`.
    func kvPut(
        _ key: String, _ value: [UInt8], expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void) throws

    /// Deletes one key under the same condition (version 0 in the result). An absent key with `.any`
    /// completes (or throws) with `PX_ERR_NOT_FOUND`.
    func kvDelete(
        _ key: String, expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws

    /// Lists the keys under a prefix in byte order of their keys, with the revision it was read at.
    func kvList(prefix: String, completion: @escaping @Sendable (Result<KVList, PluginError>) -> Void) throws

    /// Watches the keys under a prefix: from revision 0 the changes after the call; from n every change with
    /// revision >= n, replayed first, then live ones; in revision order, never two calls at once, none missed
    /// or repeated.
    /// - Returns: the watch's id.
    /// - Throws: `PluginError` with `PX_ERR_OUT_OF_RANGE` when the history before `fromRevision` is gone.
    func kvWatch(prefix: String, fromRevision: UInt64, handler: @escaping @Sendable (KVChange) -> Void) throws
        -> UInt64

    /// Ends a metadata watch; when it returns the handler is not running and will not run.
    func kvUnwatch(_ id: UInt64) throws
}

extension RegistryPlugin {
    public static var kinds: PluginKinds { [.registry] }

    private static func unsupported(_ what: String) -> PluginError {
        PluginError(PX_ERR_UNSUPPORTED, "registry '\(name)' has no \(what)")
    }

    public func keepAlive(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        throw Self.unsupported("keep-alive")
    }

    public func kvGet(_ key: String, completion: @escaping @Sendable (Result<KVRead, PluginError>) -> Void) throws {
        throw Self.unsupported("metadata store")
    }

    public func kvPut(
        _ key: String, _ value: [UInt8], expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        throw Self.unsupported("metadata store")
    }

    public func kvDelete(
        _ key: String, expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        throw Self.unsupported("metadata store")
    }

    public func kvList(prefix: String, completion: @escaping @Sendable (Result<KVList, PluginError>) -> Void) throws {
        throw Self.unsupported("metadata store")
    }

    public func kvWatch(prefix: String, fromRevision: UInt64, handler: @escaping @Sendable (KVChange) -> Void) throws
        -> UInt64
    {
        throw Self.unsupported("metadata store")
    }

    public func kvUnwatch(_ id: UInt64) throws {
        throw Self.unsupported("metadata store")
    }
}

/// A change to a watched service (`px_watch_event_kind` and the instance).
public enum WatchEvent: Sendable, Equatable {
    /// Registered or changed.
    case put(ServiceInstance)
    /// Deregistered or expired.
    case delete(ServiceInstance)

    public var instance: ServiceInstance {
        switch self {
        case .put(let instance), .delete(let instance): return instance
        }
    }

    /// `PX_WATCH_PUT` or `PX_WATCH_DELETE`.
    public var kind: UInt32 {
        switch self {
        case .put: return PX_WATCH_PUT.rawValue
        case .delete: return PX_WATCH_DELETE.rawValue
        }
    }
}
