import Foundation
import PlexusKernel
import Testing

@Suite("node file")
struct NodeConfigTests {
    @Test("topics: default storage, auto-create and the retention of unbound topics")
    func topicDefaults() throws {
        let config = try NodeConfig.parse(
            """
            topics:
              defaultStorage: memory-storage
              autoCreate: false
              defaultRetentionBytes: 268435456
              defaultRetentionMs: 60000
              bindings:
                - {topic: orders, storage: raft-log, retentionBytes: 1024}
            """, path: "plexus.yaml", baseDirectory: "/srv")
        #expect(config.topics.defaultStorage == "memory-storage")
        #expect(!config.topics.autoCreate)
        #expect(config.topics.defaultRetentionBytes == 268_435_456)
        #expect(config.topics.defaultRetentionMs == 60000)
        #expect(config.topics.bindings == [.init(topic: "orders", storage: "raft-log", retentionBytes: 1024)])
    }

    @Test("the default data directory is relative to the node file, with or without a node section")
    func defaultDataDirectory() throws {
        // Found by the node-file fuzz target (Tests/Fuzz/corpus/node-file/node-section-without-data-directory).
        for text in ["admin: {port: 0}\n", "node: {id: n}\n"] {
            let config = try NodeConfig.parse(text, path: "/srv/plexus.yaml", baseDirectory: "/srv")
            #expect(config.dataDirectory == "/srv/.plexus/data", "\(text)")
        }
    }

    @Test("an unknown key under topics is named in the error")
    func unknownTopicKey() {
        #expect {
            try NodeConfig.parse("topics:\n  defaultRetention: 5\n", path: "plexus.yaml", baseDirectory: "/srv")
        } throws: { error in
            "\(error)".contains("defaultRetention")
        }
    }

    @Test("the shipped plexus.yaml (what `make run` starts) stores every topic in raft-log, a shipped plugin")
    func shippedNodeFile() throws {
        let root = ManifestSamples.repositoryRoot()
        let config = try NodeConfig.load(path: root.appendingPathComponent("plexus.yaml").path)
        #expect(config.topics.defaultStorage == "raft-log")
        #expect(config.topics.bindings.allSatisfy { $0.storage == "raft-log" })
        #expect(
            FileManager.default.fileExists(atPath: root.appendingPathComponent("plugin-manifests/raft-log.yaml").path))
    }
}
