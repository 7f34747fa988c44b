import Foundation
import PlexusKernel
import Testing

@Suite("node file: plugins.config")
struct ConfigOverridesTests {
    static let manifest = """
        manifest: 1
        name: tcp-protocol
        version: 1.0.0
        kind: protocol
        library: libTCPProtocol.so
        abi: {major: 1, minor: 4}
        config:
          schema:
            port: {type: integer, default: 10000, minimum: 0, maximum: 65535, description: The port.}
            host: {type: string, default: 0.0.0.0, description: The address.}
            token: {type: string, description: A secret.}
            topics: {type: list, default: [a], description: Topics.}
          values:
            host: 127.0.0.1
            topics: [x, y]
        """

    static func node(_ text: String, environment: [String: String] = [:]) throws -> NodeConfig {
        try NodeConfig.parse(
            text, path: "/etc/plexus/plexus.yaml", baseDirectory: "/etc/plexus", environment: environment)
    }

    @Test("a node value replaces the manifest's, the others keep theirs, defaults still apply")
    func overrides() throws {
        let config = try Self.node(
            """
            plugins:
              config:
                tcp-protocol: {port: 11000, topics: [z]}
            """)
        let manifest = try config.pluginConfig.applied(to: ManifestParser.parse(Self.manifest, path: "m.yaml"))
        #expect(manifest.config["port"] == .int(11000))
        #expect(manifest.config["host"] == .string("127.0.0.1"))
        #expect(manifest.config["topics"] == .array([.string("z")]))
        #expect(manifest.configOverridden == ["port", "topics"])
        let untouched = try ManifestParser.parse(Self.manifest, path: "m.yaml")
        #expect(untouched.config["port"] == .int(10000))
    }

    @Test("a value the schema refuses names the node file's field")
    func invalidValue() throws {
        let config = try Self.node("plugins:\n  config:\n    tcp-protocol: {port: 70000}\n")
        #expect {
            try config.pluginConfig.applied(to: ManifestParser.parse(Self.manifest, path: "m.yaml"))
        } throws: { error in
            let error = error as? KernelError
            return error?.code == .configInvalid && error?.subject == "/etc/plexus/plexus.yaml"
                && error?.field == "plugins.config.tcp-protocol.port"
                && error?.message.contains("at most 65535") == true
        }
        let typo = try Self.node("plugins:\n  config:\n    tcp-protocol: {prot: 1}\n")
        #expect {
            try typo.pluginConfig.applied(to: ManifestParser.parse(Self.manifest, path: "m.yaml"))
        } throws: { error in
            "\(error)".contains("plugins.config.tcp-protocol.prot") && "\(error)".contains("declared keys: host, port")
        }
        let wrongType = try Self.node("plugins:\n  config:\n    tcp-protocol: {host: [1]}\n")
        #expect(throws: KernelError.self) {
            try wrongType.pluginConfig.applied(to: ManifestParser.parse(Self.manifest, path: "m.yaml"))
        }
    }

    @Test("environment variables are substituted in string values; an unset one is an error naming it")
    func environment() throws {
        let config = try Self.node(
            "plugins:\n  config:\n    tcp-protocol: {token: \"${PX_TOKEN}\", host: \"${PX_HOST:-::1}\"}\n",
            environment: ["PX_TOKEN": "s3cret"])
        let manifest = try config.pluginConfig.applied(to: ManifestParser.parse(Self.manifest, path: "m.yaml"))
        #expect(manifest.config["token"] == .string("s3cret"))
        #expect(manifest.config["host"] == .string("::1"))
        let typed = try Self.node(
            "plugins:\n  config:\n    tcp-protocol: {port: \"${PX_PORT}\", host: \"h${PX_PORT}\"}\n",
            environment: ["PX_PORT": "12001"])
        let typedManifest = try typed.pluginConfig.applied(to: ManifestParser.parse(Self.manifest, path: "m.yaml"))
        #expect(typedManifest.config["port"] == .int(12001))
        #expect(typedManifest.config["host"] == .string("h12001"))
        let literal = try Self.node("plugins:\n  config:\n    tcp-protocol: {token: \"a$${B}c\"}\n")
        #expect(literal.pluginConfig.values(for: "tcp-protocol")?.first?.1 == .string("a${B}c"))
        #expect {
            try Self.node("plugins:\n  config:\n    tcp-protocol: {token: \"${PX_MISSING}\"}\n")
        } throws: { error in
            let error = error as? KernelError
            return error?.code == .nodeConfigInvalid && error?.field == "plugins.config.tcp-protocol.token"
                && error?.message.contains("PX_MISSING is not set") == true
        }
        #expect(throws: KernelError.self) { try Self.node("plugins:\n  config:\n    tcp-protocol: {token: \"${X\"}\n") }
        #expect(throws: KernelError.self) { try Self.node("plugins:\n  config:\n    Bad_Name: {a: 1}\n") }
        #expect(throws: KernelError.self) { try Self.node("plugins:\n  config:\n    tcp-protocol: [1]\n") }
    }
}
