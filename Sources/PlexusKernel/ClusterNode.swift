import Dispatch
import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization

/// The node's own entry in the active registry (issue 14, "Clusters"): service `plexus-node`, instance id the
/// node id, address the admin endpoint, metadata `protocol.<plugin>` = each protocol plugin's listening
/// address(es) and `storage.<plugin>` = `storage` for each active storage plugin, under a TTL lease that the
/// node renews every ttl/3 (through `on_keepalive`, registering again when the registry lost it). A node
/// killed with `kill -9` leaves the registry within its TTL; a node that stops deregisters at once.
///
/// The kernel stays thin: this is the registration and nothing else; `plexus cluster status` reads it back
/// through the same registry (`ClusterStatus`), and which node leads a stream comes from the storage plugins'
/// own `status` operation.
final class ClusterNode: Sendable {
    /// The registry service every node registers under.
    static let service = "plexus-node"
    /// How long a node stays listed after it stopped renewing.
    static let ttlMs: UInt64 = 10_000

    private let services: HostServices
    private let logger: Logger
    private struct State {
        var instance: Lease.Instance?
        var timer: DispatchSourceTimer?
    }
    private let state = Mutex(State())

    init(services: HostServices, logger: Logger) {
        self.services = services
        self.logger = logger
    }

    /// Registers the node (when a registry is active) and renews it from now on.
    /// - Parameters:
    ///   - nodeID: the node id of the node file.
    ///   - admin: the admin endpoint's `host:port`.
    ///   - protocols: each active protocol plugin's listening addresses.
    ///   - storages: the names of the active storage plugins.
    func start(nodeID: String, admin: String, protocols: [String: [String]], storages: [String]) {
        var metadata: [(String, String)] = []
        for (plugin, addresses) in protocols.sorted(by: { $0.key < $1.key }) where !addresses.isEmpty {
            metadata.append(("protocol.\(plugin)", addresses.joined(separator: ",")))
        }
        for plugin in storages.sorted() { metadata.append(("storage.\(plugin)", "storage")) }
        let instance = Lease.Instance(
            service: Self.service, instanceID: nodeID, address: admin, metadata: metadata, ttlMs: Self.ttlMs)
        guard services.withRegistry({ _ in true }) == true else { return }
        register(instance)
        let interval = DispatchTimeInterval.milliseconds(Int(Self.ttlMs / 3))
        state.withLock { state in
            let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "plexus.cluster-node"))
            timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(50))
            timer.setEventHandler { [weak self] in self?.renew() }
            timer.resume()
            state.instance = instance
            state.timer = timer
        }
        logger.notice("cluster: registered node '\(nodeID)' (\(Self.service)) with the registry, admin \(admin)")
    }

    /// Stops renewing and deregisters the node (before the registry plugin stops).
    func stop() {
        let instance = state.withLock { s in
            defer {
                s.instance = nil
                s.timer?.cancel()
                s.timer = nil
            }
            return s.instance
        }
        guard let instance else { return }
        let done = RegistryWait()
        let status =
            services.withRegistry { binding -> px_status in
                guard let deregister = binding.vtable.pointee.on_deregister else { return PX_ERR_UNSUPPORTED.status }
                return withPXStr(instance.service) { service in
                    withPXStr(instance.instanceID) { id in
                        deregister(binding.instance, service, id, registryWaitDone, done.retained(), nil)
                    }
                }
            } ?? PX_ERR_UNAVAILABLE.status
        if status == PX_OK.status {
            _ = done.wait(seconds: 2)
        } else {
            done.releaseUnused()
        }
    }

    private func register(_ instance: Lease.Instance) {
        let done = RegistryWait()
        let status =
            services.withRegistry { binding -> px_status in
                guard let register = binding.vtable.pointee.on_register else { return PX_ERR_UNSUPPORTED.status }
                return instance.withC { register(binding.instance, $0, registryWaitDone, done.retained(), nil) }
            } ?? PX_ERR_UNAVAILABLE.status
        guard status == PX_OK.status else {
            done.releaseUnused()
            return logger.warning(
                "cluster: registering node '\(instance.instanceID)' failed: \(StatusText.name(status))")
        }
        if let (status, text) = done.wait(seconds: 5), status != PX_OK.status {
            logger.warning(
                "cluster: registering node '\(instance.instanceID)' failed: \(StatusText.name(status)) \(text)")
        }
    }

    /// One keep-alive; an instance the registry no longer has is registered again.
    private func renew() {
        guard let instance = state.withLock({ $0.instance }) else { return }
        let done = RegistryWait()
        let status =
            services.withRegistry { binding -> px_status in
                guard let keepAlive = binding.vtable.pointee.on_keepalive else { return PX_ERR_UNSUPPORTED.status }
                return withPXStr(instance.service) { service in
                    withPXStr(instance.instanceID) { id in
                        keepAlive(binding.instance, service, id, registryWaitDone, done.retained(), nil)
                    }
                }
            } ?? PX_ERR_UNAVAILABLE.status
        var outcome = status
        if status == PX_OK.status {
            outcome = done.wait(seconds: 5)?.0 ?? PX_ERR_TIMEOUT.status
        } else {
            done.releaseUnused()
        }
        // A registry without keep-alive (ABI 1.3) renews by registration.
        if outcome == PX_ERR_NOT_FOUND.status || outcome == PX_ERR_UNSUPPORTED.status {
            guard state.withLock({ $0.instance != nil }) else { return }
            register(instance)
        }
    }
}

/// One registry completion waited for by a kernel thread (never a plugin's: registries complete on their own
/// threads). Retained once per call handed to the registry; the completion releases that reference.
final class RegistryWait: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    private let result = Mutex<(px_status, String)?>(nil)
    private let instances = Mutex<[Lease.Instance]>([])

    /// A reference for the registry's completion (`user`).
    func retained() -> UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }

    /// Undoes `retained()` when the registry refused the call (its completion never runs).
    func releaseUnused() { Unmanaged.passUnretained(self).release() }

    func finish(_ status: px_status, _ text: String, instances found: [Lease.Instance] = []) {
        instances.withLock { $0 = found }
        result.withLock { $0 = (status, text) }
        semaphore.signal()
    }

    /// The completion's status and text, or nil when it did not come within `seconds`.
    func wait(seconds: Double) -> (px_status, String)? {
        guard semaphore.wait(timeout: .now() + seconds) == .success else { return nil }
        return result.withLock { $0 }
    }

    var found: [Lease.Instance] { instances.withLock { $0 } }
}

let registryWaitDone: px_done_fn = { user, status, error in
    guard let user else { return }
    Unmanaged<RegistryWait>.fromOpaque(user).takeRetainedValue().finish(status, error.string)
}

let registryWaitLookupDone: px_lookup_done_fn = { user, status, instances, count, error in
    guard let user else { return }
    var found: [Lease.Instance] = []
    if status == PX_OK.status, let instances {
        for index in 0..<count {
            if let instance = instances[index] { found.append(Lease.Instance(copying: instance.pointee)) }
        }
    }
    Unmanaged<RegistryWait>.fromOpaque(user).takeRetainedValue().finish(status, error.string, instances: found)
}
