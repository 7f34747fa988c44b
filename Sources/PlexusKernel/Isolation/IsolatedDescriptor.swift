import Foundation
import PlexusABI
import PlexusCore

/// The lifecycle hooks of the proxy descriptor: C functions the kernel calls as it calls any plugin's, which
/// forward to the instance's child.
enum IsolatedHooks {
    static let create: px_plugin_on_create = { api, host, config, out, err in
        guard let api, let config, let out else {
            setError(err, "on_create needs the host table, a config and an out pointer")
            return PX_ERR_INVALID_ARGUMENT.status
        }
        let c = config.pointee
        let name = c.instance_name.string
        guard let taken = ProcessIsolation.takeWarm(name) else {
            setError(err, "no process-isolated plugin '\(name)' was loaded")
            return PX_ERR_FAILED_PRECONDITION.status
        }
        let (spec, warm) = taken
        let entries = (0..<c.entry_count).map { index -> (key: String, value: String) in
            let pair = c.entries![index]
            return (pair.key.string, pair.value.string)
        }
        let copy = IsolatedInstance.ConfigCopy(
            instanceName: name, nodeID: c.node_id.string, dataDir: c.data_dir.string, json: c.json.string,
            entries: entries)
        let instance = IsolatedInstance(spec: spec, api: api, host: host, config: copy)
        let started = ContinuousClock.now
        let child: PluginHostProcess
        if let warm, !warm.channel.isClosed {
            child = warm
        } else {
            do {
                child = try ProcessIsolation.startChild(spec).0
            } catch {
                setError(err, "\(error)")
                return PX_ERR_UNAVAILABLE.status
            }
        }
        let budget = IsolatedInstance.share(of: spec.manifest.startTimeout) - (ContinuousClock.now - started)
        let (status, message) = instance.create(child: child, timeout: budget)
        guard status == PX_OK.status else {
            child.kill(because: "plugin-host killed: on_create failed")
            setError(err, message)
            return status
        }
        out.pointee = instance.retained
        return PX_OK.status
    }

    static let start: px_plugin_on_start = { raw, err in
        guard let instance = IsolatedInstance.from(raw) else { return PX_ERR_INVALID_ARGUMENT.status }
        let (status, message) = instance.start(timeout: IsolatedInstance.share(of: instance.spec.manifest.startTimeout))
        if status != PX_OK.status {
            setError(err, message)
            if case .success(let child) = instance.currentChild() {
                child.kill(because: "plugin-host killed: on_start failed")
            }
        }
        return status
    }

    static let stop: px_plugin_on_stop = { raw, timeout, err in
        guard let instance = IsolatedInstance.from(raw) else { return PX_ERR_INVALID_ARGUMENT.status }
        let (status, message) = instance.stop(timeoutMs: timeout)
        if status != PX_OK.status { setError(err, message) }
        return status
    }

    static let destroy: px_plugin_on_destroy = { raw in
        guard let raw, let instance = IsolatedInstance.from(raw) else { return }
        instance.destroy()
        Unmanaged<IsolatedInstance>.fromOpaque(raw).release()
    }

    static let health: px_plugin_on_health = { raw, err in
        guard let instance = IsolatedInstance.from(raw) else { return PX_ERR_INVALID_ARGUMENT.status }
        let (status, message) = instance.health()
        if status != PX_OK.status { setError(err, message) }
        return status
    }
}

/// The proxy storage vtable: each hook a message to the child, each completion its reply.
///
/// An asynchronous hook returns `PX_OK` once the request is sent, and reports the child's refusal through its
/// completion; with no running child (restarting, quarantined) it returns `PX_ERR_UNAVAILABLE` at once. The
/// 1.1 batch read is offered: the records decoded from the reply are laid out once and lent to the kernel
/// (`on_read_batch`), not copied again. The 1.3 listing and deletion hooks are not offered (the kernel answers
/// that the storage does not support them).
enum IsolatedStorage {
    static func vtable(durability: UInt32) -> px_storage_vtable {
        var table = px_storage_vtable()
        table.struct_size = UInt32(MemoryLayout<px_storage_vtable>.size)
        table.durability = durability
        table.on_open_stream = openStream
        table.on_close_stream = closeStream
        table.on_append = append
        table.on_read = read
        table.on_commit_offset = commitOffset
        table.on_fetch_offset = fetchOffset
        table.on_trim = trim
        table.on_stream_info = streamInfo
        table.on_open_stream_async = openStreamAsync
        table.on_read_batch = readBatch
        return table
    }

