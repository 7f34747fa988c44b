import Foundation
import Testing

@testable import PlexusBench

/// The benchmark node writer gives every listener a free port (bench-tcp once ran its nodes without the HTTP
/// plugin because only the TCP port was reassigned and 10105 was taken).
struct BenchNodeFilesTests {
    static let tcp = """
        manifest: 1
        name: tcp-protocol
        kind: protocol
        config:
          schema:
            host:
              type: string
              default: 127.0.0.1
            port:
              type: integer
              default: 10000
              description: The port to listen on.
        operations:
          - name: port
            symbol: px_op_tcp_protocol_port
        """
    static let http = tcp.replacingOccurrences(of: "tcp-protocol", with: "http-protocol")
        .replacingOccurrences(of: "10000", with: "10105")
    static let heartbeat = """
        manifest: 1
        name: heartbeat-source
        config:
          schema:
            interval_ms:
              type: integer
              default: 1000
          values:
            interval_ms: 2000
        operations:
          - name: set-interval
        """
    static let raftLog = """
        manifest: 1
        name: raft-log
        config:
          schema:
            fsync:
              type: string
              default: always
            listen:
              type: string
              default: ""
        deadlines: {start_ms: 5000}
        """

    @Test func freePortsAreDistinctFreeAndBelowTheEphemeralRange() throws {
        let ports = try LoopbackPorts.free(8) + LoopbackPorts.free(8)
        #expect(Set(ports).count == 16)
        #expect(ports.allSatisfy { (1024..<LoopbackPorts.ephemeralLow).contains($0) })
    }

    @Test func findsPortKeysInTheSchemaOnly() {
        #expect(BenchNodeFiles.listenerKeys(in: Self.tcp) == ["port"])
        #expect(BenchNodeFiles.listenerKeys(in: Self.heartbeat).isEmpty)
        #expect(BenchNodeFiles.listenerKeys(in: Self.raftLog).isEmpty)
    }

    @Test func addsAValuesBlockAtTheEndOfConfig() throws {
        let edited = try BenchNodeFiles.applying([("port", "4321")], to: Self.tcp, manifest: "tcp.yaml")
        #expect(edited.contains("      description: The port to listen on.\n  values:\n    port: 4321\noperations:"))
        let raft = try BenchNodeFiles.applying([("fsync", "never")], to: Self.raftLog, manifest: "raft.yaml")
        #expect(raft.contains("      default: \"\"\n  values:\n    fsync: never\ndeadlines:"))
    }

    @Test func mergesIntoAnExistingValuesBlock() throws {
        let edited = try BenchNodeFiles.applying(
            [("interval_ms", "50"), ("topic", "beat")], to: Self.heartbeat, manifest: "hb.yaml")
        #expect(edited.contains("  values:\n    interval_ms: 50\n    topic: beat\noperations:"))
        #expect(!edited.contains("2000"))
    }

    @Test func refusesAManifestWithoutConfig() {
        #expect(throws: BenchError.self) {
            try BenchNodeFiles.applying([("port", "1")], to: "name: x\n", manifest: "x.yaml")
        }
    }

    @Test func everyListenerGetsAFreePortOfItsOwn() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("bench-node-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: root) }
        let shipped = root.appendingPathComponent("shipped")
        try FileManager.default.createDirectory(at: shipped, withIntermediateDirectories: true)
        for (file, text) in [
            ("tcp-protocol.yaml", Self.tcp), ("http-protocol.yaml", Self.http),
            ("heartbeat-source.yaml", Self.heartbeat), ("raft-log.yaml", Self.raftLog),
        ] {
            try text.write(to: shipped.appendingPathComponent(file), atomically: true, encoding: .utf8)
        }
        let node = try BenchNodeFiles.write(
            directory: root.appendingPathComponent("node").path, manifestDirectory: shipped.path,
            pluginSearchPath: "/plugins", storage: "raft-log", retentionBytes: 1024,
            values: ["raft-log": [("fsync", "interval")]])
        #expect(node.listeners.map(\.owner) == ["admin", "http-protocol", "tcp-protocol"])
        let ports = node.listeners.map(\.port)
        #expect(Set(ports).count == 3)
        #expect(!ports.contains(10000) && !ports.contains(10105) && !ports.contains(10106))
        let manifests = node.directory + "/manifests/"
        for owner in ["tcp-protocol", "http-protocol"] {
            let text = try String(contentsOfFile: manifests + owner + ".yaml", encoding: .utf8)
            #expect(text.contains("  values:\n    port: \(node.port(of: owner) ?? -1)\n"))
        }
        let raft = try String(contentsOfFile: manifests + "raft-log.yaml", encoding: .utf8)
        #expect(raft.contains("    fsync: interval"))
        let config = try String(contentsOfFile: node.directory + "/plexus.yaml", encoding: .utf8)
        #expect(config.contains("admin: {host: 127.0.0.1, port: \(node.adminPort)}"))
        #expect(config.contains("defaultStorage: raft-log"))
        #expect(config.contains("defaultRetentionBytes: 1024"))
        #expect(node.shellAssignments.contains("port_http_protocol=\(node.port(of: "http-protocol") ?? -1)"))
    }
}
