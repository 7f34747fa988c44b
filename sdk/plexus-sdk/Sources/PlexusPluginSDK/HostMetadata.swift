import PlexusABI

/// The node registry's leases and metadata store (`px_host_api` 1.4: `registry_keepalive`, `kv_*`).
///
/// Keys are shared by every plugin of the node (and, with a clustered registry, by every node): name them
/// `<area>/<owner>/...` (`connectors/<instance name>/position`, `ledgers/<stream>/...`, `cluster/nodes/<id>`).
/// Each completion is called exactly once, on any thread; a thrown error (the kernel refused the call
/// outright: `PX_ERR_UNSUPPORTED` when the node has no registry, its registry has no metadata store, or the
/// kernel is older than 1.4) means the completion is never called.
extension Host {
    /// Whether the kernel offers the 1.4 metadata store calls (its host table has them). The node's registry
    /// may still lack the hooks: the calls then throw `PX_ERR_UNSUPPORTED`.
    public var hasMetadataStore: Bool {
        let end =
            MemoryLayout<px_host_api>.offset(of: \px_host_api.kv_unwatch)! + MemoryLayout<px_host_kv_unwatch?>.size
        return Int(api.pointee.struct_size) >= end && api.pointee.kv_get != nil
    }

    private func metadataTable() throws -> px_host_api {
        guard hasMetadataStore else {
            throw PluginError(
                PX_ERR_UNSUPPORTED,
                "the kernel offers ABI \(api.pointee.abi_major).\(api.pointee.abi_minor), without the metadata store of 1.4"
            )
        }
        return api.pointee
    }