    /// The instance, the child and the child's stream handle a call goes to, or a refusal written to `err`.
    private static func target(
        _ raw: UnsafeMutableRawPointer?, _ stream: OpaquePointer?, _ err: UnsafeMutablePointer<px_error>?
    ) -> (IsolatedInstance, PluginHostProcess, UInt64)? {
        guard let instance = IsolatedInstance.from(raw), let proxy = ProxyStream.from(stream) else {
            setError(err, "no instance or stream")
            return nil
        }
        switch instance.currentChild() {
        case .failure(let error):
            setError(err, error.description)
            return nil
        case .success(let child):
            guard let handle = proxy.childHandle.withLock({ $0 }) else {
                setError(err, "\(instance.name): stream \(proxy.name) is not open in the plugin-host")
                return nil
            }
            return (instance, child, handle)
        }
    }

    static func openSync(
        _ instance: IsolatedInstance, child: PluginHostProcess, _ name: String, _ options: px_stream_options
    ) -> Result<UInt64, IsolationWireError> {
        var w = WireWriter()
        w.text(name)
        w.u64(options.retention_bytes)
        w.u64(options.retention_ms)
        guard let answer = child.channel.call(.openStream, w.bytes, timeout: instance.spec.manifest.startTimeout) else {
            return .failure(
                IsolationWireError(
                    "opening stream \(name) did not finish within \(instance.spec.manifest.startTimeout)"))
        }
        switch answer.outcome() {
        case .failure(let error): return .failure(error)
        case .success(let (status, error, reader)):
            var r = reader
            guard status == PX_OK.status, let handle = try? r.u64() else {
                return .failure(IsolationWireError("\(StatusText.name(status)): \(error)"))
            }
            return .success(handle)
        }
    }

    private static func options(_ given: UnsafePointer<px_stream_options>?) -> px_stream_options {
        guard let given else { return px_stream_options() }
        let size = UnsafeRawPointer(given).load(as: UInt32.self)
        return ABIStruct.copy(UnsafeRawPointer(given), size: Int(size), zero: px_stream_options())
    }

    private static func adopt(
        _ instance: IsolatedInstance, _ name: String, _ options: px_stream_options, _ handle: UInt64
    )
        -> OpaquePointer
    {
        let stream = ProxyStream(name: name, options: options, childHandle: handle)
        instance.state.withLock { $0.streams[ObjectIdentifier(stream)] = stream }
        return stream.opaque
    }

    static let openStream: px_storage_on_open_stream = { raw, name, given, out, err in
        guard let instance = IsolatedInstance.from(raw), let out else { return PX_ERR_INVALID_ARGUMENT.status }
        guard case .success(let child) = instance.currentChild() else {
            setError(err, "\(instance.name) has no running plugin-host")
            return PX_ERR_UNAVAILABLE.status
        }
        let opts = options(given)
        switch openSync(instance, child: child, name.string, opts) {
        case .failure(let error):
            setError(err, error.description)
            return PX_ERR_UNAVAILABLE.status
        case .success(let handle):
            out.pointee = adopt(instance, name.string, opts, handle)
            return PX_OK.status
        }
    }

