import Foundation
import PlexusKernel
import Testing

/// Deploying into a running node: a manifest dropped into (changed in, removed from) a watched directory, and
/// the same by command, while heartbeats flow into a durable topic; a checker reads the sink's log and the
/// source's acknowledged count to show that every acknowledged heartbeat reached the sink's group.
@Suite("Drop-in deployment")
struct DeploymentTests {
    /// Polls the node's plugin list until `condition` holds for plugin `name` (nil: absent), up to `timeout`.
    static func waitFor(
        _ node: NodeProcess, _ name: String, timeout: Duration = .seconds(15),
        _ condition: @escaping (PluginStatus?) -> Bool
    ) async throws -> PluginStatus? {
        var last: PluginStatus?
        let reached = try await eventually(timeout) {
            last = try await node.list().first { $0.name == name }
            return condition(last)
        }
        if reached { return last }
        // The node's own lines about deployment and this plugin, not what the plugin logged (heartbeats).
        let deploys = node.stderr.split(separator: "\n").filter {
            ($0.contains("deploy") || $0.contains("watching") || $0.contains(name)) && !$0.contains("heartbeat@")
        }.suffix(20)
        Issue.record(
            "\(name) did not reach the expected state within \(timeout); last: \(String(describing: last))\n\(deploys.joined(separator: "\n"))"
        )
        return last
    }

