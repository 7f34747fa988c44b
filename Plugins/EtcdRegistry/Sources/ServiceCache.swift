import Dispatch
import EtcdClient
import Foundation
import PlexusPluginSDK
import RegistrySupport
import Synchronization

/// The live instances of one service, kept by a watch of its prefix in etcd (started at the revision of the
/// initial listing), so that a lookup is answered from memory; and the registry watches of that service,
/// fed from the same changes.
///
/// Lookups wait until the cache has seen the revision of this plugin's latest write to the service
/// (`await(revision:)`), so a caller reads its own writes.
final class ServiceCache: Sendable {
    typealias Lookup = @Sendable (Result<[ServiceInstance], PluginError>) -> Void

    struct Waiter {
        var revision: Int64
        var completion: Lookup
    }

    struct State {
        var ready = false
        var failed: EtcdError?
        var instances: [String: ServiceInstance] = [:]
        /// Every change up to this revision is applied.
        var revision: Int64 = 0
        /// Updates that arrived before the initial listing was applied.
        var early: [EtcdWatchUpdate] = []
        var waiters: [Waiter] = []
        var watches: [UInt64: ServiceWatch] = [:]
        /// Watches added before the cache was ready: they get the snapshot, then changes, once it is.
        var pending: [ServiceWatch] = []
        var watch: EtcdWatch?
    }

    let service: String
    let prefix: [UInt8]
    private let state = Mutex(State())

    init(service: String, prefix: [UInt8]) {
        self.service = service
        self.prefix = prefix
    }

    /// Lists the service and starts its watch. On failure, waiting lookups fail and `failed` is set (the
    /// registry then drops this cache so the next lookup tries again).
    func start(_ client: EtcdClient) async {
        do {
            let prefix = self.prefix
            let (initial, revision, watch) = try await client.watch(prefix: prefix) { [weak self] update in
                self?.apply(update)
            }
            let released = state.withLock { s -> [(Waiter, [ServiceInstance])] in
                s.watch = watch
                for kv in initial {
                    guard let id = Self.instanceID(kv.key, prefix: prefix), let record = InstanceRecord.decode(kv.value)
                    else { continue }
                    s.instances[id] = record.instance
                }
                s.revision = revision
                s.ready = true
                let snapshot = Self.sorted(s.instances)
                for watch in s.pending { watch.sendAll(snapshot.map { .put($0) }) }
                for watch in s.pending { s.watches[watch.id] = watch }
                s.pending = []
                let early = s.early
                s.early = []
                var released = Self.release(&s).map { ($0, snapshot) }
                for update in early { released += Self.apply(update, to: &s, prefix: prefix) }
                return released
            }
            for (waiter, snapshot) in released { waiter.completion(.success(snapshot)) }
        } catch {
            let failure = error as? EtcdError ?? EtcdError(.unavailable, operation: "Watch", "\(error)")
            let waiters = state.withLock { s -> [Waiter] in
                s.failed = failure
                defer { s.waiters = [] }
                return s.waiters
            }
            for waiter in waiters { waiter.completion(.failure(EtcdRegistry.pluginError(failure))) }
        }
    }

    var failed: Bool { state.withLock { $0.failed != nil } }

    /// Ends the etcd watch and every registry watch.
    func stop() async {
        let (watch, watches) = state.withLock { s in
            defer {
                s.watches = [:]
                s.pending = []
            }
            return (s.watch, Array(s.watches.values) + s.pending)
        }
        await watch?.cancel()
        for watch in watches { watch.end() }
    }

