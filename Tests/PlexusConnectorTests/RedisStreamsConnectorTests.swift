import Foundation
import PlexusCore
import Testing

/// The Redis Streams connector against a real redis-server started on a free loopback port.
@Suite("Redis Streams connector", .serialized)
struct RedisStreamsConnectorTests {
    static let manifest = "Plugins/RedisStreamsConnector/redis-streams.yaml"
    static let library = "libRedisStreamsConnector.so"

    /// The events a stream holds, read back as the sink wrote them.
    static func events(_ redis: RedisServer, _ stream: String) throws -> [CloudEvent] {
        try redis.range(stream).map { entry in
            CloudEvent(
                id: entry.fields["id"] ?? "", source: entry.fields["source"] ?? "", type: entry.fields["type"] ?? "",
                datacontenttype: entry.fields["datacontenttype"], subject: entry.fields["subject"],
                extensions: entry.fields["seq"].map { [(key: "seq", value: $0)] } ?? [],
                data: Array((entry.fields["data"] ?? "").utf8))
        }
    }

    @Test("sink: every event reaches the stream intact and in order, across a restart of the connector and of Redis")
    func sinkDeliversAcrossRestarts() throws {
        let redis = try RedisServer()
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "sink", "port": String(redis.port), "stream": "out", "topic": "orders", "batchSize": "16",
                "retry": "1000", "backoffDelayMs": "20", "backoffMaxMs": "200", "reconnectMaxMs": "200",
            ])
        defer { node.shutDown() }

        let first = testEvents("a", 0..<200)
        try node.publish("orders", first)
        #expect(Wait.until(seconds: 20) { (try? redis.command("XLEN", "out").integer) == 200 })
        #expect(try Self.events(redis, "out") == first, "the stream holds exactly the events, in publish order")
        #expect(node.health.hasPrefix("healthy"), "\(node.health)")

        // A restart of the connector: nothing lost, nothing written twice (the group resumes after the acked).
        try node.restartConnector()
        let second = testEvents("b", 0..<100)
        try node.publish("orders", second)
        #expect(Wait.until(seconds: 20) { (try? redis.command("XLEN", "out").integer) == 300 })
        #expect(try Self.events(redis, "out") == first + second)

        // Redis goes away: the connector turns unhealthy and retries; once Redis is back every event arrives.
        redis.stop()
        let third = testEvents("c", 0..<100)
        try node.publish("orders", third)
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try redis.restart()
        let expected = Set((first + second + third).map(\.id))
        let arrived = Wait.until(seconds: 30) { Set(((try? Self.events(redis, "out")) ?? []).map(\.id)) == expected }
        let stored = try Self.events(redis, "out")
        #expect(arrived, "missing: \(expected.subtracting(stored.map(\.id)).sorted().prefix(10))")
        // At-least-once: a batch whose replies were lost may be written again, never changed.
        let byID = Dictionary(stored.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        for event in third { #expect(byID[event.id] == event) }
        #expect(Array(stored.prefix(300)) == first + second, "what was written before the outage is untouched")
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")
    }

    @Test("source: every entry is published once, in order, across restarts; XACK only after the node acknowledged")
    func sourcePublishesAcrossRestarts() throws {
        let redis = try RedisServer()
        func add(_ events: [CloudEvent]) throws {
            for event in events {
                try redis.command(
                    "XADD", "in", "*", "id", event.id, "source", event.source, "type", event.type, "datacontenttype",
                    event.datacontenttype ?? "", "subject", event.subject ?? "", "seq",
                    event.extensions.first?.value ?? "", "data", String(decoding: event.data, as: UTF8.self))
            }
        }
        let first = testEvents("a", 0..<150)
        try add(first)
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "port": String(redis.port), "stream": "in", "topic": "incoming", "batchSize": "20",
                "reconnectMaxMs": "200",
            ])
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        #expect(collector.wait(for: 150) == first)
        #expect(
            Wait.until(seconds: 5) {
                (try? redis.command("XPENDING", "in", "redis-streams").array.first?.integer) == 0
            },
            "every published entry is acknowledged in Redis")

        try node.restartConnector()
        let second = testEvents("b", 0..<50)
        try add(second)
        collector.wait(for: 200)
        try redis.restart()
        let third = testEvents("c", 0..<50)
        try add(third)
        let all = collector.wait(for: 250)
        // Give a repeat a moment to show up, then check there is none.
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second + third, "published once each, in stream order")
        #expect(all.count >= 250)
    }

    @Test("source: pending entries are read again after a crash; those at or before the saved position are only acked")
    func sourceReadsPendingAfterCrash() throws {
        let redis = try RedisServer()
        var ids: [String] = []
        for n in 0..<30 {
            let reply = try redis.command(
                "XADD", "in", "*", "id", "p-\(n)", "source", "/s", "type", "t", "data", "\(n)")
            ids.append(reply.string ?? "")
        }
        // A previous instance (consumer `test-node`, the node's id) read 20 entries and crashed: it had
        // published the first 5 (its saved position says so) but acknowledged none in Redis.
        try redis.command("XGROUP", "CREATE", "in", "redis-streams", "0")
        let read = try redis.command(
            "XREADGROUP", "GROUP", "redis-streams", "test-node", "COUNT", "20", "STREAMS", "in", ">")
        #expect(read.array.first?.array.last?.array.count == 20)
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "port": String(redis.port), "stream": "in", "topic": "incoming", "batchSize": "7",
            ],
            prepare: { directory in try ids[4].write(toFile: directory + "/position", atomically: true, encoding: .utf8)
            })
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        let expected = (5..<30).map { "p-\($0)" }
        #expect(Wait.until(seconds: 10) { collector.all.count >= 25 })
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all.map(\.id) == expected, "the 5 published before the crash are not published again")
        #expect(
            Wait.until(seconds: 5) { (try? redis.command("XPENDING", "in", "redis-streams").array.first?.integer) == 0 }
        )
    }
}
