import Foundation
import PlexusABI
import PlexusCore
import PlexusKernel

/// A `px_service_instance` laid out in memory it owns, to lend across the ABI.
final class CServiceInstance {
    private let arena: [UnsafeMutablePointer<CChar>]
    private let pairs: UnsafeMutablePointer<px_kv>
    /// Valid while this object is alive.
    let value: px_service_instance

    init(_ record: ServiceRecord) {
        var arena: [UnsafeMutablePointer<CChar>] = []
        func place(_ text: String) -> px_str {
            let bytes = Array(text.utf8)
            let copy = UnsafeMutablePointer<CChar>.allocate(capacity: max(bytes.count, 1))
            bytes.withUnsafeBufferPointer { source in
                if let base = source.baseAddress {
                    UnsafeMutableRawPointer(copy).copyMemory(from: base, byteCount: bytes.count)
                }
            }
            arena.append(copy)
            return px_str(ptr: copy, len: bytes.count)
        }
        let pairs = UnsafeMutablePointer<px_kv>.allocate(capacity: max(record.metadata.count, 1))
        for (index, pair) in record.metadata.enumerated() {
            (pairs + index).initialize(to: px_kv(key: place(pair.key), value: place(pair.value)))
        }
        value = px_service_instance(
            struct_size: UInt32(MemoryLayout<px_service_instance>.size), reserved: 0, service: place(record.service),
            instance_id: place(record.instanceID), address: place(record.address),
            metadata: record.metadata.isEmpty ? nil : UnsafePointer(pairs), metadata_count: record.metadata.count,
            ttl_ms: record.ttlMilliseconds)
        self.arena = arena
        self.pairs = pairs
    }

    deinit {
        for text in arena { text.deallocate() }
        pairs.deallocate()
    }
}

/// One watch made through `on_watch`: its id and what its callbacks received.
struct WatchHandle: Sendable {
    var id: UInt64
    var service: String
    var recorder: WatchRecorder
}

/// Calls the hooks of one registry plugin instance, recording every call in the suite's ledger.
final class RegistryClient: @unchecked Sendable {
    // Safe: the vtable is a static table in a never-unmapped image; the instance pointer is only passed back
    // to the plugin, whose registry hooks may be called from any thread, concurrently (ABI).
    let vtable: px_registry_vtable
    let instance: UnsafeMutableRawPointer?
    let ledger: CallLedger
    let timeout: Duration

    init(
        vtable: UnsafePointer<px_registry_vtable>, instance: UnsafeMutableRawPointer?, ledger: CallLedger,
        timeout: Duration
    ) {
        self.vtable = vtable.pointee
        self.instance = instance
        self.ledger = ledger
        self.timeout = timeout
    }

    // MARK: Calls

