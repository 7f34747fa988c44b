import Foundation
import Testing

/// `plexus conformance` through the real binary: a shipped plugin passes, a deliberately broken one fails
/// the rules its header lists, and a library that cannot be loaded is reported as such.
@Suite("plexus conformance")
struct ConformanceCommandTests {
    /// The `PASS …`/`FAIL …` lines of a text report, by rule.
    static func verdicts(_ stdout: String) -> [String: String] {
        var verdicts: [String: String] = [:]
        for line in stdout.split(separator: "\n") {
            let words = line.split(separator: " ", maxSplits: 2)
            guard words.count >= 2, words[0] == "PASS" || words[0] == "FAIL" else { continue }
            verdicts[String(words[1].hasSuffix(":") ? words[1].dropLast() : words[1])] = String(words[0])
        }
        return verdicts
    }

    @Test("MemoryStorage passes the storage suite: exit 0, every rule PASS")
    func memoryStorage() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let library = try Repository.products().appendingPathComponent("libMemoryStorage.so")
        let result = try await Command.run(
            try Repository.plexus(), ["conformance", "--kind", "storage", library.path], in: directory.url)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let lines = result.output.split(separator: "\n").map(String.init)
        #expect(lines.first?.hasPrefix("storage conformance of memory-storage ") == true, "\(result.stdout)")
        #expect(lines.last?.hasSuffix(" passed, 0 failed") == true, "\(result.stdout)")
        let verdicts = Self.verdicts(result.stdout)
        #expect(verdicts.count >= 20 && verdicts.values.allSatisfy { $0 == "PASS" }, "\(result.stdout)")
        #expect(verdicts["storage.append.concurrent-appenders"] == "PASS")
    }

    @Test("StandaloneRegistry passes the registry suite with its shipped manifest and a config")
    func standaloneRegistry() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let library = try Repository.products().appendingPathComponent("libStandaloneRegistry.so")
        let manifest = Repository.root.appendingPathComponent("plugin-manifests/standalone-registry.yaml")
        let data = directory.url.appendingPathComponent("registry-data")
        let result = try await Command.run(
            try Repository.plexus(),
            [
                "conformance", "--kind", "registry", library.path, "--manifest", manifest.path, "--config",
                #"{"sweepIntervalMs": 50}"#, "--data-dir", data.path, "--json",
            ], in: directory.url)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
        #expect(report["plugin"] as? String == "standalone-registry")
        #expect(report["failed"] as? Int == 0)
        #expect((report["results"] as? [Any])?.count == report["passed"] as? Int)
        #expect(FileManager.default.fileExists(atPath: data.path), "a given data directory is created and kept")
    }

    @Test("the broken storage fixture fails the rules its header lists, and the command exits 1")
    func brokenStorage() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let library = try await Repository.compileFixture("broken_storage", into: directory.url)
        let result = try await Command.run(
            try Repository.plexus(), ["conformance", "--kind", "storage", library.path, "--timeout", "1"],
            in: directory.url)
        #expect(result.status == 1, "\(result.stdout)\(result.stderr)")
        let source = try String(
            contentsOf: Repository.root.appendingPathComponent("Tests/Fixtures/plugins/broken_storage.c"),
            encoding: .utf8)
        let listed = Set(
            source.split(separator: "\n").compactMap { line -> String? in
                let words = line.split(separator: " ")
                return words.count >= 2 && words[0] == "*" && words[1].hasPrefix("storage.") ? String(words[1]) : nil
            })
        let verdicts = Self.verdicts(result.stdout)
        #expect(Set(verdicts.filter { $0.value == "FAIL" }.keys) == listed, "\(result.stdout)")
        #expect(result.output.hasSuffix("\(verdicts.count - listed.count) passed, \(listed.count) failed"))
        #expect(result.stdout.contains("FAIL storage.offsets.none-before-commit: expected PX_OFFSET_NONE"))
    }

    @Test(
        "HeartbeatSource passes the connector suite through the binary; rules it does not take are N/A with the reason")
    func heartbeatConnector() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let library = try Repository.products().appendingPathComponent("libHeartbeatSource.so")
        let manifest = Repository.root.appendingPathComponent("plugin-manifests/heartbeat-source.yaml")
        let result = try await Command.run(
            try Repository.plexus(),
            [
                "conformance", "--kind", "connector", library.path, "--manifest", manifest.path, "--config",
                #"{"topic": "beats", "interval_ms": 20}"#, "--observe", "3",
            ], in: directory.url)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let verdicts = Self.verdicts(result.stdout)
        #expect(verdicts["connector.source.publishes-valid-events"] == "PASS", "\(result.stdout)")
        #expect(verdicts["connector.source.stop-clean"] == "PASS", "\(result.stdout)")
        #expect(
            result.stdout.contains("N/A  connector.sink.answers-exactly-once: the connector did not subscribe"),
            "\(result.stdout)")
        #expect(result.stdout.contains("N/A  connector.source.at-least-once-across-restart: its manifest provides"))
        #expect(result.stdout.contains(" not applicable"), "\(result.stdout)")
    }

    @Test("a library that cannot be loaded, or a plugin of another kind, exits 2 with the reason")
    func notRunnable() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let missing = try await Repository.compileFixture("missing_entry", into: directory.url)
        let refused = try await Command.run(
            try Repository.plexus(), ["conformance", "--kind", "storage", missing.path], in: directory.url)
        #expect(refused.status == 2, "\(refused.stdout)\(refused.stderr)")
        #expect(refused.stderr.contains("px_plugin_entry_v1"), "\(refused.stderr)")

        let heartbeat = try Repository.products().appendingPathComponent("libHeartbeatSource.so")
        let wrongKind = try await Command.run(
            try Repository.plexus(), ["conformance", "--kind", "registry", heartbeat.path], in: directory.url)
        #expect(wrongKind.status == 2, "\(wrongKind.stdout)\(wrongKind.stderr)")
        #expect(wrongKind.stderr.contains("not registry"), "\(wrongKind.stderr)")
        #expect(wrongKind.stdout.isEmpty, "nothing is run, so nothing is reported")
    }
}
