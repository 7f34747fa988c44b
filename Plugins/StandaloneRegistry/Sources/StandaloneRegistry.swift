import Dispatch
import Foundation
import PlexusPluginSDK
import RegistrySupport
import Synchronization

/// The embedded service registry: instances in memory, persisted to `<data_dir>/registry.json` on every
/// change, expired by TTL on a host timer, and watched through one serial queue per watch; and the node's
/// metadata store (ABI 1.4, `KVStore`), durable in `<data_dir>/kv.log`.
///
/// Changes are applied and their watch events queued under one lock, so every watch sees them in the order
/// they happened. The file is written (temporary file, fsync, rename, fsync of the directory) on a serial
/// I/O queue; a change's completion runs once a write covering it is on disk.
public final class StandaloneRegistry: RegistryPlugin {
    public static let name = "standalone-registry"
    public static let version = "1.0.0"

    struct Settings: Decodable {
        var sweepIntervalMs: Int = 1000
        /// Metadata changes kept for watches that resume from a revision.
        var kvHistoryChanges: Int = 10_000
        /// Bytes of keys and values kept in that history, at most.
        var kvHistoryBytes: Int = 64 << 20

        enum CodingKeys: String, CodingKey { case sweepIntervalMs, kvHistoryChanges, kvHistoryBytes }

        init() {}

        init(from decoder: any Decoder) throws {
            let keys = try decoder.container(keyedBy: CodingKeys.self)
            sweepIntervalMs = try keys.decodeIfPresent(Int.self, forKey: .sweepIntervalMs) ?? sweepIntervalMs
            kvHistoryChanges = try keys.decodeIfPresent(Int.self, forKey: .kvHistoryChanges) ?? kvHistoryChanges
            kvHistoryBytes = try keys.decodeIfPresent(Int.self, forKey: .kvHistoryBytes) ?? kvHistoryBytes
        }
    }

    struct Entry: Equatable {
        var instance: ServiceInstance
        /// Unix time in milliseconds when the instance expires; `nil` without a TTL.
        var expiresAt: UInt64?
    }

    struct State {
        /// Live instances by service, then instance id.
        var services: [String: [String: Entry]] = [:]
        var watches: [UInt64: ServiceWatch] = [:]
        /// Bumped by every change that must reach the file.
        var generation: UInt64 = 0

        /// Queues `event` to every watch of its service. Call under the lock, in the order of the changes.
        func notify(_ event: WatchEvent) {
            for watch in watches.values where watch.service == event.instance.service { watch.send(event) }
        }

        /// Removes every instance expired at `now`, notifying watches; true when one was removed.
        mutating func expire(now: UInt64) -> Bool {
            var removed = false
            for (service, entries) in services {
                for (id, entry) in entries.sorted(by: { $0.key < $1.key }) {
                    guard let expiresAt = entry.expiresAt, expiresAt <= now else { continue }
                    services[service]?[id] = nil
                    notify(.delete(entry.instance))
                    removed = true
                }
                if services[service]?.isEmpty == true { services[service] = nil }
            }
            if removed { generation += 1 }
            return removed
        }
    }

    let host: PlexusPluginSDK.Host
    let settings: Settings
    let store: RegistryFile
    /// The metadata store (ABI 1.4).
    let kv: KVStore
    private let state: Mutex<State>
    private let io = DispatchQueue(label: "plexus.standalone-registry.io")
    /// The generation last written to the file; touched only on `io`.
    private let written = Mutex<UInt64>(0)
    private let sweeper = Mutex<HostTimer?>(nil)
    private let nextWatchID = Atomic<UInt64>(1)

