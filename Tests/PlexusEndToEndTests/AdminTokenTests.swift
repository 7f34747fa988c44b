import Foundation
import PlexusKernel
import Testing

/// `admin.token`: mutating admin requests need the bearer token, reads stay open, the CLI sends it, and a node
/// bound beyond loopback without one refuses to start. Also the plugin stop/start/restart endpoints.
@Suite("Admin token and plugin actions")
struct AdminTokenTests {
    static let token = "s3cret-token-for-the-test"

    func nodeFile(_ directory: TestDirectory, _ text: String) throws -> URL {
        let file = directory.url.appendingPathComponent("plexus.yaml")
        try text.write(to: file, atomically: true, encoding: .utf8)
        return file
    }

    @Test("with admin.token: POST without or with a wrong token is 401, GET is open, the token and the CLI work")
    func tokenRequired() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let file = try nodeFile(directory, "admin:\n  token: ${PLEXUS_TEST_ADMIN_TOKEN}\n")
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(), data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--config", file.path], environment: ["PLEXUS_TEST_ADMIN_TOKEN": Self.token])
        defer { node.kill() }
        let stop = "/v1/plugins/heartbeat-source/stop"

        let bare = try await HTTPTest.request(port: node.port, "POST", stop)
        #expect(bare.status == 401, "\(bare)")
        #expect(bare.header("WWW-Authenticate")?.hasPrefix("Bearer") == true)
        #expect(bare.text.contains("admin token"), "\(bare)")
        let wrong = try await HTTPTest.request(
            port: node.port, "POST", stop, headers: [("Authorization", "Bearer \(Self.token)x")])
        #expect(wrong.status == 401, "\(wrong)")
        let call = try await HTTPTest.request(port: node.port, "POST", "/v1/plugins/tcp-protocol/operations/port")
        #expect(call.status == 401, "operations need the token too: \(call)")
        let install = try await HTTPTest.post(port: node.port, "/v1/plugins", json: #"{"manifest":"/nowhere.yaml"}"#)
        #expect(install.status == 401, "\(install)")
        #expect(try await node.list().first { $0.name == "heartbeat-source" }?.state == .active, "GET stays open")
        #expect(try await HTTPTest.request(port: node.port, "GET", "/").status == 200)

        let stopped = try await HTTPTest.request(
            port: node.port, "POST", stop, headers: [("Authorization", "Bearer \(Self.token)")])
        #expect(stopped.status == 200, "\(stopped)")
        #expect(try await node.list().first { $0.name == "heartbeat-source" }?.state == .stopped)

        // The CLI: --token, then PLEXUS_ADMIN_TOKEN; without either it says what is missing.
        let refused = try await node.cli(["plugin", "start", "heartbeat-source"])
        #expect(refused.status != 0 && refused.stderr.contains("401"), "\(refused.stderr)")
        let started = try await node.cli(["plugin", "start", "heartbeat-source", "--token", Self.token])
        #expect(started.status == 0, "\(started.stderr)")
        #expect(started.stdout.contains("start heartbeat-source"), "\(started.stdout)")
        let after = try #require(try await node.list().first { $0.name == "heartbeat-source" })
        #expect(after.state == .active)
        #expect(
            after.history.map(\.state).filter { $0 == .stopped }.count == 1, "history carries over: \(after.history)")
        let restarted = try await Command.run(
            try Repository.plexus(), ["plugin", "restart", "heartbeat-source", "--admin", node.admin],
            in: directory.url, environment: ["PLEXUS_ADMIN_TOKEN": Self.token])
        #expect(restarted.status == 0, "\(restarted.stderr)")
        #expect(try await node.list().first { $0.name == "heartbeat-source" }?.state == .active)
    }

    @Test("stop/start/restart without a token on loopback: states, conflicts and unknown plugins")
    func pluginActions() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(), data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let tcp = try await node.tcpPort()
        #expect(try await HTTPTest.request(port: node.port, "POST", "/v1/plugins/tcp-protocol/stop").status == 200)
        #expect(try await node.list().first { $0.name == "tcp-protocol" }?.state == .stopped)
        #expect((try? PlainSocket(port: tcp)) == nil, "a stopped protocol no longer accepts")
        let again = try await HTTPTest.request(port: node.port, "POST", "/v1/plugins/tcp-protocol/stop")
        #expect(again.status == 409, "\(again)")
        #expect(try await HTTPTest.request(port: node.port, "POST", "/v1/plugins/tcp-protocol/start").status == 200)
        #expect(try await node.list().first { $0.name == "tcp-protocol" }?.state == .active)
        let restart = try await HTTPTest.request(port: node.port, "POST", "/v1/plugins/tcp-protocol/restart")
        #expect(restart.status == 200 && restart.text.contains("\"restart\""), "\(restart)")
        #expect(try await node.tcpPort() > 0)
        #expect(try await HTTPTest.request(port: node.port, "POST", "/v1/plugins/nope/stop").status == 404)
        #expect(try await HTTPTest.request(port: node.port, "GET", "/v1/plugins/tcp-protocol/stop").status == 405)
    }

    @Test("a node whose admin endpoint binds beyond loopback without admin.token refuses to start")
    func refusesWithoutToken() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let file = try nodeFile(directory, "admin:\n  host: 0.0.0.0\n")
        let launched = try NodeProcess.launch(
            manifests: try directory.shippedManifests(), data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--config", file.path])
        let deadline = ContinuousClock.now + .seconds(30)
        while launched.process.isRunning, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        if launched.process.isRunning { kill(launched.process.processIdentifier, SIGKILL) }
        launched.process.waitUntilExit()
        let stderr = (try? String(contentsOf: launched.stderrFile, encoding: .utf8)) ?? ""
        let stdout = (try? String(contentsOf: launched.stdoutFile, encoding: .utf8)) ?? ""
        #expect(launched.process.terminationStatus != 0)
        #expect(stderr.contains("admin.token"), "\(stderr)")
        #expect(!stdout.contains("plexus: admin endpoint"), "it served: \(stdout)")
        #expect(!stderr.contains("kernel started"), "plugins started before the refusal: \(stderr)")
    }
}
