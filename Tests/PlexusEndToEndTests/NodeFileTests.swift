import Foundation
import PlexusKernel
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The node file's `plugins.config` over shipped manifests, `GET /v1/ready`, and `plexus serve --strict`, on a
/// real node.
@Suite("Node file and readiness")
struct NodeFileTests {
    /// Writes a node file with `plugins.config` set to `pluginConfig` (YAML under `plugins.config:`).
    static func nodeFile(in directory: TestDirectory, _ pluginConfig: String) throws -> URL {
        let file = directory.url.appendingPathComponent("plexus.yaml")
        try "plugins:\n  config:\n\(pluginConfig)".write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    @Test("plugins.config in the node file sets a shipped plugin's value; the manifest stays unedited")
    func override() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests()
        let manifestText = try String(
            contentsOf: manifests.appendingPathComponent("tcp-protocol.yaml"), encoding: .utf8)
        let port = try TCPReconnectionTests.freePort()
        let file = try Self.nodeFile(in: directory, "    tcp-protocol: {port: \(port)}\n")
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--config", file.path])
        defer { node.kill() }
        #expect(try await node.tcpPort() == port)
        #expect(node.stderr.contains("tcp-protocol: the node file sets port over"), "\(node.stderr)")
        let after = try String(contentsOf: manifests.appendingPathComponent("tcp-protocol.yaml"), encoding: .utf8)
        #expect(after == manifestText)
        let ready = try await HTTPTest.request(port: node.port, "GET", "/v1/ready")
        #expect(ready.status == 200, "\(String(decoding: ready.body, as: UTF8.self))")
    }

    @Test("a node value the plugin's schema refuses fails that plugin, naming the node file's field")
    func invalidOverride() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let file = try Self.nodeFile(in: directory, "    tcp-protocol: {port: 70000}\n")
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(), data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--config", file.path])
        defer { node.kill() }
        let tcp = try #require(
            try await node.list().first { $0.name == "tcp-protocol.yaml" || $0.name == "tcp-protocol" })
        #expect(tcp.state == .failed)
        #expect(tcp.errorCode == "config-invalid")
        #expect(tcp.lastError?.contains("plugins.config.tcp-protocol.port") == true, "\(tcp.lastError ?? "none")")
        #expect(tcp.lastError?.contains(file.path) == true, "\(tcp.lastError ?? "none")")
    }

    @Test("/v1/ready is 503 naming the protocol whose port is taken while /v1/health stays 200; --strict exits 1")
    func readiness() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        // Hold a listening socket on the port the TCP protocol is told to use.
        let taken = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(taken) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(taken, $0, length) == 0 && listen(taken, 1) == 0 && getsockname(taken, $0, &length) == 0
            }
        }
        try #require(bound)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let file = try Self.nodeFile(in: directory, "    tcp-protocol: {port: \(port)}\n")
        let manifests = try directory.shippedManifests()

        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--config", file.path])
        let health = try await HTTPTest.request(port: node.port, "GET", "/v1/health")
        #expect(health.status == 200)
        let ready = try await HTTPTest.request(port: node.port, "GET", "/v1/ready")
        let body = String(decoding: ready.body, as: UTF8.self)
        #expect(ready.status == 503, "\(body)")
        #expect(body.contains(#""status":"not-ready""#), "\(body)")
        #expect(body.contains("tcp-protocol is failed"), "\(body)")
        node.kill()

        let strict = try await Command.run(
            try Repository.plexus(),
            [
                "serve", "--config", file.path, "--manifests", manifests.path, "--plugin-path",
                try Repository.products().path, "--admin-port", "0", "--data-dir",
                try directory.subdirectory("strict-data").path, "--strict",
            ], in: directory.url, timeout: .seconds(60))
        #expect(strict.status == 1, "\(strict.stdout)\(strict.stderr)")
        #expect(strict.stderr.contains("not ready (--strict): tcp-protocol is failed"), "\(strict.stderr)")
        #expect(strict.stderr.contains("kernel stopped"), "the plugins that started are stopped: \(strict.stderr)")
    }
}

/// `plugins.probe`: libraries without a pinned sha256 are loaded in a child process first.
@Suite("Plugin probe")
struct PluginProbeTests {
    @Test(
        "with plugins.probe, a library that crashes while loading is refused and the node stays up",
        arguments: [
            ("crash_in_entry", "signal 11"), ("crash_in_constructor", "signal 11"),
        ])
    func crashing(_ stem: String, _ reason: String) async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests()
        let library = try await Repository.compileFixture(stem, into: manifests)
        let name = stem.replacingOccurrences(of: "_", with: "-")
        try """
        manifest: 1
        name: \(name)
        version: 1.0.0
        kind: connector
        library: \(library.lastPathComponent)
        abi: {major: 1, minor: 4}

        """.write(to: manifests.appendingPathComponent("\(name).yaml"), atomically: true, encoding: .utf8)
        let file = directory.url.appendingPathComponent("plexus.yaml")
        try "plugins:\n  probe: true\n".write(to: file, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--config", file.path])
        defer { node.kill() }
        let plugins = try await node.list()
        let crashed = try #require(plugins.first { $0.name == name }, "\(plugins.map(\.name))")
        #expect(crashed.state == .failed)
        #expect(crashed.errorCode == "load-failed")
        #expect(
            crashed.lastError?.contains("the probe process died with \(reason)") == true,
            "\(crashed.lastError ?? "none")")
        // The shipped plugins were probed too, and run.
        #expect(plugins.first { $0.name == "console-sink" }?.state == .active)
        #expect(plugins.first { $0.name == "heartbeat-source" }?.state == .active)
        #expect(node.process.isRunning)
    }
}