    static let openStreamAsync: px_storage_on_open_stream_async = { raw, name, given, done, user, err in
        guard let instance = IsolatedInstance.from(raw), let done else { return PX_ERR_INVALID_ARGUMENT.status }
        let child: PluginHostProcess
        switch instance.currentChild() {
        case .failure(let error):
            setError(err, error.description)
            return PX_ERR_UNAVAILABLE.status
        case .success(let current): child = current
        }
        let opts = options(given)
        let streamName = name.string
        var w = WireWriter()
        w.text(streamName)
        w.u64(opts.retention_bytes)
        w.u64(opts.retention_ms)
        let callback = UserPointer(user)
        let fn = Unchecked(done)
        child.channel.request(.openStream, w.bytes) { answer in
            let done = fn.value
            switch answer.outcome() {
            case .failure(let error):
                error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, nil, $0) }
            case .success(let (status, error, reader)):
                var r = reader
                guard status == PX_OK.status, let handle = try? r.u64() else {
                    return error.withPxStr {
                        done(callback.raw, status == PX_OK.status ? PX_ERR_INTERNAL.status : status, nil, $0)
                    }
                }
                let stream = adopt(instance, streamName, opts, handle)
                "".withPxStr { done(callback.raw, PX_OK.status, stream, $0) }
            }
        }
        return PX_OK.status
    }

    static let closeStream: px_storage_on_close_stream = { raw, stream in
        guard let instance = IsolatedInstance.from(raw), let proxy = ProxyStream.from(stream) else { return }
        let removed = instance.state.withLock { $0.streams.removeValue(forKey: ObjectIdentifier(proxy)) }
        if case .success(let child) = instance.currentChild(), let handle = proxy.childHandle.withLock({ $0 }) {
            var w = WireWriter()
            w.u64(handle)
            child.channel.notify(.closeStream, w.bytes)
        }
        withExtendedLifetime(removed) {}
    }

    static let append: px_storage_on_append = { raw, stream, events, count, done, user, err in
        guard let done, let found = target(raw, stream, err) else { return PX_ERR_UNAVAILABLE.status }
        let (child, handle) = (found.1, found.2)
        var w = WireWriter()
        w.u64(handle)
        w.events(events, count)
        let callback = UserPointer(user)
        let fn = Unchecked(done)
        child.channel.request(.append, w.bytes) { answer in
            let done = fn.value
            switch answer.outcome() {
            case .failure(let error):
                error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, 0, $0) }
            case .success(let (status, error, reader)):
                var r = reader
                let first = (try? r.u64()) ?? 0
                error.withPxStr { done(callback.raw, status, first, $0) }
            }
        }
        return PX_OK.status
    }

    static let read: px_storage_on_read = { raw, stream, from, maxRecords, maxBytes, done, user, err in
        guard let done, let found = target(raw, stream, err) else { return PX_ERR_UNAVAILABLE.status }
        let (child, handle) = (found.1, found.2)
        var w = WireWriter()
        w.u64(handle)
        w.u64(from)
        w.u64(UInt64(maxRecords))
        w.u64(UInt64(maxBytes))
        let callback = UserPointer(user)
        let fn = Unchecked(done)
        child.channel.request(.read, w.bytes) { answer in
            let done = fn.value
            switch answer.outcome() {
            case .failure(let error):
                error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, nil, 0, 0, $0) }
            case .success(let (status, error, reader)):
                var r = reader
                guard let records = try? r.records(), let next = try? r.u64() else {
                    return "the plugin-host's read reply was malformed".withPxStr {
                        done(callback.raw, PX_ERR_INTERNAL.status, nil, 0, 0, $0)
                    }
                }
                let batch = CRecordBatch(records)
                let pointers = batch.pointers
                error.withPxStr { done(callback.raw, status, pointers.baseAddress, pointers.count, next, $0) }
                withExtendedLifetime(batch) {}
            }
        }
        return PX_OK.status
    }

    static let readBatch: px_storage_on_read_batch = { raw, stream, from, maxRecords, maxBytes, done, user, err in
        guard let done, let found = target(raw, stream, err) else { return PX_ERR_UNAVAILABLE.status }
        let (child, handle) = (found.1, found.2)
        var w = WireWriter()
        w.u64(handle)
        w.u64(from)
        w.u64(UInt64(maxRecords))
        w.u64(UInt64(maxBytes))
        let callback = UserPointer(user)
        let fn = Unchecked(done)
        child.channel.request(.read, w.bytes) { answer in
            let done = fn.value
            switch answer.outcome() {
            case .failure(let error):
                error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, nil, $0) }
            case .success(let (status, error, reader)):
                guard status == PX_OK.status else { return error.withPxStr { done(callback.raw, status, nil, $0) } }
                var r = reader
                guard let records = try? r.records(), let next = try? r.u64() else {
                    return "the plugin-host's read reply was malformed".withPxStr {
                        done(callback.raw, PX_ERR_INTERNAL.status, nil, $0)
                    }
                }
                "".withPxStr { done(callback.raw, PX_OK.status, LentRecords.batch(records, next: next), $0) }
            }
        }
        return PX_OK.status
    }

    private static func statusCall(
        _ child: PluginHostProcess, _ op: IsolationOp, _ payload: [UInt8], _ done: @escaping px_done_fn,
        _ user: UnsafeMutableRawPointer?
    ) {
        let callback = UserPointer(user)
        let fn = Unchecked(done)
        child.channel.request(op, payload) { answer in
            let done = fn.value
            switch answer.outcome() {
            case .failure(let error): error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, $0) }
            case .success(let (status, error, _)): error.withPxStr { done(callback.raw, status, $0) }
            }
        }
    }

    static let commitOffset: px_storage_on_commit_offset = { raw, stream, group, offset, done, user, err in
        guard let done, let found = target(raw, stream, err) else { return PX_ERR_UNAVAILABLE.status }
        let (child, handle) = (found.1, found.2)
        var w = WireWriter()
        w.u64(handle)
        w.text(group)
        w.u64(offset)
        statusCall(child, .commitOffset, w.bytes, done, user)
        return PX_OK.status
    }

    static let fetchOffset: px_storage_on_fetch_offset = { raw, stream, group, done, user, err in
        guard let done, let found = target(raw, stream, err) else { return PX_ERR_UNAVAILABLE.status }
        let (child, handle) = (found.1, found.2)
        var w = WireWriter()
        w.u64(handle)
        w.text(group)
        let callback = UserPointer(user)
        let fn = Unchecked(done)
        child.channel.request(.fetchOffset, w.bytes) { answer in
            let done = fn.value
            switch answer.outcome() {
            case .failure(let error):
                error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, UInt64.max, $0) }
            case .success(let (status, error, reader)):
                var r = reader
                let offset = (try? r.u64()) ?? UInt64.max
                error.withPxStr { done(callback.raw, status, offset, $0) }
            }
        }
        return PX_OK.status
    }

    static let trim: px_storage_on_trim = { raw, stream, before, done, user, err in
        guard let done, let found = target(raw, stream, err) else { return PX_ERR_UNAVAILABLE.status }
        let (child, handle) = (found.1, found.2)
        var w = WireWriter()
        w.u64(handle)
        w.u64(before)
        statusCall(child, .trim, w.bytes, done, user)
        return PX_OK.status
    }

    static let streamInfo: px_storage_on_stream_info = { raw, stream, out, err in
        guard let out, let found = target(raw, stream, err) else { return PX_ERR_UNAVAILABLE.status }
        let (instance, child, handle) = found
        var w = WireWriter()
        w.u64(handle)
        guard let answer = child.channel.call(.streamInfo, w.bytes, timeout: .seconds(5)) else {
            setError(err, "\(instance.name): the plugin-host did not answer on_stream_info within 5 s")
            return PX_ERR_TIMEOUT.status
        }
        switch answer.outcome() {
        case .failure(let error):
            setError(err, error.description)
            return PX_ERR_UNAVAILABLE.status
        case .success(let (status, error, reader)):
            guard status == PX_OK.status else {
                setError(err, error)
                return status
            }
            var r = reader
            guard let first = try? r.u64(), let next = try? r.u64(), let size = try? r.u64() else {
                setError(err, "the plugin-host's stream info was malformed")
                return PX_ERR_INTERNAL.status
            }
            // The caller set struct_size; write only what it covers.
            var info = px_stream_info()
            info.struct_size = out.pointee.struct_size
            info.first_offset = first
            info.next_offset = next
            info.size_bytes = size
            let bytes = min(Int(out.pointee.struct_size), MemoryLayout<px_stream_info>.size)
            withUnsafeBytes(of: &info) {
                UnsafeMutableRawPointer(out).copyMemory(from: $0.baseAddress!, byteCount: bytes)
            }
            return PX_OK.status
        }
    }
}

/// Records a child read, laid out once and lent to the kernel as a `px_record_batch` until it calls `release`.
enum LentRecords {
    static func batch(_ records: [StoredRecord], next: UInt64) -> UnsafeMutablePointer<px_record_batch> {
        let owned = CRecordBatch(records)
        let batch = UnsafeMutablePointer<px_record_batch>.allocate(capacity: 1)
        batch.initialize(
            to: px_record_batch(
                struct_size: UInt32(MemoryLayout<px_record_batch>.size), reserved: 0,
                records: owned.pointers.baseAddress, count: owned.count, next_offset: next, release: release,
                storage_data: Unmanaged.passRetained(owned).toOpaque()))
        return batch
    }

    private static let release: @convention(c) (UnsafeMutablePointer<px_record_batch>?) -> Void = { batch in
        guard let batch else { return }
        if let owned = batch.pointee.storage_data { Unmanaged<CRecordBatch>.fromOpaque(owned).release() }
        batch.deinitialize(count: 1)
        batch.deallocate()
    }
}