    /// Whether the node's log has a line containing `text` within 5 s (a change is logged just after it is
    /// shown in the plugin list).
    static func logged(_ node: NodeProcess, _ text: String) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(5)
        while !node.stderr.contains(text) {
            guard ContinuousClock.now < deadline else { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
        return true
    }

    /// The heartbeat offsets console-sink instances logged (`heartbeat@OFFSET id=…`).
    static func loggedOffsets(_ node: NodeProcess) -> Set<UInt64> {
        Set(
            node.stderr.split(separator: "\n").compactMap { line -> UInt64? in
                guard let at = line.range(of: "heartbeat@") else { return nil }
                return UInt64(line[at.upperBound...].prefix { $0.isNumber })
            })
    }

    static func okMinimalManifest(version: String) -> String {
        """
        manifest: 1
        name: ok-minimal
        version: \(version)
        kind: connector
        library: libok_minimal.so
        abi: {major: 1, minor: 4}
        operations:
          - {name: started, symbol: px_op_started, signature: uint64 (instance)}

        """
    }

    @Test(
        "a library dropped in half-copied is refused without harm and started once whole; upgrade and rollback between two images"
    )
    func versions() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let v1 = try await Repository.compileFixture("ok_minimal", into: try directory.subdirectory("v1"))
        let v2 = try await Repository.compileFixture(
            "ok_minimal", into: try directory.subdirectory("v2"), defines: [#"OK_MINIMAL_VERSION="1.1.0""#])
        let manifests = try directory.shippedManifests()
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let library = manifests.appendingPathComponent("libok_minimal.so")
        let manifest = manifests.appendingPathComponent("ok-minimal.yaml")

        // Half of the library, then the manifest: once they settle, the truncated image is refused (no SIGBUS).
        let whole = try Data(contentsOf: v1)
        try whole.prefix(whole.count / 2).write(to: library)
        try Self.okMinimalManifest(version: "1.0.0").write(to: manifest, atomically: false, encoding: .utf8)
        let refused = try await Self.waitFor(node, "ok-minimal") { $0?.state == .failed }
        #expect(refused?.lastError?.contains("not a loadable plugin image") == true, "\(refused?.lastError ?? "none")")
        // The rest of the copy arrives: the plugin starts.
        try whole.write(to: library)
        let started = try await Self.waitFor(node, "ok-minimal") { $0?.state == .active }
        #expect(started?.version == "1.0.0")
        let firstSHA = started?.sha256

        // A new image and manifest: upgraded, both versions and hashes in the log.
        try FileManager.default.removeItem(at: library)
        try FileManager.default.copyItem(at: v2, to: library)
        try Self.okMinimalManifest(version: "1.1.0").write(to: manifest, atomically: true, encoding: .utf8)
        let upgraded = try await Self.waitFor(node, "ok-minimal") { $0?.version == "1.1.0" && $0?.state == .active }
        #expect(upgraded?.previousVersion == "1.0.0")
        #expect(upgraded?.sha256 != firstSHA)
        #expect(
            try await Self.logged(
                node, "deploy: upgrade ok-minimal: upgraded from 1.0.0 (sha256 \(firstSHA?.prefix(12) ?? "?"))"))
        #expect(try await node.call("ok-minimal", "started").output == "1")

        // Rolled back to the first image, still in the cache.
        let rollback = try await node.cli(["plugin", "rollback", "ok-minimal"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        let back = try await node.list().first { $0.name == "ok-minimal" }
        #expect(back?.version == "1.0.0")
        #expect(back?.previousVersion == "1.1.0")
        #expect(back?.deployment?.contains("still names 1.1.0") == true, "\(back?.deployment ?? "none")")
        #expect(try await node.call("ok-minimal", "started").output == "1")
        // Rolling back again returns to 1.1.0; installing what runs is refused.
        #expect(try await node.cli(["plugin", "rollback", "ok-minimal"]).status == 0)
        #expect(try await node.list().first { $0.name == "ok-minimal" }?.version == "1.1.0")
        let twice = try await node.cli(["plugin", "install", manifest.path])
        #expect(twice.status != 0)
        #expect(twice.stderr.contains("already running"), "\(twice.stderr)")
        #expect(node.process.isRunning)
    }

    @Test("drop-in, upgrade, rollback and removal on a running node under load lose no acknowledged event")
    func dropInUnderLoad() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 5)
        let sinkFile = manifests.appendingPathComponent("console-sink.yaml")
        let sinkText = try String(contentsOf: sinkFile, encoding: .utf8)
        try #require(sinkText.contains("\nversion: 1.0.0\n"))
        try FileManager.default.removeItem(at: sinkFile)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        #expect(try await node.list().contains { $0.name == "console-sink" } == false)

        // 1. Dropped in, written in place in two halves. The half is applied only if it sat unchanged past the
        //    settle time (a slow machine): then it is refused as a manifest, and the whole file starts.
        let half = sinkText.index(sinkText.startIndex, offsetBy: sinkText.count / 2)
        try String(sinkText[..<half]).write(to: sinkFile, atomically: false, encoding: .utf8)
        try await Task.sleep(for: .milliseconds(100))
        try sinkText.write(to: sinkFile, atomically: false, encoding: .utf8)
        let installed = try await Self.waitFor(node, "console-sink") { $0?.state == .active }
        #expect(installed?.version == "1.0.0")
        for line in node.stderr.split(separator: "\n") where line.contains("plugin console-sink.yaml failed") {
            #expect(line.contains("[manifest-invalid]"), "the half-written manifest failed otherwise: \(line)")
        }

        // 2. Replaced by changing the file (a new configuration): a new instance joins the group beside the old
        //    one, which then stops.
        let quiet = sinkText.replacingOccurrences(
            of: "operations:", with: "  values:\n    showData: false\noperations:")
        try #require(quiet != sinkText)
        try quiet.write(to: sinkFile, atomically: true, encoding: .utf8)
        let upgraded = try await Self.waitFor(node, "console-sink") { $0?.deployment != nil && $0?.state == .active }
        #expect(upgraded?.previousVersion == "1.0.0")
        #expect(upgraded?.deployment?.contains("upgrade from 1.0.0") == true, "\(upgraded?.deployment ?? "none")")
        #expect(
            try await Self.logged(node, "deploy: upgrade console-sink: upgraded from 1.0.0"),
            "the log names both versions: \(node.stderr.split(separator: "\n").filter { $0.contains("deploy") })")

        // 3. Rolled back by command to the instance configuration it replaced.
        let rollback = try await node.cli(["plugin", "rollback", "console-sink"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(rollback.stdout.contains("rolled back from 1.0.0"), "\(rollback.stdout)")

        // 4. Replaced by command from a manifest elsewhere: it is copied over the running one's file.
        let staged = try directory.subdirectory("staged").appendingPathComponent("console-sink.yaml")
        try quiet.write(to: staged, atomically: true, encoding: .utf8)
        let upgrade = try await node.cli(["plugin", "upgrade", "console-sink", staged.path])
        #expect(upgrade.status == 0, "\(upgrade.stdout)\(upgrade.stderr)")
        #expect(try String(contentsOf: sinkFile, encoding: .utf8) == quiet)

        // 5. The checker: heartbeats paused, the sink's group drained; every acknowledged heartbeat was logged.
        _ = try await node.call("heartbeat-source", "set-interval", ["3600000"])
        try await Task.sleep(for: .milliseconds(300))
        let published = try #require(UInt64(try await node.call("heartbeat-source", "published").output))
        #expect(published > 50, "too few heartbeats to show anything: \(published)")
        let deadline = ContinuousClock.now + .seconds(15)
        var logged = Self.loggedOffsets(node)
        while (logged.max() ?? 0) + 1 < published, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            logged = Self.loggedOffsets(node)
        }
        let first = try #require(logged.min(), "the sink logged no heartbeat")
        let missing = (first..<published).filter { !logged.contains($0) }
        #expect(missing.isEmpty, "acknowledged heartbeats never delivered to the sink's group: \(missing.prefix(20))")
        #expect(
            logged.max() == published - 1,
            "offsets run from 0; \(published) published, last logged \(logged.max() ?? 0)")

        // 6. Removed by deleting its file; 7. removed by command (its manifest is archived, not deleted).
        try FileManager.default.removeItem(at: sinkFile)
        _ = try await Self.waitFor(node, "console-sink") { $0 == nil }
        #expect(try await Self.logged(node, "deploy: remove console-sink"))
        let remove = try await node.cli(["plugin", "remove", "heartbeat-source"])
        #expect(remove.status == 0, "\(remove.stdout)\(remove.stderr)")
        #expect(try await node.list().contains { $0.name == "heartbeat-source" } == false)
        let archived = try FileManager.default.contentsOfDirectory(
            atPath: directory.url.appendingPathComponent("data/removed-manifests").path)
        #expect(archived.contains { $0.hasSuffix("heartbeat-source.yaml") }, "\(archived)")
        #expect(node.process.isRunning)
    }

