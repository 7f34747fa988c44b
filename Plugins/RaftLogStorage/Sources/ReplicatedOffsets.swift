import Dispatch
import PlexusPluginSDK
import Synchronization

/// Consumer groups' committed offsets replicated through the registry's metadata store (ABI 1.4), so that a
/// group resumes where it was on whichever member serves it after a failover (issue 14, "Clusters").
///
/// Used with `members: registry`. A commit is written to this member's `state` file as before and then to
/// `raft-log/offsets/<escaped stream>/<escaped group>` (the offset in decimal); it completes once both are
/// durable. Every member lists the prefix at start and watches it from the listing's revision on, so it holds
/// every member's latest commit in memory; `fetch_offset` answers that (the commit with the highest store
/// revision, so a lower offset committed later wins, as on one node), else the local `state`. A deleted offset
/// is deleted in the store too. The offsets stay outside the Raft log: the log holds events only, and the
/// registry is already the cluster's consistent metadata store (etcd: a quorum write).
final class ReplicatedOffsets: Sendable {
    static let prefix = "raft-log/offsets/"

    private let host: Host
    /// key → (offset, store revision); a nil offset is a deletion (kept so that an older put cannot return).
    private let cache = Mutex<[String: (offset: UInt64?, revision: UInt64)]>([:])
    private let watchID = Mutex<UInt64?>(nil)

    private init(host: Host) { self.host = host }

    /// Lists what the store holds and watches it; nil when the node's registry has no metadata store.
    /// - Throws: `PluginError` when the store cannot be read within 10 s.
    static func start(host: Host) throws -> ReplicatedOffsets? {
        guard host.hasMetadataStore else {
            host.log(.warning, "raft-log: the kernel has no metadata store: consumer offsets stay on each member")
            return nil
        }
        let offsets = ReplicatedOffsets(host: host)
        let semaphore = DispatchSemaphore(value: 0)
        let slot = ResultSlot<KVList>()
        do {
            try host.kvList(prefix: prefix) { result in
                slot.set(result)
                semaphore.signal()
            }
        } catch let error as PluginError where error.status == PX_ERR_UNSUPPORTED.status {
            host.log(.warning, "raft-log: \(error.message): consumer offsets stay on each member")
            return nil
        }
        guard semaphore.wait(timeout: .now() + 10) == .success, let result = slot.get() else {
            throw PluginError(PX_ERR_TIMEOUT, "raft-log: the metadata store did not list \(prefix) within 10 s")
        }
        let list: KVList
        switch result {
        case .success(let value): list = value
        case .failure(let error):
            throw PluginError(status: error.status, "raft-log: cannot list \(prefix): \(error.message)")
        }
        for entry in list.entries { offsets.apply(.put(entry)) }
        let id = try host.kvWatch(prefix: prefix, fromRevision: list.revision + 1) { [weak offsets] change in
            offsets?.apply(change)
        }
        offsets.watchID.withLock { $0 = id }
        return offsets
    }

    func stop() {
        if let id = watchID.withLock({ s -> UInt64? in
            defer { s = nil }
            return s
        }) {
            host.kvUnwatch(id)
        }
    }

    static func key(stream: String, group: String) -> String {
        prefix + StreamName.escape(stream) + "/" + StreamName.escape(group)
    }

    /// The latest offset any member committed for the group, nil when none is known.
    func offset(stream: String, group: String) -> UInt64?? {
        guard let known = cache.withLock({ $0[Self.key(stream: stream, group: group)] }) else { return nil }
        return .some(known.offset)
    }

    /// Writes a commit to the store; `completion` once it is durable there.
    func commit(
        stream: String, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) {
        let key = Self.key(stream: stream, group: group)
        do {
            try host.kvPut(key, Array(String(offset).utf8)) { [weak self] result in
                switch result {
                case .success(let write):
                    self?.note(key, offset: offset, revision: write.revision)
                    completion(.success(()))
                case .failure(let error):
                    completion(.failure(error))
                }
            }
        } catch let error as PluginError {
            completion(.failure(error))
        } catch {
            completion(.failure(PluginError(PX_ERR_INTERNAL, "\(error)")))
        }
    }

    /// Deletes a group's offset from the store (an absent one is no failure).
    func delete(stream: String, group: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) {
        let key = Self.key(stream: stream, group: group)
        do {
            try host.kvDelete(key) { [weak self] result in
                switch result {
                case .success(let write):
                    self?.note(key, offset: nil, revision: write.revision)
                    completion(.success(()))
                case .failure(let error) where error.status == PX_ERR_NOT_FOUND.status:
                    completion(.success(()))
                case .failure(let error):
                    completion(.failure(error))
                }
            }
        } catch let error as PluginError {
            completion(.failure(error))
        } catch {
            completion(.failure(PluginError(PX_ERR_INTERNAL, "\(error)")))
        }
    }

    private func apply(_ change: KVChange) {
        switch change {
        case .put(let entry):
            guard let offset = UInt64(String(decoding: entry.value, as: UTF8.self)) else {
                return host.log(.warning, "raft-log: ignoring \(entry.key): not a decimal offset")
            }
            note(entry.key, offset: offset, revision: entry.modRevision)
        case .delete(let entry):
            note(entry.key, offset: nil, revision: change.revision)
        }
    }

    /// Keeps the change with the highest revision.
    private func note(_ key: String, offset: UInt64?, revision: UInt64) {
        cache.withLock { all in
            if let known = all[key], known.revision > revision { return }
            all[key] = (offset, revision)
        }
    }
}
