import Dispatch
import EtcdClient
import PlexusPluginSDK
import Synchronization

/// The metadata store of ABI 1.4 on etcd: key `k` is `<prefix>/kv/k`; versions and revisions are etcd's
/// (so revisions also count the registry's other changes in the same etcd); conditional writes are `Txn`s
/// comparing the key's version (0: absent).
extension EtcdRegistry {
    static let maxKeyBytes = 1024
    static let maxValueBytes = 1 << 20

    static func checkKey(_ key: String, what: String = "key") throws {
        guard (1...maxKeyBytes).contains(key.utf8.count) else {
            throw PluginError.invalidArgument("\(name): the \(what) must be 1 to \(maxKeyBytes) bytes of UTF-8")
        }
    }

    func entry(_ kv: EtcdKeyValue) -> KVEntry {
        let stripped = kv.key.count >= layout.kvPrefix.count ? Array(kv.key[layout.kvPrefix.count...]) : kv.key
        return KVEntry(
            key: String(decoding: stripped, as: UTF8.self), value: kv.value, version: UInt64(max(0, kv.version)),
            createRevision: UInt64(max(0, kv.createRevision)), modRevision: UInt64(max(0, kv.modRevision)))
    }

    static func condition(_ version: KVVersion) -> EtcdVersionCondition {
        switch version {
        case .any: return .any
        case .absent: return .exactly(0)
        case .exactly(let n): return n > UInt64(Int64.max) ? .exactly(-1) : .exactly(Int64(n))
        }
    }

    public func keepAlive(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        try Self.check(service: service, instanceID: instanceID)
        let key = layout.instanceKey(service, instanceID)
        guard let owned = ownedLease(key) else {
            throw PluginError(
                PX_ERR_NOT_FOUND,
                "\(Self.name): service '\(service)' has no instance '\(instanceID)' with a TTL registered by this node")
        }
        Task {
            do {
                _ = try await self.client.renewLease(owned)
                completion(.success(()))
            } catch let error as EtcdError where error.code == .notFound {
                completion(
                    .failure(
                        PluginError(
                            PX_ERR_NOT_FOUND, "\(Self.name): the instance '\(instanceID)' of '\(service)' expired")))
            } catch {
                completion(.failure(Self.pluginError(error)))
            }
        }
    }

    public func kvGet(_ key: String, completion: @escaping @Sendable (Result<KVRead, PluginError>) -> Void) throws {
        try Self.checkKey(key)
        let etcdKey = layout.kvKey(key)
        Task {
            do {
                let (kv, revision) = try await self.client.get(etcdKey)
                completion(.success(KVRead(entry: kv.map(self.entry), revision: UInt64(max(0, revision)))))
            } catch {
                completion(.failure(Self.pluginError(error)))
            }
        }
    }

    public func kvPut(
        _ key: String, _ value: [UInt8], expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        try Self.checkKey(key)
        guard value.count <= Self.maxValueBytes else {
            throw PluginError.invalidArgument("\(Self.name): the value of '\(key)' is over \(Self.maxValueBytes) bytes")
        }
        let etcdKey = layout.kvKey(key)
        Task {
            do {
                let result = try await self.client.put(etcdKey, value, if: Self.condition(expectedVersion))
                completion(Self.write(result, key: key))
            } catch {
                completion(.failure(Self.pluginError(error)))
            }
        }
    }

    public func kvDelete(
        _ key: String, expectedVersion: KVVersion,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        try Self.checkKey(key)
        let etcdKey = layout.kvKey(key)
        Task {
            do {
                let result = try await self.client.delete(etcdKey, if: Self.condition(expectedVersion))
                completion(Self.write(result, key: key))
            } catch {
                completion(.failure(Self.pluginError(error)))
            }
        }
    }