    public init(host: PlexusPluginSDK.Host, config: PluginConfig) throws {
        self.host = host
        settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
        guard settings.sweepIntervalMs > 0 else {
            throw PluginError.invalidArgument("standalone-registry: sweepIntervalMs must be positive")
        }
        guard !config.dataDirectory.isEmpty else {
            throw PluginError.invalidArgument("standalone-registry: the kernel gave no data directory")
        }
        guard settings.kvHistoryChanges > 0, settings.kvHistoryBytes > 0 else {
            throw PluginError.invalidArgument(
                "standalone-registry: kvHistoryChanges and kvHistoryBytes must be positive")
        }
        store = RegistryFile(directory: config.dataDirectory)
        kv = try KVStore(
            directory: config.dataDirectory,
            limits: .init(historyChanges: settings.kvHistoryChanges, historyBytes: settings.kvHistoryBytes))
        var restored = State()
        let now = Self.now()
        for entry in try store.load() where entry.expiresAt.map({ $0 > now }) ?? true {
            restored.services[entry.instance.service, default: [:]][entry.instance.instanceID] = entry
        }
        state = Mutex(restored)
    }

    public func start() throws {
        let timer = try host.startTimer(
            after: .milliseconds(settings.sweepIntervalMs), every: .milliseconds(settings.sweepIntervalMs)
        ) { [weak self] in
            self?.sweep()
        }
        sweeper.withLock { $0 = timer }
    }

    public func stop(timeout: Duration) throws {
        if let timer = sweeper.withLock({ slot in
            defer { slot = nil }; return slot
        }) {
            host.cancel(timer)
        }
        let watches = state.withLock { s in
            defer { s.watches.removeAll() }
            return Array(s.watches.values)
        }
        for watch in watches { watch.end() }
        kv.stop()
        // Every completion owed runs before on_destroy: wait for the writes queued so far.
        io.sync {}
    }

    public func register(
        _ instance: ServiceInstance, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try Self.check(service: instance.service, instanceID: instance.instanceID)
        let now = Self.now()
        let entry = Entry(
            instance: instance, expiresAt: instance.ttlMilliseconds > 0 ? now &+ instance.ttlMilliseconds : nil)
        state.withLock { s in
            _ = s.expire(now: now)
            let previous = s.services[instance.service]?[instance.instanceID]
            guard previous != entry else { return }
            s.services[instance.service, default: [:]][instance.instanceID] = entry
            s.generation += 1
            // Only a change is news to watchers: a registration that merely renews the TTL is not.
            if previous?.instance != instance { s.notify(.put(instance)) }
        }
        persist(completion)
    }

    public func deregister(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try Self.check(service: service, instanceID: instanceID)
        let now = Self.now()
        try state.withLock { s in
            _ = s.expire(now: now)
            guard let entry = s.services[service]?[instanceID] else {
                throw PluginError(
                    PX_ERR_NOT_FOUND,
                    "standalone-registry: service '\(service)' has no instance '\(instanceID)' registered")
            }
            s.services[service]?[instanceID] = nil
            if s.services[service]?.isEmpty == true { s.services[service] = nil }
            s.generation += 1
            s.notify(.delete(entry.instance))
        }
        persist(completion)
    }

    public func lookup(
        service: String, completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void
    ) throws {
        try Self.check(service: service)
        let now = Self.now()
        let (found, expired) = state.withLock { s in
            let expired = s.expire(now: now)
            let found = (s.services[service] ?? [:]).values.map(\.instance).sorted { $0.instanceID < $1.instanceID }
            return (found, expired)
        }
        if expired { persist { _ in } }
        completion(.success(found))
    }

    public func watch(service: String, handler: @escaping @Sendable (WatchEvent) -> Void) throws -> UInt64 {
        try Self.check(service: service)
        let id = nextWatchID.wrappingAdd(1, ordering: .relaxed).oldValue
        let watch = ServiceWatch(id: id, service: service, label: "plexus.standalone-registry", handler: handler)
        let now = Self.now()
        let expired = state.withLock { s in
            let expired = s.expire(now: now)
            s.watches[id] = watch
            for entry in (s.services[service] ?? [:]).values.sorted(by: {
                $0.instance.instanceID < $1.instance.instanceID
            }) {
                watch.send(.put(entry.instance))
            }
            return expired
        }
        if expired { persist { _ in } }
        return id
    }

