import Foundation
import PlexusKernel
import Testing

/// Replacing the durable storage plugin (raft-log, a single member that acknowledges after fdatasync) on a
/// running node while heartbeats are published into it every 5 ms and the console sink's group reads them: a
/// new configuration five times, a new version that fails to start, and a rollback. A checker then reads the
/// sink's log: every acknowledged heartbeat was delivered, each at the offset its sequence number says (none
/// lost, none stored twice or out of place), and no publish failed.
@Suite("Storage upgrade on a running node")
struct StorageUpgradeTests {
    /// `heartbeat@OFFSET id=NODE-RUN-SEQ` lines of the sink: offset -> sequence numbers logged at it.
    static func deliveries(_ node: NodeProcess) -> [UInt64: Set<UInt64>] {
        var found: [UInt64: Set<UInt64>] = [:]
        for line in node.stderr.split(separator: "\n") {
            guard let at = line.range(of: "heartbeat@"), let idAt = line.range(of: " id=") else { continue }
            guard let offset = UInt64(line[at.upperBound...].prefix { $0.isNumber }) else { continue }
            let id = line[idAt.upperBound...].prefix { $0 != " " }
            guard let seq = id.split(separator: "-").last.flatMap({ UInt64($0) }) else { continue }
            found[offset, default: []].insert(seq)
        }
        return found
    }

    /// How many lines of the node's log contain `text`.
    static func count(_ node: NodeProcess, _ text: String) -> Int {
        node.stderr.split(separator: "\n").filter { $0.contains(text) }.count
    }

    /// Waits (up to 30 s) until the log has `count` lines containing `text`.
    static func waitForLines(_ node: NodeProcess, _ text: String, count: Int) async throws -> Bool {
        let deadline = ContinuousClock.now + .seconds(30)
        while Self.count(node, text) < count {
            guard ContinuousClock.now < deadline, node.process.isRunning else { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
        return true
    }

    @Test(
        "five new configurations, a failed start and a rollback of the durable storage under load lose, duplicate and fail no acknowledged publish"
    )
    func upgradesUnderLoad() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(
            intervalMs: 5, raftValues: ["fsync": "always", "fsyncIntervalMs": "10"])
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let raftFile = manifests.appendingPathComponent("raft-log.yaml")
        let raftText = try String(contentsOf: raftFile, encoding: .utf8)
        try #require(raftText.contains("    fsyncIntervalMs: 10\n"), "\(raftText)")
        // The sink's group is reading before the first replacement.
        let started = ContinuousClock.now
        while Self.deliveries(node).count < 20, ContinuousClock.now < started + .seconds(20) {
            try await Task.sleep(for: .milliseconds(50))
        }
        try #require(Self.deliveries(node).count >= 20, "the sink logged no heartbeats")
        // Heartbeats published while the topic's stream first opened may be stored out of order; from here on
        // each is stored at the offset after the one before.
        let baseline = try #require(Self.deliveries(node).keys.max())

        // 1. Five new configurations, four applied by rewriting the manifest and the last by `plexus plugin
        //    upgrade` from a manifest elsewhere: each time stopped, started, streams reopened.
        for round in 1...5 {
            let text = raftText.replacingOccurrences(
                of: "fsyncIntervalMs: 10\n", with: "fsyncIntervalMs: \(10 + round)\n")
            if round < 5 {
                try text.write(to: raftFile, atomically: true, encoding: .utf8)
            } else {
                let staged = try directory.subdirectory("staged").appendingPathComponent("raft-log.yaml")
                try text.write(to: staged, atomically: true, encoding: .utf8)
                let upgrade = try await node.cli(["plugin", "upgrade", "raft-log", staged.path])
                #expect(upgrade.status == 0, "\(upgrade.stdout)\(upgrade.stderr)")
                #expect(upgrade.stdout.contains("stream(s) reopened"), "\(upgrade.stdout)")
            }
            let upgraded = try await Self.waitForLines(node, "deploy: upgrade raft-log: upgraded from", count: round)
            #expect(
                upgraded, "round \(round): \(node.stderr.split(separator: "\n").filter { $0.contains("deploy") })")
            try await Task.sleep(for: .milliseconds(200))
        }
        let raft = try await node.list().first { $0.name == "raft-log" }
        #expect(raft?.state == .active)
        #expect(raft?.previousVersion == "1.0.0")
        #expect(
            node.stderr.contains("stream(s) reopened"),
            "\(node.stderr.split(separator: "\n").filter { $0.contains("deploy") })")

