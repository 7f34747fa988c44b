import Foundation
import PlexusABI

/// Where a plugin is in its life (docs/manifest.md, "Lifecycle").
///
/// `discovered → verified → resolved → loaded → created → active → stopping → stopped`, plus `failed`, and
/// `quarantined` for a process-isolated plugin whose child failed too often to be restarted again (`plexus
/// plugin restart` clears it).
/// A plugin whose manifest says `enabled: false` stays `resolved`.
public enum PluginState: String, Sendable, Codable, CaseIterable {
    case discovered, verified, resolved, loaded, created, active, stopping, stopped, failed, quarantined
}

/// What the kernel reports about one plugin (`plexus plugin list`, the admin endpoint).
public struct PluginStatus: Sendable, Codable, Equatable {
    public struct Transition: Sendable, Codable, Equatable {
        public var state: PluginState
        /// Unix time in seconds.
        public var at: Double
    }

    public struct Operation: Sendable, Codable, Equatable {
        public var name: String
        public var signature: String
        public var description: String
    }

    public var name: String
    public var version: String
    public var kinds: [String]
    public var state: PluginState
    public var lastError: String?
    public var errorCode: String?
    public var manifest: String
    public var library: String?
    public var sha256: String?
    public var health: String?
    public var operations: [Operation]
    public var history: [Transition]
    /// The last deployment change applied to or refused for the plugin on the running node.
    public var deployment: String?
    /// The version `plexus plugin rollback` returns to, when there is one.
    public var previousVersion: String?
}

/// The hooks of one plugin instance, driven the one way every host of Plexus drives them: `on_create` and
/// `on_start` within the manifest's start deadline, `on_stop` within its stop deadline, then what the
/// instance left with the host is released, every completion owed to it runs, and `on_destroy` frees it.
/// A hook that overruns its deadline abandons the instance: no further hook is called.
///
/// The kernel (`Kernel`) and the conformance kit (`StandalonePlugin`) both drive plugins through it, so what
/// a plugin passes in the kit is what a node does to it.
struct PluginLifecycle: Sendable {
    let manifest: Manifest
    let loaded: LoadedPlugin
    let context: PluginContext

    /// Why a hook did not succeed.
    enum Failure: Error {
        /// The hook overran its deadline; the instance is abandoned (no further hook may be called).
        case abandoned(KernelError)
        /// The hook returned an error; the instance may be destroyed.
        case failed(KernelError)

        var error: KernelError {
            switch self {
            case .abandoned(let error), .failed(let error): return error
            }
        }
    }

    /// Runs one hook under `timeout`: `.abandoned` when it overran, `.failed` with the plugin's reason when it
    /// returned an error (`failed` words it), its outcome otherwise.
    private func run(
        _ hook: String, timeout: Duration, failed: @escaping (_ status: String, _ reason: String) -> String,
        _ body: @escaping @Sendable () -> HookOutcome
    ) -> Result<HookOutcome, Failure> {
        let name = manifest.name
        guard case .finished(let outcome) = Deadline.run(timeout, name: "plexus.\(hook).\(name)", body) else {
            return .failure(
                .abandoned(
                    KernelError(
                        .deadlineExceeded, subject: name,
                        "on_\(hook) did not return within \(timeout.milliseconds) ms; the instance is abandoned")))
        }
        guard outcome.status == PX_OK.status else {
            return .failure(
                .failed(
                    KernelError(.hookFailed, subject: name, failed(StatusText.name(outcome.status), outcome.message))))
        }
        return .success(outcome)
    }

    /// `on_create` with the manifest's configuration: the instance pointer the plugin returned.
    ///
    /// - Parameter host: the host table and handle to give the plugin instead of the kernel's (a host of its
    ///   own, such as the conformance kit's connector host); `nil` for the kernel's.
    func create(nodeID: String, dataDirectory: String, host: StandalonePlugin.HostTable? = nil)
        -> Result<InstancePointer?, Failure>
    {
        let manifest = manifest
        let loaded = loaded
        let context = context
        return run("create", timeout: manifest.startTimeout, failed: { "on_create failed with \($0): \($1)" }) {
            PluginConfigBuffer.with(manifest: manifest, nodeID: nodeID, dataDirectory: dataDirectory) { config in
                ErrorBuffer.with { err in
                    var instance: UnsafeMutableRawPointer?
                    let status = loaded.descriptor.on_create(
                        host?.api ?? HostServices.api, host?.handle ?? context.handle, config, &instance, err)
                    return HookOutcome(status: status, message: ErrorBuffer.text(err), instance: instance)
                }
            }
        }.map { InstancePointer($0.instance) }
    }

