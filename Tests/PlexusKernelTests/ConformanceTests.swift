import Foundation
import PlexusABI
import PlexusConformance
import Testing

@testable import PlexusKernel

/// The conformance kit against plugins whose verdict is known: the deliberately broken fixtures of
/// `Tests/Fixtures/plugins` must fail exactly the rules their header comments list, and the shipped
/// plugins must pass every rule. Also `StandalonePlugin`, the kernel entry point the kit loads plugins with.
@Suite("Conformance kit")
struct ConformanceTests {
    /// Short timeouts: a completion that never comes fails its rule after a second, not five.
    static var options: ConformanceOptions {
        var options = ConformanceOptions()
        options.completionTimeout = .seconds(1)
        options.ttlSlack = .milliseconds(1500)
        return options
    }

    /// A fresh temporary directory for one test's data and plugin cache.
    struct Scratch {
        let root: String
        var data: String { root + "/data" }
        var cache: String { root + "/cache" }

        init() {
            root =
                FileManager.default.temporaryDirectory.appendingPathComponent(
                    "plexus-conformance-test-\(UUID().uuidString)"
                ).path
        }

        func remove() { try? FileManager.default.removeItem(atPath: root) }
    }

    static func run(
        _ kind: ConformanceKind, library: String, manifest: String? = nil, configJSON: String? = nil
    ) throws -> ConformanceReport {
        let scratch = Scratch()
        defer { scratch.remove() }
        return try Conformance.run(
            kind, library: library, manifest: manifest, configJSON: configJSON, dataDirectory: scratch.data,
            cacheDirectory: scratch.cache, options: options)
    }

    /// The rules a fixture's header comment says it must fail: the `*   <kind>.<rule>  why` lines.
    static func rulesListed(in stem: String, kind: ConformanceKind) throws -> [String] {
        let path = FixtureLibraries.sourceDirectory.appendingPathComponent("\(stem).c").path
        let source = try String(contentsOfFile: path, encoding: .utf8)
        let header = source.components(separatedBy: "*/").first ?? ""
        return header.split(separator: "\n").compactMap { line -> String? in
            let words = line.split(separator: " ")
            guard words.count >= 2, words[0] == "*", words[1].hasPrefix("\(kind.rawValue).") else { return nil }
            return String(words[1])
        }
    }

    /// A library `swift build` made (`libMemoryStorage.so`): the test bundle's build directory first, then
    /// `<root>/.build/debug`.
    /// - Throws: an error saying how to build it when it is missing, so that the test fails rather than skips.
    static func builtLibrary(_ file: String) throws -> String {
        var candidates: [URL] = []
        if let executable = Bundle.main.executableURL { candidates.append(executable.deletingLastPathComponent()) }
        candidates.append(FixtureLibraries.repositoryRoot.appendingPathComponent(".build/debug"))
        for directory in candidates {
            let path = directory.appendingPathComponent(file).path
            if FileManager.default.fileExists(atPath: path) { return path }
        }
        throw FixtureLibraries.BuildError(
            description: "\(file) is not built: none of \(candidates.map(\.path)) has it. Run `swift build` "
                + "(all products, not only the tests) before `swift test`.")
    }

    static func reason(_ rule: String, in report: ConformanceReport) -> String {
        report.results.first { $0.rule == rule }?.reason ?? ""
    }

    // MARK: Deliberately broken plugins

