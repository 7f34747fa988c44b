import Foundation
import PlexusCore

/// An image a plugin ran from: what `rollback` returns to.
struct DeployedImage: Sendable {
    var manifest: Manifest
    /// The content-addressed copy in the plugin cache (never removed while the node runs).
    var mappedPath: String
    var sha256: String
}

/// What the node last saw of each manifest file, so a scan acts only on what changed, and only once a file
/// has stopped changing.
struct DeploymentState: Sendable {
    /// A file's size and modification time.
    struct Stamp: Equatable, Sendable {
        var size: Int64
        var modified: Double
    }

    /// A manifest file as the node last applied it (or refused it).
    struct Applied: Sendable {
        var manifest: Stamp
        var library: Stamp?
        /// Where its library was found (none when it did not parse or the library is missing).
        var libraryPath: String?
        /// The plugin name it declared (or the file's name when it did not parse).
        var name: String
    }

    var applied: [String: Applied] = [:]
    /// Stamps seen at the previous scan, for files not yet applied in their current form.
    var seen: [String: (manifest: Stamp, library: Stamp?)] = [:]
}

/// One change a scan or a command made to the running node.
public struct DeploymentChange: Sendable, Codable, Equatable, CustomStringConvertible {
    public enum Action: String, Sendable, Codable {
        case install, upgrade, remove, rollback, refuse, stop, start, restart
    }
    public var action: Action
    public var plugin: String
    public var from: String?
    public var to: String?
    /// What happened, in a sentence (the error when refused).
    public var message: String
    public var description: String { "\(action.rawValue) \(plugin): \(message)" }
}

extension Kernel {
    /// How long a manifest and its library must be unchanged before a scan applies them: a file still being
    /// copied into a drop-in directory is never loaded.
    static let settleTime: Double = 0.3

