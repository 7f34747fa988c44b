import Foundation
import PlexusABI
import PlexusCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The kernel's side of one process-isolated plugin instance: the `void *instance` the proxy descriptor's
/// `on_create` returns. It owns the current child, restarts it when it dies, and quarantines it when it dies
/// too often.
final class IsolatedInstance: @unchecked Sendable {
    // Safe: the kernel's api table and px_host handle are valid for the instance's life and callable from any
    // thread; every mutable field is in `state`.

    enum Phase: Sendable {
        case starting
        case running
        case restarting(String)
        case quarantined(String)
        case stopped
    }

    struct State {
        var phase = Phase.starting
        var child: PluginHostProcess?
        var failures: [ContinuousClock.Instant] = []
        var streams: [ObjectIdentifier: ProxyStream] = [:]
        /// Kernel metric handles handed to children, by the id they know them by.
        var metrics: [UInt64: UInt] = [:]
        var restarts = 0
    }

    let spec: ProcessIsolation.Spec
    let api: UnsafePointer<px_host_api>
    let host: OpaquePointer?
    let config: ConfigCopy
    let state = Mutex(State())
    /// Requests from children, served one at a time in arrival order (publishes stay ordered).
    let hostCalls: DispatchQueue

    struct ConfigCopy: Sendable {
        var instanceName: String
        var nodeID: String
        var dataDir: String
        var json: String
        var entries: [(key: String, value: String)]

        var encoded: [UInt8] {
            var w = WireWriter()
            w.text(instanceName)
            w.text(nodeID)
            w.text(dataDir)
            w.text(json)
            w.kvs(entries)
            return w.bytes
        }
    }

    var name: String { spec.manifest.name }

    init(spec: ProcessIsolation.Spec, api: UnsafePointer<px_host_api>, host: OpaquePointer?, config: ConfigCopy) {
        self.spec = spec
        self.api = api
        self.host = host
        self.config = config
        hostCalls = DispatchQueue(label: "plexus.isolation.host.\(spec.manifest.name)")
    }

