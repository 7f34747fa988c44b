import Foundation
import PlexusABI
import PlexusCore

#if canImport(Glibc)
    import Glibc
#endif

/// The `px_host_api` a plugin gets inside a plugin-host child: every function is a message to the kernel,
/// which calls its own table on the plugin's behalf (`IsolatedInstance`). Every entry of the 1.4 table is set.
/// Functions that return a result synchronously (subscribe, unsubscribe, ack, nack, timer_start, timer_cancel,
/// metric_create, listen, registry_watch, registry_unwatch, kv_watch, kv_unwatch) wait for the kernel's answer;
/// the 1.0 asynchronous ones (publish, registry_register, registry_deregister, registry_lookup, storage_read)
/// return `PX_OK` at once and report a refusal through their completion; the 1.4 asynchronous ones
/// (registry_keepalive, kv_get, kv_put, kv_delete, kv_list) wait for the kernel's synchronous status, as their
/// header promises `PX_ERR_UNSUPPORTED` synchronously, and complete later; `run` runs on this process's own
/// pool.
extension ChildHost {
    /// Built once per child process.
    nonisolated(unsafe) static let api: UnsafePointer<px_host_api> = {
        let table = UnsafeMutablePointer<px_host_api>.allocate(capacity: 1)
        table.initialize(to: px_host_api())
        table.pointee.struct_size = UInt32(MemoryLayout<px_host_api>.size)
        table.pointee.abi_major = UInt16(PX_ABI_VERSION_MAJOR)
        table.pointee.abi_minor = UInt16(PX_ABI_VERSION_MINOR)
        table.pointee.kernel_version = UnsafePointer(strdup(PlexusVersion.kernel))
        table.pointee.log = { _, level, message in
            var w = WireWriter()
            w.i32(level)
            w.text(message)
            ChildHost.shared?.channel.notify(.log, w.bytes)
        }
        table.pointee.counter_add = { _, name, delta in
            var w = WireWriter()
            w.text(name)
            w.u64(delta)
            ChildHost.shared?.channel.notify(.counterAdd, w.bytes)
        }
        table.pointee.gauge_set = { _, name, value in
            var w = WireWriter()
            w.text(name)
            w.f64(value)
            ChildHost.shared?.channel.notify(.gaugeSet, w.bytes)
        }
        table.pointee.histogram_record = { _, name, value in
            var w = WireWriter()
            w.text(name)
            w.f64(value)
            ChildHost.shared?.channel.notify(.histogramRecord, w.bytes)
        }
        table.pointee.publish = { _, topic, events, count, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "publish needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            var w = WireWriter()
            w.text(topic)
            w.events(events, count)
            let callback = UserPointer(user)
            let fn = Unchecked(done)
            host.channel.request(.publish, w.bytes) { answer in
                let done = fn.value
                switch answer.outcome() {
                case .failure(let error):
                    error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, 0, $0) }
                case .success(let (status, error, reader)):
                    var reader = reader
                    let first = (try? reader.u64()) ?? 0
                    error.withPxStr { done(callback.raw, status, first, $0) }
                }
            }
            return PX_OK.status
        }
        table.pointee.subscribe = { _, spec, out, err in
            guard let host = ChildHost.shared, let spec, let out else {
                setError(err, "subscribe needs a spec and an out pointer")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let size = UnsafeRawPointer(spec).load(as: UInt32.self)
            if let problem = ABIStruct.sizeProblem(
                size, of: "px_subscription_spec", known: MemoryLayout<px_subscription_spec>.size,
                what: "the subscription spec")
            {
                setError(err, problem)
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let s = ABIStruct.copy(UnsafeRawPointer(spec), size: Int(size), zero: px_subscription_spec())
            guard let deliver = s.deliver else {
                setError(err, "subscribe needs a deliver function")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let local = host.subscriptions.withLock { state -> UInt64 in
                let id = state.next
                state.next += 1
                state.byLocal[id] = Callback(fn: unsafeBitCast(deliver, to: UnsafeRawPointer.self), user: s.user)
                return id
            }
            var w = WireWriter()
            w.u64(local)
            w.u32(s.group_mode)
            w.text(s.topic)
            w.optionalText(s.group)
            w.kvs(s.filters, s.filter_count)
            w.u32(s.retry)
            w.u32(s.backoff_policy)
            w.u64(s.backoff_delay_ms)
            w.u64(s.backoff_max_ms)
            w.u64(s.timeout_ms)
            w.optionalText(s.dead_letter_topic)
            w.u32(s.ordered)
            w.u32(s.max_in_flight)
            w.u32(s.start_position)
            w.u64(s.start_offset)
            let (status, id) = host.syncCall(.subscribe, w.bytes, err) { try $0.u64() }
            guard status == PX_OK.status, let id else {
                host.subscriptions.withLock { _ = $0.byLocal.removeValue(forKey: local) }
                return status
            }
            host.subscriptions.withLock { $0.localByKernel[id] = local }
            out.pointee = id
            return PX_OK.status
        }
        table.pointee.unsubscribe = { _, id in
            guard let host = ChildHost.shared else { return PX_ERR_UNAVAILABLE.status }
            var w = WireWriter()
            w.u64(id)
            let (status, _) = host.syncCall(.unsubscribe, w.bytes, nil) { _ in () }
            host.subscriptions.withLock { state in
                if let local = state.localByKernel.removeValue(forKey: id) { state.byLocal[local] = nil }
            }
            return status
        }
        table.pointee.ack = { _, id in
            guard let host = ChildHost.shared else { return PX_ERR_UNAVAILABLE.status }
            var w = WireWriter()
            w.u64(id)
            return host.syncCall(.ack, w.bytes, nil) { _ in () }.0
        }
        table.pointee.nack = { _, id, action, reason in
            guard let host = ChildHost.shared else { return PX_ERR_UNAVAILABLE.status }
            var w = WireWriter()
            w.u64(id)
            w.u32(action)
            w.text(reason)
            return host.syncCall(.nack, w.bytes, nil) { _ in () }.0
        }
        table.pointee.timer_start = { _, delay, interval, fn, user, out, err in
            guard let host = ChildHost.shared, let fn, let out else {
                setError(err, "timer_start needs a function and an out pointer")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let local = host.timers.withLock { state -> UInt64 in
                let id = state.next
                state.next += 1
                state.byLocal[id] = Callback(fn: unsafeBitCast(fn, to: UnsafeRawPointer.self), user: user)
                return id
            }
            var w = WireWriter()
            w.u64(local)
            w.u64(delay)
            w.u64(interval)
            let (status, id) = host.syncCall(.timerStart, w.bytes, err) { try $0.u64() }
            guard status == PX_OK.status, let id else {
                host.timers.withLock { _ = $0.byLocal.removeValue(forKey: local) }
                return status
            }
            host.timers.withLock { $0.localByKernel[id] = local }
            out.pointee = id
            return PX_OK.status
        }
        table.pointee.timer_cancel = { _, id in
            guard let host = ChildHost.shared else { return PX_ERR_UNAVAILABLE.status }
            // Forgotten here first: a firing already on its way is dropped.
            host.timers.withLock { state in
                if let local = state.localByKernel.removeValue(forKey: id) { state.byLocal[local] = nil }
            }
            var w = WireWriter()
            w.u64(id)
            return host.syncCall(.timerCancel, w.bytes, nil) { _ in () }.0
        }
        table.pointee.registry_register = { _, instance, done, user, err in
            guard let host = ChildHost.shared, let instance, let done else {
                setError(err, "registry_register needs an instance and a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let size = UnsafeRawPointer(instance).load(as: UInt32.self)
            if let problem = ABIStruct.sizeProblem(
                size, of: "px_service_instance", known: MemoryLayout<px_service_instance>.size,
                what: "the service instance")
            {
                setError(err, problem)
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let i = ABIStruct.copy(UnsafeRawPointer(instance), size: Int(size), zero: px_service_instance())
            var w = WireWriter()
            w.text(i.service)
            w.text(i.instance_id)
            w.text(i.address)
            w.kvs(i.metadata, i.metadata_count)
            w.u64(i.ttl_ms)
            host.statusRequest(.registryRegister, w.bytes, done, user)
            return PX_OK.status
        }
        table.pointee.registry_deregister = { _, service, instanceID, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "registry_deregister needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            var w = WireWriter()
            w.text(service)
            w.text(instanceID)
            host.statusRequest(.registryDeregister, w.bytes, done, user)
            return PX_OK.status
        }
        table.pointee.registry_lookup = { _, service, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "registry_lookup needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            var w = WireWriter()
            w.text(service)
            let callback = UserPointer(user)
            let fn = Unchecked(done)
            host.channel.request(.registryLookup, w.bytes) { answer in
                let done = fn.value
                switch answer.outcome() {
                case .failure(let error):
                    error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, nil, 0, $0) }
                case .success(let (status, error, reader)):
                    var reader = reader
                    let instances = (try? ServiceInstanceWire.read(&reader)) ?? []
                    ServiceInstanceWire.withC(instances) { pointers in
                        error.withPxStr { done(callback.raw, status, pointers.baseAddress, pointers.count, $0) }
                    }
                }
            }
            return PX_OK.status
        }
        table.pointee.registry_watch = { _, service, fn, user, out, err in
            guard let host = ChildHost.shared, let fn, let out else {
                setError(err, "registry_watch needs a function and an out pointer")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let local = host.watches.withLock { state -> UInt64 in
                let id = state.next
                state.next += 1
                state.byLocal[id] = Callback(fn: unsafeBitCast(fn, to: UnsafeRawPointer.self), user: user)
                return id
            }
            var w = WireWriter()
            w.u64(local)
            w.text(service)
            let (status, id) = host.syncCall(.registryWatch, w.bytes, err) { try $0.u64() }
            guard status == PX_OK.status, let id else {
                host.watches.withLock { _ = $0.byLocal.removeValue(forKey: local) }
                return status
            }
            host.watches.withLock { $0.localByKernel[id] = local }
            out.pointee = id
            return PX_OK.status
        }
        table.pointee.registry_unwatch = { _, id in
            guard let host = ChildHost.shared else { return PX_ERR_UNAVAILABLE.status }
            var w = WireWriter()
            w.u64(id)
            let (status, _) = host.syncCall(.registryUnwatch, w.bytes, nil) { _ in () }
            host.watches.withLock { state in
                if let local = state.localByKernel.removeValue(forKey: id) { state.byLocal[local] = nil }
            }
            return status
        }
        table.pointee.storage_read = { _, topic, from, maxRecords, maxBytes, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "storage_read needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            var w = WireWriter()
            w.text(topic)
            w.u64(from)
            w.u64(UInt64(maxRecords))
            w.u64(UInt64(maxBytes))
            let callback = UserPointer(user)
            let fn = Unchecked(done)
            host.channel.request(.storageRead, w.bytes) { answer in
                let done = fn.value
                switch answer.outcome() {
                case .failure(let error):
                    error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, nil, 0, 0, $0) }
                case .success(let (status, error, reader)):
                    var reader = reader
                    let records = (try? reader.records()) ?? []
                    let next = (try? reader.u64()) ?? 0
                    let batch = CRecordBatch(records)
                    let pointers = batch.pointers
                    error.withPxStr { done(callback.raw, status, pointers.baseAddress, pointers.count, next, $0) }
                    withExtendedLifetime(batch) {}
                }
            }
            return PX_OK.status
        }
        table.pointee.run = { _, fn, user, err in
            guard let fn else {
                setError(err, "run needs a work function")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let callback = UserPointer(user)
            let work = Unchecked(fn)
            DispatchQueue.global().async { work.value(callback.raw) }
            return PX_OK.status
        }
        table.pointee.metric_create = { _, spec, out, err in
            guard let host = ChildHost.shared, let spec, let out else {
                setError(err, "metric_create needs a spec and an out pointer")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let size = UnsafeRawPointer(spec).load(as: UInt32.self)
            if let problem = ABIStruct.sizeProblem(
                size, of: "px_metric_spec", known: MemoryLayout<px_metric_spec>.size, what: "the metric spec")
            {
                setError(err, problem)
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let s = ABIStruct.copy(UnsafeRawPointer(spec), size: Int(size), zero: px_metric_spec())
            var w = WireWriter()
            w.u32(s.kind)
            w.text(s.name)
            w.text(s.help)
            w.kvs(s.labels, s.label_count)
            let buckets = s.buckets.map { Array(UnsafeBufferPointer(start: $0, count: s.bucket_count)) }
            w.u8(buckets == nil ? 0 : 1)
            w.u32(UInt32(buckets?.count ?? 0))
            for bucket in buckets ?? [] { w.f64(bucket) }
            let (status, id) = host.syncCall(.metricCreate, w.bytes, err) { try $0.u64() }
            guard status == PX_OK.status, let id, let handle = OpaquePointer(bitPattern: UInt(id)) else {
                return status == PX_OK.status ? PX_ERR_INTERNAL.status : status
            }
            out.pointee = handle
            return PX_OK.status
        }
        table.pointee.metric_record = { metric, value in
            guard let metric else { return }
            var w = WireWriter()
            w.u64(UInt64(UInt(bitPattern: metric)))
            w.f64(value)
            ChildHost.shared?.channel.notify(.metricRecord, w.bytes)
        }
        table.pointee.listen = { _, address, port, backlog, out, err in
            guard let host = ChildHost.shared, let out else {
                setError(err, "listen needs an out pointer")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            var w = WireWriter()
            w.text(address)
            w.i32(port)
            w.i32(backlog)
            let (status, passed) = host.syncCall(.listen, w.bytes, err) { try $0.u8() }
            guard status == PX_OK.status else { return status }
            guard passed == 1, let fd = host.channel.takeDescriptor() else {
                setError(err, "the kernel answered listen without a descriptor")
                return PX_ERR_INTERNAL.status
            }
            out.pointee = fd
            return PX_OK.status
        }
        installMetadataCalls(table)
        return UnsafePointer(table)
    }()

    /// The ABI 1.4 entries (`registry_keepalive`, `kv_*`). Each asks the kernel synchronously, so that a refusal
    /// (`PX_ERR_UNSUPPORTED` when the node has no registry or its registry lacks the hook) is returned with its
    /// reason as the header promises, and never followed by the completion; the completion comes later as a
    /// `hostCompletion` notice and runs on the callbacks queue. A watch's changes come as `kvWatchEvent`
    /// notices, on the same serial queue, in the order the registry made them.
    private static func installMetadataCalls(_ table: UnsafeMutablePointer<px_host_api>) {
        table.pointee.registry_keepalive = { _, service, instanceID, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "registry_keepalive needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let (callback, fn) = (UserPointer(user), Unchecked(done))
            return host.owedCall(
                .registryKeepAlive, err,
                write: { w in
                    w.text(service)
                    w.text(instanceID)
                },
                completion: { status, error, _ in error.withPxStr { fn.value(callback.raw, status, $0) } })
        }
        table.pointee.kv_get = { _, key, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "kv_get needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let (callback, fn) = (UserPointer(user), Unchecked(done))
            return host.owedCall(
                .kvGet, err, write: { $0.text(key) },
                completion: { status, error, reader in
                    let entry = (try? reader.u8()) == 1 ? try? reader.kvEntry() : nil
                    let revision = (try? reader.u64()) ?? 0
                    KVEntryWire.withC(entry.map { [$0] } ?? []) { pointers in
                        error.withPxStr {
                            fn.value(callback.raw, status, entry == nil ? nil : pointers.first ?? nil, revision, $0)
                        }
                    }
                })
        }
        table.pointee.kv_put = { _, key, value, expected, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "kv_put needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let (callback, fn) = (UserPointer(user), Unchecked(done))
            return host.owedCall(
                .kvPut, err,
                write: { w in
                    w.text(key)
                    w.raw(value.ptr, value.ptr == nil ? 0 : value.len)
                    w.u64(expected)
                },
                completion: { status, error, reader in
                    let version = (try? reader.u64()) ?? 0
                    let revision = (try? reader.u64()) ?? 0
                    error.withPxStr { fn.value(callback.raw, status, version, revision, $0) }
                })
        }
        table.pointee.kv_delete = { _, key, expected, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "kv_delete needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let (callback, fn) = (UserPointer(user), Unchecked(done))
            return host.owedCall(
                .kvDelete, err,
                write: { w in
                    w.text(key)
                    w.u64(expected)
                },
                completion: { status, error, reader in
                    let version = (try? reader.u64()) ?? 0
                    let revision = (try? reader.u64()) ?? 0
                    error.withPxStr { fn.value(callback.raw, status, version, revision, $0) }
                })
        }
        table.pointee.kv_list = { _, prefix, done, user, err in
            guard let host = ChildHost.shared, let done else {
                setError(err, "kv_list needs a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let (callback, fn) = (UserPointer(user), Unchecked(done))
            return host.owedCall(
                .kvList, err, write: { $0.text(prefix) },
                completion: { status, error, reader in
                    let entries = (try? reader.kvEntries()) ?? []
                    let revision = (try? reader.u64()) ?? 0
                    KVEntryWire.withC(entries) { pointers in
                        error.withPxStr {
                            fn.value(callback.raw, status, pointers.baseAddress, pointers.count, revision, $0)
                        }
                    }
                })
        }
        table.pointee.kv_watch = { _, prefix, from, fn, user, out, err in
            guard let host = ChildHost.shared, let fn, let out else {
                setError(err, "kv_watch needs a function and an out id")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let local = host.kvWatches.withLock { state -> UInt64 in
                let id = state.next
                state.next += 1
                state.byLocal[id] = Callback(fn: unsafeBitCast(fn, to: UnsafeRawPointer.self), user: user)
                return id
            }
            var w = WireWriter()
            w.u64(local)
            w.text(prefix)
            w.u64(from)
            let (status, id) = host.syncCall(.kvWatch, w.bytes, err) { try $0.u64() }
            guard status == PX_OK.status, let id else {
                host.kvWatches.withLock { _ = $0.byLocal.removeValue(forKey: local) }
                return status
            }
            host.kvWatches.withLock { $0.localByKernel[id] = local }
            out.pointee = id
            return PX_OK.status
        }
        table.pointee.kv_unwatch = { _, id in
            guard let host = ChildHost.shared else { return PX_ERR_UNAVAILABLE.status }
            var w = WireWriter()
            w.u64(id)
            let (status, _) = host.syncCall(.kvUnwatch, w.bytes, nil) { _ in () }
            host.kvWatches.withLock { state in
                if let local = state.localByKernel.removeValue(forKey: id) { state.byLocal[local] = nil }
            }
            // The kernel calls the watch no more; a change already on its way here is dropped, and one being
            // handed to the plugin finishes before this returns (the plugin may free `user` then).
            host.waitForRunningCallback()
            return status
        }
    }

    /// Makes a call whose completion the kernel owes: the request carries a token, the kernel answers it with
    /// its synchronous status (returned here, with the reason in `err`), and a `hostCompletion` notice with
    /// the token later runs `completion` with the status, the error text and a reader at the completion's
    /// fields. A refused or unanswered call never runs `completion`.
    func owedCall(
        _ op: IsolationOp, _ err: UnsafeMutablePointer<px_error>?, write: (inout WireWriter) -> Void,
        completion: @escaping @Sendable (px_status, String, inout WireReader) -> Void
    ) -> px_status {
        let token = owed.withLock { state -> UInt64 in
            let token = state.next
            state.next += 1
            state.completions[token] = completion
            return token
        }
        var w = WireWriter()
        w.u64(token)
        write(&w)
        let (status, _) = syncCall(op, w.bytes, err) { _ in () }
        if status != PX_OK.status { owed.withLock { _ = $0.completions.removeValue(forKey: token) } }
        return status
    }

    /// Sends a request and waits for its answer; the status (with its reason in `err`) and what `read` takes from
    /// the rest of the reply.
    func syncCall<T>(
        _ op: IsolationOp, _ payload: [UInt8], _ err: UnsafeMutablePointer<px_error>?,
        read: (inout WireReader) throws -> T
    ) -> (px_status, T?) {
        guard let answer = channel.call(op, payload, timeout: Self.syncTimeout) else {
            setError(err, "the kernel did not answer \(op) within \(Self.syncTimeout)")
            return (PX_ERR_TIMEOUT.status, nil)
        }
        switch answer.outcome() {
        case .failure(let error):
            setError(err, error.description)
            return (PX_ERR_UNAVAILABLE.status, nil)
        case .success(let (status, error, reader)):
            if status != PX_OK.status {
                setError(err, error)
                return (status, nil)
            }
            var reader = reader
            guard let value = try? read(&reader) else {
                setError(err, "the kernel's answer to \(op) was malformed")
                return (PX_ERR_INTERNAL.status, nil)
            }
            return (status, value)
        }
    }

    /// An asynchronous request whose completion carries a status only.
    func statusRequest(_ op: IsolationOp, _ payload: [UInt8], _ done: px_done_fn, _ user: UnsafeMutableRawPointer?) {
        let callback = UserPointer(user)
        let fn = Unchecked(done)
        channel.request(op, payload) { answer in
            let done = fn.value
            switch answer.outcome() {
            case .failure(let error): error.description.withPxStr { done(callback.raw, PX_ERR_UNAVAILABLE.status, $0) }
            case .success(let (status, error, _)): error.withPxStr { done(callback.raw, status, $0) }
            }
        }
    }
}

/// A plugin's user pointer carried into a completion on another thread.
struct UserPointer: @unchecked Sendable {
    // Safe: only handed back to the plugin that passed it, as the ABI's completions require.
    let raw: UnsafeMutableRawPointer?
    init(_ raw: UnsafeMutableRawPointer?) { self.raw = raw }
}

/// Service instances on the wire: service, instance id, address, metadata, ttl.
enum ServiceInstanceWire {
    struct Instance {
        var service: String
        var instanceID: String
        var address: String
        var metadata: [(key: String, value: String)]
        var ttl: UInt64
    }

    static func write(
        _ w: inout WireWriter, _ instances: UnsafePointer<UnsafePointer<px_service_instance>?>?, _ count: Int
    ) {
        guard let instances else { return w.u32(0) }
        w.u32(UInt32(count))
        for index in 0..<count {
            let i = instances[index]?.pointee ?? px_service_instance()
            w.text(i.service)
            w.text(i.instance_id)
            w.text(i.address)
            w.kvs(i.metadata, i.metadata_count)
            w.u64(i.ttl_ms)
        }
    }

    static func read(_ r: inout WireReader) throws -> [Instance] {
        try (0..<r.count(minimumBytes: 24)).map { _ in
            Instance(
                service: try r.text(), instanceID: try r.text(), address: try r.text(), metadata: try r.kvs(),
                ttl: try r.u64())
        }
    }

    /// Lays instances out as C for one call.
    static func withC<R>(
        _ instances: [Instance], _ body: (UnsafeBufferPointer<UnsafePointer<px_service_instance>?>) -> R
    )
        -> R
    {
        let strings = CStringArena()
        defer { strings.free() }
        var kvArrays: [UnsafeMutablePointer<px_kv>] = []
        defer { kvArrays.forEach { $0.deallocate() } }
        let structs = UnsafeMutablePointer<px_service_instance>.allocate(capacity: max(instances.count, 1))
        defer { structs.deallocate() }
        var pointers: [UnsafePointer<px_service_instance>?] = []
        for (index, i) in instances.enumerated() {
            let kvs = UnsafeMutablePointer<px_kv>.allocate(capacity: max(i.metadata.count, 1))
            kvArrays.append(kvs)
            for (k, pair) in i.metadata.enumerated() {
                (kvs + k).initialize(to: px_kv(key: strings.str(pair.key), value: strings.str(pair.value)))
            }
            (structs + index).initialize(
                to: px_service_instance(
                    struct_size: UInt32(MemoryLayout<px_service_instance>.size), reserved: 0,
                    service: strings.str(i.service), instance_id: strings.str(i.instanceID),
                    address: strings.str(i.address), metadata: kvs, metadata_count: i.metadata.count, ttl_ms: i.ttl))
            pointers.append(UnsafePointer(structs + index))
        }
        return pointers.withUnsafeBufferPointer { body($0) }
    }
}
