import Foundation
import Testing

/// `plexus plugin new`: scaffolds written into an empty directory outside the repository build with their one
/// command — C with `make` (warnings as errors, libc and libpthread only), Swift with `swift build` against the
/// SDK package alone — and load in a kernel: through their kind's conformance suite, and through `plexus dev`
/// with events going through them.
@Suite("Plugin scaffolds", .serialized)
struct PluginScaffoldTests {
    static let env = URL(fileURLWithPath: "/usr/bin/env")

    @Test("a scaffolded C connector builds, needs only libc, and passes its own test in a dev node")
    func cConnector() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let plexus = try Repository.plexus()
        let new = try await Command.run(plexus, ["plugin", "new", "my-sink"], in: directory.url)
        try #require(new.status == 0, "\(new.stderr)")
        let project = directory.url.appendingPathComponent("my-sink")

        // The header written is the one this kernel was built with (scripts/gen-header keeps them equal).
        let written = try String(contentsOf: project.appendingPathComponent("plexus.h"), encoding: .utf8)
        let header = try String(
            contentsOf: Repository.root.appendingPathComponent("sdk/plexus-sdk/Sources/PlexusABI/include/plexus.h"),
            encoding: .utf8)
        #expect(written == header, "the CLI's copy of plexus.h is stale: run scripts/gen-header")