    static func stamp(_ path: String) -> DeploymentState.Stamp? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return .init(
            size: Int64(info.st_size),
            modified: Double(info.st_mtim.tv_sec) + Double(info.st_mtim.tv_nsec) / 1_000_000_000)
    }

    /// Records the files `start()` applied, so that the first scan acts only on later changes.
    func rememberStartedFiles() {
        let files = manifestFiles()
        let all = records.withLock { Array($0.values) }
        deployed.withLock { state in
            for path in files {
                guard let stamp = Self.stamp(path) else { continue }
                let record = all.first { $0.manifestPath == path }
                let libraryPath = record?.snapshot.library
                state.applied[path] = .init(
                    manifest: stamp, library: libraryPath.flatMap(Self.stamp), libraryPath: libraryPath,
                    name: record?.name ?? URL(fileURLWithPath: path).lastPathComponent)
            }
        }
    }

    /// Applies what the manifest directories hold now to the running node: a new manifest is installed, a
    /// changed manifest or library upgrades its plugin, a removed manifest stops its plugin. Files that
    /// changed within `settleTime`, or since the previous scan, wait for the next one.
    /// - Returns: the changes made, and whether some file is still settling (scan again soon).
    @discardableResult
    public func reconcile() -> (changes: [DeploymentChange], pending: Bool) {
        lifecycleLock.withLock { _ in
            // Not before start() has finished, nor after stop() has begun.
            guard isStarted else { return ([], false) }
            var changes: [DeploymentChange] = []
            var pending = false
            let now = Date().timeIntervalSince1970
            let files = manifestFiles()
            for path in files {
                guard let manifestStamp = Self.stamp(path) else { continue }
                let applied = deployed.withLock { $0.applied[path] }
                // The manifest is parsed again only when it changed or its library was not found (it may have
                // arrived since); otherwise its library is where it was.
                let libraryPath =
                    applied?.manifest == manifestStamp && applied?.libraryPath != nil
                    ? applied?.libraryPath
                    : (try? ManifestParser.load(path: path)).flatMap { try? loader.locate($0) }
                let libraryStamp = libraryPath.flatMap(Self.stamp)
                if let applied, applied.manifest == manifestStamp, applied.library == libraryStamp { continue }
                // Changed (or new): wait until two scans agree and the newest write is old enough.
                let settled = deployed.withLock { state -> Bool in
                    let previous = state.seen[path]
                    state.seen[path] = (manifestStamp, libraryStamp)
                    return previous?.manifest == manifestStamp && previous?.library == libraryStamp
                        && now - max(manifestStamp.modified, libraryStamp?.modified ?? 0) >= Self.settleTime
                }
                guard settled else {
                    pending = true
                    continue
                }
                let change = apply(path: path, previouslyApplied: applied)
                changes.append(change)
                let name = change.plugin
                deployed.withLock {
                    $0.seen[path] = nil
                    $0.applied[path] = .init(
                        manifest: manifestStamp, library: libraryStamp, libraryPath: libraryPath, name: name)
                }
            }
            let gone = deployed.withLock { state in state.applied.filter { !files.contains($0.key) } }
            for (path, applied) in gone {
                changes.append(remove(path: path, name: applied.name))
                deployed.withLock {
                    $0.applied[path] = nil
                    $0.seen[path] = nil
                }
            }
            for change in changes {
                if change.action == .refuse {
                    logger.error("deploy: \(change)")
                } else {
                    logger.notice("deploy: \(change)")
                }
            }
            return (changes, pending)
        }
    }

    /// Installs or upgrades the plugin a (settled) manifest file declares.
    private func apply(path: String, previouslyApplied: DeploymentState.Applied?) -> DeploymentChange {
        let fileName = URL(fileURLWithPath: path).lastPathComponent
        let manifest: Manifest
        do {
            manifest = try config.pluginConfig.applied(to: ManifestParser.load(path: path))
        } catch {
            let name = previouslyApplied?.name ?? fileName
            if let running = record(name), running.state == .active {
                running.update { $0.deployment = "the new manifest was refused: \(error)" }
                return .init(
                    action: .refuse, plugin: name,
                    message: "the new manifest was refused; the running one serves: \(error)")
            }
            let failed = PluginRecord(name: fileName, manifestPath: path, manifest: nil)
            records.withLock { $0[fileName] = failed }
            fail(failed, error as? KernelError ?? KernelError(.manifestInvalid, subject: path, "\(error)"))
            return .init(action: .refuse, plugin: fileName, message: "\(error)")
        }
        if let current = record(manifest.name), current.manifestPath != path,
            current.state != .failed && current.state != .stopped
        {
            return .init(
                action: .refuse, plugin: manifest.name,
                message: "plugin '\(manifest.name)' is already declared by \(current.manifestPath); \(path) is ignored")
        }
        // A manifest file that once declared another plugin: that one goes first.
        var removed: DeploymentChange?
        if let previouslyApplied, previouslyApplied.name != manifest.name {
            removed = remove(path: path, name: previouslyApplied.name)
        }
        let image: (library: String, sha256: String)
        do {
            let library = try loader.locate(manifest)
            image = (library, try loader.verify(manifest, library: library))
        } catch {
            return refuseOrFail(manifest, path: path, error)
        }
        guard let current = record(manifest.name), current.state == .active || current.state == .created else {
            var change = install(manifest, path: path, library: image.library, sha256: image.sha256)
            if let removed { change.message = "\(removed.message); \(change.message)" }
            return change
        }
        return replace(
            current, with: manifest, path: path, library: image.library, sha256: image.sha256, action: .upgrade)
    }

    private func refuseOrFail(_ manifest: Manifest, path: String, _ error: any Error) -> DeploymentChange {
        let kernelError = error as? KernelError ?? KernelError(.io, subject: path, "\(error)")
        if let running = record(manifest.name), running.state == .active {
            running.update { $0.deployment = "version \(manifest.version) was refused: \(kernelError)" }
            return .init(
                action: .refuse, plugin: manifest.name, to: "\(manifest.version)",
                message: "version \(manifest.version) was refused; the running one serves: \(kernelError)")
        }
        let failed = PluginRecord(name: manifest.name, manifestPath: path, manifest: manifest)
        records.withLock { $0[manifest.name] = failed }
        fail(failed, kernelError)
        return .init(action: .refuse, plugin: manifest.name, to: "\(manifest.version)", message: "\(kernelError)")
    }

    /// Starts a plugin that is not running, once what it requires is active.
    private func install(_ manifest: Manifest, path: String, library: String, sha256: String) -> DeploymentChange {
        let active = records.withLock { $0.values.filter { $0.state == .active }.compactMap(\.snapshot.manifest) }
        let resolution = Resolver.resolve(active.filter { $0.name != manifest.name } + [manifest])
        let record = PluginRecord(name: manifest.name, manifestPath: path, manifest: manifest)
        record.update {
            $0.library = library
            $0.sha256 = sha256
        }
        records.withLock { $0[manifest.name] = record }
        if let failure = resolution.failures.first(where: { $0.manifest.name == manifest.name }) {
            fail(record, failure.error)
            return .init(action: .refuse, plugin: manifest.name, to: "\(manifest.version)", message: "\(failure.error)")
        }
        transition(record, to: .verified)
        transition(record, to: .resolved)
        guard manifest.enabled else {
            return .init(
                action: .install, plugin: manifest.name, to: "\(manifest.version)",
                message: "version \(manifest.version) is disabled by its manifest; left resolved")
        }
        bringUp(record, manifest: manifest, library: library, sha256: sha256)
        order.withLock { if !$0.contains(manifest.name) { $0.append(manifest.name) } }
        guard record.state == .active else {
            let reason = record.snapshot.lastError.map { "\($0)" } ?? "it did not become active"
            return .init(action: .refuse, plugin: manifest.name, to: "\(manifest.version)", message: reason)
        }
        return .init(
            action: .install, plugin: manifest.name, to: "\(manifest.version)",
            message: "installed version \(manifest.version) (sha256 \(sha256.prefix(12)))")
    }

    /// Replaces a running plugin's instance with another image: the new instance starts beside the old one,
    /// which then stops (a protocol plugin that takes its listener from the kernel accepts from the same
    /// socket, so no connection is refused). A protocol plugin that binds its own port and so cannot start
    /// beside is retried after the old instance stops. When the new image does not start, the old one keeps
    /// (or, if stopped, starts again) serving. A storage plugin is stopped first and its topics paused
    /// (`replaceStorage`); a registry plugin is refused: its registrations would end under the node's plugins
    /// (upgrade it by a restart).
    private func replace(
        _ current: PluginRecord, with manifest: Manifest, path: String, library: String, sha256: String,
        action: DeploymentChange.Action
    ) -> DeploymentChange {
        let old = current.snapshot
        guard let oldManifest = old.manifest, let oldLoaded = old.loaded else {
            return .init(action: .refuse, plugin: manifest.name, message: "the running instance has no image")
        }
        let from = "\(oldManifest.version)"
        let to = "\(manifest.version)"
        if oldLoaded.sha256 == sha256, oldManifest.config == manifest.config, oldManifest.version == manifest.version {
            return .init(
                action: action, plugin: manifest.name, from: from, to: to,
                message: "already running this image and configuration; nothing to do")
        }
        let kinds = Set(oldManifest.kinds).union(manifest.kinds)
        if kinds.contains(.registry) {
            let reason =
                "a registry plugin is not replaced on a running node (its registrations, leases and watches would end under the node's plugins); restart the node to run version \(to)"
            current.update { $0.deployment = "version \(to) was refused: \(reason)" }
            return .init(action: .refuse, plugin: manifest.name, from: from, to: to, message: reason)
        }
        if kinds.contains(.storage) {
            // Stopped first, then started on the same data directory (StorageReplacement.swift).
            let swap = StorageSwap(
                current: current, oldManifest: oldManifest, oldLibrary: oldLoaded.mappedPath,
                oldSHA256: oldLoaded.sha256, previous: old.previous, from: from, to: to)
            return replaceStorage(swap, with: manifest, path: path, library: library, sha256: sha256, action: action)
        }
        let previous = DeployedImage(manifest: oldManifest, mappedPath: oldLoaded.mappedPath, sha256: oldLoaded.sha256)
        func candidate() -> PluginRecord {
            let record = PluginRecord(name: manifest.name, manifestPath: path, manifest: manifest)
            record.update {
                $0.library = library
                $0.sha256 = sha256
                $0.previous = previous
            }
            transition(record, to: .verified)
            transition(record, to: .resolved)
            return record
        }
        // Beside the running instance first: a connector joins its groups, a protocol plugin that takes its
        // listener from the kernel (`listen`, ABI 1.2) accepts from the same socket.
        var next = candidate()
        bringUp(next, manifest: manifest, library: library, sha256: sha256)
        var stoppedOld = false
        if next.state != .active, kinds.contains(.protocolKind) {
            // A protocol plugin that binds its own port cannot start beside the old instance: stop that one
            // first (its clients reconnect; connections attempted meanwhile are refused), then try again.
            logger.notice(
                "deploy: \(manifest.name) \(to) did not start beside \(from) (\(next.snapshot.lastError.map { "\($0)" } ?? "no reason")); stopping \(from) first"
            )
            stop(current, manifest: oldManifest)
            stoppedOld = true
            next = candidate()
            bringUp(next, manifest: manifest, library: library, sha256: sha256)
        }
        guard next.state == .active else {
            let reason = next.snapshot.lastError.map { "\($0)" } ?? "it did not become active"
            if stoppedOld {
                // The old image serves again, as a new instance.
                let again = PluginRecord(name: manifest.name, manifestPath: current.manifestPath, manifest: oldManifest)
                again.update {
                    $0.library = old.library
                    $0.sha256 = old.sha256
                    $0.previous = old.previous
                    $0.deployment = "version \(to) did not start (\(reason)); version \(from) was restarted"
                }
                transition(again, to: .verified)
                transition(again, to: .resolved)
                bringUp(again, manifest: oldManifest, library: oldLoaded.mappedPath, sha256: oldLoaded.sha256)
                records.withLock { $0[manifest.name] = again }
                services.listeners.release(plugin: manifest.name, keeping: again.snapshot.context?.id)
            } else {
                current.update { $0.deployment = "version \(to) did not start: \(reason)" }
                services.listeners.release(plugin: manifest.name, keeping: old.context?.id)
            }
            return .init(
                action: .refuse, plugin: manifest.name, from: from, to: to,
                message: "version \(to) did not start; version \(from) serves: \(reason)")
        }
        next.update { $0.deployment = "\(action.rawValue) from \(from) (sha256 \(oldLoaded.sha256.prefix(12)))" }
        records.withLock { $0[manifest.name] = next }
        if !stoppedOld { stop(current, manifest: oldManifest) }
        services.listeners.release(plugin: manifest.name, keeping: next.snapshot.context?.id)
        return .init(
            action: action, plugin: manifest.name, from: from, to: to,
            message:
                "\(action == .rollback ? "rolled back" : "upgraded") from \(from) (sha256 \(oldLoaded.sha256.prefix(12))) to \(to) (sha256 \(sha256.prefix(12)))\(stoppedOld ? "; the old instance stopped first" : "")"
        )
    }

    /// Stops and forgets the plugin a removed manifest file declared.
    private func remove(path: String, name: String) -> DeploymentChange {
        guard let record = record(name), record.manifestPath == path else {
            return .init(action: .remove, plugin: name, message: "its manifest \(path) is gone; it was not running")
        }
        let version = record.snapshot.manifest.map { "\($0.version)" }
        if record.state == .active, let manifest = record.snapshot.manifest {
            let dependents = records.withLock { all in
                all.values.filter { other in
                    other.state == .active
                        && (other.snapshot.manifest?.requires.contains { requirement in
                            !requirement.optional
                                && manifest.provides.contains {
                                    $0.capability == requirement.capability && requirement.range.contains($0.version)
                                }
                        } ?? false)
                }.map(\.name).sorted()
            }
            if !dependents.isEmpty {
                logger.warning(
                    "deploy: \(name) is removed while \(dependents.joined(separator: ", ")) depend on it; they keep running"
                )
            }
            stop(record, manifest: manifest)
        }
        records.withLock { $0[name] = nil }
        order.withLock { $0.removeAll { $0 == name } }
        services.listeners.release(plugin: name)
        return .init(
            action: .remove, plugin: name, from: version,
            message: "its manifest \(path) is gone; stopped\(version.map { " version \($0)" } ?? "") and removed")
    }

    /// Returns a running plugin to the image it replaced (still in the plugin cache and still mapped). The
    /// manifest directory is not changed: the node runs the previous image until the files change again or
    /// the node restarts, and `plugin list` says so.
    /// - Throws: `KernelError(.notFound)` for an unknown plugin, `.invalidState` when it has no previous image.
    public func rollback(_ name: String) throws -> DeploymentChange {
        try lifecycleLock.withLock { _ in
            guard let current = record(name) else {
                throw KernelError(.notFound, subject: name, "no plugin of that name on this node")
            }
            guard let previous = current.snapshot.previous else {
                throw KernelError(
                    .invalidState, subject: name, "has no previous image on this node to roll back to")
            }
            var change = replace(
                current, with: previous.manifest, path: current.manifestPath, library: previous.mappedPath,
                sha256: previous.sha256, action: .rollback)
            if change.action == .rollback, let now = record(name) {
                now.update {
                    $0.deployment =
                        "rolled back to \(previous.manifest.version); \(current.manifestPath) still names \(current.snapshot.manifest.map { "\($0.version)" } ?? "another version"), which runs again when the files change or the node restarts"
                }
                change.message += "; the manifest directory is unchanged"
            }
            logger.notice("deploy: \(change)")
            return change
        }
    }
}

