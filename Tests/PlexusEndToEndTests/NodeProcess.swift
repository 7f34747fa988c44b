import Foundation
import PlexusKernel
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Why an end-to-end test could not even begin (a missing build, a fixture that does not compile).
struct SetupError: Error, CustomStringConvertible {
    var description: String
}

/// The repository and the products `swift build` made from it.
enum Repository {
    /// `<root>/Tests/PlexusEndToEndTests/NodeProcess.swift` → `<root>`.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static let requiredProducts = [
        "plexus", "libHeartbeatSource.so", "libConsoleSink.so", "libMemoryStorage.so", "libRaftLogStorage.so",
        "libStandaloneRegistry.so", "libTCPProtocol.so", "libHTTPProtocol.so", "libGRPCProtocol.so",
        "libLedgerStorage.so",
    ]

    /// The directory holding the `plexus` binary and the plugin libraries: the test bundle's own build
    /// directory when it has them, else `<root>/.build/debug`.
    static func products() throws -> URL {
        var candidates: [URL] = []
        if let executable = Bundle.main.executableURL {
            candidates.append(executable.deletingLastPathComponent())
        }
        candidates.append(root.appendingPathComponent(".build/debug"))
        for directory in candidates
        where requiredProducts.allSatisfy({
            FileManager.default.fileExists(atPath: directory.appendingPathComponent($0).path)
        }) {
            return directory
        }
        throw SetupError(
            description: "the end-to-end tests need \(requiredProducts.joined(separator: ", ")) from `swift build` "
                + "(all products, not only the tests); none of \(candidates.map(\.path)) has them all. "
                + "Run `swift build && scripts/build-c-plugins && swift test` (or `make test`).")
    }

    static func plexus() throws -> URL { try products().appendingPathComponent("plexus") }

    /// Compiles one fixture of `Tests/Fixtures/plugins` to `<directory>/lib<stem>.so`, as its header says.
    /// - Parameter defines: `-D` definitions (`NAME=VALUE`) for the compiler.
    static func compileFixture(_ stem: String, into directory: URL, defines: [String] = []) async throws -> URL {
        let output = directory.appendingPathComponent("lib\(stem).so")
        let result = try await Command.run(
            URL(fileURLWithPath: "/usr/bin/env"),
            [
                "cc", "-std=c99", "-shared", "-fPIC", "-I",
                root.appendingPathComponent("sdk/plexus-sdk/Sources/PlexusABI/include").path,
            ] + defines.map { "-D" + $0 } + [
                root.appendingPathComponent("Tests/Fixtures/plugins/\(stem).c").path, "-o", output.path,
            ], in: directory)
        guard result.status == 0 else {
            throw SetupError(description: "cc \(stem).c exited \(result.status): \(result.stderr)")
        }
        return output
    }
}

