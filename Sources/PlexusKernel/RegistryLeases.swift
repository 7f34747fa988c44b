import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// The kernel's keep-alive of instances plugins register through `registry_register` with `ttl_ms > 0`
/// (ABI 1.4): each is renewed every ttl/3 through the registry's `on_keepalive` until the plugin deregisters
/// it or stops. So a dead node's instances expire within their TTL while a live node's never do. An instance
/// the registry no longer knows (it expired while the node was paused, or the registry restarted empty) is
/// registered again from the kernel's copy. A registry without `on_keepalive` (built against 1.3 or earlier)
/// is not called: the plugin renews its instances itself, as before 1.4.
final class RegistryLeases: Sendable {
    struct Key: Hashable, Sendable {
        var service: String
        var instanceID: String
    }

    private let table = Mutex<[Key: Lease]>([:])

    /// The instance was registered by `context`: renews it from now on when it has a TTL, and stops renewing
    /// a previous registration of the same instance.
    func registered(_ instance: px_service_instance, by context: PluginContext) {
        let copy = Lease.Instance(copying: instance)
        let key = Key(service: copy.service, instanceID: copy.instanceID)
        guard copy.ttlMs > 0 else {
            table.withLock { $0.removeValue(forKey: key) }?.end()
            return
        }
        let lease = Lease(instance: copy, context: context)
        // ttl/3, at least a millisecond: two renewals may fail before the instance expires.
        let interval = max(copy.ttlMs &* 1_000_000 / 3, 1_000_000)
        guard
            let timer = context.services.timers.start(
                owner: context.id, delay: interval, interval: interval,
                fire: { [weak lease] _ in lease?.renew() })
        else { return }  // the plugin is stopping
        lease.timer.store(timer, ordering: .releasing)
        table.withLock { t -> Lease? in
            defer { t[key] = lease }
            return t[key]
        }?.end()
    }

    /// The instance was deregistered: the kernel stops renewing it.
    func deregistered(service: String, instanceID: String, by context: PluginContext) {
        table.withLock { $0.removeValue(forKey: Key(service: service, instanceID: instanceID)) }?.end()
    }

    /// The plugin stops: its leases end (its timers are cancelled with its other timers).
    func forgetAll(owner: ObjectIdentifier) {
        let mine = table.withLock { t -> [Lease] in
            let keys = t.filter { $0.value.context.id == owner }.map(\.key)
            return keys.compactMap { t.removeValue(forKey: $0) }
        }
        for lease in mine { lease.end() }
    }

    /// How many instances the kernel renews (for tests).
    var count: Int { table.withLock { $0.count } }
}

/// One instance the kernel keeps alive.
final class Lease: Sendable {
    /// The kernel's copy of the registered instance.
    struct Instance: Sendable {
        var service: String
        var instanceID: String
        var address: String
        var metadata: [(String, String)]
        var ttlMs: UInt64

        init(service: String, instanceID: String, address: String, metadata: [(String, String)], ttlMs: UInt64) {
            self.service = service
            self.instanceID = instanceID
            self.address = address
            self.metadata = metadata
            self.ttlMs = ttlMs
        }

        init(copying raw: px_service_instance) {
            service = raw.service.string
            instanceID = raw.instance_id.string
            address = raw.address.string
            ttlMs = raw.ttl_ms
            var pairs: [(String, String)] = []
            if let metadata = raw.metadata {
                for index in 0..<raw.metadata_count {
                    pairs.append((metadata[index].key.string, metadata[index].value.string))
                }
            }
            self.metadata = pairs
        }

        /// Calls `body` with the instance laid out in C, valid for the call.
        func withC<R>(_ body: (UnsafePointer<px_service_instance>) -> R) -> R {
            var strings: [UnsafeMutablePointer<CChar>] = []
            defer { strings.forEach { free($0) } }
            func c(_ text: String) -> px_str {
                guard let copy = strdup(text) else { return px_str(ptr: nil, len: 0) }
                strings.append(copy)
                return px_str(ptr: UnsafePointer(copy), len: text.utf8.count)
            }
            let pairs = metadata.map { px_kv(key: c($0.0), value: c($0.1)) }
            return pairs.withUnsafeBufferPointer { pairs in
                var raw = px_service_instance()
                raw.struct_size = UInt32(MemoryLayout<px_service_instance>.size)
                raw.service = c(service)
                raw.instance_id = c(instanceID)
                raw.address = c(address)
                raw.metadata = pairs.baseAddress
                raw.metadata_count = pairs.count
                raw.ttl_ms = ttlMs
                return withUnsafePointer(to: &raw) { body($0) }
            }
        }
    }

    let instance: Instance
    let context: PluginContext
    /// The renewal timer's id (the plugin's timer: cancelled with the plugin's timers when it stops).
    let timer = Atomic<UInt64>(0)
    /// False once deregistered or replaced: nothing is renewed or registered again after that.
    private let active = Mutex(true)

    init(instance: Instance, context: PluginContext) {
        self.instance = instance
        self.context = context
    }

    /// Stops renewing. Does not wait for a renewal in flight; one that finds the instance gone does not
    /// register it again.
    func end() {
        active.withLock { $0 = false }
        _ = context.services.timers.cancel(timer.load(ordering: .acquiring), owner: context.id, wait: false)
    }

    /// The timer's work: one keep-alive through the registry, if it has the hook.
    func renew() {
        guard active.withLock({ $0 }) else { return }
        let user = Unmanaged.passRetained(self).toOpaque()
        let status = context.services.withRegistry { binding -> px_status in
            guard let keepAlive = binding.vtable.pointee.on_keepalive else { return PX_ERR_UNSUPPORTED.status }
            return withPXStr(instance.service) { service in
                withPXStr(instance.instanceID) { id in
                    keepAlive(binding.instance, service, id, leaseRenewed, user, nil)
                }
            }
        }
        guard status != PX_OK.status else { return }
        Unmanaged<Lease>.fromOpaque(user).release()
        if status == PX_ERR_NOT_FOUND.status { registerAgain() }
    }

    /// The registry no longer has the instance: registers the kernel's copy again, unless the lease ended.
    func registerAgain() {
        active.withLock { active in
            guard active else { return }
            let user = Unmanaged.passRetained(self).toOpaque()
            let status =
                context.services.withRegistry { binding -> px_status in
                    guard let register = binding.vtable.pointee.on_register else { return PX_ERR_UNSUPPORTED.status }
                    return instance.withC { register(binding.instance, $0, leaseRegistered, user, nil) }
                } ?? PX_ERR_UNAVAILABLE.status
            if status != PX_OK.status { Unmanaged<Lease>.fromOpaque(user).release() }
        }
    }

    func note(_ what: String, _ status: px_status, _ error: px_str) {
        context.logger.warning(
            "\(what) of \(instance.service)/\(instance.instanceID) failed: \(StatusText.name(status)) \(error.string)")
    }
}

/// Completion of a kernel keep-alive: an instance the registry lost is registered again.
private let leaseRenewed: px_done_fn = { user, status, error in
    guard let user else { return }
    let lease = Unmanaged<Lease>.fromOpaque(user).takeRetainedValue()
    if status == PX_ERR_NOT_FOUND.status {
        lease.registerAgain()
    } else if status != PX_OK.status {
        lease.note("the kernel's keep-alive", status, error)
    }
}

/// Completion of a kernel re-registration.
private let leaseRegistered: px_done_fn = { user, status, error in
    guard let user else { return }
    let lease = Unmanaged<Lease>.fromOpaque(user).takeRetainedValue()
    if status != PX_OK.status { lease.note("registering again", status, error) }
}