    @Test("a changed manifest that does not parse, or a registry plugin's, is refused and the running version serves")
    func refusedUpgrade() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests()
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let sinkFile = manifests.appendingPathComponent("console-sink.yaml")
        let sinkText = try String(contentsOf: sinkFile, encoding: .utf8)

        try (sinkText + "\nbogus: key\n").write(to: sinkFile, atomically: true, encoding: .utf8)
        let refused = try await Self.waitFor(node, "console-sink") { $0?.deployment != nil }
        #expect(refused?.state == .active)
        #expect(refused?.version == "1.0.0")
        #expect(refused?.deployment?.contains("bogus") == true, "\(refused?.deployment ?? "none")")

        // A registry plugin is not replaced under its clients: refused with the reason, the old one serves.
        // (Storage plugins are replaced: StorageUpgradeTests.)
        let registryFile = manifests.appendingPathComponent("standalone-registry.yaml")
        let registryText = try String(contentsOf: registryFile, encoding: .utf8)
        try registryText.replacingOccurrences(of: "\nversion: ", with: "\nversion: 9").write(
            to: registryFile, atomically: true, encoding: .utf8)
        let registry = try await Self.waitFor(node, "standalone-registry") { $0?.deployment != nil }
        #expect(registry?.state == .active)
        #expect(registry?.deployment?.contains("restart the node") == true, "\(registry?.deployment ?? "none")")
    }
}
