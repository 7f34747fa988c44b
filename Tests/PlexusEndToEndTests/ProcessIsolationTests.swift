import Foundation
import PlexusABI
import PlexusClient
import PlexusCore
import PlexusKernel
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `isolation: process` on a real node: plugins that crash, hang or leak run in a `plexus plugin-host` child, and
/// the node stays up, restarts the child, quarantines it when it fails too often, and serves events through it.
@Suite("process isolation", .serialized, .timeLimit(.minutes(3)))
struct ProcessIsolationTests {
    /// The lines that make a manifest process-isolated, with a quick restart policy.
    static let isolated =
        "isolation: process\nrestart: {maxFailures: 3, windowSeconds: 60, backoffMs: 50, maxBackoffMs: 200}\n"

    /// A directory with the shipped manifests and a `faulty-storage` manifest (`fault` as given, `isolation`
    /// lines appended), and the directory its library was compiled to.
    static func faultyNode(
        _ directory: TestDirectory, fault: String, isolation: String = isolated, stopMs: Int = 1000
    ) async throws -> (manifests: URL, libraries: URL) {
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        // Only the test's publishes reach the storage: no heartbeats counting as appends.
        for name in ["heartbeat-source.yaml", "console-sink.yaml"] {
            try? FileManager.default.removeItem(at: manifests.appendingPathComponent(name))
        }
        let libraries = try directory.subdirectory("lib")
        _ = try await Repository.compileFixture("faulty_storage", into: libraries)
        let manifest = """
            manifest: 1
            name: faulty-storage
            version: 1.0.0
            kind: storage
            library: libfaulty_storage.so
            abi: {major: \(PX_ABI_VERSION_MAJOR), minor: \(PX_ABI_VERSION_MINOR)}
            provides:
              - capability: storage
                version: 1.0.0
            config:
              schema:
                fault:
                  type: string
                  default: none
                  description: How the fixture fails.
              values:
                fault: \(fault)
            deadlines: {start_ms: 5000, stop_ms: \(stopMs)}

            """ + isolation
        try manifest.write(
            to: manifests.appendingPathComponent("faulty-storage.yaml"), atomically: true, encoding: .utf8)
        return (manifests, libraries)
    }

