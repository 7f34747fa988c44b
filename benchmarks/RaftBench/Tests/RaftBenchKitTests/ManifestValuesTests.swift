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