        // 2. A configuration the plugin refuses when it starts: the old configuration starts again and serves.
        let before = try #require(UInt64(try await node.call("heartbeat-source", "published").output))
        try raftText.replacingOccurrences(
            of: "fsyncIntervalMs: 10\n", with: "fsyncIntervalMs: 10\n    nodeId: a\n    peers: \"b=127.0.0.1:1\"\n"
        ).write(to: raftFile, atomically: true, encoding: .utf8)
        let refused = try await Self.waitForLines(
            node, "deploy: refuse raft-log: version 1.0.0 did not start", count: 1)
        #expect(refused, "\(node.stderr.split(separator: "\n").filter { $0.contains("deploy") })")
        let serving = try await node.list().first { $0.name == "raft-log" }
        #expect(serving?.state == .active)
        #expect(serving?.deployment?.contains("was restarted") == true, "\(serving?.deployment ?? "none")")
        try await Task.sleep(for: .milliseconds(500))
        let after = try #require(UInt64(try await node.call("heartbeat-source", "published").output))
        #expect(after > before + 10, "publishes did not continue after the failed start: \(before) -> \(after)")

        // 3. Rolled back by command to the image and configuration it replaced.
        let rollback = try await node.cli(["plugin", "rollback", "raft-log"])
        #expect(rollback.status == 0, "\(rollback.stdout)\(rollback.stderr)")
        #expect(rollback.stdout.contains("rolled back from 1.0.0"), "\(rollback.stdout)")
        #expect(try await node.list().first { $0.name == "raft-log" }?.state == .active)
        try await Task.sleep(for: .milliseconds(300))

        // 4. The checker: heartbeats paused, the group drained.
        _ = try await node.call("heartbeat-source", "set-interval", ["3600000"])
        try await Task.sleep(for: .milliseconds(300))
        let published = try #require(UInt64(try await node.call("heartbeat-source", "published").output))
        #expect(published > 300, "too few heartbeats to show anything: \(published)")
        let deadline = ContinuousClock.now + .seconds(20)
        var delivered = Self.deliveries(node)
        while (delivered.keys.max() ?? 0) + 1 < published, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            delivered = Self.deliveries(node)
        }
        let first = try #require(delivered.keys.min())
        let missing = (first..<published).filter { delivered[$0] == nil }
        #expect(
            missing.isEmpty, "acknowledged heartbeats never delivered: \(missing.count), first \(missing.prefix(20))")
        // Each heartbeat is stored once, and from the baseline on at the offset after its predecessor's: the
        // sequence number minus the offset stays the same (no publish lost, failed, stored twice or reordered).
        let repeated = delivered.values.flatMap { $0 }.reduce(into: [UInt64: Int]()) { $0[$1, default: 0] += 1 }
            .filter { $0.value > 1 }
        #expect(repeated.isEmpty, "heartbeats stored at more than one offset: \(repeated.prefix(10))")
        let shift = delivered[baseline]?.first.map { Int64($0) - Int64(baseline) } ?? 0
        let misplaced = delivered.filter { $0.key >= baseline && $0.value != [UInt64(Int64($0.key) + shift)] }
            .sorted { $0.key < $1.key }
        #expect(misplaced.isEmpty, "offsets holding another heartbeat (or several): \(misplaced.prefix(10))")
        #expect(
            delivered.keys.max() == published - 1, "\(published) acknowledged, last offset \(delivered.keys.max() ?? 0)"
        )
        let failures = node.stderr.split(separator: "\n").filter {
            $0.contains("heartbeat to topic") || $0.contains("to topic 'heartbeat' refused")
        }
        #expect(failures.isEmpty, "publishes failed during the replacements: \(failures.prefix(5))")
        #expect(node.process.isRunning)
    }
}
