import PlexusABI
import PlexusCore

extension ConnectorHost {
    /// Fills the metadata-store functions of the table (ABI 1.4) from the host's `KVStore`, which the
    /// instances of one run share; keep-alive answers `PX_ERR_UNSUPPORTED` (the kit has no registry).
    /// Completions run once, on another thread, as a node's do.
    static func installKV(_ t: inout px_host_api) {
        t.registry_keepalive = { host, _, _, _, _, err in
            ConnectorHost.from(host)?.record("registry_keepalive")
            setError(err, "the conformance kit's connector host has no registry")
            return PX_ERR_UNSUPPORTED.status
        }
        t.kv_get = { host, key, done, user, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("kv_get")
            guard let done, key.len > 0 else {
                return ConnectorHost.invalid(err, "kv_get needs a key and a completion")
            }
            let (entry, revision) = h.kv.get(key.string)
            let box = UnsafeSendable((done, user))
            h.owe {
                if let entry {
                    ConnectorHost.withEntry(entry) {
                        box.value.0(box.value.1, PX_OK.status, $0, revision, px_str(ptr: nil, len: 0))
                    }
                } else {
                    withPXStr("no such key") { box.value.0(box.value.1, PX_ERR_NOT_FOUND.status, nil, revision, $0) }
                }
            }
            return PX_OK.status
        }
        t.kv_put = { host, key, value, expected, done, user, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("kv_put")
            guard let done, key.len > 0, key.len <= 1024, value.len <= 1 << 20 else {
                return ConnectorHost.invalid(
                    err, "kv_put needs a key of 1 to 1024 bytes, a value up to 1 MiB and a completion")
            }
            let outcome = h.kv.put(key.string, value.bytes, expected: expected)
            let box = UnsafeSendable((done, user))
            h.owe { ConnectorHost.complete(box.value.0, box.value.1, outcome.map { ($0.0, $0.1) }) }
            return PX_OK.status
        }
        t.kv_delete = { host, key, expected, done, user, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("kv_delete")
            guard let done, key.len > 0 else {
                return ConnectorHost.invalid(err, "kv_delete needs a key and a completion")
            }
            let outcome = h.kv.delete(key.string, expected: expected)
            let box = UnsafeSendable((done, user))
            h.owe { ConnectorHost.complete(box.value.0, box.value.1, outcome.map { (UInt64(0), $0) }) }
            return PX_OK.status
        }
        t.kv_list = { host, prefix, done, user, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("kv_list")
            guard let done else { return ConnectorHost.invalid(err, "kv_list needs a completion") }
            let (entries, revision) = h.kv.list(prefix: prefix.string)
            let box = UnsafeSendable((done, user))
            h.owe {
                ConnectorHost.withEntries(entries) { pointers in
                    box.value.0(
                        box.value.1, PX_OK.status, pointers.baseAddress, pointers.count, revision,
                        px_str(ptr: nil, len: 0))
                }
            }
            return PX_OK.status
        }
        t.kv_watch = { host, prefix, from, fn, user, out, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("kv_watch")
            guard let fn else { return ConnectorHost.invalid(err, "kv_watch needs a function") }
            let box = UnsafeSendable((fn, user))
            let id = h.kv.watch(prefix: prefix.string, fromRevision: from) { kind, entry in
                ConnectorHost.withEntry(entry) { box.value.0(box.value.1, kind, $0) }
            }
            h.trackWatch(id, true)
            out?.pointee = id
            return PX_OK.status
        }
        t.kv_unwatch = { host, id in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("kv_unwatch")
            guard h.trackWatch(id, false), h.kv.unwatch(id) else { return PX_ERR_NOT_FOUND.status }
            return PX_OK.status
        }
    }

    static func invalid(_ err: UnsafeMutablePointer<px_error>?, _ text: String) -> px_status {
        setError(err, text)
        return PX_ERR_INVALID_ARGUMENT.status
    }

    static func complete(
        _ done: px_kv_write_done_fn, _ user: UnsafeMutableRawPointer?,
        _ outcome: Result<(UInt64, UInt64), KVStore.WriteFailure>
    ) {
        switch outcome {
        case .success(let (version, revision)):
            done(user, PX_OK.status, version, revision, px_str(ptr: nil, len: 0))
        case .failure(.conflict(let current, let revision)):
            withPXStr("the key's version is \(current)") {
                done(user, PX_ERR_FAILED_PRECONDITION.status, current, revision, $0)
            }
        case .failure(.notFound):
            withPXStr("no such key") { done(user, PX_ERR_NOT_FOUND.status, 0, 0, $0) }
        }
    }

    /// Lends `entry` as a `px_kv_entry` for the duration of `body`.
    static func withEntry<R>(_ entry: KVStore.Entry, _ body: (UnsafePointer<px_kv_entry>) -> R) -> R {
        withPXStr(entry.key) { key in
            entry.value.withUnsafeBufferPointer { value in
                var e = px_kv_entry()
                e.struct_size = UInt32(MemoryLayout<px_kv_entry>.size)
                e.key = key
                e.value = px_bytes(ptr: value.baseAddress, len: value.count)
                e.version = entry.version
                e.create_revision = entry.createRevision
                e.mod_revision = entry.modRevision
                return withUnsafePointer(to: &e) { body($0) }
            }
        }
    }

    /// Lends `entries` as an array of `px_kv_entry` pointers for the duration of `body`.
    static func withEntries<R>(
        _ entries: [KVStore.Entry], _ body: (UnsafeBufferPointer<UnsafePointer<px_kv_entry>?>) -> R
    ) -> R {
        func lend(_ index: Int, _ pointers: [UnsafePointer<px_kv_entry>?]) -> R {
            guard index < entries.count else { return pointers.withUnsafeBufferPointer(body) }
            return withEntry(entries[index]) { lend(index + 1, pointers + [$0]) }
        }
        return lend(0, [])
    }
}