// MARK: Deploying by command

extension Kernel {
    /// Copies a manifest (and its library, when it lies beside the manifest) into the node's first manifest
    /// directory — or over the manifest of plugin `replacing` — and applies it, as if it had been dropped
    /// there. Files are written to a temporary name and renamed, library first, so a scan never sees half.
    /// - Returns: the changes made (empty when the directory watcher applied them first; see the plugin's
    ///   status then).
    /// - Throws: `KernelError` when the files cannot be read or written, or `replacing` names no plugin.
    public func deploy(manifestFrom source: String, replacing name: String? = nil) throws -> [DeploymentChange] {
        let manifest = try ManifestParser.load(path: source)
        let target: String
        if let name {
            guard let current = record(name) else {
                throw KernelError(.notFound, subject: name, "no plugin of that name on this node; install it instead")
            }
            guard manifest.name == name else {
                throw KernelError(
                    .manifestInvalid, subject: source, field: "name",
                    "declares plugin '\(manifest.name)', not '\(name)', so it cannot upgrade '\(name)'")
            }
            target = current.manifestPath
        } else {
            if let current = record(manifest.name), current.state == .active {
                throw KernelError(
                    .invalidState, subject: manifest.name,
                    "is already running (from \(current.manifestPath)); use upgrade to replace it")
            }
            guard let directory = config.manifestDirectories.first else {
                throw KernelError(.nodeConfigInvalid, subject: "node", "has no manifest directory to install into")
            }
            target = directory + "/" + manifest.name + ".yaml"
        }
        let sourceDirectory = URL(fileURLWithPath: source).deletingLastPathComponent().path
        let targetDirectory = URL(fileURLWithPath: target).deletingLastPathComponent().path
        if !manifest.library.hasPrefix("/"), sourceDirectory != targetDirectory {
            let library = sourceDirectory + "/" + manifest.library
            if FileManager.default.fileExists(atPath: library) {
                try Self.place(library, at: targetDirectory + "/" + manifest.library)
            }
        }
        if URL(fileURLWithPath: source).standardizedFileURL.path
            != URL(fileURLWithPath: target).standardizedFileURL.path
        {
            // A signature travels with its manifest, placed first; a stale one from an earlier version goes.
            if FileManager.default.fileExists(atPath: source + ".sig") {
                try Self.place(source + ".sig", at: target + ".sig")
            } else {
                try? FileManager.default.removeItem(atPath: target + ".sig")
            }
            try Self.place(source, at: target)
        }
        return settle()
    }

