import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// Replacing a storage plugin on a running node (docs/operations.md, "Upgrading a storage plugin").
///
/// Two instances of a storage never have its data directory open at once, so a storage is not started
/// beside the old instance as other plugins are: the kernel pauses the storage's binding (new appends, reads,
/// offset calls and stream opens wait, in order), waits for every call in flight to complete, lets go of the
/// read batches the instance lent, closes its streams and stops it, starts the new instance on the same data
/// directory, reopens every stream the topics had open with the same options, and hands the waiting calls to
/// the new instance. When the new instance does not start or cannot reopen a stream, the old image is started
/// again the same way and serves.
extension Kernel {
    /// What a storage replacement is about to swap, for the failure messages and the deployment note.
    struct StorageSwap {
        var current: PluginRecord
        var oldManifest: Manifest
        var oldLibrary: String
        var oldSHA256: String
        var previous: DeployedImage?
        var from: String
        var to: String
    }

    /// Replaces a running storage plugin's instance with `manifest`'s image (see the type's summary).
    func replaceStorage(
        _ swap: StorageSwap, with manifest: Manifest, path: String, library: String, sha256: String,
        action: DeploymentChange.Action
    ) -> DeploymentChange {
        let name = manifest.name
        let (current, from, to) = (swap.current, swap.from, swap.to)
        func refuse(_ reason: String) -> DeploymentChange {
            current.update { $0.deployment = "version \(to) was refused: \(reason)" }
            return .init(action: .refuse, plugin: name, from: from, to: to, message: reason)
        }
        if swap.oldManifest.isolation == .process || manifest.isolation == .process {
            return refuse(
                "a storage plugin in isolation: process is not replaced on a running node (its streams live in a child process the kernel cannot pause and reopen); restart the node to run version \(to)"
            )
        }
        guard let old = services.router.boundStorages()[name], old.instance == current.snapshot.instance?.raw else {
            return refuse("the running instance is not bound as a storage; restart the node to run version \(to)")
        }
        let began = ContinuousClock.now
        let drainDeadline = began + swap.oldManifest.stopTimeout
        // 1. New calls wait; those in flight complete.
        guard old.pause(until: drainDeadline) else {
            old.resume()
            return refuse(
                "calls into the running instance were still in flight after \(swap.oldManifest.stopTimeout.milliseconds) ms; it keeps serving"
            )
        }
        let topics = services.router.topics(on: old)
        // A storage that keeps events in memory loses them when it stops: replaced only while it holds none.
        if !DefaultStorage.isDurable(old.durability) {
            let holding = topics.filter { (old.extentNow($0.value.stream)?.next ?? 1) > 0 }.keys.sorted()
            if !holding.isEmpty {
                old.resume()
                return refuse(
                    "the storage keeps its events in memory (durability none) and holds events of \(holding.prefix(5).map { TopicName.quoted($0) }.joined(separator: ", ")); replacing it would lose them and their consumer offsets; restart the node (which loses them too) to run version \(to)"
                )
            }
        }
        // 2. The read batches the instance lent are exchanged for copies, so it can stop.
        services.router.engine.detachGroups(on: old)
        while old.calls.load(ordering: .acquiring) > 0 {
            guard ContinuousClock.now < drainDeadline else {
                old.resume()
                return refuse(
                    "read batches the running instance lent were still held after \(swap.oldManifest.stopTimeout.milliseconds) ms; it keeps serving"
                )
            }
            Thread.sleep(forTimeInterval: 0.001)
        }
        // 3. The old instance closes its streams and stops (a durable storage has flushed what it acknowledged).
        for open in topics.values { old.closeStreamNow(open.stream) }
        stop(current, manifest: swap.oldManifest, keepingTopics: true)
        guard current.state == .stopped else {
            // Abandoned: it may still hold its files, so no other instance may open them.
            services.router.abandon(old)
            let reason = current.snapshot.lastError.map { "\($0)" } ?? "it did not stop"
            current.update { $0.deployment = "version \(to) was not started: version \(from) did not stop (\(reason))" }
            return .init(
                action: .refuse, plugin: name, from: from, to: to,
                message:
                    "version \(from) did not stop (\(reason)); version \(to) was not started on its data directory and the storage serves no topic until the node restarts"
            )
        }
        // 4. The new instance starts on the same data directory and reopens every topic's stream.
        let next = PluginRecord(name: name, manifestPath: path, manifest: manifest)
        next.update {
            $0.library = library
            $0.sha256 = sha256
            $0.previous = DeployedImage(manifest: swap.oldManifest, mappedPath: swap.oldLibrary, sha256: swap.oldSHA256)
        }
        var failure: String
        switch takeOver(next, manifest: manifest, library: library, sha256: sha256, reopening: topics, after: old) {
        case .success(let reopened):
            next.update { $0.deployment = "\(action.rawValue) from \(from) (sha256 \(swap.oldSHA256.prefix(12)))" }
            records.withLock { $0[name] = next }
            let paused = ContinuousClock.now - began
            return .init(
                action: action, plugin: name, from: from, to: to,
                message:
                    "\(action == .rollback ? "rolled back" : "upgraded") from \(from) (sha256 \(swap.oldSHA256.prefix(12))) to \(to) (sha256 \(sha256.prefix(12))); the storage was stopped first and paused \(paused.milliseconds) ms, \(reopened) stream(s) reopened"
            )
        case .failure(let reason):
            failure = reason.reason
        }
        // 5. The old image serves again, as a new instance.
        logger.error("deploy: storage \(name) \(to) did not take over (\(failure)); starting \(from) again")
        let again = PluginRecord(name: name, manifestPath: current.manifestPath, manifest: swap.oldManifest)
        again.update {
            $0.library = current.snapshot.library
            $0.sha256 = swap.oldSHA256
            $0.previous = swap.previous
            $0.deployment = "version \(to) did not start (\(failure)); version \(from) was restarted"
        }
        switch takeOver(
            again, manifest: swap.oldManifest, library: swap.oldLibrary, sha256: swap.oldSHA256, reopening: topics,
            after: old)
        {
        case .success:
            records.withLock { $0[name] = again }
            return .init(
                action: .refuse, plugin: name, from: from, to: to,
                message: "version \(to) did not start; version \(from) was restarted and serves: \(failure)")
        case .failure(let takeover):
            let second = takeover.reason
            records.withLock { $0[name] = again }
            services.router.abandon(old)
            return .init(
                action: .refuse, plugin: name, from: from, to: to,
                message:
                    "version \(to) did not start (\(failure)) and version \(from) did not start again (\(second)); the storage serves no topic until the node restarts"
            )
        }
    }