    /// The `plexus plugin-host` children of process `parent`.
    static func pluginHosts(of parent: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { Int32($0) }.filter { pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return false }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 2, Int32(fields[1]) == parent else { return false }
            let command = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
            return String(decoding: command, as: UTF8.self).contains("plugin-host")
        }.sorted()
    }

    static func status(_ node: NodeProcess, _ name: String) async throws -> PluginStatus {
        try #require(try await node.list().first { $0.name == name }, "\(name) is not listed")
    }

    /// Whether `check` holds within `timeout`.
    static func eventually(_ timeout: Duration = .seconds(20), _ check: () async throws -> Bool) async throws -> Bool {
        try await PlexusEndToEndTests.eventually(timeout, check)
    }

    @Test(
        "a crash on the 10th append fails that publish, the child is restarted, repeated crashes quarantine it, and a restart clears that"
    )
    func crashMidTraffic() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (manifests, libraries) = try await Self.faultyNode(directory, fault: "append")
        let node = try await NodeProcess.start(
            manifests: manifests, pluginPaths: [libraries], data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "faulty-storage"])
        defer { node.kill() }
        let nodePID = node.process.processIdentifier
        let firstChild = try #require(Self.pluginHosts(of: nodePID).first, "no plugin-host child runs")
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: try await node.tcpPort(), name: "isolation", reconnect: false))

        // Publishes one at a time: the 10th append of each child crashes it.
        var failures: [String] = []
        var acknowledged = 0
        func publish(_ n: Int) async {
            do {
                _ = try await client.publish(topic: "faulty", CloudEvent(id: "e\(n)", source: "/t", type: "t"))
                acknowledged += 1
            } catch {
                failures.append("\(error)")
            }
        }
        var n = 0
        while failures.isEmpty && n < 20 {
            await publish(n)
            n += 1
        }
        #expect(acknowledged >= 1 && acknowledged <= 9, "appends before the 10th succeed (\(acknowledged))")
        #expect(failures.count == 1, "the publish whose append crashed the child fails to the client")
        #expect(failures.first.map { $0.contains("signal 11") || $0.contains("UNAVAILABLE") } ?? false, "\(failures)")
        #expect(node.process.isRunning, "the node stays up")

        // Restarted: publishes succeed again through a new child.
        let restarted = try await Self.eventually {
            guard let child = Self.pluginHosts(of: nodePID).first, child != firstChild else { return false }
            return (try? await client.publish(topic: "faulty", CloudEvent(id: "again", source: "/t", type: "t"))) != nil
        }
        #expect(restarted, "the plugin-host was not restarted: \(node.stderr.suffix(2000))")
        #expect(try await Self.status(node, "faulty-storage").state == .active)

        // Two more crashes within the window: quarantined (maxFailures 3).
        n = 100
        let quarantined = try await Self.eventually(.seconds(30)) {
            n += 1
            await publish(n)
            return try await Self.status(node, "faulty-storage").state == .quarantined
        }
        #expect(quarantined, "not quarantined after repeated crashes")
        let status = try await Self.status(node, "faulty-storage")
        #expect(status.lastError?.contains("quarantined") ?? false, "\(status.lastError ?? "no error")")
        #expect(status.lastError?.contains("signal 11") ?? false, "\(status.lastError ?? "no error")")
        #expect(node.process.isRunning)
        let refused = try? await client.publish(topic: "faulty", CloudEvent(id: "q", source: "/t", type: "t"))
        #expect(refused == nil, "a quarantined storage refuses appends")

        // `plugin restart` clears the quarantine.
        let restart = try await node.cli(["plugin", "restart", "faulty-storage"])
        #expect(restart.status == 0, "\(restart.stdout) \(restart.stderr)")
        #expect(try await Self.status(node, "faulty-storage").state == .active)
        let afterRestart = try await Self.eventually(.seconds(10)) {
            (try? await client.publish(topic: "faulty", CloudEvent(id: "r", source: "/t", type: "t"))) != nil
        }
        #expect(afterRestart, "publishes succeed after the quarantine was cleared")
        await client.close()
    }

    @Test(
        "a crash in on_create or on_start fails the plugin with the signal; the node stays up",
        arguments: ["create", "start"])
    func crashAtStart(_ fault: String) async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (manifests, libraries) = try await Self.faultyNode(directory, fault: fault)
        let node = try await NodeProcess.start(
            manifests: manifests, pluginPaths: [libraries], data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let status = try await Self.status(node, "faulty-storage")
        #expect(status.state == .failed)
        #expect(status.lastError?.contains("signal 11") ?? false, "\(status.lastError ?? "no error")")
        #expect(status.lastError?.contains("on_\(fault)") ?? false, "\(status.lastError ?? "no error")")
        #expect(node.process.isRunning)
        #expect(try await Self.status(node, "memory-storage").state == .active, "the other plugins serve")
        #expect(Self.pluginHosts(of: node.process.processIdentifier).isEmpty, "the crashed child is reaped")
    }

    @Test("an on_stop that never returns: only the child is killed, the plugin stops and starts again")
    func hangingStop() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (manifests, libraries) = try await Self.faultyNode(directory, fault: "stop")
        let node = try await NodeProcess.start(
            manifests: manifests, pluginPaths: [libraries], data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        #expect(try await Self.status(node, "faulty-storage").state == .active)
        let stop = try await node.cli(["plugin", "stop", "faulty-storage"])
        #expect(stop.status == 0, "\(stop.stdout) \(stop.stderr)")
        #expect(try await Self.status(node, "faulty-storage").state == .stopped)
        let output = node.stderr + ((try? String(contentsOf: node.stdoutFile, encoding: .utf8)) ?? "")
        #expect(output.contains("on_stop did not return"), "the hang is reported")
        #expect(Self.pluginHosts(of: node.process.processIdentifier).isEmpty, "the hung child was killed")
        let start = try await node.cli(["plugin", "start", "faulty-storage"])
        #expect(start.status == 0, "not abandoned, so it starts again: \(start.stdout) \(start.stderr)")
        #expect(try await Self.status(node, "faulty-storage").state == .active)
    }

    @Test("in-process, the same hanging on_stop is reported by the deadline and the instance abandoned")
    func hangingStopInProcess() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (manifests, libraries) = try await Self.faultyNode(directory, fault: "stop", isolation: "")
        let node = try await NodeProcess.start(
            manifests: manifests, pluginPaths: [libraries], data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        _ = try await node.cli(["plugin", "stop", "faulty-storage"])
        let status = try await Self.status(node, "faulty-storage")
        #expect(status.state == .failed)
        #expect(status.errorCode == "deadline-exceeded", "\(status.lastError ?? "")")
        #expect(status.lastError?.contains("on_stop did not return") ?? false, "\(status.lastError ?? "")")
    }

    @Test("a thread the plugin leaks ends with its child when the plugin stops")
    func leakedThread() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (manifests, libraries) = try await Self.faultyNode(directory, fault: "thread")
        let node = try await NodeProcess.start(
            manifests: manifests, pluginPaths: [libraries], data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let children = Self.pluginHosts(of: node.process.processIdentifier)
        #expect(children.count == 1)
        let stop = try await node.cli(["plugin", "stop", "faulty-storage"])
        #expect(stop.status == 0, "\(stop.stdout) \(stop.stderr)")
        #expect(try await Self.status(node, "faulty-storage").state == .stopped)
        let gone = try await Self.eventually(.seconds(5)) {
            Self.pluginHosts(of: node.process.processIdentifier).isEmpty
        }
        #expect(gone, "the child with the leaked thread still runs")
    }

    @Test("memory-storage in a child stores and serves events published over TCP")
    func memoryStorageServes() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        let path = manifests.appendingPathComponent("memory-storage.yaml")
        try (String(contentsOf: path, encoding: .utf8) + Self.isolated).write(
            to: path, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage"])
        defer { node.kill() }
        #expect(Self.pluginHosts(of: node.process.processIdentifier).count == 1)
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: try await node.tcpPort(), name: "mem", reconnect: false))
        var offsets: [UInt64] = []
        for n in 0..<50 {
            offsets.append(
                try await client.publish(
                    topic: "iso", CloudEvent(id: "m\(n)", source: "/m", type: "t", data: Array("payload \(n)".utf8))))
        }
        #expect(offsets == Array(offsets.first!..<(offsets.first! + 50)), "dense offsets")
        let stream = try await client.subscribe(
            topic: "iso", options: SubscribeOptions(group: "g", start: .earliest, credits: 100))
        var received: [String] = []
        for await delivery in stream {
            received.append(String(decoding: delivery.event.data, as: UTF8.self))
            delivery.ack()
            if received.count == 50 { break }
        }
        #expect(received == (0..<50).map { "payload \($0)" })
        await client.close()
    }

    @Test(
        "raft-log (fsync always) in a child, its child killed with SIGKILL mid-load: every acknowledged event survives")
    func killChildMidLoad() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000, raftValues: ["fsync": "always"])
        let path = manifests.appendingPathComponent("raft-log.yaml")
        try (String(contentsOf: path, encoding: .utf8) + Self.isolated).write(
            to: path, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "raft-log"])
        defer { node.kill() }
        let nodePID = node.process.processIdentifier
        let child = try #require(Self.pluginHosts(of: nodePID).first)
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: try await node.tcpPort(), name: "kill", reconnect: false))
        let acknowledged = Acknowledged()
        // Shared with the publishers' child tasks: a Sendable object, not local atomics a task would capture.
        let load = LoadControl()
        let publishing = Task {
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<4 {
                    group.addTask {
                        var sequence = 0
                        let deadline = ContinuousClock.now + .seconds(60)
                        while !load.stop.load(ordering: .relaxed), ContinuousClock.now < deadline {
                            let event = CloudEvent(
                                id: "p\(publisher)-\(sequence)", source: "/kill", type: "t",
                                data: Array("event \(publisher)/\(sequence)".utf8))
                            sequence += 1
                            do {
                                acknowledged.add([event], first: try await client.publish(topic: "kill", event))
                            } catch {
                                load.refused.add(1, ordering: .relaxed)
                                try? await Task.sleep(for: .milliseconds(20))
                            }
                        }
                    }
                }
            }
        }
        let loadDeadline = ContinuousClock.now + .seconds(30)
        while acknowledged.count < 300 && ContinuousClock.now < loadDeadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        #expect(Glibc.kill(child, SIGKILL) == 0)
        let before = acknowledged.count
        // Publishing goes on through the restarted child.
        let resumed = try await Self.eventually(.seconds(20)) { acknowledged.count > before + 100 }
        load.stop.store(true, ordering: .relaxed)
        await publishing.value
        #expect(resumed, "publishes did not resume after the restart: \(node.stderr.suffix(2000))")
        #expect(node.process.isRunning, "the node stays up")
        #expect(Self.pluginHosts(of: nodePID).first != child, "a new child serves")
        let status = try await Self.status(node, "raft-log")
        #expect(status.state == .active)
        #expect(status.deployment?.contains("signal 9") ?? false, "\(status.deployment ?? "no deployment note")")

        let acked = acknowledged.events
        let stream = try await client.subscribe(
            topic: "kill", options: SubscribeOptions(group: "check", start: .earliest, credits: 1000))
        let collected = Mutex<[UInt64: CloudEvent]>([:])
        let highest = acked.keys.max() ?? 0
        let collector = Task {
            for await delivery in stream {
                collected.withLock { $0[delivery.offset] = delivery.event }
                delivery.ack()
            }
        }
        _ = try await Self.eventually(.seconds(30)) {
            collected.withLock { got in acked.keys.allSatisfy { got[$0] != nil } }
        }
        collector.cancel()
        let received = collected.withLock { $0 }
        let missing = acked.filter { received[$0.key] != $0.value }.map(\.key).sorted()
        #expect(
            missing.isEmpty,
            "acknowledged events lost or changed: \(missing.prefix(20)) (of \(acked.count), highest \(highest))")
        await client.close()
    }
}

/// What the publishers of a load share with the test: whether to stop, and how many publishes were refused.
final class LoadControl: Sendable {
    let stop = Atomic<Bool>(false)
    let refused = Atomic<Int>(0)
}
