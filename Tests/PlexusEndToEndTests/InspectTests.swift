import Foundation
import Testing

/// `plexus plugin inspect` and the CLI's behaviour without a node, through the real binary.
@Suite("plexus plugin inspect")
struct InspectTests {
    /// The value of the first `key  value` line of an inspect report.
    static func value(_ key: String, in report: String) -> String? {
        report.split(separator: "\n").first { $0.hasPrefix(key + " ") }.map {
            $0.dropFirst(key.count).trimmingCharacters(in: .whitespaces)
        }
    }

    static func sha256sum(_ path: String, in directory: URL) async throws -> String {
        let result = try await Command.run(URL(fileURLWithPath: "/usr/bin/env"), ["sha256sum", path], in: directory)
        let digest = try #require(result.stdout.split(separator: " ").first.map(String.init))
        try #require(result.status == 0 && digest.count == 64, "sha256sum failed: \(result.stderr)")
        return digest
    }

    @Test(
        "inspecting a shipped manifest verifies and negotiates with its library and prints its sha256",
        arguments: [("heartbeat-source", "libHeartbeatSource.so"), ("console-sink", "libConsoleSink.so")])
    func shippedManifest(_ name: String, _ library: String) async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let products = try Repository.products()
        let manifest = Repository.root.appendingPathComponent("plugin-manifests/\(name).yaml").path
        let result = try await Command.run(
            try Repository.plexus(), ["plugin", "inspect", manifest, "--plugin-path", products.path], in: directory.url)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        #expect(Self.value("name", in: result.stdout) == name)
        #expect(Self.value("plugin name", in: result.stdout) == name)
        let libraryPath = products.appendingPathComponent(library).standardizedFileURL.path
        #expect(Self.value("library", in: result.stdout) == libraryPath)
        let sha256 = try #require(Self.value("sha256", in: result.stdout), "no sha256 line in:\n\(result.stdout)")
        #expect(sha256.hasPrefix(try await Self.sha256sum(libraryPath, in: directory.url) + " "))
        #expect(Self.value("verdict", in: result.stdout)?.contains("would load, create and start") == true)
    }

    @Test("inspecting a library reports what its descriptor says, and refuses one without the entry symbol")
    func libraries() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let ok = try await Repository.compileFixture("ok_minimal", into: directory.url)
        let good = try await Command.run(try Repository.plexus(), ["plugin", "inspect", ok.path], in: directory.url)
        #expect(good.status == 0, "\(good.stdout)\(good.stderr)")
        #expect(Self.value("plugin name", in: good.stdout) == "ok-minimal")
        #expect(Self.value("plugin abi", in: good.stdout) == "1.4", "ok_minimal is built from the current header")
        #expect(Self.value("sha256", in: good.stdout) == (try await Self.sha256sum(ok.path, in: directory.url)))

        let missing = try await Repository.compileFixture("missing_entry", into: directory.url)
        let bad = try await Command.run(
            try Repository.plexus(), ["plugin", "inspect", missing.path], in: directory.url)
        #expect(bad.status != 0)
        let verdict = try #require(Self.value("verdict", in: bad.stdout), "no verdict in:\n\(bad.stdout)")
        #expect(verdict.contains("entry-missing"))
        #expect(verdict.contains("px_plugin_entry_v1"))
    }

    @Test("inspecting a manifest whose library cannot be found exits non-zero and says where it looked")
    func manifestWithoutLibrary() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifest = Repository.root.appendingPathComponent("plugin-manifests/heartbeat-source.yaml").path
        let result = try await Command.run(try Repository.plexus(), ["plugin", "inspect", manifest], in: directory.url)
        #expect(result.status != 0)
        #expect(Self.value("verdict", in: result.stdout)?.contains("library-not-found") == true, "\(result.stdout)")
    }

    @Test("the CLI says clearly when no node answers")
    func noNode() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        // Port 1 on loopback: privileged, and nothing listens there.
        let result = try await Command.run(
            try Repository.plexus(), ["plugin", "list", "--admin", "127.0.0.1:1"], in: directory.url)
        #expect(result.status != 0)
        #expect(result.stderr.contains("no node answers at 127.0.0.1:1"), "\(result.stderr)")
    }
}