    /// Installs (or, with `replacing`, upgrades to) the plugin in an archive made by `plexus plugin pack`: the
    /// archive is checked (`PluginArchive.decode`), its files are written under `<data>/archives/`, the
    /// signature beside the manifest, and deployed from there as `deploy(manifestFrom:)` does. Whether a
    /// signature is required and its key trusted is checked when the plugin is verified, as for any plugin.
    /// - Throws: `KernelError` when the archive cannot be read or is not a valid plugin archive.
    public func deploy(archiveFrom path: String, replacing name: String? = nil) throws -> [DeploymentChange] {
        let bytes: [UInt8]
        do {
            let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            guard size <= PluginArchive.maxBytes else {
                throw KernelError(.archiveInvalid, subject: path, "is larger than \(PluginArchive.maxBytes) bytes")
            }
            bytes = Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch let error as KernelError {
            throw error
        } catch {
            throw KernelError(.io, subject: path, "cannot be read: \(error.localizedDescription)")
        }
        let archive = try PluginArchive.decode(bytes, subject: path)
        guard let text = String(validating: archive.manifest, as: UTF8.self) else {
            throw KernelError(.archiveInvalid, subject: path + "!manifest.yaml", "is not UTF-8 text")
        }
        let manifest = try ManifestParser.parse(text, path: path + "!manifest.yaml")
        guard manifest.library == archive.libraryName else {
            throw KernelError(
                .archiveInvalid, subject: path + "!manifest.yaml", field: "library",
                "names '\(manifest.library)', but the archive holds the library '\(archive.libraryName)'")
        }
        let directory =
            config.dataDirectory + "/archives/\(manifest.name)-\(archive.manifestSHA256.prefix(12))-"
            + archive.librarySHA256.prefix(12)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            try Data(archive.library).write(
                to: URL(fileURLWithPath: directory + "/" + archive.libraryName), options: .atomic)
            let manifestPath = directory + "/" + PluginArchive.manifestName
            if let signature = archive.signature {
                try Data(signature.text.utf8).write(to: URL(fileURLWithPath: manifestPath + ".sig"), options: .atomic)
            } else {
                try? FileManager.default.removeItem(atPath: manifestPath + ".sig")
            }
            try Data(archive.manifest).write(to: URL(fileURLWithPath: manifestPath), options: .atomic)
        } catch {
            throw KernelError(.io, subject: directory, "cannot unpack \(path) here: \(error.localizedDescription)")
        }
        logger.notice(
            "deploy: unpacked \(path) (\(manifest.name) \(manifest.version), \(archive.signature == nil ? "unsigned" : "signed")) into \(directory)"
        )
        return try deploy(manifestFrom: directory + "/" + PluginArchive.manifestName, replacing: name)
    }