    static func write(_ result: EtcdWriteResult, key: String) -> Result<KVWrite, PluginError> {
        switch result {
        case .written(let version, let revision):
            return .success(KVWrite(version: UInt64(max(0, version)), revision: UInt64(max(0, revision))))
        case .conflict(let current, let revision):
            return .failure(
                .kvConflict(key: key, currentVersion: UInt64(max(0, current)), revision: UInt64(max(0, revision))))
        case .absent:
            return .failure(PluginError(PX_ERR_NOT_FOUND, "\(name): key '\(key)' does not exist"))
        }
    }

    public func kvList(prefix: String, completion: @escaping @Sendable (Result<KVList, PluginError>) -> Void) throws {
        let etcdPrefix = layout.kvPrefix + Array(prefix.utf8)
        Task {
            do {
                let (kvs, revision) = try await self.client.list(prefix: etcdPrefix)
                completion(.success(KVList(entries: kvs.map(self.entry), revision: UInt64(max(0, revision)))))
            } catch {
                completion(.failure(Self.pluginError(error)))
            }
        }
    }

    /// Starts an etcd watch of `<prefix>/kv/<prefix>`; blocks the caller until etcd answered the listing that
    /// fixes the watch's start (bounded by twice the request timeout), so a compacted `fromRevision` is refused
    /// synchronously.
    public func kvWatch(prefix: String, fromRevision: UInt64, handler: @escaping @Sendable (KVChange) -> Void) throws
        -> UInt64
    {
        guard fromRevision <= UInt64(Int64.max) else {
            throw PluginError(PX_ERR_OUT_OF_RANGE, "\(Self.name): revision \(fromRevision) is past the store's")
        }
        let etcdPrefix = layout.kvPrefix + Array(prefix.utf8)
        let client = self.client
        let made = Mutex<Result<EtcdWatch, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        let toEntry: @Sendable (EtcdKeyValue) -> KVEntry = { [layout] kv in
            let stripped = Array(kv.key.dropFirst(layout.kvPrefix.count))
            return KVEntry(
                key: String(decoding: stripped, as: UTF8.self), value: kv.value, version: UInt64(max(0, kv.version)),
                createRevision: UInt64(max(0, kv.createRevision)), modRevision: UInt64(max(0, kv.modRevision)))
        }
        Task {
            do {
                let (_, _, watch) = try await client.watch(prefix: etcdPrefix, from: Int64(fromRevision)) { update in
                    for event in update.events {
                        switch event {
                        case .put(let kv): handler(.put(toEntry(kv)))
                        case .delete(let kv): handler(.delete(toEntry(kv)))
                        }
                    }
                }
                made.withLock { $0 = .success(watch) }
            } catch {
                made.withLock { $0 = .failure(error) }
            }
            done.signal()
        }
        let wait = client.configuration.requestTimeout * 2 + client.configuration.dialTimeout
        if done.wait(
            timeout: .now()
                + .milliseconds(
                    Int(wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000)))
            == .timedOut
        {
            throw PluginError(
                PX_ERR_UNAVAILABLE, "\(Self.name): etcd did not answer the watch of '\(prefix)' within \(wait)")
        }
        switch made.withLock({ $0 }) {
        case .success(let watch):
            return addKVWatch(watch)
        case .failure(let error as EtcdError) where error.code == .compacted:
            throw PluginError(
                PX_ERR_OUT_OF_RANGE, "\(Self.name): the history before revision \(fromRevision) is compacted: \(error)")
        case .failure(let error):
            throw Self.pluginError(error)
        case nil:
            throw PluginError(PX_ERR_INTERNAL, "\(Self.name): the watch of '\(prefix)' ended without an answer")
        }
    }

    public func kvUnwatch(_ id: UInt64) throws {
        guard let watch = removeKVWatch(id) else { throw PluginError(PX_ERR_NOT_FOUND, "\(Self.name): no watch \(id)") }
        let done = DispatchSemaphore(value: 0)
        Task {
            await watch.cancel()
            done.signal()
        }
        done.wait()
    }
}
