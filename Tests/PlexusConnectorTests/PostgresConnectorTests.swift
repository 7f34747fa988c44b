import Foundation
import PlexusCore
import Testing

/// The PostgreSQL sink against a real server started by the test (initdb + postgres on a free port).
@Suite("PostgreSQL sink", .serialized)
struct PostgresConnectorTests {
    static let manifest = "Plugins/PostgresConnector/postgres-sink.yaml"
    static let library = "libPostgresConnector.so"

    /// The rows as events, in the order of their stream offsets.
    static func rows(_ postgres: PostgresServer) throws -> [CloudEvent] {
        try postgres.query(
            "SELECT id, source, type, datacontenttype, subject, extensions->>'seq', convert_from(data, 'UTF8') "
                + "FROM plexus_events ORDER BY stream_offset"
        ).map { row in
            CloudEvent(
                id: row[0] ?? "", source: row[1] ?? "", type: row[2] ?? "", datacontenttype: row[3],
                subject: row[4], extensions: row[5].map { [(key: "seq", value: $0)] } ?? [],
                data: Array((row[6] ?? "").utf8))
        }
    }

    static func count(_ postgres: PostgresServer) -> Int {
        ((try? postgres.query("SELECT count(*) FROM plexus_events"))?.first?.first ?? nil).flatMap { Int($0 ?? "") }
            ?? -1
    }

    @Test("sink: every event inserted once, intact, in order, across a restart of the connector and of PostgreSQL")
    func sinkInsertsAcrossRestarts() throws {
        let postgres = try PostgresServer()
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "conninfo": postgres.conninfo, "topic": "orders", "batchSize": "50", "retry": "1000",
                "backoffDelayMs": "20", "backoffMaxMs": "200", "reconnectMaxMs": "200",
            ])
        defer { node.shutDown() }
        let first = testEvents("a", 0..<200)
        try node.publish("orders", first)
        #expect(Wait.until(seconds: 20) { Self.count(postgres) == 200 })
        #expect(try Self.rows(postgres) == first)

        try node.restartConnector()
        let second = testEvents("b", 0..<100)
        try node.publish("orders", second)
        #expect(Wait.until(seconds: 20) { Self.count(postgres) == 300 })

        postgres.stop()
        let third = testEvents("c", 0..<100)
        try node.publish("orders", third)
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try postgres.restart()
        #expect(Wait.until(seconds: 30) { Self.count(postgres) == 400 }, "rows: \(Self.count(postgres))")
        // Idempotent on (source, id): redelivered events are not inserted twice, so the table is exact.
        #expect(try Self.rows(postgres) == first + second + third)
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")

        // The same event published again (a producer's retry) adds no row.
        try node.publish("orders", [first[0]])
        Thread.sleep(forTimeInterval: 0.5)
        #expect(Self.count(postgres) == 400)
    }
}