    @Test("broken-storage fails exactly the rules its header lists, each saying what was expected and observed")
    func brokenStorage() throws {
        let listed = try Self.rulesListed(in: "broken_storage", kind: .storage)
        let rules = Conformance.rules(for: .storage).map(\.name)
        #expect(listed.count == 8, "the header of broken_storage.c lists \(listed)")
        for rule in listed { #expect(rules.contains(rule), "broken_storage.c lists \(rule), which is no rule") }

        let report = try Self.run(.storage, library: try FixtureLibraries.library("broken_storage"))
        #expect(report.results.map(\.rule) == rules, "every rule ran once, in order")
        #expect(report.failedRules == rules.filter(listed.contains), "\n\(report.text)")
        #expect(report.plugin == "broken-storage" && report.version == "1.0.0" && report.durability == "NONE")
        #expect(report.summary == "\(rules.count - listed.count) passed, \(listed.count) failed")
        for failure in report.results where !failure.passed {
            let reason = failure.reason ?? ""
            #expect(reason.contains("expected") && reason.contains("observed"), "\(failure.rule): \(reason)")
            #expect(failure.line.hasPrefix("FAIL \(failure.rule): "))
        }

        #expect(Self.reason("storage.append.dense-offsets", in: report).contains("observed first_offset 21"))
        #expect(Self.reason("storage.append.empty-batch", in: report).contains("PX_ERR_INVALID_ARGUMENT"))
        #expect(Self.reason("storage.read.at-end-returns-nothing", in: report).contains("PX_ERR_OUT_OF_RANGE"))
        let none = Self.reason("storage.offsets.none-before-commit", in: report)
        #expect(none.contains("expected PX_OFFSET_NONE") && none.hasSuffix("observed 0"), "\(none)")
        #expect(Self.reason("storage.trim.keeps-offsets", in: report).contains("no completion within 1.0 seconds"))
        let once = Self.reason("storage.completion.exactly-once", in: report)
        #expect(once.contains("on_commit_offset called it 2 times"), "\(once)")
        #expect(once.contains("on_trim never called it"), "\(once)")
        let afterError = Self.reason("storage.completion.never-after-error", in: report)
        #expect(afterError.contains("on_read called it once after returning PX_ERR_INVALID_ARGUMENT"), "\(afterError)")
    }

    @Test("broken-registry fails exactly the rules its header lists")
    func brokenRegistry() throws {
        let listed = try Self.rulesListed(in: "broken_registry", kind: .registry)
        let rules = Conformance.rules(for: .registry).map(\.name)
        #expect(!listed.isEmpty)
        for rule in listed { #expect(rules.contains(rule), "broken_registry.c lists \(rule), which is no rule") }

        let report = try Self.run(.registry, library: try FixtureLibraries.library("broken_registry"))
        #expect(report.results.map(\.rule) == rules, "every rule ran once, in order")
        #expect(report.failedRules == rules.filter(listed.contains), "\n\(report.text)")
        for failure in report.results where !failure.passed {
            let reason = failure.reason ?? ""
            #expect(reason.contains("expected") && reason.contains("observed"), "\(failure.rule): \(reason)")
        }
        #expect(Self.reason("registry.deregister.unknown-not-found", in: report).contains("PX_ERR_NOT_FOUND"))
        #expect(Self.reason("registry.completion.exactly-once", in: report).contains("on_lookup called it 2 times"))
        // Its table has no 1.4 hooks: those rules are reported as not supported, not as failures.
        let optional = report.results.filter {
            $0.rule.hasPrefix("registry.kv.") || $0.rule.hasPrefix("registry.keepalive.")
        }
        #expect(optional.count == 8)
        #expect(
            optional.allSatisfy { $0.notSupported && $0.line.hasPrefix("SKIP \($0.rule): not supported") },
            "\(optional)")
    }

    // MARK: Shipped plugins

    @Test("MemoryStorage passes every rule of the storage suite")
    func memoryStorage() throws {
        let library = try Self.builtLibrary("libMemoryStorage.so")
        let report = try Self.run(.storage, library: library)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.results.count == Conformance.rules(for: .storage).count)
    }

    @Test(
        "RaftLogStorage passes every rule of the storage suite under each fsync policy, with its shipped manifest",
        arguments: ["always", "interval", "never"])
    func raftLogStorage(fsync: String) throws {
        let library = try Self.builtLibrary("libRaftLogStorage.so")
        let manifest = FixtureLibraries.repositoryRoot.appendingPathComponent("plugin-manifests/raft-log.yaml").path
        // Small segments, so that the rules also cross segment files.
        let report = try Self.run(
            .storage, library: library, manifest: manifest,
            configJSON: #"{"fsync": "\#(fsync)", "segmentBytes": 8192}"#)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.durability == "LOCAL")
        #expect(report.results.count == Conformance.rules(for: .storage).count)
    }

    @Test(
        "LedgerStorage passes every rule of the storage suite with its shipped manifest, rolling ledgers often, serving its bookie",
        arguments: [
            #"{}"#,
            #"{"ledgerRollBytes": 2048, "journalFileBytes": 8192, "entryLogFileBytes": 8192, "checkpointIntervalMs": 50}"#,
            #"{"bookieListen": "127.0.0.1:0"}"#,
        ])
    func ledgerStorage(config: String) throws {
        let library = try Self.builtLibrary("libLedgerStorage.so")
        let manifest = FixtureLibraries.repositoryRoot.appendingPathComponent("plugin-manifests/ledger-storage.yaml")
            .path
        let report = try Self.run(.storage, library: library, manifest: manifest, configJSON: config)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.durability == "LOCAL")
        #expect(report.results.count == Conformance.rules(for: .storage).count)
    }

