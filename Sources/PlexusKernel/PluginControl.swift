import Foundation

/// Stopping, starting and restarting one plugin of a running node (`POST /v1/plugins/NAME/stop|start|restart`,
/// the dashboard's buttons, `plexus plugin stop|start|restart`).
///
/// These go through the same lifecycle as the node's own start and stop: `stop` unbinds the plugin's storage
/// or registry, waits for calls into it, runs `on_stop` within the manifest's stop deadline and `on_destroy`;
/// `start` creates a new instance from the image the plugin last ran (its content-addressed copy, so a library
/// changed on disk since is not picked up: that is an upgrade) once what it requires is active. Neither changes
/// the manifest directory: a stopped plugin starts again when the node restarts.
extension Kernel {
    /// Runs `action` (`stop`, `start` or `restart`) on plugin `name`.
    /// - Throws: `KernelError(.notFound)` for an unknown plugin or action, `.invalidState` when the plugin is
    ///   not in a state the action applies to or active plugins depend on it (stop).
    public func lifecycle(_ action: String, plugin name: String) throws -> DeploymentChange {
        switch action {
        case "stop": return try stopPlugin(name)
        case "start": return try startPlugin(name)
        case "restart": return try restartPlugin(name)
        default:
            throw KernelError(.notFound, subject: name, "no lifecycle action '\(action)'; use stop, start or restart")
        }
    }

    /// Stops an active plugin and leaves it `stopped`.
    public func stopPlugin(_ name: String) throws -> DeploymentChange {
        let change = try lifecycleLock.withLock { _ in try stopLocked(name) }
        logger.notice("admin: \(change)")
        return change
    }

    /// Starts a `stopped` or `failed` plugin again from the image it last ran.
    public func startPlugin(_ name: String) throws -> DeploymentChange {
        let change = try lifecycleLock.withLock { _ in try startLocked(name) }
        logger.notice("admin: \(change)")
        return change
    }

    /// Stops an active plugin and starts a new instance of the same image.
    public func restartPlugin(_ name: String) throws -> DeploymentChange {
        let change = try lifecycleLock.withLock { _ -> DeploymentChange in
            let stopped = try stopLocked(name)
            var started = try startLocked(name)
            guard started.action != .refuse else {
                started.message = "stopped, then did not start again: \(started.message)"
                return started
            }
            return .init(
                action: .restart, plugin: name, from: stopped.from, to: started.to,
                message: "restarted version \(started.to ?? "?")")
        }
        logger.notice("admin: \(change)")
        return change
    }

    private func stopLocked(_ name: String) throws -> DeploymentChange {
        guard isStarted else {
            throw KernelError(.invalidState, subject: name, "the node is starting or stopping; try again")
        }
        guard let record = record(name) else {
            throw KernelError(.notFound, subject: name, "no plugin of that name on this node")
        }
        guard record.state == .active || record.state == .quarantined, let manifest = record.snapshot.manifest else {
            throw KernelError(.invalidState, subject: name, "is \(record.state.rawValue), not active; nothing to stop")
        }
        let dependents = activeDependents(of: manifest)
        guard dependents.isEmpty else {
            throw KernelError(
                .invalidState, subject: name,
                "active plugins require what it provides: \(dependents.joined(separator: ", ")); stop them first")
        }
        stop(record, manifest: manifest)
        services.listeners.release(plugin: name)
        guard record.state == .stopped else {
            let reason = record.snapshot.lastError.map { "\($0)" } ?? "it is \(record.state.rawValue)"
            return .init(
                action: .refuse, plugin: name, from: "\(manifest.version)", message: "did not stop cleanly: \(reason)")
        }
        record.update { $0.deployment = "stopped by the admin endpoint" }
        return .init(
            action: .stop, plugin: name, from: "\(manifest.version)",
            message: "stopped version \(manifest.version); it starts again with the node or `plugin start`")
    }

    private func startLocked(_ name: String) throws -> DeploymentChange {
        guard isStarted else {
            throw KernelError(.invalidState, subject: name, "the node is starting or stopping; try again")
        }
        guard let current = record(name) else {
            throw KernelError(.notFound, subject: name, "no plugin of that name on this node")
        }
        let old = current.snapshot
        guard old.state == .stopped || old.state == .failed else {
            throw KernelError(
                .invalidState, subject: name, "is \(old.state.rawValue); only a stopped or failed plugin starts")
        }
        guard !old.abandoned else {
            throw KernelError(
                .invalidState, subject: name,
                "its last instance was abandoned (a hook overran its deadline) and may still run; restart the node")
        }
        guard let manifest = old.manifest else {
            throw KernelError(.invalidState, subject: name, "its manifest did not parse; fix the file instead")
        }
        let image: (path: String, sha256: String)
        if let loaded = old.loaded {
            image = (loaded.mappedPath, loaded.sha256)
        } else if let library = old.library, let sha256 = old.sha256 {
            image = (library, sha256)
        } else {
            throw KernelError(
                .invalidState, subject: name, "never got as far as a verified library; fix what its last error says")
        }
        let active = records.withLock { $0.values.filter { $0.state == .active }.compactMap(\.snapshot.manifest) }
        if let failure = Resolver.resolve(active.filter { $0.name != name } + [manifest]).failures.first(where: {
            $0.manifest.name == name
        }) {
            throw KernelError(.invalidState, subject: name, "cannot start: \(failure.error)")
        }
        // A new record, as an upgrade makes one: the old instance's record may still be referenced by
        // completions owed to it. The history carries over.
        let next = PluginRecord(name: name, manifestPath: current.manifestPath, manifest: manifest)
        next.update {
            $0.history = old.history
            $0.library = old.library
            $0.sha256 = old.sha256
            $0.previous = old.previous
        }
        records.withLock { $0[name] = next }
        transition(next, to: .verified)
        transition(next, to: .resolved)
        bringUp(next, manifest: manifest, library: image.path, sha256: image.sha256)
        order.withLock { if !$0.contains(name) { $0.append(name) } }
        guard next.state == .active else {
            let reason = next.snapshot.lastError.map { "\($0)" } ?? "it did not become active"
            return .init(action: .refuse, plugin: name, to: "\(manifest.version)", message: reason)
        }
        next.update { $0.deployment = "started by the admin endpoint" }
        return .init(
            action: .start, plugin: name, to: "\(manifest.version)", message: "started version \(manifest.version)")
    }

    /// Active plugins with a non-optional requirement that `manifest` provides.
    private func activeDependents(of manifest: Manifest) -> [String] {
        records.withLock { all in
            all.values.filter { other in
                other.state == .active && other.name != manifest.name
                    && (other.snapshot.manifest?.requires.contains { requirement in
                        !requirement.optional
                            && manifest.provides.contains {
                                $0.capability == requirement.capability && requirement.range.contains($0.version)
                            }
                    } ?? false)
            }.map(\.name).sorted()
        }
    }
}
