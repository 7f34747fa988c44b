import Foundation
import PlexusCore
import Testing

/// The files connector against real files: tailing (restart, rotation, truncation) and appending.
@Suite("Files connector", .serialized)
struct FileConnectorTests {
    static let manifest = "Plugins/FileConnector/file-connector.yaml"
    static let library = "libFileConnector.so"

    static func append(_ events: [CloudEvent], to path: String) throws {
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        handle.seekToEndOfFile()
        handle.write(Data(events.map { CloudEventJSON.encode($0) + "\n" }.joined().utf8))
    }

    @Test("source: every line once, in order, across a restart, a rotation and a truncation")
    func sourceTails() throws {
        let directory = try Repository.temporaryDirectory("plexus-file-source")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("events.jsonl").path
        FileManager.default.createFile(atPath: path, contents: nil)
        let first = testEvents("a", 0..<100)
        try Self.append(first, to: path)
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: ["mode": "source", "path": path, "topic": "lines", "batchSize": "16", "reconnectMaxMs": "100"])
        defer { node.shutDown() }
        let collector = try node.collect("lines")
        #expect(collector.wait(for: 100) == first)
        #expect(
            Wait.until(seconds: 5) { FileManager.default.fileExists(atPath: node.dataDirectory + "/position") },
            "without a registry the position is a file in the instance's data directory")

        try node.restartConnector()
        let second = testEvents("b", 0..<50)
        try Self.append(second, to: path)
        collector.wait(for: 150)

        // Rotation: the writer renames the file, then starts a new one at the path.
        let third = testEvents("c", 0..<10)
        try Self.append(third, to: path)
        collector.wait(for: 160)
        try FileManager.default.moveItem(atPath: path, toPath: path + ".1")
        FileManager.default.createFile(atPath: path, contents: nil)
        let fourth = testEvents("d", 0..<20)
        try Self.append(fourth, to: path)
        collector.wait(for: 180)

        // Truncation: the file is cut to nothing and written again from its start.
        Thread.sleep(forTimeInterval: 0.2)
        let truncated = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        try truncated.truncate(atOffset: 0)
        try truncated.close()
        let fifth = testEvents("e", 0..<3)
        try Self.append(fifth, to: path)
        collector.wait(for: 183)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second + third + fourth + fifth)

        // A line that is not a CloudEvent is wrapped, with a stable id.
        try "{\"plain\": true}\n".data(using: .utf8).map { data in
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
            handle.seekToEndOfFile()
            handle.write(data)
            try handle.close()
        }
        let wrapped = collector.wait(for: 184).last
        #expect(wrapped?.type == "io.plexus.file.line")
        #expect(wrapped?.data == Array("{\"plain\": true}".utf8))
    }

    @Test("source: with a registry the position lives in its metadata store, and a restart resumes from it")
    func sourcePositionInMetadataStore() throws {
        let directory = try Repository.temporaryDirectory("plexus-file-source-kv")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("events.jsonl").path
        FileManager.default.createFile(atPath: path, contents: nil)
        let first = testEvents("a", 0..<40)
        try Self.append(first, to: path)
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: ["mode": "source", "path": path, "topic": "lines", "batchSize": "8"], registry: true)
        defer { node.shutDown() }
        let collector = try node.collect("lines")
        #expect(collector.wait(for: 40) == first)
        try node.restartConnector()
        let second = testEvents("b", 0..<10)
        try Self.append(second, to: path)
        collector.wait(for: 50)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second, "the restart resumed from the stored position: nothing repeated")
        #expect(
            !FileManager.default.fileExists(atPath: node.dataDirectory + "/position"),
            "the metadata store, not a file, holds the position")
        let store = try String(
            contentsOfFile: node.root.appendingPathComponent("data/plugins/standalone-registry/kv.log").path,
            encoding: .isoLatin1)
        #expect(store.contains("connectors/file-connector/position"))
    }

    @Test("sink: every event appended as a CloudEvents JSON line, in order, fsynced before the ack, across a restart")
    func sinkAppends() throws {
        let directory = try Repository.temporaryDirectory("plexus-file-sink")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("out.jsonl").path
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: ["mode": "sink", "path": path, "topic": "orders", "batchSize": "32", "fsync": "always"])
        defer { node.shutDown() }
        func lines() -> [CloudEvent] {
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
            return text.split(separator: "\n").compactMap { try? CloudEventJSON.decode(Array($0.utf8)) }
        }
        let first = testEvents("a", 0..<300)
        try node.publish("orders", first)
        #expect(Wait.until(seconds: 10) { lines().count == 300 })
        #expect(lines() == first)
        try node.restartConnector()
        let second = testEvents("b", 0..<100)
        try node.publish("orders", second)
        #expect(Wait.until(seconds: 10) { lines().count == 400 })
        Thread.sleep(forTimeInterval: 0.2)
        #expect(lines() == first + second, "nothing repeated after a clean restart, nothing lost")
    }
}
