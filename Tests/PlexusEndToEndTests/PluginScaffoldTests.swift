import Foundation
import Testing

/// `plexus plugin new`: a C sink scaffolded into an empty directory outside the repository builds with `make`
/// (warnings as errors, libc and libpthread only), and its own test — 100 events through `plexus dev` into its
/// output file, in order — passes.
@Suite("Plugin scaffolds")
struct PluginScaffoldTests {
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

        let env = URL(fileURLWithPath: "/usr/bin/env")
        let make = try await Command.run(env, ["make"], in: project)
        try #require(make.status == 0, "\(make.stdout)\(make.stderr)")
        let readelf = try await Command.run(env, ["readelf", "--dynamic", "libmy_sink.so"], in: project)
        let needed = readelf.stdout.split(separator: "\n").filter { $0.contains("(NEEDED)") }
        #expect(!needed.isEmpty)
        #expect(
            needed.allSatisfy { $0.contains("[libc.so.6]") || $0.contains("[libpthread.so.0]") }, "\(needed)")

        let path = plexus.deletingLastPathComponent().path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "")
        let test = try await Command.run(
            env, ["PATH=\(path)", "make", "test"], in: project, timeout: .seconds(60))
        #expect(test.status == 0, "\(test.stdout)\(test.stderr)")
        #expect(test.stdout.contains("test: ok (100 events written in order)"), "\(test.stdout)")

        let swift = try await Command.run(plexus, ["plugin", "new", "other", "--lang", "swift"], in: directory.url)
        #expect(swift.status != 0)
        #expect(swift.stderr.contains("only --kind connector --lang c"), "\(swift.stderr)")
        let taken = try await Command.run(plexus, ["plugin", "new", "my-sink"], in: directory.url)
        #expect(taken.status != 0, "scaffolded over a directory that is not empty")
    }
}