/// A UUID-named temporary directory for one test.
struct TestDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-e2e-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(at: url) }

    func subdirectory(_ name: String) throws -> URL {
        let directory = url.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    /// Copies the shipped `plugin-manifests/*.yaml` into `name/` (default `manifests/`), with the heartbeat
    /// interval set to `intervalMs` (so that tests do not wait seconds for events), the TCP protocol on a free
    /// port with `tcpValues` as further config values, the HTTP and gRPC protocols likewise with `httpValues`
    /// and `grpcValues`, and
    /// raft-log with `raftValues` and ledger-storage with `ledgerValues` as their config values (none: the
    /// manifest's defaults).
    /// - Throws: `SetupError` when a copy does not parse with the values or does not carry them (for example a
    ///   key the plugin's config schema does not declare).
    func shippedManifests(
        intervalMs: Int = 100, tcpValues: [String: String] = [:], httpValues: [String: String] = [:],
        grpcValues: [String: String] = [:], raftValues: [String: String] = [:], ledgerValues: [String: String] = [:],
        name directoryName: String = "manifests"
    ) throws -> URL {
        let target = try subdirectory(directoryName)
        let source = Repository.root.appendingPathComponent("plugin-manifests")
        let names = try FileManager.default.contentsOfDirectory(atPath: source.path).filter { $0.hasSuffix(".yaml") }
        guard names.contains("heartbeat-source.yaml"), names.contains("console-sink.yaml") else {
            throw SetupError(
                description: "plugin-manifests/ lacks heartbeat-source.yaml or console-sink.yaml: \(names)")
        }
        for name in names {
            var text = try String(contentsOf: source.appendingPathComponent(name), encoding: .utf8)
            if name == "heartbeat-source.yaml" {
                text = text.replacingOccurrences(
                    of: #"(?m)^  values:\n(    .*\n?)*"#, with: "  values:\n    interval_ms: \(intervalMs)\n",
                    options: .regularExpression)
                let manifest = try ManifestParser.parse(text, path: name)
                guard manifest.config["interval_ms"] == .int(intervalMs) else {
                    throw SetupError(description: "could not set interval_ms in the copy of \(name):\n\(text)")
                }
            }
            if name == "tcp-protocol.yaml" || name == "http-protocol.yaml" || name == "grpc-protocol.yaml" {
                let extra = ["tcp-protocol.yaml": tcpValues, "http-protocol.yaml": httpValues][name] ?? grpcValues
                let values = (["port": "0"].merging(extra) { $1 }).sorted { $0.key < $1.key }
                text = text.replacingOccurrences(
                    of: "\noperations:",
                    with: "\n  values:\n" + values.map { "    \($0.key): \($0.value)\n" }.joined() + "operations:")
                let manifest = try ManifestParser.parse(text, path: name)
                guard manifest.config["port"] == .int(Int(extra["port"] ?? "0") ?? -1) else {
                    throw SetupError(description: "could not set port in the copy of \(name):\n\(text)")
                }
            }
            let pluginValues = ["raft-log.yaml": raftValues, "ledger-storage.yaml": ledgerValues][name] ?? [:]
            if !pluginValues.isEmpty {
                text = text.replacingOccurrences(
                    of: "\noperations:",
                    with: "\n  values:\n"
                        + pluginValues.sorted { $0.key < $1.key }.map {
                            "    \($0.key): \(Self.yamlScalar($0.value))\n"
                        }
                        .joined() + "operations:")
                let manifest: Manifest
                do {
                    manifest = try ManifestParser.parse(text, path: name)
                } catch {
                    throw SetupError(description: "the copy of \(name) with \(pluginValues) does not parse: \(error)")
                }
                for (key, value) in pluginValues where manifest.config[key]?.text != value {
                    throw SetupError(
                        description: "could not set \(key): \(value) in the copy of \(name) "
                            + "(it reads \(manifest.config[key]?.text ?? "nothing")):\n\(text)")
                }
            }
            try text.write(to: target.appendingPathComponent(name), atomically: true, encoding: .utf8)
        }
        return target
    }

    /// A config value as a YAML scalar: integers and booleans as they are, everything else double-quoted.
    private static func yamlScalar(_ value: String) -> String {
        if Int(value) != nil || value == "true" || value == "false" { return value }
        return ConfigValue.quote(value)
    }
}

/// Asks `attempt` every `interval` until it answers (non-nil), for up to `timeout`; the last attempt is made after
/// the deadline has passed. A test process stalled past its deadline (`make test` runs hundreds of tests on two
/// cores) so judges the state after the stall, not the one it saw before it.
func poll<T>(
    upTo timeout: Duration, every interval: Duration = .milliseconds(100), _ attempt: () async throws -> T?
) async throws -> T? {
    let deadline = ContinuousClock.now + timeout
    while true {
        let expired = ContinuousClock.now >= deadline
        if let answer = try await attempt() { return answer }
        if expired { return nil }
        try await Task.sleep(for: interval)
    }
}

/// Whether `check` holds within `timeout` (asked every `interval`, and once after the deadline: `poll`).
func eventually(
    _ timeout: Duration, every interval: Duration = .milliseconds(100), _ check: () async throws -> Bool
) async throws -> Bool {
    try await poll(upTo: timeout, every: interval) { try await check() ? true : nil } ?? false
}

/// What a finished subprocess said.
struct CommandResult {
    var status: Int32
    var stdout: String
    var stderr: String
    var output: String { stdout.trimmingCharacters(in: .whitespacesAndNewlines) }
}