    /// Moves a plugin's manifest out of the manifest directory (into `<data>/removed-manifests/`) and stops
    /// the plugin, as if the file had been deleted.
    public func undeploy(_ name: String) throws -> [DeploymentChange] {
        guard let current = record(name) else {
            throw KernelError(.notFound, subject: name, "no plugin of that name on this node")
        }
        let path = current.manifestPath
        let archive = config.dataDirectory + "/removed-manifests"
        do {
            try FileManager.default.createDirectory(atPath: archive, withIntermediateDirectories: true)
            let stamp = Int(Date().timeIntervalSince1970)
            let moved = archive + "/\(stamp)-" + URL(fileURLWithPath: path).lastPathComponent
            guard rename(path, moved) == 0 else {
                throw KernelError(
                    .io, subject: name, "cannot move \(path) to \(moved): \(String(cString: strerror(errno)))")
            }
        } catch let error as KernelError {
            throw error
        } catch {
            throw KernelError(.io, subject: name, "cannot archive its manifest: \(error.localizedDescription)")
        }
        return settle()
    }

    /// Scans until no file is settling (at most 10 s), collecting the changes.
    private func settle() -> [DeploymentChange] {
        var changes: [DeploymentChange] = []
        let deadline = ContinuousClock.now + .seconds(10)
        repeat {
            let (made, pending) = reconcile()
            changes += made
            guard pending else { break }
            Thread.sleep(forTimeInterval: Self.settleTime)
        } while ContinuousClock.now < deadline
        return changes
    }

    /// Copies `source` to `target` through a temporary file and a rename.
    private static func place(_ source: String, at target: String) throws {
        let temporary =
            URL(fileURLWithPath: target).deletingLastPathComponent().path + "/.plexus-deploy-\(getpid())-"
            + URL(fileURLWithPath: target).lastPathComponent
        do {
            try? FileManager.default.removeItem(atPath: temporary)
            try FileManager.default.copyItem(atPath: source, toPath: temporary)
        } catch {
            throw KernelError(.io, subject: source, "cannot copy to \(temporary): \(error.localizedDescription)")
        }
        guard rename(temporary, target) == 0 else {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(atPath: temporary)
            throw KernelError(.io, subject: source, "cannot move \(temporary) to \(target): \(reason)")
        }
    }
}