    var retained: UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }

    static func from(_ raw: UnsafeMutableRawPointer?) -> IsolatedInstance? {
        guard let raw else { return nil }
        return Unmanaged<IsolatedInstance>.fromOpaque(raw).takeUnretainedValue()
    }

    /// The child to send a call to, or why there is none.
    func currentChild() -> Result<PluginHostProcess, IsolationWireError> {
        state.withLock { state in
            switch state.phase {
            case .running, .starting:
                if let child = state.child { return .success(child) }
                return .failure(IsolationWireError("\(name): the plugin-host is not running"))
            case .restarting(let reason):
                return .failure(IsolationWireError("\(name) is restarting after: \(reason)"))
            case .quarantined(let reason):
                return .failure(IsolationWireError("\(name) is quarantined: \(reason)"))
            case .stopped:
                return .failure(IsolationWireError("\(name) is stopped"))
            }
        }
    }

    // MARK: Lifecycle

    /// Adopts `child` (its frames and exit come here).
    func adopt(_ child: PluginHostProcess) {
        child.adopt(
            onFrame: { [weak self] child, frame in self?.received(frame, from: child) },
            onExit: { [weak self] child, reason in self?.exited(child, reason: reason) })
    }

    /// Sends a lifecycle hook and waits up to `timeout`; a child that does not answer in time is killed.
    func hook(_ op: IsolationOp, _ payload: [UInt8], on child: PluginHostProcess, timeout: Duration) -> (
        px_status, String
    ) {
        guard let answer = child.channel.call(op, payload, timeout: timeout) else {
            let reason = "on_\(op) did not return within \(timeout.milliseconds) ms"
            child.kill(because: "plugin-host killed: \(reason)")
            return (PX_ERR_TIMEOUT.status, "\(reason); the plugin-host was killed")
        }
        switch answer.outcome() {
        case .failure(let error): return (PX_ERR_UNAVAILABLE.status, "\(error.description) (during on_\(op))")
        case .success(let (status, error, _)): return (status, error)
        }
    }

    /// `on_create` then (from `start`) `on_start` in a new or warm child; used at first and for restarts.
    func create(child: PluginHostProcess, timeout: Duration) -> (px_status, String) {
        adopt(child)
        state.withLock { $0.child = child }
        return hook(.create, config.encoded, on: child, timeout: timeout)
    }

    /// The part of a deadline the proxy uses, so that it kills the child and answers before the kernel's own
    /// deadline abandons the instance.
    static func share(of deadline: Duration) -> Duration { deadline * 0.9 }

    func start(timeout: Duration) -> (px_status, String) {
        guard case .success(let child) = currentChild() else {
            return (PX_ERR_UNAVAILABLE.status, "\(name): no plugin-host to start")
        }
        let outcome = hook(.start, [], on: child, timeout: timeout)
        if outcome.0 == PX_OK.status { state.withLock { $0.phase = .running } }
        return outcome
    }

    func stop(timeoutMs: UInt64) -> (px_status, String) {
        let child = state.withLock { state -> PluginHostProcess? in
            defer { state.phase = .stopped }
            if case .running = state.phase { return state.child }
            return nil
        }
        guard let child else { return (PX_OK.status, "") }
        var w = WireWriter()
        w.u64(timeoutMs)
        return hook(.stop, w.bytes, on: child, timeout: Self.share(of: .milliseconds(Int64(timeoutMs))))
    }

    func destroy() {
        let (child, streams) = state.withLock { state -> (PluginHostProcess?, [ProxyStream]) in
            state.phase = .stopped
            defer {
                state.child = nil
                state.streams = [:]
            }
            return (state.child, Array(state.streams.values))
        }
        if let child {
            _ = hook(.destroy, [], on: child, timeout: Self.share(of: spec.manifest.stopTimeout))
            child.waitForExit(timeout: .seconds(2))
            releaseHoldings(of: child)
        }
        withExtendedLifetime(streams) {}
    }

    func health() -> (px_status, String) {
        let phase = state.withLock { ($0.phase, $0.child, $0.failures.count) }
        switch phase.0 {
        case .quarantined(let reason): return (PX_ERR_UNAVAILABLE.status, "quarantined: \(reason)")
        case .restarting(let reason):
            return (
                PX_DEGRADED.status,
                "the plugin-host is restarting (failure \(phase.2) of \(spec.manifest.restart.maxFailures) allowed within \(spec.manifest.restart.windowSeconds) s): \(reason)"
            )
        case .stopped: return (PX_ERR_UNAVAILABLE.status, "stopped")
        case .starting, .running:
            guard let child = phase.1 else { return (PX_ERR_UNAVAILABLE.status, "no plugin-host") }
            guard let answer = child.channel.call(.health, [], timeout: .milliseconds(800)) else {
                return (PX_ERR_TIMEOUT.status, "the plugin-host did not answer on_health within 800 ms")
            }
            switch answer.outcome() {
            case .failure(let error): return (PX_ERR_UNAVAILABLE.status, error.description)
            case .success(let (status, error, _)): return (status, error)
            }
        }
    }

    // MARK: Failure, restart, quarantine

    /// A child's socket closed and it was reaped: a failure when it was the instance's running (or restarting)
    /// child.
    func exited(_ child: PluginHostProcess, reason: String) {
        releaseHoldings(of: child)
        let counted = state.withLock { state -> Bool in
            guard state.child === child else { return false }
            state.child = nil
            switch state.phase {
            case .running, .restarting: return true
            default: return false
            }
        }
        if counted { failed(reason) }
    }

    /// Counts a failure: restart after the backoff, or quarantine.
    private func failed(_ reason: String) {
        let policy = spec.manifest.restart
        let decision = state.withLock { state -> (restartAfter: Duration?, quarantined: String?) in
            switch state.phase {
            case .running, .restarting: break
            default: return (nil, nil)
            }
            let now = ContinuousClock.now
            let window = Duration.seconds(policy.windowSeconds)
            state.failures = state.failures.filter { now - $0 < window } + [now]
            if state.failures.count >= policy.maxFailures {
                let message =
                    "\(state.failures.count) failures within \(policy.windowSeconds) s, the last: \(reason); `plexus plugin restart \(name)` clears it"
                state.phase = .quarantined(message)
                return (nil, message)
            }
            state.phase = .restarting(reason)
            let factor = Int64(1) << Int64(min(state.failures.count - 1, 20))
            return (min(.milliseconds(policy.backoffMs * factor), .milliseconds(policy.maxBackoffMs)), nil)
        }
        if let message = decision.quarantined {
            spec.observer(.quarantined(message))
        } else if let delay = decision.restartAfter {
            DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(Int(delay.milliseconds))) {
                [weak self] in self?.restart(after: reason)
            }
        }
    }

    /// Starts a new child, creates and starts the instance in it and opens again every stream the kernel holds.
    private func restart(after reason: String) {
        guard case .restarting = state.withLock({ $0.phase }) else { return }
        let manifest = spec.manifest
        let child: PluginHostProcess
        do {
            child = try ProcessIsolation.startChild(spec).0
        } catch {
            return failedRestart(nil, "\(error)")
        }
        adopt(child)
        let stillRestarting = state.withLock { state -> Bool in
            guard case .restarting = state.phase else { return false }
            state.child = child
            return true
        }
        guard stillRestarting else {
            child.kill(because: "plugin-host killed: the instance stopped while it restarted")
            return
        }
        let created = hook(.create, config.encoded, on: child, timeout: Self.share(of: manifest.startTimeout))
        guard created.0 == PX_OK.status else { return failedRestart(child, "on_create: \(created.1)") }
        let started = hook(.start, [], on: child, timeout: Self.share(of: manifest.startTimeout))
        guard started.0 == PX_OK.status else { return failedRestart(child, "on_start: \(started.1)") }
        for stream in state.withLock({ Array($0.streams.values) }) {
            let opened = IsolatedStorage.openSync(self, child: child, stream.name, stream.options)
            guard case .success(let handle) = opened else {
                if case .failure(let error) = opened {
                    return failedRestart(child, "reopening \(stream.name): \(error)")
                }
                return
            }
            stream.childHandle.withLock { $0 = handle }
        }
        let running = state.withLock { state -> Bool in
            guard case .restarting = state.phase, state.child === child else { return false }
            state.phase = .running
            state.restarts += 1
            return true
        }
        if running { spec.observer(.restarted(reason)) }
    }

    /// A restart attempt failed: counted as a failure like a crash (a child's through its exit).
    private func failedRestart(_ child: PluginHostProcess?, _ reason: String) {
        guard let child else { return failed(reason) }
        child.kill(because: "plugin-host killed: the restart failed (\(reason))")
    }

    /// Releases, in the kernel, what a gone child held: its subscriptions, timers, registry and metadata watches.
    private func releaseHoldings(of child: PluginHostProcess) {
        let subscriptions = child.subscriptions.withLock { all -> [UInt64] in
            defer { all = [] }
            return all
        }
        for id in subscriptions { _ = api.pointee.unsubscribe(host, id) }
        let timers = child.timers.withLock { all -> [UInt64] in
            defer { all = [] }
            return all
        }
        for id in timers { _ = api.pointee.timer_cancel(host, id) }
        let watches = child.watches.withLock { all -> [UInt64] in
            defer { all = [] }
            return all
        }
        for id in watches { _ = api.pointee.registry_unwatch(host, id) }
        let kvWatches = child.kvWatches.withLock { all -> [UInt64] in
            defer { all = [] }
            return all
        }
        for id in kvWatches { _ = api.pointee.kv_unwatch?(host, id) }
    }
}

/// A stream handle the kernel holds (`px_stream *`): the name and options it was opened with, and the child's
/// handle for it, which changes when the child is restarted.
final class ProxyStream: @unchecked Sendable {
    // Safe: immutable but for `childHandle`, which is in a Mutex.
    let name: String
    let options: px_stream_options
    let childHandle = Mutex<UInt64?>(nil)

    init(name: String, options: px_stream_options, childHandle: UInt64) {
        self.name = name
        self.options = options
        self.childHandle.withLock { $0 = childHandle }
    }

    var opaque: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ stream: OpaquePointer?) -> ProxyStream? {
        guard let stream else { return nil }
        return Unmanaged<ProxyStream>.fromOpaque(UnsafeRawPointer(stream)).takeUnretainedValue()
    }
}
