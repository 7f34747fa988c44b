import Foundation
import PlexusKernel
import Testing

/// Packing, signing and installing plugin archives into a node that requires signatures by trusted keys
/// (`security.requireSigned`), through the CLI: a signed archive installs and runs; an unsigned one, one signed
/// by another key and a tampered one are refused; a manifest edited after signing is not applied.
@Suite("Signed plugins")
struct PluginSigningTests {
    @Test("pack | sign | install round-trips with signatures required; unsigned, untrusted and tampered are refused")
    func signedInstall() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let plexus = try Repository.plexus()
        func run(_ arguments: [String]) async throws -> CommandResult {
            try await Command.run(plexus, arguments, in: directory.url)
        }
        let build = try directory.subdirectory("build")
        _ = try await Repository.compileFixture("ok_minimal", into: build)
        let manifest = build.appendingPathComponent("ok-minimal.yaml")
        try DeploymentTests.okMinimalManifest(version: "1.0.0").write(to: manifest, atomically: true, encoding: .utf8)

        let trusted = directory.url.appendingPathComponent("trusted").path
        let other = directory.url.appendingPathComponent("other").path
        for prefix in [trusted, other] {
            let keygen = try await run(["plugin", "keygen", prefix])
            try #require(keygen.status == 0, "\(keygen.stderr)")
        }
        let secret = try FileManager.default.attributesOfItem(atPath: trusted + ".key")[.posixPermissions] as? Int
        #expect(secret == 0o600)
        #expect(try await run(["plugin", "keygen", trusted]).status != 0, "keygen overwrote a key")
        let publicKey = try #require(
            SigningKey.publicKey(fromText: try String(contentsOfFile: trusted + ".pub", encoding: .utf8)))

        let unsigned = directory.url.appendingPathComponent("unsigned.pxp").path
        let byOther = directory.url.appendingPathComponent("other.pxp").path
        let signed = directory.url.appendingPathComponent("signed.pxp").path
        #expect(try await run(["plugin", "pack", manifest.path, "--out", unsigned]).status == 0)
        #expect(
            try await run(["plugin", "pack", manifest.path, "--out", byOther, "--key", other + ".key"]).status == 0)
        #expect(try await run(["plugin", "pack", manifest.path, "--out", signed]).status == 0)
        let sign = try await run(["plugin", "sign", signed, "--key", trusted + ".key"])
        #expect(sign.status == 0, "\(sign.stderr)")
        let listing = try await Command.run(
            URL(fileURLWithPath: "/usr/bin/env"), ["tar", "-tf", signed], in: directory.url)
        #expect(listing.stdout == "manifest.yaml\nlibok_minimal.so\nSHA256SUMS\nSIGNATURE\n", "\(listing.stdout)")
        #expect(try await run(["plugin", "verify", signed, "--trusted-key", trusted + ".pub"]).status == 0)
        #expect(try await run(["plugin", "verify", signed, "--trusted-key", other + ".pub"]).status == 2)
        #expect(try await run(["plugin", "verify", unsigned, "--trusted-key", trusted + ".pub"]).status == 2)

        // Tampered: a library byte changed (the sums no longer match), and the sums made to match again
        // (the signature no longer does).
        var archive = try PluginArchive.decode(Array(try Data(contentsOf: URL(fileURLWithPath: signed))), subject: "x")
        var flipped = try Data(contentsOf: URL(fileURLWithPath: signed))
        let libraryAt = try #require(flipped.range(of: Data(archive.library.prefix(64))))
        flipped[libraryAt.lowerBound + 40] ^= 0x01
        let damaged = directory.url.appendingPathComponent("damaged.pxp")
        try flipped.write(to: damaged)
        archive.library[40] ^= 0x01
        let resigned = directory.url.appendingPathComponent("resummed.pxp")
        try Data(archive.encoded()).write(to: resigned)

        let manifests = try directory.subdirectory("manifests")
        let nodeFile = directory.url.appendingPathComponent("plexus.yaml")
        try """
        security:
          requireSigned: true
          trustedKeys: [\(Data(publicKey).base64EncodedString())]

        """.write(to: nodeFile, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--config", nodeFile.path])
        defer { node.kill() }

        let damagedInstall = try await node.cli(["plugin", "install", damaged.path])
        #expect(damagedInstall.status != 0)
        #expect(damagedInstall.stderr.contains("SHA256SUMS does not match"), "\(damagedInstall.stderr)")
        let resummedInstall = try await node.cli(["plugin", "install", resigned.path])
        #expect(resummedInstall.status != 0)
        #expect(resummedInstall.stderr.contains("signs other files"), "\(resummedInstall.stderr)")
        #expect(try await node.list().contains { $0.name == "ok-minimal" } == false)

        _ = try await node.cli(["plugin", "install", unsigned])
        let missing = try await DeploymentTests.waitFor(node, "ok-minimal") { $0?.state == .failed }
        #expect(missing?.errorCode == "signature-missing", "\(missing?.lastError ?? "none")")

        _ = try await node.cli(["plugin", "install", byOther])
        let untrusted = try await DeploymentTests.waitFor(node, "ok-minimal") {
            $0?.errorCode == "signature-untrusted"
        }
        #expect(untrusted?.state == .failed)

        let install = try await node.cli(["plugin", "install", signed])
        #expect(install.status == 0, "\(install.stdout)\(install.stderr)")
        let running = try await DeploymentTests.waitFor(node, "ok-minimal") { $0?.state == .active }
        #expect(running?.version == "1.0.0")
        #expect(try await node.call("ok-minimal", "started").output == "1")

        // The manifest edited in place after it was signed: the change is not applied; 1.0.0 runs on.
        let installed = manifests.appendingPathComponent("ok-minimal.yaml")
        #expect(FileManager.default.fileExists(atPath: installed.path + ".sig"))
        try DeploymentTests.okMinimalManifest(version: "1.0.1").write(to: installed, atomically: true, encoding: .utf8)
        #expect(try await DeploymentTests.logged(node, "the manifest changed after it was signed"), "\(node.stderr)")
        #expect(try await node.list().first { $0.name == "ok-minimal" }?.version == "1.0.0")
        #expect(node.process.isRunning)
    }
}
