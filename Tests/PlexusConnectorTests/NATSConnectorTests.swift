import Foundation
import PlexusBench
import PlexusCore
import Testing

/// The NATS connector against a real nats-server (JetStream on, file storage) started on a free loopback port.
@Suite("NATS connector", .serialized)
struct NATSConnectorTests {
    static let manifest = "Plugins/NATSConnector/nats-connector.yaml"
    static let library = "libNATSConnector.so"

    static func payloads(_ events: [CloudEvent]) -> [[UInt8]] {
        events.map { Array(CloudEventJSON.encode($0).utf8) }
    }

    /// `events` with repeats removed (the first of each id kept), for at-least-once comparisons.
    static func firsts(_ events: [CloudEvent]) -> [CloudEvent] {
        var seen: Set<String> = []
        return events.filter { seen.insert($0.id).inserted }
    }

    @Test(
        "JetStream sink: every event in the stream intact, once, in order, across a restart of the connector and of the server"
    )
    func jetStreamSinkAcrossRestarts() throws {
        let server = try NATSServer()
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "sink", "url": server.url, "subject": "out.orders", "jetstream": "true", "stream": "OUT",
                "topic": "orders", "batchSize": "16", "retry": "1000", "backoffDelayMs": "20", "backoffMaxMs": "200",
                "reconnectMaxMs": "200", "timeoutMs": "2000",
            ])
        defer { node.shutDown() }
        let reader = try NATSTestClient(url: server.url)

        let first = testEvents("a", 0..<200)
        try node.publish("orders", first)
        #expect(
            Wait.until(seconds: 20) { ((try? reader.streamEvents("OUT")) ?? []).count >= 200 },
            "health: \(node.health); read: \(Result { try reader.streamEvents("OUT").count }); log:\n\(node.logTail.text)"
        )
        #expect(try reader.streamEvents("OUT") == first, "the stream holds exactly the events, in publish order")
        #expect(node.health.hasPrefix("healthy"), "\(node.health)")

        try node.restartConnector()
        let second = testEvents("b", 0..<100)
        try node.publish("orders", second)
        #expect(Wait.until(seconds: 20) { ((try? reader.streamEvents("OUT")) ?? []).count >= 300 })
        #expect(try reader.streamEvents("OUT") == first + second)

        server.stop()
        let third = testEvents("c", 0..<100)
        try node.publish("orders", third)
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try server.start()
        let expected = first + second + third
        let arrived = Wait.until(seconds: 30) {
            Set(((try? reader.streamEvents("OUT")) ?? []).map(\.id)) == Set(expected.map(\.id))
        }
        let stored = try reader.streamEvents("OUT")
        #expect(arrived, "missing: \(Set(expected.map(\.id)).subtracting(stored.map(\.id)).sorted().prefix(10))")
        // Written again after a failure, a message is dropped by the stream (Nats-Msg-Id = the event id): each
        // event once. Events the kernel redelivered after failed writes may land out of the topic's order.
        #expect(stored.count == expected.count, "each event once (\(stored.count) stored)")
        let byID = Dictionary(stored.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        #expect(third.allSatisfy { byID[$0.id] == $0 }, "the events are intact")
        #expect(Array(stored.prefix(300)) == first + second, "what was written before the outage is untouched")
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")
    }

    @Test(
        "JetStream source: every message is published in order, once across a connector restart, none lost across a server restart"
    )
    func jetStreamSourceAcrossRestarts() throws {
        let server = try NATSServer()
        let writer = try NATSTestClient(url: server.url)
        try writer.addStream("IN", subject: "in.>")
        let first = testEvents("a", 0..<150)
        try writer.publishToStream("in.orders", Self.payloads(first))
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "url": server.url, "subject": "in.>", "jetstream": "true", "stream": "IN",
                "topic": "incoming", "batchSize": "20", "reconnectMaxMs": "200", "timeoutMs": "2000",
            ])
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        #expect(collector.wait(for: 150) == first)

        try node.restartConnector()
        let second = testEvents("b", 0..<50)
        try writer.publishToStream("in.orders", Self.payloads(second))
        collector.wait(for: 200)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second, "a clean restart repeats nothing")

        server.stop()
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try server.start()
        let third = testEvents("c", 0..<50)
        // The test's own client reconnects by itself; publish once it has.
        #expect(Wait.until(seconds: 10) { (try? writer.publishToStream("in.orders", [])) != nil })
        try writer.publishToStream("in.orders", Self.payloads(third))
        try writer.publishToStream("in.raw", [Array("plain bytes".utf8)])
        let expected = first + second + third
        #expect(Wait.until(seconds: 20) { Set(collector.all.map(\.id)).isSuperset(of: expected.map(\.id)) })
        Thread.sleep(forTimeInterval: 0.3)
        // An ack the server had not yet written when it stopped may be redelivered: at-least-once, in order.
        let once = Self.firsts(collector.all)
        #expect(Array(once.prefix(250)) == expected, "nothing lost, stream order kept")
        if let raw = once.last {
            #expect(raw.id == "IN-251" && raw.data == Array("plain bytes".utf8) && raw.subject == "in.raw")
            #expect(raw.type == "io.plexus.nats.message" && raw.invalidReason == nil)
        }
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")
    }

    @Test("JetStream source: a batch fetched but never acknowledged (a crash) is redelivered after the ack wait")
    func jetStreamSourceRedeliversAfterCrash() throws {
        let server = try NATSServer()
        let writer = try NATSTestClient(url: server.url)
        try writer.addStream("IN", subject: "in.>")
        let events = testEvents("r", 0..<10)
        try writer.publishToStream("in.x", Self.payloads(events))
        // A previous instance's consumer fetched the first 4 and died without acking them.
        try writer.fetchWithoutAck(stream: "IN", filter: "in.>", durable: "nats-connector", ackWaitMs: 1000, count: 4)
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "url": server.url, "subject": "in.>", "jetstream": "true", "stream": "IN",
                "topic": "incoming", "ackWaitMs": "1000", "reconnectMaxMs": "200",
            ])
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        #expect(Wait.until(seconds: 15) { Set(collector.all.map(\.id)) == Set(events.map(\.id)) })
        #expect(Set(collector.all.map(\.id)) == Set(events.map(\.id)), "the 4 unacknowledged came back")
    }

    @Test("core NATS sink and source: events in order through a real server (the source: at most once)")
    func coreSinkAndSource() throws {
        let server = try NATSServer()
        let reader = try NATSTestClient(url: server.url)
        try reader.subscribe("core.out")
        let sink = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "sink", "url": server.url, "subject": "core.out", "topic": "orders", "batchSize": "16",
                "retry": "1000", "backoffDelayMs": "20", "backoffMaxMs": "200", "reconnectMaxMs": "200",
            ])
        defer { sink.shutDown() }
        let first = testEvents("a", 0..<100)
        try sink.publish("orders", first)
        #expect(reader.next(100) == first)
        try sink.restartConnector()
        let second = testEvents("b", 0..<50)
        try sink.publish("orders", second)
        #expect(reader.next(50) == second)

        let source = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "url": server.url, "subject": "core.in", "topic": "incoming", "batchSize": "20",
                "reconnectMaxMs": "200",
            ])
        defer { source.shutDown() }
        let collector = try source.collect("incoming")
        #expect(Wait.until(seconds: 10) { source.health.hasPrefix("healthy") }, "health: \(source.health)")
        // Subscribed once healthy; give the SUB a moment to reach the server's interest graph.
        Thread.sleep(forTimeInterval: 0.2)
        let writer = try NATSTestClient(url: server.url)
        let events = testEvents("c", 0..<100)
        try writer.publish("core.in", Self.payloads(events))
        #expect(collector.wait(for: 100) == events)
        server.stop()
        #expect(Wait.until(seconds: 10) { source.health.contains("unhealthy") }, "health: \(source.health)")
    }

    @Test(
        "conformance kit: the JetStream sink (an unreachable server as its fault) and the JetStream source pass every rule"
    )
    func conformance() throws {
        let server = try NATSServer()
        let closed = try LoopbackPorts.free(1)[0]  // nothing listens there
        let sinkValues = [
            "mode": "sink", "url": server.url, "subject": "kit.out", "jetstream": "true", "stream": "KITOUT",
            "topic": "orders",
        ]
        var fault = sinkValues
        fault["url"] = "nats://127.0.0.1:\(closed)"
        // A short reconnection backoff: deliveries queued while the sink waits to reconnect are answered after
        // the wait, which must stay within the kit's 5 s.
        fault["reconnectMaxMs"] = "200"
        let sink = try ConnectorKitCLI.run(
            library: Self.library, manifest: Self.manifest, values: sinkValues, fault: fault)
        #expect(sink.status == 0, "\(ConnectorKitCLI.failures(sink.report))\n\(sink.report)")
        #expect(ConnectorKitCLI.passedAll("sink", in: sink.report), "\(sink.report)")

        let writer = try NATSTestClient(url: server.url)
        try writer.addStream("KITIN", subject: "kit.in")
        let feeding = FeedFlag()
        let feeder = Thread {
            var n = 0
            while feeding.on && n < 2000 {
                try? writer.publishToStream("kit.in", Self.payloads(testEvents("k", n..<n + 5)))
                n += 5
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        feeder.start()
        let source = try ConnectorKitCLI.run(
            library: Self.library, manifest: Self.manifest,
            values: [
                "mode": "source", "url": server.url, "subject": "kit.in", "jetstream": "true", "stream": "KITIN",
                "topic": "orders", "reconnectMaxMs": "200",
            ])
        feeding.stop()
        #expect(source.status == 0, "\(ConnectorKitCLI.failures(source.report))\n\(source.report)")
        #expect(ConnectorKitCLI.passedAll("source", in: source.report), "\(source.report)")
        Thread.sleep(forTimeInterval: 0.2)
    }

    @Test("conformance kit: the core NATS source fails exactly the at-least-once rule, as core NATS is at most once")
    func coreSourceConformance() throws {
        let server = try NATSServer()
        let writer = try NATSTestClient(url: server.url)
        let feeding = FeedFlag()
        let feeder = Thread {
            var n = 0
            while feeding.on && n < 2000 {
                try? writer.publish("kit.core", Self.payloads(testEvents("k", n..<n + 5)))
                n += 5
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        feeder.start()
        let source = try ConnectorKitCLI.run(
            library: Self.library, manifest: Self.manifest,
            values: [
                "mode": "source", "url": server.url, "subject": "kit.core", "topic": "orders",
                "reconnectMaxMs": "200",
            ])
        feeding.stop()
        let failed = ConnectorKitCLI.failures(source.report)
        #expect(source.status == 1, "\(source.report)")
        #expect(failed.count == 1, "\(source.report)")
        #expect(failed.first?.contains("connector.source.at-least-once-across-restart") == true, "\(failed)")
        Thread.sleep(forTimeInterval: 0.2)
    }
}
