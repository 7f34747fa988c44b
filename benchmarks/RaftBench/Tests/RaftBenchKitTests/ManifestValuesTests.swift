import Foundation
import Testing

@testable import RaftBenchKit

@Suite("manifest values")
struct ManifestValuesTests {
    static let manifest = """
        name: raft-log
        config:
          schema:
            fsync:
              type: string
              default: always
        operations:
          - name: appends

        """

    @Test("values go after the schema, before operations; strings quoted, numbers bare, later wins")
    func applied() throws {
        var values = ManifestValues()
        values.set("nodeId", string: "a")
        values.set("peers", string: "a=127.0.0.1:1,b=127.0.0.1:2")
        try values.set(assignment: "electionTimeoutMs=300")
        try values.set(assignment: "nodeId=b")
        let text = try values.applied(to: Self.manifest, manifest: "raft-log.yaml")
        #expect(
            text.contains(
                """
                      default: always
                  values:
                    peers: "a=127.0.0.1:1,b=127.0.0.1:2"
                    electionTimeoutMs: 300
                    nodeId: "b"
                operations:
                """))
        #expect(try ManifestValues().applied(to: Self.manifest, manifest: "m") == Self.manifest)
    }

    @Test("refused: no operations, values already there, not KEY=VALUE")
    func refused() {
        var values = ManifestValues()
        values.set("port", int: 1)
        #expect(throws: HarnessError.self) { try values.applied(to: "name: x\n", manifest: "m") }
        #expect(throws: HarnessError.self) {
            try values.applied(to: "config:\n  values:\n    port: 2\noperations:\n", manifest: "m")
        }
        #expect(throws: HarnessError.self) { try values.set(assignment: "novalue") }
        #expect(throws: HarnessError.self) { try values.set(assignment: "=1") }
    }
}

@Suite("replication preflight")
struct ReplicationPreflightTests {
    static func installation(manifest: String) throws -> (PlexusInstallation, String) {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "raftbench-pre-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try manifest.write(toFile: directory + "/raft-log.yaml", atomically: true, encoding: .utf8)
        return (
            PlexusInstallation(plexus: "plexus", pluginDirectory: directory, manifestDirectory: directory), directory
        )
    }

    @Test("a raft-log without nodeId, peers and status is refused, naming what is missing")
    func refused() throws {
        let (installation, directory) = try Self.installation(manifest: ManifestValuesTests.manifest)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect {
            try PlexusCluster.requireReplication(installation)
        } throws: { error in
            let text = "\(error)"
            return text.contains("'nodeId'") && text.contains("'peers'") && text.contains("'status'")
        }
    }

    @Test("the contract's keys and operation pass")
    func accepted() throws {
        let manifest = """
            config:
              schema:
                nodeId:
                  type: string
                peers:
                  type: string
            operations:
              - name: status
                symbol: px_op_raft_log_status

            """
        let (installation, directory) = try Self.installation(manifest: manifest)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try PlexusCluster.requireReplication(installation)
    }
}
