import Foundation
import PlexusBench
import PlexusCore
import Synchronization
import Testing

/// The MQTT connector against a real mosquitto broker started on a free loopback port.
@Suite("MQTT connector", .serialized)
struct MQTTConnectorTests {
    static let manifest = "Plugins/MQTTConnector/mqtt-connector.yaml"
    static let library = "libMQTTConnector.so"

    static func payloads(_ events: [CloudEvent]) -> [[UInt8]] {
        events.map { Array(CloudEventJSON.encode($0).utf8) }
    }

    /// `events` with repeats removed (the first of each id kept), for at-least-once comparisons.
    static func firsts(_ events: [CloudEvent]) -> [CloudEvent] {
        var seen: Set<String> = []
        return events.filter { seen.insert($0.id).inserted }
    }

    @Test(
        "sink: every event reaches the MQTT topic intact and in order, across a restart of the connector and of the broker"
    )
    func sinkDeliversAcrossRestarts() throws {
        let broker = try MosquittoBroker()
        // A persistent reader: its session (and the messages queued for it) survives the broker's restart.
        let reader = try MQTTTestClient(port: broker.port, id: "test-reader", cleanSession: false)
        try reader.subscribe("out/orders")
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "sink", "port": String(broker.port), "mqttTopic": "out/orders", "topic": "orders",
                "batchSize": "16", "retry": "1000", "backoffDelayMs": "20", "backoffMaxMs": "200",
                "reconnectMaxMs": "200", "timeoutMs": "2000",
            ])
        defer { node.shutDown() }

        let first = testEvents("a", 0..<200)
        try node.publish("orders", first)
        #expect(Wait.until(seconds: 20) { reader.events.count >= 200 })
        #expect(reader.events == first, "the broker delivered exactly the events, in publish order")
        #expect(node.health.hasPrefix("healthy"), "\(node.health)")

        try node.restartConnector()
        let second = testEvents("b", 0..<100)
        try node.publish("orders", second)
        #expect(Wait.until(seconds: 20) { reader.events.count >= 300 })
        #expect(reader.events == first + second)

        // The broker goes away: the connector turns unhealthy and retries; once it is back every event arrives.
        broker.stop()
        let third = testEvents("c", 0..<100)
        try node.publish("orders", third)
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try broker.start()
        let expected = Set((first + second + third).map(\.id))
        let arrived = Wait.until(seconds: 30) { Set(reader.events.map(\.id)) == expected }
        let received = reader.events
        #expect(
            arrived,
            "missing: \(expected.subtracting(received.map(\.id)).sorted().prefix(10)), health: \(node.health)\n\(broker.output)"
        )
        // At-least-once: a batch whose PUBACKs were lost may be published again, never changed.
        let byID = Dictionary(received.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(third.allSatisfy { byID[$0.id] == $0 }, "the events are intact")
        #expect(Array(received.prefix(300)) == first + second, "what was delivered before the outage is untouched")
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")
        reader.close()
    }

    @Test("source: every message in order, once across a connector restart, none lost across a broker kill")
    func sourcePublishesAcrossRestarts() throws {
        let broker = try MosquittoBroker()
        let publisher = try MQTTTestClient(port: broker.port, id: "test-writer")
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "port": String(broker.port), "mqttTopic": "in/#", "topic": "incoming",
                "batchSize": "20", "reconnectMaxMs": "200", "timeoutMs": "2000",
            ])
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        // The source's session exists once it subscribed; it is healthy once it read.
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")

        let first = testEvents("a", 0..<150)
        try publisher.publish("in/orders", Self.payloads(first))
        #expect(collector.wait(for: 150) == first)

        try node.restartConnector()
        let second = testEvents("b", 0..<50)
        try publisher.publish("in/orders", Self.payloads(second))
        collector.wait(for: 200)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second, "a restart of the connector repeats nothing")

        // The broker is killed: unhealthy; messages published once it is back, before the connector
        // reconnected, wait in the connector's persistent session.
        publisher.close()
        broker.stop()
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try broker.start()
        let again = try MQTTTestClient(port: broker.port, id: "test-writer")
        let third = testEvents("c", 0..<50)
        try again.publish("in/orders", Self.payloads(third))
        // A payload that is no CloudEvent becomes the data of one.
        try again.publish("in/raw", [Array("plain bytes".utf8)])
        #expect(Wait.until(seconds: 20) { Self.firsts(collector.all).count >= 251 })
        Thread.sleep(forTimeInterval: 0.3)
        // The killed broker may send again messages whose PUBACK it had not saved: at-least-once, in order.
        let all = Self.firsts(collector.all)
        #expect(Array(all.prefix(250)) == first + second + third, "nothing lost, in order")
        #expect(all.count == 251)
        if let raw = all.last {
            #expect(raw.data == Array("plain bytes".utf8) && raw.subject == "in/raw" && raw.source == "/mqtt/in/raw")
            #expect(raw.type == "io.plexus.mqtt.message" && raw.invalidReason == nil)
        }
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")
        again.close()
    }

    @Test(
        "source: a batch spooled before a crash (already acknowledged to the broker) is published first at the restart")
    func sourcePublishesSpoolAfterCrash() throws {
        let broker = try MosquittoBroker()
        // A previous instance received these (libmosquitto sent their PUBACKs), spooled them and crashed
        // before the node acknowledged them: the broker no longer has them, only the spool does.
        let spooled = testEvents("s", 0..<5)
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "port": String(broker.port), "mqttTopic": "in/#", "topic": "incoming",
                "reconnectMaxMs": "200",
            ],
            prepare: { directory in
                let batch = "[" + spooled.map { CloudEventJSON.encode($0) }.joined(separator: ",") + "]"
                try batch.write(toFile: directory + "/mqtt-spool", atomically: true, encoding: .utf8)
            })
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        #expect(collector.wait(for: 5) == spooled)
        let publisher = try MQTTTestClient(port: broker.port, id: "test-writer")
        let later = testEvents("l", 0..<10)
        try publisher.publish("in/x", Self.payloads(later))
        collector.wait(for: 15)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == spooled + later, "the spool once, first, then the broker's messages")
        let spool = try? Data(contentsOf: URL(fileURLWithPath: node.dataDirectory + "/mqtt-spool"))
        #expect(spool?.isEmpty == true, "the spool is cleared once the node acknowledged its batch")
        publisher.close()
    }

    @Test("conformance kit: the sink (with an unreachable broker as its fault) and the source pass every rule")
    func conformance() throws {
        let broker = try MosquittoBroker()
        let closed = try LoopbackPorts.free(1)[0]  // nothing listens there
        let sink = try ConnectorKitCLI.run(
            library: Self.library, manifest: Self.manifest,
            values: ["mode": "sink", "port": String(broker.port), "mqttTopic": "kit/out", "topic": "orders"],
            // A short reconnection backoff: deliveries queued while the sink waits to reconnect are answered
            // after the wait, which must stay within the kit's 5 s.
            fault: [
                "mode": "sink", "port": String(closed), "mqttTopic": "kit/out", "topic": "orders",
                "reconnectMaxMs": "200",
            ])
        #expect(sink.status == 0, "\(ConnectorKitCLI.failures(sink.report))\n\(sink.report)")
        #expect(ConnectorKitCLI.passedAll("sink", in: sink.report), "\(sink.report)")

        // The source needs messages to publish: a bounded feed while the kit runs.
        let publisher = try MQTTTestClient(port: broker.port, id: "kit-writer")
        let feeding = FeedFlag()
        let feeder = Thread {
            var n = 0
            while feeding.on && n < 2000 {
                try? publisher.publish("kit/in", Self.payloads(testEvents("k", n..<n + 5)))
                n += 5
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        feeder.start()
        let source = try ConnectorKitCLI.run(
            library: Self.library, manifest: Self.manifest,
            values: [
                "mode": "source", "port": String(broker.port), "mqttTopic": "kit/#", "topic": "orders",
                "reconnectMaxMs": "200",
            ])
        feeding.stop()
        #expect(source.status == 0, "\(ConnectorKitCLI.failures(source.report))\n\(source.report)")
        #expect(ConnectorKitCLI.passedAll("source", in: source.report), "\(source.report)")
        Thread.sleep(forTimeInterval: 0.2)
        publisher.close()
    }
}

/// Whether a test's background feed keeps going.
final class FeedFlag: Sendable {
    private let running = Atomic<Bool>(true)
    var on: Bool { running.load(ordering: .relaxed) }
    func stop() { running.store(false, ordering: .relaxed) }
}
