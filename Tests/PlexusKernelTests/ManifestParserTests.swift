import Foundation
import Testing

@testable import PlexusKernel

@Suite("Manifest parsing")
struct ManifestParserTests {
    static let full = """
        # Every field the format has.
        manifest: 1
        name: heartbeat-source
        version: 1.2.3-rc.1+build.7
        description: Publishes heartbeats.
        kind: [storage, connector]
        library: libHeartbeatSource.so
        sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08
        abi: {major: 1, minor: 4}
        toolchain: swift-6.3
        requires:
          - {capability: registry, version: ">=1.0.0 <2.0.0", optional: false}
          - capability: clock
            optional: true
        provides:
          - {capability: heartbeat, version: 1.0.0}
        config:
          schema:
            interval_ms:
              type: integer
              default: 1000
              minimum: 1
              description: Milliseconds between heartbeats.
            topic:
              type: string
              default: heartbeat
              description: Where heartbeats go.
            ratio:
              type: number
              description: A ratio.
          values:
            interval_ms: 2000
            ratio: 2
        isolation: in-process
        operations:
          - name: set-interval
            symbol: px_op_heartbeat_set_interval
            signature: int32 (instance, uint64)
            description: Changes the interval.
          - name: published
            symbol: px_op_heartbeat_published
            signature: uint64 published(pointer)
        deadlines: {start_ms: 250, stop_ms: 1500}
        enabled: false
        """

    @Test("a manifest using every field parses into the values it says")
    func fullManifest() throws {
        let m = try ManifestSamples.parse(Self.full)
        #expect(m.path == ManifestSamples.path)
        #expect(m.name == "heartbeat-source")
        #expect(m.version == SemanticVersion(1, 2, 3, prerelease: ["rc", "1"]))
        #expect(m.version.build == ["build", "7"])
        #expect(m.description == "Publishes heartbeats.")
        #expect(m.kinds == [.connector, .storage])
        #expect(m.library == "libHeartbeatSource.so")
        #expect(m.sha256 == "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
        #expect(m.abiMajor == 1 && m.abiMinor == 4)
        #expect(m.toolchain == "swift-6.3")

        #expect(m.requires.count == 2)
        #expect(m.requires[0].capability == "registry" && !m.requires[0].optional)
        #expect(m.requires[0].range.contains(SemanticVersion(1, 9, 0)))
        #expect(!m.requires[0].range.contains(SemanticVersion(2, 0, 0)))
        #expect(m.requires[1].capability == "clock" && m.requires[1].optional)
        #expect(m.requires[1].range.description == "*", "an absent range means any version")

        #expect(m.provides.count == 1)
        #expect(m.provides[0].capability == "heartbeat" && m.provides[0].version == SemanticVersion(1, 0, 0))

        #expect(m.configSchema.keys.map(\.name) == ["interval_ms", "topic", "ratio"])
        #expect(m.config["interval_ms"] == .int(2000), "the value overrides the default")
        #expect(m.config["topic"] == .string("heartbeat"), "the default fills in")
        #expect(m.config["ratio"] == .double(2), "an integer given for a number becomes a number")

        #expect(m.isolation == .inProcess)
        #expect(m.operations.map(\.name) == ["set-interval", "published"])
        #expect(m.operations[0].symbol == "px_op_heartbeat_set_interval")
        try #expect(m.operations[0].signature == OperationSignature(parsing: "int32 (instance, uint64)"))
        #expect(m.operations[0].description == "Changes the interval.")
        #expect(m.operations[1].signature.description == "uint64 (instance)")
        #expect(m.startTimeout == .milliseconds(250))
        #expect(m.stopTimeout == .milliseconds(1500))
        #expect(m.enabled == false)
    }

    @Test("the minimal manifest gets the documented defaults")
    func defaults() throws {
        let m = try ManifestSamples.parse(ManifestSamples.minimal)
        #expect(m.kinds == [.connector])
        #expect(m.sha256 == nil && m.toolchain == nil && m.description.isEmpty)
        #expect(m.requires.isEmpty && m.provides.isEmpty && m.operations.isEmpty)
        #expect(m.config == .object([]))
        #expect(m.isolation == .inProcess)
        #expect(m.startTimeout == .seconds(10) && m.stopTimeout == .seconds(10))
        #expect(m.enabled)
    }

    @Test(
        "the manifests shipped in plugin-manifests/ parse",
        arguments: ["heartbeat-source", "console-sink", "raft-log", "http-protocol"])
    func shippedManifests(_ name: String) throws {
        let path = ManifestSamples.repositoryRoot().appendingPathComponent("plugin-manifests/\(name).yaml").path
        let m = try ManifestParser.load(path: path)
        #expect(m.name == name)
        #expect(m.path == path)
        #expect(!m.operations.isEmpty)
    }

    @Test("an unreadable file is reported with its path")
    func unreadable() throws {
        let path = "/nonexistent-\(UUID().uuidString)/x.yaml"
        let error = try #require(throws: KernelError.self) { try ManifestParser.load(path: path) }
        #expect(error.code == .manifestUnreadable)
        #expect(error.description.contains(path))
    }