enum Command {
    /// Runs a program to completion (killing it after `timeout`), its output captured in files under `directory`.
    /// `environment` is added to this process's own.
    static func run(
        _ executable: URL, _ arguments: [String], in directory: URL, timeout: Duration = .seconds(60),
        environment: [String: String] = [:]
    ) async throws -> CommandResult {
        let id = UUID().uuidString
        let out = directory.appendingPathComponent("cmd-\(id).out")
        let err = directory.appendingPathComponent("cmd-\(id).err")
        let process = try launch(
            executable, arguments, in: directory, stdout: out, stderr: err, environment: environment)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline {
                kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
                throw SetupError(
                    description:
                        "\(executable.lastPathComponent) \(arguments.joined(separator: " ")) did not finish within \(timeout)"
                )
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.waitUntilExit()
        defer {
            try? FileManager.default.removeItem(at: out)
            try? FileManager.default.removeItem(at: err)
        }
        return CommandResult(
            status: process.terminationStatus, stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    /// Starts a program with stdout and stderr going to files (never pipes: a chatty node must not block), with
    /// `environment` added to this process's own.
    static func launch(
        _ executable: URL, _ arguments: [String], in directory: URL, stdout: URL, stderr: URL,
        environment: [String: String] = [:]
    ) throws -> Process {
        _ = FileManager.default.createFile(atPath: stdout.path, contents: nil)
        _ = FileManager.default.createFile(atPath: stderr.path, contents: nil)
        let out = try FileHandle(forWritingTo: stdout)
        let err = try FileHandle(forWritingTo: stderr)
        defer {
            try? out.close()
            try? err.close()
        }
        let process = Process()
        process.executableURL = executable
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        process.currentDirectoryURL = directory
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = out
        process.standardError = err
        try process.run()
        return process
    }
}

/// A running `plexus serve`, killed when the test lets go of it.
final class NodeProcess {
    let process: Process
    let directory: URL
    let stdoutFile: URL
    let stderrFile: URL
    let port: Int

    var admin: String { "127.0.0.1:\(port)" }

    private init(process: Process, directory: URL, stdoutFile: URL, stderrFile: URL, port: Int) {
        self.process = process
        self.directory = directory
        self.stdoutFile = stdoutFile
        self.stderrFile = stderrFile
        self.port = port
    }

    deinit { kill() }

    /// Starts a node on `adminPort` (0: an ephemeral one) and waits for its `plexus: admin endpoint …` line.
    static func start(
        manifests: URL, pluginPaths: [URL] = [], data: URL, in directory: URL, adminPort: Int = 0,
        extraArguments: [String] = [], environment: [String: String] = [:]
    ) async throws -> NodeProcess {
        try await launch(
            manifests: manifests, pluginPaths: pluginPaths, data: data, in: directory, adminPort: adminPort,
            extraArguments: extraArguments, environment: environment
        ).ready()
    }

    /// A `plexus serve` process launched but not yet known to serve: `ready()` waits for its admin endpoint.
    /// Several nodes can be launched first and waited for afterwards, so that they start side by side.
    struct Launched {
        let process: Process
        let directory: URL
        let stdoutFile: URL
        let stderrFile: URL

        /// Waits (up to 90 s: `make test` runs many nodes, servers and builds at once on two cores) for the node's
        /// `plexus: admin endpoint …` line.
        /// - Throws: `SetupError` when the node exits first (with its stderr) or stays silent; it is killed then.
        func ready() async throws -> NodeProcess {
            let prefix = "plexus: admin endpoint http://127.0.0.1:"
            let deadline = ContinuousClock.now + .seconds(90)
            while ContinuousClock.now < deadline {
                let text = (try? String(contentsOf: stdoutFile, encoding: .utf8)) ?? ""
                if let line = text.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }),
                    let port = Int(line.dropFirst(prefix.count))
                {
                    return NodeProcess(
                        process: process, directory: directory, stdoutFile: stdoutFile, stderrFile: stderrFile,
                        port: port)
                }
                if !process.isRunning {
                    let stderr = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
                    throw SetupError(
                        description:
                            "plexus serve exited with \(process.terminationStatus) before announcing its admin endpoint:\n\(stderr)"
                    )
                }
                try await Task.sleep(for: .milliseconds(50))
            }
            Glibc.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            let stderr = (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? ""
            throw SetupError(
                description:
                    "plexus serve did not announce its admin endpoint within 90 s; its last log lines:\n"
                    + stderr.split(separator: "\n").suffix(8).joined(separator: "\n"))
        }
    }

    /// Launches `plexus serve` with its output in `directory` (`node.out`, `node.err`) without waiting for it;
    /// `environment` is added to the test process's own (for example an `LD_PRELOAD` fault shim).
    static func launch(
        manifests: URL, pluginPaths: [URL] = [], data: URL, in directory: URL, adminPort: Int = 0,
        extraArguments: [String] = [], environment: [String: String] = [:]
    ) throws -> Launched {
        let products = try Repository.products()
        let stdoutFile = directory.appendingPathComponent("node.out")
        let stderrFile = directory.appendingPathComponent("node.err")
        var arguments = ["serve", "--manifests", manifests.path, "--plugin-path", products.path]
        for path in pluginPaths { arguments += ["--plugin-path", path.path] }
        arguments += ["--admin-port", "\(adminPort)", "--data-dir", data.path] + extraArguments
        let process = try Command.launch(
            products.appendingPathComponent("plexus"), arguments, in: directory, stdout: stdoutFile, stderr: stderrFile,
            environment: environment)
        return Launched(process: process, directory: directory, stdoutFile: stdoutFile, stderrFile: stderrFile)
    }

    var stderr: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    /// Runs the `plexus` CLI against this node (`--admin` is appended).
    func cli(_ arguments: [String], timeout: Duration = .seconds(60)) async throws -> CommandResult {
        try await Command.run(
            try Repository.plexus(), arguments + ["--admin", admin], in: directory, timeout: timeout)
    }

    /// `plexus plugin list --json`, decoded.
    func list(sourceLocation: SourceLocation = #_sourceLocation) async throws -> [PluginStatus] {
        let result = try await cli(["plugin", "list", "--json"])
        try #require(result.status == 0, "plexus plugin list failed: \(result.stderr)", sourceLocation: sourceLocation)
        return try JSONDecoder().decode([PluginStatus].self, from: Data(result.stdout.utf8))
    }

    /// `plexus plugin call PLUGIN OPERATION ARGS…`.
    func call(
        _ plugin: String, _ operation: String, _ arguments: [String] = [], timeout: Duration = .seconds(60)
    ) async throws -> CommandResult {
        try await cli(["plugin", "call", plugin, operation] + arguments, timeout: timeout)
    }

    /// The port the node's TCP protocol plugin listens on.
    func tcpPort() async throws -> Int {
        let result = try await call("tcp-protocol", "port")
        let port = try #require(Int(result.output), "tcp-protocol port: '\(result.stdout)' \(result.stderr)")
        try #require(port > 0, "tcp-protocol is not listening")
        return port
    }

    /// The port the node's gRPC protocol plugin listens on.
    func grpcPort() async throws -> Int {
        let result = try await call("grpc-protocol", "port")
        let port = try #require(Int(result.output), "grpc-protocol port: '\(result.stdout)' \(result.stderr)")
        try #require(port > 0, "grpc-protocol is not listening")
        return port
    }

    /// The port the node's HTTP protocol plugin listens on.
    func httpPort() async throws -> Int {
        let result = try await call("http-protocol", "port")
        let port = try #require(Int(result.output), "http-protocol port: '\(result.stdout)' \(result.stderr)")
        try #require(port > 0, "http-protocol is not listening")
        return port
    }

    /// Calls a counting operation until it reports more than zero or `timeout` passes; returns the last count.
    func count(_ plugin: String, _ operation: String, timeout: Duration = .seconds(10)) async throws -> UInt64 {
        var last: UInt64 = 0
        _ = try await eventually(timeout, every: .milliseconds(200)) {
            let result = try await call(plugin, operation)
            try #require(result.status == 0, "plexus plugin call \(plugin) \(operation) failed: \(result.stderr)")
            last = try #require(UInt64(result.output), "not a count: '\(result.stdout)'")
            return last > 0
        }
        return last
    }

    /// Sends `signal` and waits up to `timeout` for the node to exit; false if it is still running.
    func signal(_ signal: Int32, waitingUpTo timeout: Duration) async throws -> Bool {
        Glibc.kill(process.processIdentifier, signal)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning {
            if ContinuousClock.now > deadline { return false }
            try await Task.sleep(for: .milliseconds(50))
        }
        process.waitUntilExit()
        return true
    }

    /// Kills the node if it still runs (SIGKILL) and reaps it.
    func kill() {
        guard process.isRunning else { return }
        Glibc.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
