import Foundation
import PlexusABI
import PlexusCore
import Testing

@testable import PlexusKernel

/// Real kernels loading the deliberately broken fixture plugins of `Tests/Fixtures/plugins`, each beside the
/// well-behaved `ok-minimal`, which must stay unaffected.
@Suite("Fixture plugins")
struct FixturePluginTests {
    /// ok-minimal's manifest operations, including one whose symbol the library does not export.
    static let okOperations = """
        operations:
          - {name: add, symbol: px_op_add, signature: "int32 (instance, int32, int32)"}
          - {name: scale, symbol: px_op_scale, signature: "double (instance, double, uint32)"}
          - {name: started, symbol: px_op_started, signature: "uint64 (instance)"}
          - {name: echo-len, symbol: px_op_echo_len, signature: "int32 (instance, string)"}
          - {name: missing, symbol: px_op_not_exported, signature: "int32 (instance)"}
        """

    static let shortDeadlines = "deadlines: {start_ms: 300, stop_ms: 300}"

    /// Runs `body` with a node holding ok-minimal (with its operations) and whatever `setUp` writes; the
    /// kernel is stopped and the directory removed afterwards.
    static func withKernel(
        requireSHA256: Bool = false, okMinimal: Bool = true, setUp: (FixtureNode) throws -> Void = { _ in },
        _ body: (Kernel, FixtureNode) throws -> Void
    ) throws {
        let node = try FixtureNode()
        defer { node.remove() }
        if okMinimal { try node.writeManifest(fixture: "ok_minimal", extra: okOperations) }
        try setUp(node)
        let kernel = try node.kernel(requireSHA256: requireSHA256)
        defer { kernel.stop() }
        kernel.start()
        try body(kernel, node)
    }

