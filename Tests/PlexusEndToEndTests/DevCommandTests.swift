import Foundation
import PlexusKernel
import Testing

/// `plexus dev`: a throwaway node that loads an author's plugin beside memory storage and the TCP and HTTP
/// protocols, prints its endpoints, and reloads the plugin when its library is rebuilt.
@Suite("plexus dev")
struct DevCommandTests {
    @Test("loads a plugin from its manifest, serves HTTP, reloads a rebuilt library, and cleans up on SIGINT")
    func devNode() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let build = try directory.subdirectory("build")
        let library = try await Repository.compileFixture("ok_minimal", into: build)
        let manifest = build.appendingPathComponent("ok-minimal.yaml")
        try DeploymentTests.okMinimalManifest(version: "1.0.0").write(to: manifest, atomically: true, encoding: .utf8)
        let out = directory.url.appendingPathComponent("dev.out")
        let err = directory.url.appendingPathComponent("dev.err")
        let process = try Command.launch(
            try Repository.plexus(), ["dev", manifest.path, "--shipped", Repository.root.path + "/plugin-manifests"],
            in: directory.url, stdout: out, stderr: err)
        defer { if process.isRunning { process.terminate() } }

        // The endpoints, printed once the node has started.
        var lines: [String] = []
        let deadline = ContinuousClock.now + .seconds(30)
        while !lines.contains(where: { $0.hasPrefix("plexus dev: reloading") }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            lines = ((try? String(contentsOf: out, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            try #require(
                process.isRunning, "plexus dev exited: \((try? String(contentsOf: err, encoding: .utf8)) ?? "")")
        }
        #expect(lines.contains("plexus dev: plugin ok-minimal: active"), "\(lines)")
        let admin = try #require(lines.first { $0.hasPrefix("plexus dev: admin ") }?.split(separator: " ")[3])
        let http = try #require(lines.first { $0.hasPrefix("plexus dev: http ") }?.split(separator: ":").last)
        func list() async throws -> [PluginStatus] {
            let result = try await Command.run(
                try Repository.plexus(), ["plugin", "list", "--json", "--admin", String(admin)], in: directory.url)
            return try JSONDecoder().decode([PluginStatus].self, from: Data(result.stdout.utf8))
        }
        let plugins = try await list()
        for name in ["ok-minimal", "memory-storage", "tcp-protocol", "http-protocol"] {
            #expect(plugins.first { $0.name == name }?.state == .active, "\(name): \(plugins)")
        }
        let published = try await HTTPTest.request(
            port: Int(http)!, "POST", "/topics/dev",
            headers: [
                ("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/t"), ("ce-type", "t"),
                ("content-type", "text/plain"),
            ], body: Array("hello".utf8))
        #expect(published.status == 200 || published.status == 202, "\(published.status)")

        // The library rebuilt in place (as a build does, through a new file renamed over it) and the manifest's
        // version bumped in the author's file: reloaded.
        let v2 = try await Repository.compileFixture(
            "ok_minimal", into: try directory.subdirectory("v2"), defines: [#"OK_MINIMAL_VERSION="1.1.0""#])
        let staged = build.appendingPathComponent(".libok_minimal.so.new")
        try FileManager.default.copyItem(at: v2, to: staged)
        #expect(rename(staged.path, library.path) == 0)
        try DeploymentTests.okMinimalManifest(version: "1.1.0").write(to: manifest, atomically: true, encoding: .utf8)
        var reloaded = false
        let reloadDeadline = ContinuousClock.now + .seconds(15)
        while !reloaded, ContinuousClock.now < reloadDeadline {
            try await Task.sleep(for: .milliseconds(200))
            let status = try await list().first { $0.name == "ok-minimal" }
            reloaded = status?.state == .active && status?.version == "1.1.0" && status?.previousVersion == "1.0.0"
        }
        let log = String(decoding: (try? Data(contentsOf: err)) ?? Data(), as: UTF8.self)
        #expect(reloaded, "\(log.suffix(2000))")

        // Ctrl-C: the node stops and its temporary directory goes.
        let temporary = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory()).filter {
            $0.hasPrefix("plexus-dev-\(process.processIdentifier)-")
        }
        #expect(temporary.count == 1)
        process.interrupt()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        for name in temporary {
            #expect(!FileManager.default.fileExists(atPath: NSTemporaryDirectory() + "/" + name))
        }
    }
}
