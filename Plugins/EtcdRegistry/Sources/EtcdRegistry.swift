import Dispatch
import EtcdClient
import Foundation
import PlexusPluginSDK
import RegistrySupport
import Synchronization

/// A service registry kept in etcd (v3 API over gRPC), shared by every node that points at the same cluster
/// and prefix.
///
/// Each instance is the key `<prefix>/services/<service>/<instance_id>` holding a JSON value. An instance with
/// `ttl_ms > 0` is attached to a lease of `ceil(ttl_ms / 1000)` seconds: with `renewal: plugin` (the default)
/// one lease per TTL value, kept alive by the plugin's `LeaseKeepAlive` stream while it runs, so the instances
/// of a node that died disappear within their TTL; with `renewal: caller` a lease per registration that only
/// registering again (or `keepAlive`) renews. Lookups and watches are served from a cache per service fed by
/// one etcd watch of its prefix.
public final class EtcdRegistry: RegistryPlugin {
    public static let name = "etcd-registry"
    public static let version = "1.0.0"

    struct Owned {
        var instance: ServiceInstance
        var lease: Int64
    }

    struct State {
        var caches: [String: ServiceCache] = [:]
        /// The revision of this plugin's latest write to each service, for read-your-writes lookups.
        var written: [String: Int64] = [:]
        /// Where each registry watch lives.
        var watchServices: [UInt64: String] = [:]
        /// The instances this node registered with a TTL, and their lease (re-registered if the lease is lost).
        var owned: [[UInt8]: Owned] = [:]
        /// The metadata store's watches.
        var kvWatches: [UInt64: EtcdWatch] = [:]
        var stopped = false
    }

    let settings: Settings
    let layout: KeyLayout
    let client: EtcdClient
    let leases: LeasePool
    private let state = Mutex(State())
    private let nextWatchID = Atomic<UInt64>(1)
    private let keeperSlot = Mutex<EtcdLeaseKeeper?>(nil)

    public init(host: PlexusPluginSDK.Host, config: PluginConfig) throws {
        settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
        let configuration = try settings.etcd()
        layout = KeyLayout(prefix: settings.prefix)
        do {
            client = try EtcdClient(configuration)
        } catch {
            throw Self.pluginError(error)
        }
        leases = LeasePool()
        let keeper = EtcdLeaseKeeper(client: client) { [weak self] id in self?.leaseLost(id) }
        keeperSlot.withLock { $0 = keeper }
    }

    /// Renews the leases of `renewal: plugin`.
    var keeper: EtcdLeaseKeeper {
        // Set in init; the optional only breaks the reference cycle of initialisation.
        keeperSlot.withLock { $0 } ?? EtcdLeaseKeeper(client: client) { _ in }
    }

    public func start() throws {
        if settings.renewal == .plugin { keeper.start() }
    }

    public func stop(timeout: Duration) throws {
        let (caches, kvWatches) = state.withLock { s in
            s.stopped = true
            defer { s.kvWatches = [:] }
            return (Array(s.caches.values), Array(s.kvWatches.values))
        }
        let done = DispatchSemaphore(value: 0)
        let client = self.client
        let keeper = self.keeper
        Task(executorPreference: EtcdExecutor.shared) {
            await keeper.stop()
            for cache in caches { await cache.stop() }
            for watch in kvWatches { await watch.cancel() }
            await client.close()
            done.signal()
        }
        if done.wait(timeout: .now() + .milliseconds(Int(timeout.components.seconds * 1000))) == .timedOut {
            throw PluginError(PX_ERR_TIMEOUT, "\(Self.name): closing the etcd connections took longer than \(timeout)")
        }
    }

    // MARK: Registry

    public func register(
        _ instance: ServiceInstance, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try Self.check(service: instance.service, instanceID: instance.instanceID)
        let key = layout.instanceKey(instance.service, instance.instanceID)
        Task(executorPreference: EtcdExecutor.shared) {
            do {
                try await self.put(instance, key: key)
                completion(.success(()))
            } catch {
                completion(.failure(Self.pluginError(error)))
            }
        }
    }