    /// `on_register` with `record` laid out as a `px_service_instance`, or a NULL instance for `nil`.
    func register(_ record: ServiceRecord?) -> CallRecord {
        let call = ledger.begin("on_register")
        guard let hook = vtable.on_register else { return missing(call) }
        let layout = record.map(CServiceInstance.init)
        let (status, message) = withExtendedLifetime(layout) {
            StandalonePlugin.withErrorBuffer { err in
                if var value = layout?.value {
                    return hook(instance, &value, doneCompletion, CallLedger.user(call.token), err)
                }
                return hook(instance, nil, doneCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func deregister(service: String, id: String) -> CallRecord {
        let call = ledger.begin("on_deregister")
        guard let hook = vtable.on_deregister else { return missing(call) }
        let (status, message) = withPXStr(service) { service in
            withPXStr(id) { id in
                StandalonePlugin.withErrorBuffer { err in
                    hook(instance, service, id, doneCompletion, CallLedger.user(call.token), err)
                }
            }
        }
        call.returned(status, message: message)
        return call
    }

    func lookup(_ service: String) -> CallRecord {
        let call = ledger.begin("on_lookup")
        guard let hook = vtable.on_lookup else { return missing(call) }
        let (status, message) = withPXStr(service) { service in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, service, lookupCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    /// `on_watch`; `nullFunction` passes a NULL `fn`. Callbacks linger `dwellMicroseconds` each.
    func watch(_ service: String, dwellMicroseconds: Int = 0, nullFunction: Bool = false) -> (
        status: px_status, message: String, watch: WatchHandle
    ) {
        let recorder = ledger.beginWatch(dwellMicroseconds: dwellMicroseconds)
        guard let hook = vtable.on_watch else {
            return (
                PX_ERR_UNSUPPORTED.status, "the registry vtable's on_watch is NULL",
                WatchHandle(id: 0, service: service, recorder: recorder)
            )
        }
        var id: UInt64 = 0
        let (status, message) = withPXStr(service) { text in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, text, nullFunction ? nil : watchCallback, CallLedger.user(recorder.token), &id, err)
            }
        }
        return (status, message, WatchHandle(id: id, service: service, recorder: recorder))
    }

    /// `on_unwatch`; afterwards any callback of the watch counts as late.
    func unwatch(_ watch: WatchHandle) -> px_status {
        let status = vtable.on_unwatch?(instance, watch.id) ?? PX_ERR_UNSUPPORTED.status
        watch.recorder.close()
        return status
    }

    private func missing(_ call: CallRecord) -> CallRecord {
        call.returned(PX_ERR_UNSUPPORTED.status, message: "the registry vtable's \(call.operation) is NULL")
        return call
    }

    // MARK: Successful calls

    func registerOK(_ record: ServiceRecord, _ what: String? = nil) throws {
        _ = try register(record).completed(
            what ?? "registering \(record.instanceID) in \(record.service)", timeout: timeout)
    }

    func deregisterOK(service: String, id: String) throws {
        _ = try deregister(service: service, id: id).completed("deregistering \(id) from \(service)", timeout: timeout)
    }

    func lookupOK(_ service: String, _ what: String? = nil) throws -> [ServiceRecord] {
        let payload = try lookup(service).completed(what ?? "looking up \(service)", timeout: timeout)
        guard case .lookup(_, let instances, _) = payload else {
            throw Violation("on_lookup completed with \(payload)")
        }
        return instances
    }

    func watchOK(_ service: String, dwellMicroseconds: Int = 0) throws -> WatchHandle {
        let (status, message, watch) = watch(service, dwellMicroseconds: dwellMicroseconds)
        try check(
            status == PX_OK.status, expected: "watching \(service) to succeed",
            observed: "on_watch returned \(statusName(status))\(CallRecord.reason(message))")
        return watch
    }
}

/// A metadata watch made through `on_kv_watch`: its id and what its callbacks received.
struct KVWatchHandle: Sendable {
    var id: UInt64
    var prefix: String
    var recorder: KVWatchRecorder
}

/// The rule cannot be checked: the registry lacks the optional hooks it needs. Reported as not supported,
/// not as a failure.
struct NotSupported: Error, CustomStringConvertible {
    var description: String
}

// MARK: The metadata store and keep-alive (ABI 1.4)

extension RegistryClient {
    /// Throws `NotSupported` unless the table has every metadata hook.
    func requireMetadataStore() throws {
        let v = vtable
        guard
            v.on_kv_get != nil, v.on_kv_put != nil, v.on_kv_delete != nil, v.on_kv_list != nil,
            v.on_kv_watch != nil, v.on_kv_unwatch != nil
        else {
            throw NotSupported(description: "the registry has no metadata store (its on_kv_* hooks are NULL)")
        }
    }

    /// A first call's answer: `NotSupported` when the hook refused with PX_ERR_UNSUPPORTED.
    func supported(_ call: CallRecord) throws -> CallRecord {
        if call.returnedStatus == PX_ERR_UNSUPPORTED.status {
            throw NotSupported(
                description: "\(call.operation) returned PX_ERR_UNSUPPORTED\(CallRecord.reason(call.returnedMessage))")
        }
        return call
    }

    func keepAlive(service: String, id: String) -> CallRecord {
        let call = ledger.begin("on_keepalive")
        guard let hook = vtable.on_keepalive else { return missingHook(call) }
        let (status, message) = withPXStr(service) { service in
            withPXStr(id) { id in
                StandalonePlugin.withErrorBuffer { err in
                    hook(instance, service, id, doneCompletion, CallLedger.user(call.token), err)
                }
            }
        }
        call.returned(status, message: message)
        return call
    }

    func kvGet(_ key: String) -> CallRecord {
        let call = ledger.begin("on_kv_get")
        guard let hook = vtable.on_kv_get else { return missingHook(call) }
        let (status, message) = withPXStr(key) { key in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, key, kvGetCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func kvPut(_ key: String, _ value: String, expected: UInt64 = UInt64.max) -> CallRecord {
        let call = ledger.begin("on_kv_put")
        guard let hook = vtable.on_kv_put else { return missingHook(call) }
        let bytes = Array(value.utf8)
        let (status, message) = withPXStr(key) { key in
            bytes.withUnsafeBufferPointer { buffer in
                StandalonePlugin.withErrorBuffer { err in
                    hook(
                        instance, key, px_bytes(ptr: buffer.count == 0 ? nil : buffer.baseAddress, len: buffer.count),
                        expected, kvWriteCompletion, CallLedger.user(call.token), err)
                }
            }
        }
        call.returned(status, message: message)
        return call
    }

    func kvDelete(_ key: String, expected: UInt64 = UInt64.max) -> CallRecord {
        let call = ledger.begin("on_kv_delete")
        guard let hook = vtable.on_kv_delete else { return missingHook(call) }
        let (status, message) = withPXStr(key) { key in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, key, expected, kvWriteCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func kvList(_ prefix: String) -> CallRecord {
        let call = ledger.begin("on_kv_list")
        guard let hook = vtable.on_kv_list else { return missingHook(call) }
        let (status, message) = withPXStr(prefix) { prefix in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, prefix, kvListCompletion, CallLedger.user(call.token), err)
            }
        }
        call.returned(status, message: message)
        return call
    }

    func kvWatch(_ prefix: String, from: UInt64) -> (status: px_status, message: String, watch: KVWatchHandle) {
        let recorder = KVWatchRecorder()
        guard let hook = vtable.on_kv_watch else {
            return (
                PX_ERR_UNSUPPORTED.status, "the registry vtable's on_kv_watch is NULL",
                KVWatchHandle(id: 0, prefix: prefix, recorder: recorder)
            )
        }
        var id: UInt64 = 0
        let (status, message) = withPXStr(prefix) { text in
            StandalonePlugin.withErrorBuffer { err in
                hook(instance, text, from, kvWatchCallback, CallLedger.user(recorder.token), &id, err)
            }
        }
        return (status, message, KVWatchHandle(id: id, prefix: prefix, recorder: recorder))
    }

    func kvUnwatch(_ watch: KVWatchHandle) -> px_status {
        let status = vtable.on_kv_unwatch?(instance, watch.id) ?? PX_ERR_UNSUPPORTED.status
        watch.recorder.close()
        return status
    }

    private func missingHook(_ call: CallRecord) -> CallRecord {
        call.returned(PX_ERR_UNSUPPORTED.status, message: "the registry vtable's \(call.operation) is NULL")
        return call
    }

    // MARK: Answers

    /// A write's answer: PX_OK with the new version and revision, or the failure status with the version and
    /// revision the completion carried (returned errors carry 0, 0).
    func kvWritten(_ call: CallRecord, _ what: String) throws -> (status: px_status, version: UInt64, revision: UInt64)
    {
        switch call.answer(timeout: timeout) {
        case .returned(let status, _):
            return (status, 0, 0)
        case .completed(.kvWrite(let status, let version, let revision, _)):
            return (status, version, revision)
        case .completed(let payload):
            throw Violation("\(call.operation) (\(what)) completed with \(payload)")
        case .silent:
            throw Violation(
                expected: "\(call.operation) (\(what)) to call its completion, as it returned PX_OK",
                observed: "no completion within \(timeout)")
        }
    }

    /// A successful put or delete: the version and revision it completed with.
    func kvWriteOK(_ call: CallRecord, _ what: String) throws -> (version: UInt64, revision: UInt64) {
        let payload = try call.completed(what, timeout: timeout)
        guard case .kvWrite(_, let version, let revision, _) = payload else {
            throw Violation("\(call.operation) (\(what)) completed with \(payload)")
        }
        return (version, revision)
    }

    func kvPutOK(_ key: String, _ value: String, expected: UInt64 = UInt64.max, _ what: String? = nil) throws -> (
        version: UInt64, revision: UInt64
    ) {
        try kvWriteOK(kvPut(key, value, expected: expected), what ?? "putting \(key)")
    }

    /// A read: the entry (`nil` when the registry answered PX_ERR_NOT_FOUND) and the revision.
    func kvGetOK(_ key: String, _ what: String? = nil) throws -> (entry: KVRecord?, revision: UInt64) {
        let what = what ?? "reading \(key)"
        let call = kvGet(key)
        switch call.answer(timeout: timeout) {
        case .completed(.kvGet(let status, let entry, let revision, let error)):
            if status == PX_OK.status {
                guard let entry else {
                    throw Violation(expected: "\(what) to hand over an entry with PX_OK", observed: "a NULL entry")
                }
                return (entry, revision)
            }
            try check(
                status == PX_ERR_NOT_FOUND.status, expected: "\(what) to succeed or find nothing (PX_ERR_NOT_FOUND)",
                observed: "\(statusName(status))\(CallRecord.reason(error))")
            try check(entry == nil, expected: "PX_ERR_NOT_FOUND to come with a NULL entry", observed: "\(entry!)")
            return (nil, revision)
        case .completed(let payload):
            throw Violation("on_kv_get (\(what)) completed with \(payload)")
        case .returned(let status, let message):
            throw Violation(
                expected: "\(what) to complete",
                observed: "on_kv_get returned \(statusName(status))\(CallRecord.reason(message))")
        case .silent:
            throw Violation(expected: "on_kv_get (\(what)) to call its completion", observed: "none within \(timeout)")
        }
    }

    func kvListOK(_ prefix: String, _ what: String? = nil) throws -> (entries: [KVRecord], revision: UInt64) {
        let payload = try kvList(prefix).completed(what ?? "listing \(prefix)", timeout: timeout)
        guard case .kvList(_, let entries, let revision, _) = payload else {
            throw Violation("on_kv_list completed with \(payload)")
        }
        return (entries, revision)
    }

    func kvWatchOK(_ prefix: String, from: UInt64) throws -> KVWatchHandle {
        let (status, message, watch) = kvWatch(prefix, from: from)
        try check(
            status == PX_OK.status, expected: "watching \(prefix) from revision \(from) to succeed",
            observed: "on_kv_watch returned \(statusName(status))\(CallRecord.reason(message))")
        return watch
    }
}
