import Foundation
import PlexusBench
import PlexusConformance
import PlexusCore
import Testing

/// The S3 sink against moto's S3 server started by the test on a free loopback port.
@Suite("S3 sink", .serialized)
struct S3ConnectorTests {
    static let manifest = "Plugins/S3Connector/s3-sink.yaml"
    static let library = "libS3Connector.so"

    static func values(_ moto: MotoServer) -> [String: String] {
        [
            "endpoint": moto.endpoint, "bucket": "events", "prefix": "plexus/", "region": MotoServer.region,
            // moto's fake credentials, not secrets.
            "accessKeyId": MotoServer.fakeAccessKey, "secretAccessKey": MotoServer.fakeSecretKey,
            "topic": "orders", "batchSize": "50", "batchMaxWaitMs": "100", "maxInFlight": "200", "retry": "1000",
            "backoffDelayMs": "20", "backoffMaxMs": "200", "reconnectMaxMs": "200",
        ]
    }

    /// Every event in the bucket, objects in key order; checks each key names its object's offsets.
    static func stored(_ moto: MotoServer) throws -> [CloudEvent] {
        var all: [CloudEvent] = []
        for (key, events) in try moto.objects("events") {
            let name = key.split(separator: "/").last.map(String.init) ?? ""
            let offsets = name.dropLast(".jsonl".count).split(separator: "-").compactMap { UInt64($0) }
            #expect(key.hasPrefix("plexus/orders/") && key.hasSuffix(".jsonl") && offsets.count == 2, "\(key)")
            if offsets.count == 2 {
                // Each offset at most once, inside the key's range (an object after an outage may have gaps).
                #expect(Int(offsets[1] - offsets[0]) + 1 >= events.count, "\(key) holds \(events.count) events")
            }
            #expect(Set(events.map(\.id)).count == events.count, "\(key) holds an event twice")
            let order = events.compactMap { $0.extensions.first?.value }.compactMap(Int.init)
            #expect(order == order.sorted(), "\(key) is not in order: \(order)")
            all += events
        }
        return all
    }

    static func count(_ moto: MotoServer) -> Int { ((try? stored(moto)) ?? []).count }

    @Test("sink: events stored intact and in order, once while the server is up, all after a restart of the server")
    func sinkWritesAcrossRestarts() throws {
        let moto = try MotoServer()
        try moto.createBucket("events")
        let node = try ConnectorNode(manifest: Self.manifest, library: Self.library, values: Self.values(moto))
        defer { node.shutDown() }

        let first = testEvents("a", 0..<200)
        try node.publish("orders", first)
        #expect(Wait.until(seconds: 20) { Self.count(moto) == 200 }, "stored: \(Self.count(moto))")
        #expect(try Self.stored(moto) == first)
        #expect(try moto.keys("events").count >= 4, "batches of at most 50 make several objects")
        #expect(node.health.hasPrefix("healthy"), "\(node.health)")

        // A restart of the connector resumes after the acknowledged: nothing lost, nothing written twice.
        try node.restartConnector()
        let second = testEvents("b", 0..<100)
        try node.publish("orders", second)
        #expect(Wait.until(seconds: 20) { Self.count(moto) == 300 }, "stored: \(Self.count(moto))")
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try Self.stored(moto) == first + second)

        // The server goes away (moto keeps objects in memory: its restart starts an empty bucket). Events
        // published meanwhile are retried and all arrive once it is back.
        moto.stop()
        let third = testEvents("c", 0..<100)
        try node.publish("orders", third)
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try moto.start()
        try moto.createBucket("events")
        let expected = Set(third.map(\.id))
        let arrived = Wait.until(seconds: 30) { Set(((try? Self.stored(moto)) ?? []).map(\.id)) == expected }
        let stored = try Self.stored(moto)
        #expect(arrived, "missing: \(expected.subtracting(stored.map(\.id)).sorted().prefix(10))")
        // At-least-once: an event redelivered in a batch grouped differently may sit in two objects, intact.
        let byID = Dictionary(third.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for event in stored { #expect(byID[event.id] == event, "\(event.id) changed or unexpected") }
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")
    }

    @Test("the connector conformance kit passes against the sink, its fault configuration an endpoint that refuses")
    func conformance() throws {
        let moto = try MotoServer()
        try moto.createBucket("events")
        let scratch = try Repository.temporaryDirectory("plexus-s3-conformance")
        defer { try? FileManager.default.removeItem(at: scratch) }
        func config(_ endpoint: String) -> String {
            #"{"endpoint": "\#(endpoint)", "bucket": "events", "accessKeyId": "\#(MotoServer.fakeAccessKey)", "secretAccessKey": "\#(MotoServer.fakeSecretKey)", "topic": "orders", "batchSize": 50, "batchMaxWaitMs": 20, "maxInFlight": 100, "timeoutMs": 2000, "reconnectMaxMs": 200}"#
        }
        // A free loopback port: nothing listens there, so every connection is refused.
        let closed = try LoopbackPorts.free(1)[0]
        let report = try ConnectorConformance.run(
            library: Self.library, manifest: Self.manifest, config: config(moto.endpoint),
            fault: config("http://127.0.0.1:\(closed)"), scratch: scratch)
        #expect(report.failed == 0, "\n\(report.text)")
        let sourceRules = Conformance.rules(for: .connector).map(\.name).filter { $0.hasPrefix("connector.source.") }
        #expect(report.notApplicableRules == sourceRules, "\n\(report.text)")
        #expect(try !moto.keys("events").isEmpty, "the sink wrote what it acknowledged")
    }
}