    /// ok-minimal is active and really running: its instance answers an operation.
    static func expectOkMinimalRuns(_ kernel: Kernel, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let ok = try kernel.requireStatus("ok-minimal", sourceLocation: sourceLocation)
        #expect(ok.state == .active, "ok-minimal: \(ok.lastError ?? "")", sourceLocation: sourceLocation)
        #expect(ok.lastError == nil, sourceLocation: sourceLocation)
        #expect(
            try kernel.callOperation(plugin: "ok-minimal", operation: "started", arguments: []) == "1",
            sourceLocation: sourceLocation)
    }

    // MARK: The well-behaved plugin

    @Test("ok-minimal goes through the whole lifecycle")
    func okMinimalLifecycle() throws {
        try Self.withKernel { kernel, node in
            let status = try kernel.requireStatus("ok-minimal")
            #expect(status.state == .active)
            #expect(status.states == [.discovered, .verified, .resolved, .loaded, .created, .active])
            #expect(status.errorCode == nil && status.lastError == nil)
            #expect(status.health == "healthy")
            #expect(status.version == "1.0.0")
            #expect(status.kinds == ["connector"])
            #expect(status.manifest == node.manifestDirectory + "/ok-minimal.yaml")
            let library = try FixtureLibraries.library("ok_minimal")
            #expect(status.library == URL(fileURLWithPath: library).standardizedFileURL.path)
            #expect(status.sha256 == (try sha256sum(library)))
            #expect(status.operations.map(\.name) == ["add", "scale", "started", "echo-len", "missing"])
            #expect(status.operations.first?.signature == "int32 (instance, int32, int32)")
            #expect(
                FileManager.default.fileExists(
                    atPath: node.dataDirectory + "/plugin-cache/\(status.sha256 ?? "")/libok_minimal.so"),
                "the image is mapped from its content-addressed copy")
            #expect(
                FileManager.default.fileExists(atPath: node.dataDirectory + "/plugins/ok-minimal"),
                "the plugin gets a data directory")

            kernel.stop()
            let stopped = try kernel.requireStatus("ok-minimal")
            #expect(stopped.state == .stopped)
            #expect(stopped.states.suffix(3) == [.active, .stopping, .stopped])
            #expect(stopped.health == nil, "only an active plugin is asked for its health")
        }
    }

    // MARK: Failure modes

    struct FailureMode: Sendable, CustomTestStringConvertible {
        var fixture: String
        var abi = FixtureNode.currentABIYAML
        var extra = ""
        var code: KernelError.Code
        var phrases: [String]
        /// The last state reached before `failed`.
        var reached: PluginState
        var testDescription: String { "\(fixture) (abi \(abi))" }
    }

    static let descriptorSize = MemoryLayout<px_plugin_descriptor>.size

    @Test(
        "each broken fixture fails with its own code and reason while ok-minimal runs on",
        arguments: [
            FailureMode(
                fixture: "missing_entry", code: .entryMissing,
                phrases: [
                    "libmissing_entry.so does not export the entry symbol px_plugin_entry_v1", "undefined symbol",
                    "plexus.h",
                ],
                reached: .resolved),
            FailureMode(
                fixture: "abi_major_mismatch", code: .abiMismatch,
                phrases: [
                    "built against ABI 2.0", "this kernel speaks ABI \(FixtureNode.currentABI)",
                    "major versions must match",
                ],
                reached: .resolved),
            // The manifest claims the current ABI like the others: the kernel must look at the descriptor itself.
            FailureMode(
                fixture: "abi_minor_newer", code: .abiMismatch,
                phrases: ["built against ABI 1.99", "newer than this kernel's \(FixtureNode.currentABI)"],
                reached: .resolved),
            // A manifest that honestly says 1.99 is refused for the same reason, not for disagreeing.
            FailureMode(
                fixture: "abi_minor_newer", abi: "{major: 1, minor: 99}", code: .abiMismatch,
                phrases: ["built against ABI 1.99", "newer than this kernel's \(FixtureNode.currentABI)"],
                reached: .resolved),
            FailureMode(
                fixture: "struct_size_larger", code: .abiMismatch,
                phrases: [
                    "struct_size \(descriptorSize + 64)", "larger than the \(descriptorSize) bytes this kernel knows",
                ], reached: .resolved),
            FailureMode(
                fixture: "refuses_negotiation", code: .abiMismatch,
                phrases: ["refused to load (PX_ERR_VERSION_MISMATCH)", "fixture: refuses every host"],
                reached: .resolved),
            FailureMode(
                fixture: "create_fails", code: .hookFailed,
                phrases: ["on_create failed with PX_ERR_INVALID_ARGUMENT: fixture: create refused on purpose"],
                reached: .loaded),
            FailureMode(
                fixture: "start_fails", code: .hookFailed,
                phrases: ["on_start failed with PX_ERR_UNAVAILABLE: fixture: start refused on purpose"],
                reached: .created),
            FailureMode(
                fixture: "start_hangs", extra: shortDeadlines, code: .deadlineExceeded,
                phrases: ["on_start did not return within 300 ms", "abandoned"], reached: .created),
        ])
    func failureMode(_ mode: FailureMode) throws {
        let name = FixtureNode.name(mode.fixture)
        let started = ContinuousClock.now
        let poke = "operations:\n  - {name: poke, symbol: px_op_poke, signature: \"void ()\"}"
        try Self.withKernel(setUp: {
            try $0.writeManifest(fixture: mode.fixture, abi: mode.abi, extra: mode.extra + "\n" + poke)
        }) { kernel, _ in
            #expect(ContinuousClock.now - started < .seconds(8), "no default 10 s deadline was waited out")
            let status = try kernel.requireStatus(name)
            #expect(status.state == .failed)
            #expect(status.errorCode == mode.code.rawValue, "\(status.lastError ?? "no error")")
            let lastError = try #require(status.lastError)
            for phrase in mode.phrases {
                #expect(lastError.contains(phrase), "'\(lastError)' should contain '\(phrase)'")
            }
            let path: [PluginState] = [.discovered, .verified, .resolved, .loaded, .created]
            let reached = try #require(path.firstIndex(of: mode.reached))
            #expect(status.states == Array(path[...reached]) + [.failed])
            #expect(status.health == nil)
            #expect(status.version == "1.0.0", "the manifest parsed, so its facts are reported")

            try Self.expectOkMinimalRuns(kernel)

            let refused = try #require(throws: KernelError.self) {
                try kernel.callOperation(plugin: name, operation: "poke", arguments: [])
            }
            #expect(refused.code == .invalidState, "nothing is called in a failed plugin")
            #expect(refused.message.contains("is failed"))

            kernel.stop()
            #expect(try kernel.requireStatus("ok-minimal").state == .stopped)
            let after = try kernel.requireStatus(name)
            #expect(
                after.state == .failed && after.errorCode == mode.code.rawValue,
                "stopping does not touch a failed plugin")
        }
    }

    @Test("a hanging on_stop is abandoned at the stop deadline; the others are still stopped, in reverse order")
    func stopHangs() throws {
        try Self.withKernel(setUp: { try $0.writeManifest(fixture: "stop_hangs", extra: Self.shortDeadlines) }) {
            kernel, node in
            #expect(try kernel.requireStatus("stop-hangs").state == .active)
            try Self.expectOkMinimalRuns(kernel)
            #expect(kernel.statuses().map(\.name) == ["ok-minimal", "stop-hangs"], "start order: by name")

            let before = ContinuousClock.now
            kernel.stop()
            let elapsed = ContinuousClock.now - before
            #expect(elapsed >= .milliseconds(290), "the kernel waited for the stop deadline")
            #expect(elapsed < .seconds(5), "and not much longer")

            let hung = try kernel.requireStatus("stop-hangs")
            #expect(hung.state == .failed)
            #expect(hung.errorCode == KernelError.Code.deadlineExceeded.rawValue)
            #expect(hung.lastError?.contains("on_stop did not return within 300 ms") == true, "\(hung.lastError ?? "")")
            #expect(hung.states.suffix(3) == [.active, .stopping, .failed])

            let ok = try kernel.requireStatus("ok-minimal")
            #expect(ok.state == .stopped)
            #expect(ok.lastError == nil)
            // Reverse start order: stop-hangs (started last) is stopped first and given up on before ok-minimal.
            let hungGivenUp = try #require(hung.history.last { $0.state == .failed }).at
            let okStopping = try #require(ok.history.last { $0.state == .stopping }).at
            #expect(okStopping >= hungGivenUp)
        }
    }

    // MARK: Verification before loading

    @Test("a sha256 pin that does not match refuses the library; the right pin loads it")
    func sha256Pinning() throws {
        let digest = try sha256sum(try FixtureLibraries.library("ok_minimal"))
        let wrong = String(repeating: "0", count: 64)
        try Self.withKernel(
            okMinimal: false,
            setUp: { node in
                try node.writeManifest(
                    fixture: "ok_minimal", name: "ok-minimal",
                    extra: "sha256: \(digest.uppercased())\n" + Self.okOperations)
                try node.writeManifest(fixture: "ok_minimal", name: "wrong-pin", extra: "sha256: \(wrong)")
            }
        ) { kernel, node in
            try Self.expectOkMinimalRuns(kernel)
            #expect(try kernel.requireStatus("ok-minimal").sha256 == digest)
            let status = try kernel.requireStatus("wrong-pin")
            #expect(status.state == .failed)
            #expect(status.errorCode == "checksum-mismatch")
            #expect(status.states == [.discovered, .failed])
            let error = try #require(status.lastError)
            #expect(error.contains(node.manifestDirectory + "/wrong-pin.yaml: sha256: "))
            #expect(error.contains("has sha256 \(digest), but the manifest pins \(wrong)"))
        }
    }

    @Test("a node that requires pins refuses an unpinned manifest and accepts a pinned one")
    func requireSHA256() throws {
        let digest = try sha256sum(try FixtureLibraries.library("ok_minimal"))
        try Self.withKernel(
            requireSHA256: true, okMinimal: false,
            setUp: { node in
                try node.writeManifest(fixture: "ok_minimal", extra: "sha256: \(digest)\n" + Self.okOperations)
                try node.writeManifest(fixture: "ok_minimal", name: "unpinned")
            }
        ) { kernel, node in
            try Self.expectOkMinimalRuns(kernel)
            let status = try kernel.requireStatus("unpinned")
            #expect(status.state == .failed)
            #expect(status.errorCode == "manifest-invalid")
            let error = try #require(status.lastError)
            #expect(error.contains("sha256: is missing, and this node requires every library to be pinned"))
            #expect(error.contains("its sha256 is \(digest)"), "the error says what to pin")
        }
    }

    @Test("a library that is nowhere to be found is reported with every directory searched")
    func libraryNotFound() throws {
        try Self.withKernel(setUp: { node in
            try node.writeManifest(fixture: "ok_minimal", name: "nowhere", library: "libnot_built.so")
            try node.writeManifest(fixture: "ok_minimal", name: "absolute", library: "/nonexistent/libok_minimal.so")
        }) { kernel, node in
            try Self.expectOkMinimalRuns(kernel)
            let nowhere = try kernel.requireStatus("nowhere")
            #expect(nowhere.errorCode == "library-not-found")
            let error = try #require(nowhere.lastError)
            #expect(error.contains("library: 'libnot_built.so' was not found"))
            #expect(error.contains("looked in \(node.manifestDirectory), \(try FixtureLibraries.directory())"))

            let absolute = try kernel.requireStatus("absolute")
            #expect(absolute.errorCode == "library-not-found")
            #expect(
                absolute.lastError?.contains("'/nonexistent/libok_minimal.so' does not exist or is not readable")
                    == true)
        }
    }

    struct Disagreement: Sendable, CustomTestStringConvertible {
        var label: String
        var name = "ok-minimal"
        var version = "1.0.0"
        var kind = "connector"
        var abi = FixtureNode.currentABIYAML
        var phrase: String
        var testDescription: String { label }
    }

    @Test(
        "a manifest that disagrees with the library's descriptor is refused",
        arguments: [
            Disagreement(
                label: "name", name: "impostor",
                phrase: "name: the manifest says 'impostor' but the library calls itself 'ok-minimal'"),
            Disagreement(
                label: "version", version: "1.0.1",
                phrase: "version: the manifest says 1.0.1 but the library is version '1.0.0'"),
            Disagreement(label: "kind", kind: "[connector, protocol]", phrase: "kind: the manifest says"),
            Disagreement(
                label: "abi", abi: "{major: 1, minor: 0}",
                phrase: "abi: the manifest says ABI 1.0 but the library was built against \(FixtureNode.currentABI)"),
        ])
    func descriptorDisagrees(_ c: Disagreement) throws {
        try Self.withKernel(
            okMinimal: false,
            setUp: { node in
                try node.writeManifest(
                    fixture: "ok_minimal", name: c.name, version: c.version, kind: c.kind, abi: c.abi)
            }
        ) { kernel, _ in
            let status = try kernel.requireStatus(c.name)
            #expect(status.state == .failed)
            #expect(status.errorCode == "descriptor-invalid")
            #expect(status.states == [.discovered, .verified, .resolved, .failed])
            #expect(status.lastError?.contains(c.phrase) == true, "\(status.lastError ?? "")")
        }
    }

    @Test("a manifest built with another Swift toolchain is refused before loading")
    func toolchainMismatch() throws {
        try Self.withKernel(setUp: { node in
            try node.writeManifest(fixture: "ok_minimal", name: "old-swift", extra: "toolchain: swift-5.10.1")
        }) { kernel, _ in
            try Self.expectOkMinimalRuns(kernel)
            let status = try kernel.requireStatus("old-swift")
            #expect(status.errorCode == "toolchain-mismatch")
            #expect(status.states == [.discovered, .failed])
            let error = try #require(status.lastError)
            #expect(
                error.contains(
                    "toolchain: the plugin was built with swift-5.10.1 but this kernel with \(Toolchain.current)"))
        }
    }

    // MARK: Discovery, resolution and dependencies in a real kernel

    @Test("a manifest that does not parse fails alone, reported under its file name; other files are ignored")
    func brokenManifest() throws {
        try Self.withKernel(setUp: { node in
            try node.write("manifest: 1\nname: broken\n", file: "broken.yaml")
            try node.write("not: a manifest", file: "README.txt")
        }) { kernel, node in
            try Self.expectOkMinimalRuns(kernel)
            #expect(kernel.statuses().count == 2)
            let status = try kernel.requireStatus("broken.yaml")
            #expect(status.state == .failed)
            #expect(status.errorCode == "manifest-invalid")
            #expect(
                status.lastError?.contains(node.manifestDirectory + "/broken.yaml: version: is missing") == true,
                "\(status.lastError ?? "")")
        }
    }

    @Test("a plugin whose provider fails is failed too, naming the provider")
    func dependencyFails() throws {
        try Self.withKernel(
            okMinimal: false,
            setUp: { node in
                try node.writeManifest(
                    fixture: "start_fails", extra: "provides:\n  - {capability: thing, version: 1.2.0}")
                try node.writeManifest(
                    fixture: "ok_minimal",
                    extra: "requires:\n  - {capability: thing, version: \"^1.0.0\"}\n" + Self.okOperations)
                // stop-hangs starts fine (and its stop is abandoned after 300 ms when the test ends).
                try node.writeManifest(
                    fixture: "stop_hangs",
                    extra: "requires:\n  - {capability: thing, version: \"^1.0.0\", optional: true}\n"
                        + Self.shortDeadlines)
            }
        ) { kernel, _ in
            #expect(
                kernel.statuses().map(\.name) == ["start-fails", "ok-minimal", "stop-hangs"], "providers start first")
            #expect(try kernel.requireStatus("start-fails").errorCode == "hook-failed")
            let dependent = try kernel.requireStatus("ok-minimal")
            #expect(dependent.state == .failed)
            #expect(dependent.errorCode == "dependency-failed")
            #expect(
                dependent.lastError?.contains("depends on plugin 'start-fails' (failed), which is not active") == true,
                "\(dependent.lastError ?? "")")
            #expect(!dependent.states.contains(.loaded), "it is never loaded")
            #expect(try kernel.requireStatus("stop-hangs").state == .active, "an optional requirement does not fail it")
        }
    }

    @Test("a requirement no manifest satisfies fails the plugin at resolution")
    func dependencyMissing() throws {
        try Self.withKernel(
            okMinimal: false,
            setUp: { node in
                try node.writeManifest(
                    fixture: "ok_minimal", extra: "requires:\n  - {capability: storage, version: \">=2.0.0 <3.0.0\"}")
            }
        ) { kernel, _ in
            let status = try kernel.requireStatus("ok-minimal")
            #expect(status.errorCode == "dependency-missing")
            #expect(status.states == [.discovered, .verified, .failed])
            #expect(
                status.lastError?.contains("needs capability 'storage' >=2.0.0 <3.0.0, but no manifest provides it")
                    == true)
        }
    }

    @Test("a disabled plugin is verified and resolved but not loaded")
    func disabled() throws {
        try Self.withKernel(setUp: { node in
            try node.writeManifest(
                fixture: "ok_minimal", name: "sleeper", extra: "enabled: false\n" + Self.okOperations)
        }) { kernel, _ in
            try Self.expectOkMinimalRuns(kernel)
            let status = try kernel.requireStatus("sleeper")
            #expect(status.state == .resolved)
            #expect(status.lastError == nil)
            let error = try #require(throws: KernelError.self) {
                try kernel.callOperation(plugin: "sleeper", operation: "started", arguments: [])
            }
            #expect(error.code == .invalidState)
            #expect(error.message.contains("is resolved"))
        }
    }

    @Test("two manifests with the same name: one runs, the other fails with duplicate-plugin naming the first")
    func duplicateNames() throws {
        try Self.withKernel(
            okMinimal: false,
            setUp: { node in
                try node.writeManifest(fixture: "ok_minimal", extra: Self.okOperations, file: "a.yaml")
                try node.writeManifest(fixture: "ok_minimal", file: "b.yaml")
            }
        ) { kernel, node in
            let statuses = kernel.statuses()
            #expect(statuses.filter { $0.state == .active }.map(\.manifest) == [node.manifestDirectory + "/a.yaml"])
            let duplicate = try #require(
                statuses.first { $0.manifest == node.manifestDirectory + "/b.yaml" }, "b.yaml must be reported")
            #expect(duplicate.state == .failed)
            #expect(duplicate.errorCode == "duplicate-plugin")
            #expect(
                duplicate.lastError?.contains("already declared by \(node.manifestDirectory)/a.yaml") == true,
                "\(duplicate.lastError ?? "")")
            #expect(
                !statuses.contains { $0.state == .discovered },
                "no manifest is left unprocessed: \(statuses.map { "\($0.name)=\($0.state)" })")
        }
    }

    // MARK: Operations through libffi

    @Test("operations are called with converted arguments and their results formatted")
    func operations() throws {
        try Self.withKernel { kernel, _ throws in
            func call(_ op: String, _ args: [String]) throws -> String {
                try kernel.callOperation(plugin: "ok-minimal", operation: op, arguments: args)
            }
            #expect(try call("add", ["2", "40"]) == "42")
            #expect(try call("add", ["-50", "8"]) == "-42")
            #expect(try call("add", ["-2147483648", "0"]) == "-2147483648")
            #expect(try call("add", ["2147483647", "0"]) == "2147483647")
            #expect(try call("scale", ["1.5", "4"]) == "6.0")
            #expect(try call("scale", ["-0.25", "3"]) == "-0.75")
            #expect(try call("scale", ["2", "4294967295"]) == "8589934590.0")
            #expect(try call("started", []) == "1")
            #expect(try call("echo-len", ["hello, plexus"]) == "13")
            #expect(try call("echo-len", [""]) == "0")
            #expect(try call("echo-len", ["héllo"]) == "6", "bytes of UTF-8")
        }
    }

    struct BadCall: Sendable, CustomTestStringConvertible {
        var operation: String
        var arguments: [String]
        var phrase: String
        var testDescription: String { "\(operation) \(arguments)" }
    }

    @Test(
        "arguments that do not fit the signature are refused before the call, naming the argument",
        arguments: [
            BadCall(operation: "add", arguments: ["1"], phrase: "takes 2 argument(s) (int32, int32), 1 given"),
            BadCall(
                operation: "add", arguments: ["1", "2", "3"], phrase: "takes 2 argument(s) (int32, int32), 3 given"),
            BadCall(
                operation: "add", arguments: ["abc", "1"],
                phrase: "argument 1 'abc' is not a valid int32 (-2147483648...2147483647)"),
            BadCall(
                operation: "add", arguments: ["1", "4294967296"], phrase: "argument 2 '4294967296' is not a valid int32"
            ),
            BadCall(
                operation: "add", arguments: ["2147483648", "0"], phrase: "argument 1 '2147483648' is not a valid int32"
            ),
            BadCall(operation: "add", arguments: ["1.5", "0"], phrase: "argument 1 '1.5' is not a valid int32"),
            BadCall(
                operation: "scale", arguments: ["1.0", "-1"],
                phrase: "argument 2 '-1' is not a valid uint32 (0...4294967295)"),
            BadCall(
                operation: "scale", arguments: ["1.0", "4294967296"],
                phrase: "argument 2 '4294967296' is not a valid uint32"),
            BadCall(operation: "scale", arguments: ["nan", "1"], phrase: "argument 1 'nan' is not a valid double"),
            BadCall(operation: "scale", arguments: ["x", "1"], phrase: "argument 1 'x' is not a valid double"),
            BadCall(operation: "started", arguments: ["now"], phrase: "takes 0 argument(s)"),
            BadCall(operation: "echo-len", arguments: ["a\u{0}b"], phrase: "argument 1"),
        ])
    func badArguments(_ c: BadCall) throws {
        try Self.withKernel { kernel, _ in
            let error = try #require(throws: KernelError.self) {
                try kernel.callOperation(plugin: "ok-minimal", operation: c.operation, arguments: c.arguments)
            }
            #expect(error.code == .operationInvalid)
            #expect(error.subject == "ok-minimal")
            #expect(error.field == "operations.\(c.operation)")
            #expect(error.message.contains(c.phrase), "'\(error.message)' should contain '\(c.phrase)'")
            #expect(
                try kernel.callOperation(plugin: "ok-minimal", operation: "add", arguments: ["1", "1"]) == "2",
                "the plugin is unharmed")
        }
    }

    @Test("unknown plugins and operations, missing symbols and stopped plugins are refused")
    func refusedCalls() throws {
        try Self.withKernel { kernel, _ in
            let noPlugin = try #require(throws: KernelError.self) {
                try kernel.callOperation(plugin: "nobody", operation: "add", arguments: [])
            }
            #expect(noPlugin.code == .notFound)
            #expect(noPlugin.description.contains("nobody"))

            let noOperation = try #require(throws: KernelError.self) {
                try kernel.callOperation(plugin: "ok-minimal", operation: "subtract", arguments: [])
            }
            #expect(noOperation.code == .notFound)
            #expect(noOperation.field == "operations")
            #expect(
                noOperation.message.contains(
                    "no operation 'subtract'; the manifest declares: add, scale, started, echo-len, missing"))

            let noSymbol = try #require(throws: KernelError.self) {
                try kernel.callOperation(plugin: "ok-minimal", operation: "missing", arguments: [])
            }
            #expect(noSymbol.code == .operationInvalid)
            #expect(noSymbol.field == "operations.missing")
            #expect(noSymbol.message.contains("does not export px_op_not_exported"))

            kernel.stop()
            let stopped = try #require(throws: KernelError.self) {
                try kernel.callOperation(plugin: "ok-minimal", operation: "started", arguments: [])
            }
            #expect(stopped.code == .invalidState)
            #expect(stopped.message.contains("is stopped"))
        }
    }
}