    struct Invalid: Sendable, CustomTestStringConvertible {
        var label: String
        var text: String
        var code: KernelError.Code = .manifestInvalid
        var field: String?
        var phrases: [String]
        var testDescription: String { label }
    }

    @Test(
        "each mistake is reported with the file, the field and what was expected",
        arguments: [
            Invalid(
                label: "not YAML", text: "name: [unclosed", field: nil, phrases: ["is not valid YAML"]),
            Invalid(
                label: "not a mapping", text: "- a\n- b", field: nil, phrases: ["expected a YAML mapping"]),
            Invalid(
                label: "unknown format version", text: ManifestSamples.minimal(setting: "manifest", to: "2"),
                field: "manifest", phrases: ["unknown manifest format version 2", "reads version 1"]),
            Invalid(
                label: "format version not a number", text: ManifestSamples.minimal(setting: "manifest", to: "one"),
                field: "manifest", phrases: ["expected the manifest format version, an integer"]),
            Invalid(
                label: "missing format version", text: ManifestSamples.minimal(without: "manifest"),
                field: "manifest", phrases: ["is missing", "format version"]),
            Invalid(
                label: "missing name", text: ManifestSamples.minimal(without: "name"),
                field: "name", phrases: ["is missing; expected the plugin's name"]),
            Invalid(
                label: "invalid name", text: ManifestSamples.minimal(setting: "name", to: "Heartbeat_Source"),
                field: "name", phrases: ["'Heartbeat_Source' is not a valid plugin name", "lowercase letters"]),
            Invalid(
                label: "missing library", text: ManifestSamples.minimal(without: "library"),
                field: "library", phrases: ["is missing", "shared library"]),
            Invalid(
                label: "empty library", text: ManifestSamples.minimal(setting: "library", to: "\"\""),
                field: "library", phrases: ["must not be empty"]),
            Invalid(
                label: "missing abi", text: ManifestSamples.minimal(without: "abi"),
                field: "abi", phrases: ["is missing", "{major: 1, minor: 4}"]),
            Invalid(
                label: "abi without minor", text: ManifestSamples.minimal(setting: "abi", to: "{major: 1}"),
                field: "abi.minor", phrases: ["is missing", "an integer"]),
            Invalid(
                label: "abi with an unknown key",
                text: ManifestSamples.minimal(setting: "abi", to: "{major: 1, minor: 4, patch: 0}"),
                field: "abi.patch", phrases: ["is not a known field", "major, minor"]),
            Invalid(
                label: "missing version", text: ManifestSamples.minimal(without: "version"),
                field: "version", phrases: ["is missing", "SemVer"]),
            Invalid(
                label: "two-part version", text: ManifestSamples.minimal(setting: "version", to: "1.0"),
                field: "version", phrases: ["'1.0' is not a SemVer version", "MAJOR.MINOR.PATCH"]),
            Invalid(
                label: "leading zero in version", text: ManifestSamples.minimal(setting: "version", to: "01.0.0"),
                field: "version", phrases: ["'01.0.0' is not a SemVer version"]),
            Invalid(
                label: "unknown kind", text: ManifestSamples.minimal(setting: "kind", to: "transport"),
                field: "kind", phrases: ["unknown kind 'transport'", "protocol, registry, storage, connector"]),
            Invalid(
                label: "unknown kind in a list", text: ManifestSamples.minimal(setting: "kind", to: "[storage, sink]"),
                field: "kind[1]", phrases: ["unknown kind 'sink'"]),
            Invalid(
                label: "empty kind list", text: ManifestSamples.minimal(setting: "kind", to: "[]"),
                field: "kind", phrases: ["at least one kind"]),
            Invalid(
                label: "unknown top-level key", text: ManifestSamples.minimal(appending: "librari: libTypo.so"),
                field: "librari", phrases: ["is not a known field", "library", "(line 7)"]),
            Invalid(
                label: "short sha256", text: ManifestSamples.minimal(appending: "sha256: abc123"),
                field: "sha256", phrases: ["expected 64 hexadecimal digits"]),
            Invalid(
                label: "non-hex sha256",
                text: ManifestSamples.minimal(appending: "sha256: " + String(repeating: "g", count: 64)),
                field: "sha256", phrases: ["expected 64 hexadecimal digits"]),
            Invalid(
                label: "bad toolchain", text: ManifestSamples.minimal(appending: "toolchain: gcc-13"),
                field: "toolchain", phrases: ["'gcc-13' is not a toolchain", "swift-MAJOR.MINOR"]),
            Invalid(
                label: "bad requirement range",
                text: ManifestSamples.minimal(appending: "requires:\n  - {capability: db, version: \"^1\"}"),
                field: "requires[0].version", phrases: ["'^1' is not a version range"]),
            Invalid(
                label: "requirement without capability",
                text: ManifestSamples.minimal(appending: "requires:\n  - {version: \"*\"}"),
                field: "requires[0].capability", phrases: ["is missing"]),
            Invalid(
                label: "provision with a bad version",
                text: ManifestSamples.minimal(appending: "provides:\n  - {capability: db, version: latest}"),
                field: "provides[0].version", phrases: ["'latest' is not a SemVer version"]),
            Invalid(
                label: "requires not a list", text: ManifestSamples.minimal(appending: "requires: db"),
                field: "requires", phrases: ["expected a list of requirements"]),
            Invalid(
                label: "restart without process isolation",
                text: ManifestSamples.minimal(appending: "restart: {maxFailures: 3}"),
                field: "restart", phrases: ["isolation: process only"]),
            Invalid(
                label: "restart with a zero failure count",
                text: ManifestSamples.minimal(appending: "isolation: process\nrestart: {maxFailures: 0}"),
                field: "restart.maxFailures", phrases: ["between 1 and 1000"]),
            Invalid(
                label: "unknown isolation", text: ManifestSamples.minimal(appending: "isolation: sandbox"),
                field: "isolation", phrases: ["unknown isolation 'sandbox'"]),
            Invalid(
                label: "zero start deadline", text: ManifestSamples.minimal(appending: "deadlines: {start_ms: 0}"),
                field: "deadlines.start_ms", phrases: ["between 1 and 3600000 milliseconds"]),
            Invalid(
                label: "unknown deadline", text: ManifestSamples.minimal(appending: "deadlines: {create_ms: 5}"),
                field: "deadlines.create_ms", phrases: ["is not a known field"]),
            Invalid(
                label: "enabled not a boolean", text: ManifestSamples.minimal(appending: "enabled: sometimes"),
                field: "enabled", phrases: ["expected true or false"]),
            Invalid(
                label: "bad operation signature",
                text: ManifestSamples.minimal(
                    appending: "operations:\n  - {name: go, symbol: px_op_go, signature: \"int32 (instance, uint128)\"}"
                ),
                field: "operations[0].signature", phrases: ["unknown type 'uint128'"]),
            Invalid(
                label: "operation symbol without px_op_",
                text: ManifestSamples.minimal(
                    appending: "operations:\n  - {name: go, symbol: heartbeat_go, signature: \"void ()\"}"),
                field: "operations[0].symbol", phrases: ["'heartbeat_go'", "starting with px_op_"]),
            Invalid(
                label: "operation symbol that is not an identifier",
                text: ManifestSamples.minimal(
                    appending: "operations:\n  - {name: go, symbol: \"px_op_go()\", signature: \"void ()\"}"),
                field: "operations[0].symbol", phrases: ["must be a C identifier"]),
            Invalid(
                label: "operation without signature",
                text: ManifestSamples.minimal(appending: "operations:\n  - {name: go, symbol: px_op_go}"),
                field: "operations[0].signature", phrases: ["is missing"]),
            Invalid(
                label: "duplicate operation",
                text: ManifestSamples.minimal(
                    appending:
                        "operations:\n  - {name: go, symbol: px_op_a, signature: \"void ()\"}\n  - {name: go, symbol: px_op_b, signature: \"void ()\"}"
                ),
                field: "operations[1].name", phrases: ["duplicate operation 'go'"]),
            Invalid(
                label: "schema key of unknown type",
                text: ManifestSamples.minimal(
                    appending: "config:\n  schema:\n    n: {type: float, description: A number.}"),
                field: "config.schema.n.type", phrases: ["unknown type 'float'", "integer, number"]),
            Invalid(
                label: "schema key without description",
                text: ManifestSamples.minimal(appending: "config:\n  schema:\n    n: {type: integer}"),
                field: "config.schema.n.description", phrases: ["is missing"]),
            Invalid(
                label: "unknown key under config",
                text: ManifestSamples.minimal(appending: "config:\n  value: {n: 1}"),
                field: "config.value", phrases: ["is not a known field", "schema, values"]),
        ])
    func invalid(_ c: Invalid) throws {
        let error = try #require(throws: KernelError.self) { try ManifestSamples.parse(c.text) }
        #expect(error.code == c.code)
        #expect(error.field == c.field)
        #expect(error.subject == ManifestSamples.path)
        #expect(error.description.hasPrefix(ManifestSamples.path + ": "), "the description starts with the file")
        if let field = c.field {
            #expect(error.description.contains(": \(field): "), "the description names the field")
        }
        for phrase in c.phrases {
            #expect(error.description.contains(phrase), "'\(error.description)' should contain '\(phrase)'")
        }
    }

    @Test("errors say on which line the problem is")
    func lineNumbers() throws {
        let text = ManifestSamples.minimal(setting: "version", to: "1.0")  // version moves to line 6
        let error = try #require(throws: KernelError.self) { try ManifestSamples.parse(text) }
        #expect(error.field == "version")
        #expect(error.message.hasSuffix("(line 6)"))
    }

    @Test("an explicit null counts as absent")
    func explicitNull() throws {
        let error = try #require(throws: KernelError.self) {
            try ManifestSamples.parse(ManifestSamples.minimal(setting: "name", to: "~"))
        }
        #expect(error.field == "name")
        #expect(error.message.contains("is missing"))
    }
}