    /// Answers with the instances once the cache has applied `revision`.
    func lookup(after revision: Int64, timeout: Duration, _ completion: @escaping Lookup) {
        let now = state.withLock { s -> [ServiceInstance]? in
            if s.ready, s.revision >= revision { return Self.sorted(s.instances) }
            s.waiters.append(Waiter(revision: revision, completion: completion))
            return nil
        }
        if let now { return completion(.success(now)) }
        // A watch that never catches up (etcd unreachable) fails the lookup instead of holding it forever.
        Task(executorPreference: EtcdExecutor.shared) { [weak self] in
            try? await Task.sleep(for: timeout)
            guard let self else { return }
            let late = self.state.withLock { s -> [Waiter] in
                let late = s.waiters.filter { $0.revision == revision }
                s.waiters.removeAll { $0.revision == revision }
                return late
            }
            for waiter in late {
                waiter.completion(
                    .failure(
                        PluginError(
                            PX_ERR_UNAVAILABLE,
                            "\(EtcdRegistry.name): the watch of service '\(service)' did not reach revision "
                                + "\(revision) within \(timeout)")))
            }
        }
    }

    /// Adds a registry watch: a PUT for each live instance first (once the cache is ready), then changes.
    func add(_ watch: ServiceWatch) {
        state.withLock { s in
            guard s.ready else { return s.pending.append(watch) }
            // Queued under the lock, ahead of any change applied after it.
            watch.sendAll(Self.sorted(s.instances).map { .put($0) })
            s.watches[watch.id] = watch
        }
    }

    func remove(_ id: UInt64) -> ServiceWatch? {
        state.withLock { s in
            if let index = s.pending.firstIndex(where: { $0.id == id }) { return s.pending.remove(at: index) }
            return s.watches.removeValue(forKey: id)
        }
    }

    /// Applies a batch of changes from etcd and tells the watches what changed.
    private func apply(_ update: EtcdWatchUpdate) {
        let prefix = self.prefix
        let released = state.withLock { s -> [(Waiter, [ServiceInstance])] in
            guard s.ready else {
                s.early.append(update)
                return []
            }
            return Self.apply(update, to: &s, prefix: prefix)
        }
        for (waiter, snapshot) in released { waiter.completion(.success(snapshot)) }
    }

    /// Applies `update` to the state (under the lock), queues what changed to the watches, and returns the
    /// lookups it releases.
    private static func apply(_ update: EtcdWatchUpdate, to s: inout State, prefix: [UInt8]) -> [(
        Waiter, [ServiceInstance]
    )] {
        guard update.revision > s.revision || update.resynced else { return [] }
        for event in update.events {
            guard let id = instanceID(event.keyValue.key, prefix: prefix) else { continue }
            switch event {
            case .put(let kv):
                guard let record = InstanceRecord.decode(kv.value) else { continue }
                let instance = record.instance
                let previous = s.instances[id]
                s.instances[id] = instance
                // A registration that changes nothing (a renewal) is no news to watchers.
                if previous != instance { for watch in s.watches.values { watch.send(.put(instance)) } }
            case .delete:
                guard let previous = s.instances.removeValue(forKey: id) else { continue }
                for watch in s.watches.values { watch.send(.delete(previous)) }
            }
        }
        s.revision = max(s.revision, update.revision)
        let snapshot = sorted(s.instances)
        return release(&s).map { ($0, snapshot) }
    }

    /// Removes and returns the waiters the cache has caught up with.
    private static func release(_ s: inout State) -> [Waiter] {
        let revision = s.revision
        let done = s.waiters.filter { $0.revision <= revision }
        s.waiters.removeAll { $0.revision <= revision }
        return done
    }

    private static func sorted(_ instances: [String: ServiceInstance]) -> [ServiceInstance] {
        instances.values.sorted { $0.instanceID < $1.instanceID }
    }

    /// The instance id of a key under `prefix` (unescaped); nil for a key that is not one segment below it.
    static func instanceID(_ key: [UInt8], prefix: [UInt8]) -> String? {
        guard key.count > prefix.count, key.starts(with: prefix) else { return nil }
        let segment = String(decoding: key[prefix.count...], as: UTF8.self)
        guard !segment.contains("/") else { return nil }
        return segment.removingPercentEncoding ?? segment
    }
}