    public func unwatch(_ id: UInt64) throws {
        guard let watch = state.withLock({ $0.watches.removeValue(forKey: id) }) else {
            throw PluginError(PX_ERR_NOT_FOUND, "standalone-registry: no watch \(id)")
        }
        watch.end()
    }

    /// Renews an instance's TTL from now. The new expiry time is not written on its own (the next change
    /// writes it): after a restart an instance expires at the time last written, and the kernel, whose
    /// renewal then finds it gone, registers it again.
    public func keepAlive(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try Self.check(service: service, instanceID: instanceID)
        let now = Self.now()
        let expired = try state.withLock { s -> Bool in
            let expired = s.expire(now: now)
            guard var entry = s.services[service]?[instanceID] else {
                throw PluginError(
                    PX_ERR_NOT_FOUND,
                    "standalone-registry: service '\(service)' has no instance '\(instanceID)' registered (expired "
                        + "or never registered); register it again")
            }
            if entry.instance.ttlMilliseconds > 0 {
                entry.expiresAt = now &+ entry.instance.ttlMilliseconds
                s.services[service]?[instanceID] = entry
            }
            return expired
        }
        if expired { persist { _ in } }
        completion(.success(()))
    }

    // MARK: The metadata store (ABI 1.4)

    public func kvGet(_ key: String, completion: @escaping @Sendable (Result<KVRead, PluginError>) -> Void) throws {
        completion(.success(try kv.get(key)))
    }

    public func kvPut(
        _ key: String, _ value: [UInt8], expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        try kv.put(key, value, expected: expectedVersion, completion: completion)
    }

    public func kvDelete(
        _ key: String, expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        try kv.delete(key, expected: expectedVersion, completion: completion)
    }

    public func kvList(prefix: String, completion: @escaping @Sendable (Result<KVList, PluginError>) -> Void) throws {
        completion(.success(kv.list(prefix: prefix)))
    }

    public func kvWatch(prefix: String, fromRevision: UInt64, handler: @escaping @Sendable (KVChange) -> Void) throws
        -> UInt64
    {
        try kv.watch(prefix: prefix, from: fromRevision, handler: handler)
    }

    public func kvUnwatch(_ id: UInt64) throws {
        try kv.unwatch(id)
    }

    /// The timer's work: expire instances whose TTL passed.
    func sweep() {
        let now = Self.now()
        if state.withLock({ $0.expire(now: now) }) { persist { _ in } }
    }

    /// Writes the registry to its file, unless a later write already covered this change, then completes.
    private func persist(_ completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) {
        io.async { [self] in
            let (generation, services) = state.withLock { ($0.generation, $0.services) }
            guard generation > written.withLock({ $0 }) else { return completion(.success(())) }
            do {
                try store.save(services.values.flatMap(\.values))
                written.withLock { $0 = max($0, generation) }
                completion(.success(()))
            } catch let error as PluginError {
                completion(.failure(error))
            } catch {
                completion(.failure(PluginError(PX_ERR_IO, "standalone-registry: \(error)")))
            }
        }
    }

    static func check(service: String, instanceID: String? = nil) throws {
        guard !service.isEmpty else { throw PluginError.invalidArgument("standalone-registry: the service is empty") }
        if let instanceID, instanceID.isEmpty {
            throw PluginError.invalidArgument("standalone-registry: the instance id of service '\(service)' is empty")
        }
    }

    /// Unix time in milliseconds.
    static func now() -> UInt64 { UInt64(max(0, Date().timeIntervalSince1970 * 1000)) }
}

@_cdecl("px_plugin_entry_v1")
public func standaloneRegistryEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(StandaloneRegistry.self, api, out, err)
}