    /// Brings up `record` as the storage that takes over from the paused `old`: started, every topic in
    /// `reopening` reopened with its options (within the start deadline), then the calls that waited handed to
    /// it and the topics and groups switched. On failure the instance is stopped again and `old` stays paused.
    /// - Returns: how many streams were reopened, or why it did not take over.
    private func takeOver(
        _ record: PluginRecord, manifest: Manifest, library: String, sha256: String,
        reopening topics: [String: Router.OpenTopic], after old: StorageBinding
    ) -> Result<Int, TakeoverFailure> {
        transition(record, to: .verified)
        transition(record, to: .resolved)
        bringUp(record, manifest: manifest, library: library, sha256: sha256)
        guard record.state == .active else {
            return .failure(.init(reason: record.snapshot.lastError.map { "\($0)" } ?? "it did not become active"))
        }
        guard let binding = services.router.boundStorages()[manifest.name], binding !== old,
            binding.instance == record.snapshot.instance?.raw
        else {
            stop(record, manifest: manifest, keepingTopics: true)
            return .failure(.init(reason: "it started but did not declare a storage vtable"))
        }
        let deadline = ContinuousClock.now + manifest.startTimeout
        let opened = Reopened()
        let group = DispatchGroup()
        for topic in topics.keys.sorted() {
            group.enter()
            let options = services.router.streamOptions(for: topic)
            binding.openStream(topic, retentionBytes: options.retentionBytes, retentionMs: options.retentionMs) {
                result in
                opened.set(topic, result)
                group.leave()
            }
        }
        let finished = group.wait(timeout: .now() + .milliseconds(Int(manifest.startTimeout.milliseconds))) == .success
        // From here a stream that opens late is closed at once (only when the replacement gave up).
        let results = opened.seal { binding.closeStreamNow($0) }
        let failed = topics.keys.sorted().filter { topic in
            guard case .success = results[topic] else { return true }
            return false
        }
        guard finished, failed.isEmpty else {
            // What it did open is closed again (late opens are closed when they complete), then it stops.
            _ = binding.pause(until: deadline)
            for case .success(let stream) in results.values { binding.closeStreamNow(stream) }
            stop(record, manifest: manifest, keepingTopics: true)
            // Calls that reached it in the moment it served (opens of new topics) cannot be handed back.
            binding.release(to: nil)
            let first = failed.first.flatMap { topic in
                if case .failure(let failure) = results[topic] { return "\(TopicName.quoted(topic)): \(failure)" }
                return "\(TopicName.quoted(topic)): no answer within \(manifest.startTimeout.milliseconds) ms"
            }
            return .failure(
                .init(
                    reason:
                        "it did not reopen \(failed.count) of \(topics.count) stream(s)\(first.map { ", first \($0)" } ?? "")"
                ))
        }
        var streams: [UInt: StorageBinding.Stream] = [:]
        var switched: [String: Router.OpenTopic] = [:]
        for (topic, open) in topics {
            guard case .success(let stream)? = results[topic] else { continue }
            streams[UInt(bitPattern: open.stream.pointer)] = stream
            switched[topic] = Router.OpenTopic(binding: binding, stream: stream, metrics: open.metrics)
        }
        // The calls that waited go first, in order; then the topics and groups point at the new streams.
        old.release(to: .init(binding: binding, streams: streams, identity: false))
        services.router.switchTopics(from: old, to: switched)
        return .success(topics.count)
    }
}

/// Why a storage instance did not take over from a paused one.
struct TakeoverFailure: Error {
    var reason: String
}

/// The streams a replacement reopened, as their opens complete (on any thread).
private final class Reopened: Sendable {
    private struct State {
        var results: [String: Result<StorageBinding.Stream, StorageBinding.Failure>] = [:]
        /// Set once the replacement gave up: a stream that opens later is closed at once.
        var closeLate: (@Sendable (StorageBinding.Stream) -> Void)?
    }

    private let state = Mutex(State())

    func set(_ topic: String, _ result: Result<StorageBinding.Stream, StorageBinding.Failure>) {
        let late = state.withLock { s -> (@Sendable (StorageBinding.Stream) -> Void)? in
            guard s.closeLate == nil else { return s.closeLate }
            s.results[topic] = result
            return nil
        }
        if let late, case .success(let stream) = result { late(stream) }
    }

    /// The results so far; a stream that opens after this is handed to `close`.
    func seal(
        _ close: @escaping @Sendable (StorageBinding.Stream) -> Void
    ) -> [String: Result<StorageBinding.Stream, StorageBinding.Failure>] {
        state.withLock { s in
            s.closeLate = close
            return s.results
        }
    }
}