    /// Writes the instance with the lease its TTL needs and records the write's revision.
    func put(_ instance: ServiceInstance, key: [UInt8]) async throws {
        let ttlSeconds = instance.ttlMilliseconds == 0 ? 0 : Int64((instance.ttlMilliseconds + 999) / 1000)
        var lease: Int64 = 0
        if ttlSeconds > 0 {
            switch settings.renewal {
            case .plugin:
                lease = try await leases.lease(ttlSeconds: ttlSeconds, client: client, keeper: keeper)
            case .caller:
                lease = try await client.grantLease(ttlSeconds: ttlSeconds).id
            }
        }
        let result = try await client.put(key, InstanceRecord(instance).encoded(), lease: lease)
        guard case .written(_, let revision) = result else {
            throw PluginError(
                PX_ERR_INTERNAL, "\(Self.name): an unconditional put of \(instance.service) answered \(result)")
        }
        let replaced = state.withLock { s -> Owned? in
            s.written[instance.service] = max(s.written[instance.service] ?? 0, revision)
            if lease != 0 {
                return s.owned.updateValue(Owned(instance: instance, lease: lease), forKey: key)
            }
            return s.owned.removeValue(forKey: key)
        }
        // A per-registration lease replaced by the new one: revoked (its key now has the new lease).
        if settings.renewal == .caller, let old = replaced?.lease, old != lease {
            try? await client.revokeLease(old)
        }
    }

    public func deregister(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try Self.check(service: service, instanceID: instanceID)
        let key = layout.instanceKey(service, instanceID)
        Task(executorPreference: EtcdExecutor.shared) {
            do {
                switch try await self.client.delete(key) {
                case .written(_, let revision):
                    let owned = self.state.withLock { s -> Owned? in
                        s.written[service] = max(s.written[service] ?? 0, revision)
                        return s.owned.removeValue(forKey: key)
                    }
                    if self.settings.renewal == .caller, let lease = owned?.lease {
                        try? await self.client.revokeLease(lease)
                    }
                    completion(.success(()))
                case .absent, .conflict:
                    completion(
                        .failure(
                            PluginError(
                                PX_ERR_NOT_FOUND,
                                "\(Self.name): service '\(service)' has no instance '\(instanceID)' registered")))
                }
            } catch {
                completion(.failure(Self.pluginError(error)))
            }
        }
    }

    public func lookup(
        service: String, completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void
    ) throws {
        try Self.check(service: service)
        let (cache, revision) = try self.cache(service)
        cache.lookup(after: revision, timeout: client.configuration.requestTimeout * 2, completion)
    }

    public func watch(service: String, handler: @escaping @Sendable (WatchEvent) -> Void) throws -> UInt64 {
        try Self.check(service: service)
        let id = nextWatchID.wrappingAdd(1, ordering: .relaxed).oldValue
        let (cache, _) = try self.cache(service)
        state.withLock { $0.watchServices[id] = service }
        cache.add(ServiceWatch(id: id, service: service, label: "plexus.etcd-registry", handler: handler))
        return id
    }

    public func unwatch(_ id: UInt64) throws {
        let cache = state.withLock { s -> ServiceCache? in
            guard let service = s.watchServices.removeValue(forKey: id) else { return nil }
            return s.caches[service]
        }
        guard let watch = cache?.remove(id) else {
            throw PluginError(PX_ERR_NOT_FOUND, "\(Self.name): no watch \(id)")
        }
        watch.end()
    }