    /// Reads a key; `nil` when it is absent.
    public func kvGet(_ key: String, completion: @escaping @Sendable (Result<KVEntry?, PluginError>) -> Void) throws {
        let table = try metadataTable()
        typealias Completion = Box<@Sendable (Result<KVEntry?, PluginError>) -> Void>
        let box = Unmanaged.passRetained(Completion(completion)).toOpaque()
        let (status, message) = withPXStr(key) { keyStr in
            Self.errorBuffer { err in
                table.kv_get(
                    handle, keyStr,
                    { user, status, entry, _, error in
                        guard let user else { return }
                        let box = Unmanaged<Completion>.fromOpaque(user).takeRetainedValue()
                        if status == PX_OK.status, let entry {
                            box.value(.success(KVEntry(copying: entry)))
                        } else if status == PX_ERR_NOT_FOUND.status {
                            box.value(.success(nil))
                        } else {
                            box.value(.failure(PluginError(status: status, error.string)))
                        }
                    }, box, err)
            }
        }
        if status != PX_OK.status {
            Unmanaged<Completion>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }

    /// Writes a key under a version condition; `completion` gets the key's new version and the change's
    /// revision once the change is durable. A failed condition completes with a `PluginError` of status
    /// `PX_ERR_FAILED_PRECONDITION` whose `conflict` has the key's current version and the store's revision.
    public func kvPut(
        _ key: String, _ value: [UInt8], expectedVersion: KVVersion = .any,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        let table = try metadataTable()
        try write(key, completion: completion) { keyStr, user, err in
            value.withUnsafeBufferPointer { bytes in
                table.kv_put(
                    handle, keyStr, px_bytes(ptr: bytes.count == 0 ? nil : bytes.baseAddress, len: bytes.count),
                    expectedVersion.raw, Self.writeDone, user, err)
            }
        }
    }

    /// Deletes a key under a version condition; `completion` as `kvPut`'s (version 0). Deleting an absent key
    /// with `.any` completes with `PX_ERR_NOT_FOUND`.
    public func kvDelete(
        _ key: String, expectedVersion: KVVersion = .any,
        completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void
    ) throws {
        let table = try metadataTable()
        try write(key, completion: completion) { keyStr, user, err in
            table.kv_delete(handle, keyStr, expectedVersion.raw, Self.writeDone, user, err)
        }
    }

    /// The state of one write in flight: its key (for a conflict's text) and the completion.
    private final class WriteBox: Sendable {
        let key: String
        let completion: @Sendable (Result<KVWrite, PluginError>) -> Void
        init(key: String, completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void) {
            self.key = key
            self.completion = completion
        }
    }

    private static let writeDone: px_kv_write_done_fn = { user, status, version, revision, error in
        guard let user else { return }
        let box = Unmanaged<WriteBox>.fromOpaque(user).takeRetainedValue()
        if status == PX_OK.status {
            box.completion(.success(KVWrite(version: version, revision: revision)))
        } else if status == PX_ERR_FAILED_PRECONDITION.status {
            var failure = PluginError.kvConflict(key: box.key, currentVersion: version, revision: revision)
            let text = error.string
            if !text.isEmpty && !text.contains(box.key) { failure.message += ": \(text)" }
            box.completion(.failure(failure))
        } else {
            box.completion(.failure(PluginError(status: status, error.string)))
        }
    }

    private func write(
        _ key: String, completion: @escaping @Sendable (Result<KVWrite, PluginError>) -> Void,
        _ call: (px_str, UnsafeMutableRawPointer, UnsafeMutablePointer<px_error>) -> px_status
    ) throws {
        let box = Unmanaged.passRetained(WriteBox(key: key, completion: completion)).toOpaque()
        let (status, message) = withPXStr(key) { keyStr in Self.errorBuffer { err in call(keyStr, box, err) } }
        if status != PX_OK.status {
            Unmanaged<WriteBox>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }

    /// Lists the keys under a prefix (the empty prefix: every key), in byte order of their keys, with the
    /// revision the listing was read at.
    public func kvList(prefix: String, completion: @escaping @Sendable (Result<KVList, PluginError>) -> Void) throws {
        let table = try metadataTable()
        typealias Completion = Box<@Sendable (Result<KVList, PluginError>) -> Void>
        let box = Unmanaged.passRetained(Completion(completion)).toOpaque()
        let (status, message) = withPXStr(prefix) { prefixStr in
            Self.errorBuffer { err in
                table.kv_list(
                    handle, prefixStr,
                    { user, status, entries, count, revision, error in
                        guard let user else { return }
                        let box = Unmanaged<Completion>.fromOpaque(user).takeRetainedValue()
                        guard status == PX_OK.status else {
                            return box.value(.failure(PluginError(status: status, error.string)))
                        }
                        var copied: [KVEntry] = []
                        copied.reserveCapacity(count)
                        for index in 0..<count {
                            if let entry = entries?[index] { copied.append(KVEntry(copying: entry)) }
                        }
                        box.value(.success(KVList(entries: copied, revision: revision)))
                    }, box, err)
            }
        }
        if status != PX_OK.status {
            Unmanaged<Completion>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }

    /// Watches the keys under a prefix: from revision 0, the changes after this call; from n, every change
    /// with revision >= n (replayed first), then live ones. List first and watch from the list's revision + 1
    /// to miss nothing.
    /// - Returns: the watch's id, for `kvUnwatch`.
    /// - Throws: `PX_ERR_OUT_OF_RANGE` when the history before `fromRevision` is no longer kept.
    /// - Important: `handler` runs on the registry's threads, never concurrently for one watch, in revision
    ///   order; it must not block.
    public func kvWatch(
        prefix: String, fromRevision: UInt64 = 0, handler: @escaping @Sendable (KVChange) -> Void
    ) throws -> UInt64 {
        let table = try metadataTable()
        typealias Handler = Box<@Sendable (KVChange) -> Void>
        let box = Unmanaged.passRetained(Handler(handler)).toOpaque()
        var id: UInt64 = 0
        let (status, message) = withPXStr(prefix) { prefixStr in
            Self.errorBuffer { err in
                table.kv_watch(
                    handle, prefixStr, fromRevision,
                    { user, kind, entry in
                        guard let user, let entry, let change = KVChange(kind: kind, copying: entry) else { return }
                        Unmanaged<Handler>.fromOpaque(user).takeUnretainedValue().value(change)
                    }, box, &id, err)
            }
        }
        guard status == PX_OK.status else {
            Unmanaged<Handler>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
        let address = UInt(bitPattern: box)
        kvWatchHandlers.withLock { $0[id] = address }
        return id
    }

    /// Ends a metadata watch: when it returns its handler is not running and will not run again.
    /// - Important: Not from inside that watch's own handler.
    public func kvUnwatch(_ id: UInt64) {
        guard let address = kvWatchHandlers.withLock({ $0.removeValue(forKey: id) }),
            let box = UnsafeMutableRawPointer(bitPattern: address)
        else { return }
        if hasMetadataStore { _ = api.pointee.kv_unwatch(handle, id) }
        Unmanaged<Box<@Sendable (KVChange) -> Void>>.fromOpaque(box).release()
    }

    /// Renews an instance this plugin registered for another TTL (its lease). `PX_ERR_NOT_FOUND` when it
    /// expired or was never registered: register it again. The kernel already renews every instance a plugin
    /// registers with a TTL every ttl/3 until it is deregistered or the plugin stops.
    public func registryKeepAlive(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws {
        let table = try metadataTable()
        typealias Completion = Box<@Sendable (Result<Void, PluginError>) -> Void>
        let box = Unmanaged.passRetained(Completion(completion)).toOpaque()
        let (status, message) = withPXStr(service) { serviceStr in
            withPXStr(instanceID) { idStr in
                Self.errorBuffer { err in
                    table.registry_keepalive(
                        handle, serviceStr, idStr,
                        { user, status, error in
                            guard let user else { return }
                            let box = Unmanaged<Completion>.fromOpaque(user).takeRetainedValue()
                            box.value(
                                status == PX_OK.status
                                    ? .success(()) : .failure(PluginError(status: status, error.string)))
                        }, box, err)
                }
            }
        }
        if status != PX_OK.status {
            Unmanaged<Completion>.fromOpaque(box).release()
            throw PluginError(status: status, message)
        }
    }

    // MARK: async conveniences

    /// Reads a key; `nil` when it is absent.
    public func kvGet(_ key: String) async throws -> KVEntry? {
        try await withCheckedThrowingContinuation { continuation in
            do { try kvGet(key) { continuation.resume(with: $0) } } catch { continuation.resume(throwing: error) }
        }
    }

    /// Writes a key under a version condition, once durable.
    public func kvPut(_ key: String, _ value: [UInt8], expectedVersion: KVVersion = .any) async throws -> KVWrite {
        try await withCheckedThrowingContinuation { continuation in
            do {
                try kvPut(key, value, expectedVersion: expectedVersion) { continuation.resume(with: $0) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// Deletes a key under a version condition, once durable.
    public func kvDelete(_ key: String, expectedVersion: KVVersion = .any) async throws -> KVWrite {
        try await withCheckedThrowingContinuation { continuation in
            do {
                try kvDelete(key, expectedVersion: expectedVersion) { continuation.resume(with: $0) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// Lists the keys under a prefix.
    public func kvList(prefix: String) async throws -> KVList {
        try await withCheckedThrowingContinuation { continuation in
            do { try kvList(prefix: prefix) { continuation.resume(with: $0) } } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// Renews a registered instance's TTL.
    public func registryKeepAlive(service: String, instanceID: String) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            do {
                try registryKeepAlive(service: service, instanceID: instanceID) { continuation.resume(with: $0) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}