        let make = try await Command.run(Self.env, ["make"], in: project)
        try #require(make.status == 0, "\(make.stdout)\(make.stderr)")
        let readelf = try await Command.run(Self.env, ["readelf", "--dynamic", "libmy_sink.so"], in: project)
        let needed = readelf.stdout.split(separator: "\n").filter { $0.contains("(NEEDED)") }
        #expect(!needed.isEmpty)
        #expect(
            needed.allSatisfy { $0.contains("[libc.so.6]") || $0.contains("[libpthread.so.0]") }, "\(needed)")

        let test = try await Command.run(
            Self.env, ["PATH=\(Self.path(plexus))", "make", "test"], in: project, timeout: .seconds(60))
        #expect(test.status == 0, "\(test.stdout)\(test.stderr)")
        #expect(test.stdout.contains("test: ok (100 events written in order)"), "\(test.stdout)")

        // Loaded as a node would, and checked against the connector contract.
        let conformance = try await Command.run(
            plexus, ["conformance", "--kind", "connector", "--manifest", "my-sink.yaml", "libmy_sink.so"], in: project,
            timeout: .seconds(300))
        #expect(conformance.status == 0, "\(conformance.stdout)\(conformance.stderr)")
        #expect(conformance.stdout.contains("PASS connector.sink.answers-exactly-once"), "\(conformance.stdout)")

        let unknown = try await Command.run(plexus, ["plugin", "new", "other", "--lang", "rust"], in: directory.url)
        #expect(unknown.status != 0)
        #expect(unknown.stderr.contains("--lang is c or swift"), "\(unknown.stderr)")
        let taken = try await Command.run(plexus, ["plugin", "new", "my-sink"], in: directory.url)
        #expect(taken.status != 0, "scaffolded over a directory that is not empty")
    }

    @Test("a scaffolded Swift connector builds against the SDK package alone, loads, and writes events as JSON lines")
    func swiftConnector() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let plexus = try Repository.plexus()
        // No --sdk: the SDK is found by walking up from the executable (.build/debug inside the repository).
        let new = try await Command.run(
            plexus, ["plugin", "new", "jsonl-sink", "--kind", "connector", "--lang", "swift"], in: directory.url)
        try #require(new.status == 0, "\(new.stderr)")
        let project = directory.url.appendingPathComponent("jsonl-sink")
        let sdk = Repository.root.appendingPathComponent("sdk/plexus-sdk").standardizedFileURL.path
        let package = try String(contentsOf: project.appendingPathComponent("Package.swift"), encoding: .utf8)
        #expect(package.contains("let sdk = \"\(sdk)\""), "\(package)")
        for file in ["Sources/JsonlSink/JsonlSink.swift", "Tests/JsonlSinkTests/JsonlSinkTests.swift", "README.md"] {
            #expect(FileManager.default.fileExists(atPath: project.appendingPathComponent(file).path), "\(file)")
        }
        // Events go to a file of the test's directory, not to the dev node's (removed) data directory.
        let output = directory.url.appendingPathComponent("events.jsonl").path
        let manifestURL = project.appendingPathComponent("jsonl-sink.yaml")
        let manifest = try String(contentsOf: manifestURL, encoding: .utf8)
        try manifest.replacingOccurrences(of: "default: jsonl-sink.jsonl", with: "default: \"\(output)\"")
            .write(to: manifestURL, atomically: true, encoding: .utf8)

        // The one command. It compiles the SDK's three modules too: about 20 s of CPU, minutes on a loaded machine.
        let build = try await Self.swiftBuild(project)
        let library = project.appendingPathComponent(".build/debug/libJsonlSink.so")
        #expect(FileManager.default.fileExists(atPath: library.path))
        try Self.expectNoPackageResolved(project, build: build)

        // In a dev node: 20 events in, 20 CloudEvents JSON lines out, the same ids in order.
        let make = try await Command.run(Self.env, ["make"], in: project, timeout: .seconds(600))
        try #require(make.status == 0, "\(make.stdout)\(make.stderr)")
        let lines = try await Self.throughDevNode(plexus, manifest: manifestURL, output: output, in: directory)
        #expect(lines.count == 20, "\(lines)")
        #expect(lines.allSatisfy { $0.hasPrefix("{") && $0.contains("\"specversion\":\"1.0\"") }, "\(lines)")
        #expect(lines.map { $0.contains("\"data\":\"") } == Array(repeating: true, count: lines.count), "\(lines)")

        // Then checked against the connector contract (after the dev node: the suite's events go to the same file).
        let conformance = try await Command.run(
            plexus, ["conformance", "--kind", "connector", "--manifest", manifestURL.path, library.path], in: project,
            timeout: .seconds(300))
        #expect(conformance.status == 0, "\(conformance.stdout)\(conformance.stderr)")
        #expect(conformance.stdout.contains("PASS connector.sink.answers-exactly-once"), "\(conformance.stdout)")
    }

    @Test(
        "scaffolded C registry, storage and protocol plugins pass their own tests; the Swift ones build and load"
    )
    func otherKinds() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let plexus = try Repository.plexus()
        let path = Self.path(plexus)

        for (kind, name) in [("registry", "c-reg"), ("storage", "c-store"), ("protocol", "c-proto")] {
            let new = try await Command.run(
                plexus, ["plugin", "new", name, "--kind", kind, "--lang", "c"], in: directory.url)
            try #require(new.status == 0, "\(new.stderr)")
            let project = directory.url.appendingPathComponent(name)
            let make = try await Command.run(Self.env, ["make"], in: project)
            try #require(make.status == 0, "\(kind): \(make.stdout)\(make.stderr)")
            let test = try await Command.run(
                Self.env, ["PATH=\(path)", "make", "test"], in: project, timeout: .seconds(120))
            #expect(test.status == 0, "\(kind): \(test.stdout)\(test.stderr)")
            #expect(test.stdout.contains("test: ok"), "\(kind): \(test.stdout)")
        }

        // The Swift kinds share one scratch path, so the SDK's modules are compiled once for the three.
        let scratch = directory.url.appendingPathComponent("swift-build").path
        for (kind, name, target) in [
            ("registry", "swift-reg", "SwiftReg"), ("storage", "swift-store", "SwiftStore"),
            ("protocol", "swift-proto", "SwiftProto"),
        ] {
            let new = try await Command.run(
                plexus, ["plugin", "new", name, "--kind", kind, "--lang", "swift"], in: directory.url)
            try #require(new.status == 0, "\(new.stderr)")
            let project = directory.url.appendingPathComponent(name)
            let build = try await Self.swiftBuild(project, scratch: scratch)
            try Self.expectNoPackageResolved(project, build: build)
            let library = "\(scratch)/debug/lib\(target).so"
            if kind == "protocol" {
                // No protocol suite to run here: the library loads and declares what the manifest says.
                let inspect = try await Command.run(
                    plexus, ["plugin", "inspect", "\(name).yaml", "--plugin-path", "\(scratch)/debug"], in: project)
                #expect(inspect.status == 0, "\(inspect.stdout)\(inspect.stderr)")
                #expect(inspect.stdout.contains(name), "\(inspect.stdout)")
                continue
            }
            let conformance = try await Command.run(
                plexus, ["conformance", "--kind", kind, "--manifest", "\(name).yaml", library], in: project,
                timeout: .seconds(120))
            #expect(conformance.status == 0, "\(kind): \(conformance.stdout)\(conformance.stderr)")
        }

        let missing = try await Command.run(
            plexus, ["plugin", "new", "x", "--lang", "swift", "--sdk", directory.url.path], in: directory.url)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no Package.swift and plugin.version-script"), "\(missing.stderr)")
    }

    /// `PATH` with the directory of the `plexus` under test first.
    static func path(_ plexus: URL) -> String {
        plexus.deletingLastPathComponent().path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "")
    }

    /// `swift build` in a scaffolded package (offline: its one dependency is the SDK by path).
    static func swiftBuild(_ project: URL, scratch: String? = nil) async throws -> CommandResult {
        let started = ContinuousClock.now
        let build = try await Command.run(
            Self.env, ["swift", "build"] + (scratch.map { ["--scratch-path", $0] } ?? []), in: project,
            timeout: .seconds(900))
        try #require(build.status == 0, "\(build.stdout)\(build.stderr)")
        print("swift build of \(project.lastPathComponent): \(ContinuousClock.now - started)")
        return build
    }

    /// Resolving fetched no package: `Package.resolved`, if written at all, pins nothing.
    static func expectNoPackageResolved(_ project: URL, build: CommandResult) throws {
        let resolved = project.appendingPathComponent("Package.resolved")
        if FileManager.default.fileExists(atPath: resolved.path) {
            let text = try String(contentsOf: resolved, encoding: .utf8)
            #expect(!text.contains("\"location\""), "\(text)")
        }
        #expect(!build.stdout.contains("Fetching") && !build.stdout.contains("Cloning"), "\(build.stdout)")
    }

    /// Runs `plexus dev` with a manifest, publishes 20 events over its TCP protocol, and returns the lines of
    /// `output` once 20 are there (or after 30 s).
    static func throughDevNode(_ plexus: URL, manifest: URL, output: String, in directory: TestDirectory)
        async throws -> [String]
    {
        let out = directory.url.appendingPathComponent("dev.out")
        let err = directory.url.appendingPathComponent("dev.err")
        let dev = try Command.launch(plexus, ["dev", manifest.path], in: directory.url, stdout: out, stderr: err)
        defer {
            kill(dev.processIdentifier, SIGINT)
            dev.waitUntilExit()
        }
        var tcp = ""
        let deadline = ContinuousClock.now + .seconds(60)
        while tcp.isEmpty, ContinuousClock.now < deadline, dev.isRunning {
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            tcp =
                text.split(separator: "\n").first { $0.hasPrefix("plexus dev: tcp ") }
                .map { String($0.dropFirst("plexus dev: tcp ".count)) } ?? ""
            try await Task.sleep(for: .milliseconds(100))
        }
        try #require(!tcp.isEmpty, "plexus dev did not start: \((try? String(contentsOf: err, encoding: .utf8)) ?? "")")
        let pub = try await Command.run(
            Self.env, ["sh", "-c", "seq 1 20 | \"\(plexus.path)\" pub events --server \(tcp)"], in: directory.url)
        try #require(pub.status == 0, "\(pub.stdout)\(pub.stderr)")
        var lines: [String] = []
        let written = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < written {
            let text = (try? String(contentsOf: URL(fileURLWithPath: output), encoding: .utf8)) ?? ""
            lines = text.split(separator: "\n").map(String.init)
            if lines.count >= 20 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        return lines
    }
}