    /// The cache of `service` (started on first use; made again if its start failed) and the revision a
    /// lookup must wait for.
    private func cache(_ service: String) throws -> (ServiceCache, Int64) {
        let (cache, fresh, revision) = try state.withLock { s -> (ServiceCache, Bool, Int64) in
            guard !s.stopped else { throw PluginError(PX_ERR_UNAVAILABLE, "\(Self.name): the plugin is stopped") }
            if let cache = s.caches[service], !cache.failed { return (cache, false, s.written[service] ?? 0) }
            let cache = ServiceCache(service: service, prefix: layout.servicePrefix(service))
            s.caches[service] = cache
            return (cache, true, s.written[service] ?? 0)
        }
        if fresh {
            let client = self.client
            Task(executorPreference: EtcdExecutor.shared) { await cache.start(client) }
        }
        return (cache, revision)
    }

    /// A lease kept alive by the plugin was lost (etcd expired it while unreachable): its instances get a new
    /// lease and are written again.
    func leaseLost(_ id: Int64) {
        leases.forget(id)
        let lost = state.withLock { s in s.owned.filter { $0.value.lease == id } }
        guard !lost.isEmpty else { return }
        Task(executorPreference: EtcdExecutor.shared) {
            for (key, owned) in lost.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) }) {
                try? await self.put(owned.instance, key: key)
            }
        }
    }

    /// The lease of an instance this node registered with a TTL.
    func ownedLease(_ key: [UInt8]) -> Int64? { state.withLock { $0.owned[key]?.lease } }

    func addKVWatch(_ watch: EtcdWatch) -> UInt64 {
        let id = nextWatchID.wrappingAdd(1, ordering: .relaxed).oldValue
        state.withLock { $0.kvWatches[id] = watch }
        return id
    }

    func removeKVWatch(_ id: UInt64) -> EtcdWatch? { state.withLock { $0.kvWatches.removeValue(forKey: id) } }

    // MARK: Errors

    static func check(service: String, instanceID: String? = nil) throws {
        guard !service.isEmpty else { throw PluginError.invalidArgument("\(name): the service is empty") }
        if let instanceID, instanceID.isEmpty {
            throw PluginError.invalidArgument("\(name): the instance id of service '\(service)' is empty")
        }
    }

    /// The `PluginError` of a client failure.
    static func pluginError(_ error: any Error) -> PluginError {
        if let error = error as? PluginError { return error }
        guard let error = error as? EtcdError else { return PluginError(PX_ERR_INTERNAL, "\(name): \(error)") }
        let status: px_status_code
        switch error.code {
        case .unavailable, .closed: status = PX_ERR_UNAVAILABLE
        case .compacted: status = PX_ERR_OUT_OF_RANGE
        case .notFound: status = PX_ERR_NOT_FOUND
        case .unauthenticated: status = PX_ERR_PERMISSION_DENIED
        case .rejected, .invalidConfiguration: status = PX_ERR_INVALID_ARGUMENT
        case .invalidResponse: status = PX_ERR_INTERNAL
        }
        return PluginError(status, "\(name): \(error)")
    }
}

/// One lease per TTL value, granted on first use and handed to the keeper.
actor LeasePool {
    private var byTTL: [Int64: Int64] = [:]

    func lease(ttlSeconds: Int64, client: EtcdClient, keeper: EtcdLeaseKeeper) async throws -> Int64 {
        if let id = byTTL[ttlSeconds] { return id }
        let granted = try await client.grantLease(ttlSeconds: ttlSeconds)
        if let id = byTTL[ttlSeconds] {
            // Another registration granted one meanwhile: keep that one.
            try? await client.revokeLease(granted.id)
            return id
        }
        byTTL[ttlSeconds] = granted.id
        keeper.keep(granted.id, ttlSeconds: granted.ttl)
        return granted.id
    }

    nonisolated func forget(_ id: Int64) {
        Task(executorPreference: EtcdExecutor.shared) { await self.remove(id) }
    }

    private func remove(_ id: Int64) {
        byTTL = byTTL.filter { $0.value != id }
    }
}

@_cdecl("px_plugin_entry_v1")
public func etcdRegistryEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(EtcdRegistry.self, api, out, err)
}
