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