    @Test("StandaloneRegistry passes every rule of the registry suite, with its shipped manifest")
    func standaloneRegistry() throws {
        let library = try Self.builtLibrary("libStandaloneRegistry.so")
        let manifest = FixtureLibraries.repositoryRoot.appendingPathComponent(
            "plugin-manifests/standalone-registry.yaml"
        ).path
        let report = try Self.run(
            .registry, library: library, manifest: manifest, configJSON: #"{"sweepIntervalMs": 50}"#)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.results.count == Conformance.rules(for: .registry).count)
        let metadataRules = report.results.filter {
            $0.rule.hasPrefix("registry.kv.") || $0.rule.hasPrefix("registry.keepalive.")
        }
        #expect(metadataRules.count == 8, "the metadata store and keep-alive rules ran")
        #expect(metadataRules.allSatisfy { $0.passed && !$0.notSupported }, "checked, not skipped:\n\(report.text)")
    }

    // MARK: The kit itself

    @Test("rule names are unique, name their kind, are documented, and every suite ends with the completion rules")
    func ruleNames() throws {
        let documentation = try String(
            contentsOf: FixtureLibraries.repositoryRoot.appendingPathComponent("docs/conformance.md"), encoding: .utf8)
        for kind in ConformanceKind.allCases {
            for rule in Conformance.rules(for: kind) {
                #expect(documentation.contains("| `\(rule.name)` |"), "docs/conformance.md lacks \(rule.name)")
            }
            let names = Conformance.rules(for: kind).map(\.name)
            #expect(Set(names).count == names.count)
            #expect(names.allSatisfy { $0.hasPrefix("\(kind.rawValue).") })
            // Connectors and protocols owe no completions to the kit: their suites end with the lifecycle rule.
            guard kind != .connector, kind != .protocol else {
                #expect(names.last?.hasPrefix("\(kind.rawValue).lifecycle.") == true, "\(names)")
                continue
            }
            #expect(
                names.suffix(3) == [
                    "\(kind.rawValue).completion.exactly-once", "\(kind.rawValue).completion.never-after-error",
                    "\(kind.rawValue).lifecycle.stop-destroy",
                ])
        }
        #expect(
            Conformance.rules(for: .storage).map(\.name).starts(with: [
                "storage.append.dense-offsets", "storage.append.order-within-stream", "storage.append.empty-batch",
                "storage.append.concurrent-appenders", "storage.append.large-event",
            ]))
    }

    @Test("a suite refuses a plugin that does not declare its kind")
    func wrongKind() throws {
        let error = #expect(throws: KernelError.self) {
            try Self.run(.storage, library: try FixtureLibraries.library("ok_minimal"))
        }
        #expect(error?.code == .descriptorInvalid && error?.field == "kind")
        #expect(error?.message.contains("declares connector, not storage") == true, "\(String(describing: error))")
    }

    @Test("the report encodes as JSON with its counts")
    func reportJSON() throws {
        let report = ConformanceReport(
            kind: "storage", plugin: "p", version: "1.0.0", library: "libp.so", durability: "NONE",
            results: [
                RuleResult(rule: "storage.a", passed: true, reason: nil, milliseconds: 1),
                RuleResult(rule: "storage.b", passed: false, reason: "expected x; observed y", milliseconds: 2),
            ])
        let json = try report.json()
        let object = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        #expect(object["passed"] as? Int == 1 && object["failed"] as? Int == 1)
        #expect(try JSONDecoder().decode(ConformanceReport.self, from: Data(json.utf8)) == report)
        #expect(report.text.hasSuffix("PASS storage.a\nFAIL storage.b: expected x; observed y\n1 passed, 1 failed"))
    }

    // MARK: StandalonePlugin

    @Test("a library loaded without a manifest runs under one derived from its descriptor")
    func derivedManifest() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let library = try FixtureLibraries.library("broken_storage")
        let plugin = try StandalonePlugin(library: library, cacheDirectory: scratch.cache)
        #expect(plugin.manifestIsSynthetic)
        #expect(plugin.manifest.name == "broken-storage")
        #expect(plugin.manifest.version == SemanticVersion("1.0.0"))
        #expect(plugin.manifest.kinds == [.storage])
        #expect("\(plugin.manifest.abiMajor).\(plugin.manifest.abiMinor)" == FixtureNode.currentABI, "the header's")
        #expect(plugin.manifest.toolchain == nil)
        #expect(plugin.sha256 == (try sha256sum(library)))
        #expect(plugin.storage != nil && plugin.registry == nil)
        #expect(
            FileManager.default.fileExists(atPath: scratch.cache + "/\(plugin.sha256)/libbroken_storage.so"),
            "mapped from the loader's content-addressed copy")

        let instance = try plugin.start(dataDirectory: scratch.data + "/one")
        #expect(instance.pointer != nil)
        #expect(FileManager.default.fileExists(atPath: scratch.data + "/one"), "the data directory is created")
        try instance.stop()
        try instance.stop()  // a second stop does nothing
        let again = try plugin.start(dataDirectory: scratch.data + "/one")
        try again.stop()
    }

    @Test("a given manifest is checked against the library, and a config is validated against its schema")
    func givenManifest() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.root, withIntermediateDirectories: true)
        let library = try FixtureLibraries.library("broken_storage")
        func manifest(name: String = "broken-storage", extra: String = "") throws -> String {
            let path = scratch.root + "/\(UUID().uuidString).yaml"
            let text = """
                manifest: 1
                name: \(name)
                version: 1.0.0
                kind: storage
                library: libbroken_storage.so
                abi: \(FixtureNode.currentABIYAML)
                config:
                  schema:
                    limit: {type: integer, default: 5, minimum: 1, description: A limit.}
                    mode: {type: string, default: fast, description: A mode.}
                \(extra)
                """
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }

        let plugin = try StandalonePlugin(
            library: library, manifest: try manifest(), configJSON: #"{"limit": 7}"#, cacheDirectory: scratch.cache)
        #expect(!plugin.manifestIsSynthetic)
        #expect(plugin.manifest.config == .object([("limit", .int(7)), ("mode", .string("fast"))]))

        let unknownKey = #expect(throws: KernelError.self) {
            try StandalonePlugin(
                library: library, manifest: try manifest(), configJSON: #"{"nope": 1}"#, cacheDirectory: scratch.cache)
        }
        #expect(unknownKey?.code == .configInvalid && unknownKey?.field == "config.values.nope")

        let notJSON = #expect(throws: KernelError.self) {
            try StandalonePlugin(library: library, configJSON: "[1, 2]", cacheDirectory: scratch.cache)
        }
        #expect(notJSON?.code == .configInvalid)

        let misnamed = #expect(throws: KernelError.self) {
            try StandalonePlugin(library: library, manifest: try manifest(name: "other"), cacheDirectory: scratch.cache)
        }
        #expect(misnamed?.code == .descriptorInvalid && misnamed?.field == "name")

        let pinned = #expect(throws: KernelError.self) {
            try StandalonePlugin(
                library: library, manifest: try manifest(extra: "sha256: \(String(repeating: "0", count: 64))"),
                cacheDirectory: scratch.cache)
        }
        #expect(pinned?.code == .checksumMismatch)
    }

    @Test("a manifest whose required key ships without a value loads when the given config has it")
    func requiredKeyFromTheGivenConfig() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.root, withIntermediateDirectories: true)
        let library = try FixtureLibraries.library("broken_storage")
        let path = scratch.root + "/required.yaml"
        try """
        manifest: 1
        name: broken-storage
        version: 1.0.0
        kind: storage
        library: libbroken_storage.so
        abi: \(FixtureNode.currentABIYAML)
        config:
          schema:
            address: {type: string, required: true, description: Where the external system listens.}
        """.write(toFile: path, atomically: true, encoding: .utf8)
        let missing = #expect(throws: KernelError.self) {
            try StandalonePlugin(library: library, manifest: path, cacheDirectory: scratch.cache)
        }
        #expect(missing?.code == .configInvalid, "without a value the required key is refused")
        let plugin = try StandalonePlugin(
            library: library, manifest: path, configJSON: #"{"address": "127.0.0.1:6379"}"#,
            cacheDirectory: scratch.cache)
        #expect(plugin.manifest.config == .object([("address", .string("127.0.0.1:6379"))]))
    }

    @Test("an instance whose on_start fails is refused with the plugin's status and reason")
    func startFails() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let plugin = try StandalonePlugin(
            library: try FixtureLibraries.library("start_fails"), cacheDirectory: scratch.cache)
        let error = #expect(throws: KernelError.self) { try plugin.start(dataDirectory: scratch.data) }
        #expect(error?.code == .hookFailed)
        #expect(
            error?.message == "on_start failed with PX_ERR_UNAVAILABLE: fixture: start refused on purpose",
            "\(String(describing: error))")
    }

    @Test("a library without the entry symbol is refused as the loader refuses it")
    func missingEntry() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let error = #expect(throws: KernelError.self) {
            try StandalonePlugin(library: try FixtureLibraries.library("missing_entry"), cacheDirectory: scratch.cache)
        }
        #expect(error?.code == .entryMissing)
    }
}