    /// `on_start`. On `.failed` the caller destroys the instance (without `on_stop`), as the ABI says.
    func start(_ instance: InstancePointer?) -> Result<Void, Failure> {
        let loaded = loaded
        return run("start", timeout: manifest.startTimeout, failed: { "on_start failed with \($0): \($1)" }) {
            ErrorBuffer.with { err in
                HookOutcome(
                    status: loaded.descriptor.on_start(instance?.raw, err), message: ErrorBuffer.text(err),
                    instance: nil)
            }
        }.map { _ in () }
    }

    /// `on_stop` within the stop deadline. `.failed` carries what the plugin reported; the instance is to be
    /// destroyed all the same.
    func stop(_ instance: InstancePointer?) -> Result<Void, Failure> {
        let loaded = loaded
        let timeout = manifest.stopTimeout
        return run(
            "stop", timeout: timeout,
            failed: { "on_stop reported \($0): \($1); the instance was destroyed all the same" }
        ) {
            ErrorBuffer.with { err in
                HookOutcome(
                    status: loaded.descriptor.on_stop(instance?.raw, timeout.milliseconds, err),
                    message: ErrorBuffer.text(err), instance: nil)
            }
        }.map { _ in () }
    }

    /// Releases what the instance left with the host (timers, subscriptions, watches) and refuses it new
    /// ones, waits for every completion owed to it, then calls `on_destroy`. `.abandoned` when the
    /// completions or `on_destroy` overran the stop deadline.
    func destroy(_ instance: InstancePointer?) -> Result<Void, Failure> {
        let name = manifest.name
        context.services.release(owner: context.id, wait: true)
        guard context.drainCompletions(until: .now + manifest.stopTimeout) else {
            return .failure(
                .abandoned(
                    KernelError(
                        .deadlineExceeded, subject: name,
                        "completions the kernel owes the instance were still outstanding after \(manifest.stopTimeout.milliseconds) ms; on_destroy was not called and the instance is abandoned"
                    )))
        }
        let loaded = loaded
        let outcome = Deadline.run(manifest.stopTimeout, name: "plexus.destroy.\(name)") { () -> Bool in
            loaded.descriptor.on_destroy(instance?.raw)
            return true
        }
        if case .timedOut = outcome {
            return .failure(
                .abandoned(
                    KernelError(
                        .deadlineExceeded, subject: name,
                        "on_destroy did not return within \(manifest.stopTimeout.milliseconds) ms")))
        }
        return .success(())
    }

    /// `on_health` within `deadline`: "healthy", "unhealthy (STATUS): reason", or "unknown: …" when it did not
    /// answer in time. `finally` runs once the hook has returned, on the hook's thread (even after the deadline).
    func health(
        _ instance: InstancePointer?, deadline: Duration = .seconds(1), finally: @escaping @Sendable () -> Void
    ) -> String {
        let loaded = loaded
        guard loaded.descriptor.on_health != nil else {
            finally()
            return "healthy"
        }
        let outcome = Deadline.run(deadline, name: "plexus.health.\(manifest.name)") { () -> HookOutcome in
            defer { finally() }
            return ErrorBuffer.with { err in
                HookOutcome(
                    status: loaded.descriptor.on_health?(instance?.raw, err) ?? PX_OK.status,
                    message: ErrorBuffer.text(err),
                    instance: nil)
            }
        }
        switch outcome {
        case .timedOut: return "unknown: on_health did not answer within \(deadline.components.seconds) s"
        case .finished(let result) where result.status == PX_OK.status: return "healthy"
        case .finished(let result) where result.status == PX_DEGRADED.status:
            return "degraded: \(result.message.isEmpty ? "no reason given" : result.message)"
        case .finished(let result): return "unhealthy (\(StatusText.name(result.status))): \(result.message)"
        }
    }

    /// Gives the instance up without another hook: what it left with the host is released without waiting
    /// for its callbacks, which may never return.
    func abandon() {
        context.services.release(owner: context.id, wait: false)
    }
}

/// What a lifecycle hook said.
private struct HookOutcome: @unchecked Sendable {
    // Safe: `instance` is only handed back to the plugin that returned it.
    var status: px_status
    var message: String
    var instance: UnsafeMutableRawPointer?
}
