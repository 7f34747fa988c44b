import Foundation
import PlexusKernel
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The real `plexus` binary serving the real plugin libraries with real manifests.
@Suite("plexus serve", .timeLimit(.minutes(2)))
struct ServeTests {
    @Test(
        "the shipped plugins run: heartbeats are stored, delivered and received, operations answer",
        arguments: [[], ["--default-storage", "memory-storage"]])
    func shippedPlugins(storage: [String]) async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 100), data: try directory.subdirectory("data"),
            in: directory.url, extraArguments: storage)
        defer { node.kill() }

        let chosen =
            storage.isEmpty
            ? "topics: no topics section; default storage raft-log (durable)"
            : "topics: default storage memory-storage (configured; not durable"
        #expect(node.stderr.contains(chosen), "the node says where topics are stored:\n\(node.stderr)")

        let plugins = try await node.list()
        #expect(
            Set(plugins.map(\.name)) == [
                "heartbeat-source", "console-sink", "memory-storage", "raft-log", "standalone-registry", "tcp-protocol",
                "http-protocol", "grpc-protocol", "ledger-storage",
            ])
        for plugin in plugins {
            #expect(plugin.state == .active, "\(plugin.name): \(plugin.lastError ?? "")")
            #expect(plugin.health == "healthy")
            #expect(plugin.sha256?.count == 64)
        }

        let published = try await node.count("heartbeat-source", "published")
        #expect(published > 0, "heartbeat-source published nothing within 10 s at a 100 ms interval")
        let received = try await node.count("console-sink", "received")
        #expect(received > 0, "console-sink received nothing within 10 s")

        // The admin endpoint's /metrics: swift-prometheus's exposition, labels saying what they name.
        let metrics = try await HTTPTest.request(port: node.port, "GET", "/metrics")
        #expect(metrics.status == 200)
        let lines = metrics.text.split(separator: "\n").map(String.init)
        #expect(lines.contains("# TYPE plexus_heartbeats_published counter"), "\(metrics.text)")
        #expect(lines.contains { $0.hasPrefix(#"plexus_heartbeats_published{plugin="heartbeat-source"} "#) })
        #expect(lines.contains { $0.hasPrefix(#"plexus_events_published_total{topic="heartbeat"} "#) })
        #expect(lines.contains { $0.hasPrefix(#"plexus_events_delivered_total{topic="heartbeat",group="#) })
        #expect(lines.contains { $0.hasPrefix(#"plexus_publish_duration_seconds_bucket{topic="heartbeat",le="#) })

        let table = try await node.cli(["plugin", "list"])
        #expect(table.status == 0)
        #expect(table.stdout.hasPrefix("NAME"))
        #expect(
            table.stdout.split(separator: "\n").contains { $0.hasPrefix("heartbeat-source") && $0.contains(" active ") }
        )

        let bad = try await node.call("heartbeat-source", "set-interval", ["abc"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("operations.set-interval: argument 1 'abc' is not a valid uint64"), "\(bad.stderr)")

        let tooMany = try await node.call("heartbeat-source", "set-interval", ["1", "2"])
        #expect(tooMany.status != 0)
        #expect(tooMany.stderr.contains("takes 1 argument(s)"), "\(tooMany.stderr)")

        let unknown = try await node.call("heartbeat-source", "reset")
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("no operation 'reset'"), "\(unknown.stderr)")

        let good = try await node.call("heartbeat-source", "set-interval", ["50"])
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.output == "PX_OK", "px_op_heartbeat_set_interval returns PX_OK (signature return type status)")
    }

    @Test("without --config, plexus.yaml in the working directory is the node file, and the log says so")
    func nodeFileInWorkingDirectory() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        try """
        node:
          id: from-working-directory
        topics:
          defaultStorage: memory-storage
        """.write(to: directory.url.appendingPathComponent("plexus.yaml"), atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        #expect(node.stderr.contains("node file: plexus.yaml in the working directory"), "\(node.stderr)")
        #expect(
            node.stderr.contains("topics: default storage memory-storage (configured; not durable"),
            "the node file's topics section applies:\n\(node.stderr)")
        let health = try await HTTPTest.request(port: node.port, "GET", "/v1/health")
        #expect(health.status == 200)
        #expect(health.text.contains("from-working-directory"), "\(health)")
    }

    @Test("a broken fixture fails on its own; the shipped plugins beside it stay active")
    func brokenFixtureBesideShippedPlugins() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 100)
        let libraries = try directory.subdirectory("fixtures")
        _ = try await Repository.compileFixture("create_fails", into: libraries)
        try """
        manifest: 1
        name: create-fails
        version: 1.0.0
        kind: connector
        library: libcreate_fails.so
        abi: {major: 1, minor: 4}
        """.write(to: manifests.appendingPathComponent("create-fails.yaml"), atomically: true, encoding: .utf8)

        let node = try await NodeProcess.start(
            manifests: manifests, pluginPaths: [libraries], data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }

        let plugins = try await node.list()
        #expect(plugins.count == 10, "the nine shipped plugins and the broken fixture")
        let broken = try #require(plugins.first { $0.name == "create-fails" })
        #expect(broken.state == .failed)
        #expect(broken.errorCode == "hook-failed")
        #expect(broken.lastError?.contains("fixture: create refused on purpose") == true, "\(broken.lastError ?? "")")
        for plugin in plugins where plugin.name != "create-fails" {
            #expect(plugin.state == .active, "\(plugin.name): \(plugin.lastError ?? "")")
        }
        #expect(try await node.count("heartbeat-source", "published") > 0)

        let call = try await node.call("create-fails", "anything")
        #expect(call.status != 0, "a failed plugin answers no operation")
    }

    @Test("SIGTERM stops every plugin in reverse start order and the node exits 0")
    func sigterm() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 100), data: try directory.subdirectory("data"),
            in: directory.url)
        defer { node.kill() }
        let plugins = try await node.list()
        #expect(plugins.allSatisfy { $0.state == .active }, "\(plugins.map { "\($0.name)=\($0.state)" })")

        let exited = try await node.signal(SIGTERM, waitingUpTo: .seconds(10))
        try #require(exited, "the node did not exit within 10 s of SIGTERM")
        #expect(node.process.terminationReason == .exit)
        #expect(node.process.terminationStatus == 0)

        let lines = node.stderr.split(separator: "\n").map(String.init)
        // SwiftNIO's complaint about work scheduled on a loop already shut down (a crash in later versions).
        #expect(!lines.contains { $0.contains("Cannot schedule tasks on an EventLoop") }, "\(node.stderr.suffix(2000))")
        func index(_ text: String) -> Int? { lines.firstIndex { $0.contains(text) } }
        let startOrder = lines.compactMap { line -> String? in
            guard let range = line.range(of: #"plugin [a-z0-9-]+: created -> active"#, options: .regularExpression)
            else { return nil }
            return String(line[range].dropFirst("plugin ".count).prefix { $0 != ":" })
        }
        #expect(
            Set(startOrder) == [
                "heartbeat-source", "console-sink", "memory-storage", "raft-log", "standalone-registry", "tcp-protocol",
                "http-protocol", "grpc-protocol", "ledger-storage",
            ],
            "every shipped plugin started: \(startOrder)")
        #expect(
            (startOrder.firstIndex(of: "heartbeat-source") ?? .max)
                < (startOrder.firstIndex(of: "console-sink") ?? .min),
            "console-sink optionally requires heartbeat, so starts after it")
        #expect(
            (startOrder.firstIndex(of: "memory-storage") ?? .max)
                < (startOrder.firstIndex(of: "heartbeat-source") ?? .min),
            "heartbeat-source optionally requires storage, so starts after it")

        var previousStopped: Int?
        for name in startOrder.reversed() {
            let stopping = try #require(
                index("plugin \(name): active -> stopping"), "no 'active -> stopping' for \(name)")
            let stopped = try #require(
                index("plugin \(name): stopping -> stopped"), "no 'stopping -> stopped' for \(name)")
            #expect(stopping < stopped)
            if let previousStopped {
                #expect(previousStopped < stopping, "\(name) must be stopped after the plugin started after it")
            }
            previousStopped = stopped
        }
        let stoppedKernel = try #require(index("kernel stopped"))
        #expect(stoppedKernel > (previousStopped ?? Int.max))
    }
}
