import CLibpq
import Foundation
import PlexusConformance
import PlexusCore
import Synchronization
import Testing

/// The PostgreSQL outbox source against a real server started by the test (initdb + postgres on a free port).
@Suite("PostgreSQL source", .serialized)
struct PostgresSourceTests {
    static let manifest = "Plugins/PostgresConnector/postgres-sink.yaml"
    static let library = "libPostgresConnector.so"

    /// The outbox table exactly as the README documents it.
    static let outboxTable = """
        CREATE TABLE plexus_outbox (
            position bigserial PRIMARY KEY,
            txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            id text, source text NOT NULL, type text NOT NULL, specversion text NOT NULL DEFAULT '1.0',
            subject text, time text, datacontenttype text, dataschema text,
            extensions jsonb NOT NULL DEFAULT '{}', data bytea NOT NULL DEFAULT '')
        """

    /// One INSERT of `events` into the outbox (one transaction).
    static func insert(_ events: [CloudEvent]) -> String {
        func text(_ value: String?) -> String {
            value.map { "'" + $0.replacingOccurrences(of: "'", with: "''") + "'" } ?? "NULL"
        }
        let rows = events.map { event in
            let extensions =
                "{" + event.extensions.map { "\"\($0.key)\": \"\($0.value)\"" }.joined(separator: ", ") + "}"
            return "(\(text(event.id)), \(text(event.source)), \(text(event.type)), \(text(event.datacontenttype)), "
                + "\(text(event.subject)), \(text(extensions))::jsonb, "
                + "convert_to(\(text(String(decoding: event.data, as: UTF8.self))), 'UTF8'))"
        }
        return "INSERT INTO plexus_outbox (id, source, type, datacontenttype, subject, extensions, data) VALUES "
            + rows.joined(separator: ", ")
    }

    @Test("source: every row published once, intact, in order, across a restart of the connector and of PostgreSQL")
    func sourcePublishesAcrossRestarts() throws {
        let postgres = try PostgresServer()
        _ = try postgres.query(Self.outboxTable)
        let first = testEvents("a", 0..<150)
        for chunk in stride(from: 0, to: first.count, by: 50) {
            _ = try postgres.query(Self.insert(Array(first[chunk..<chunk + 50])))
        }
        // Polling once a minute: rows inserted later arrive through LISTEN/NOTIFY (the trigger it creates).
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "conninfo": postgres.conninfo, "topic": "incoming", "batchSize": "20",
                "notifyChannel": "plexus_outbox", "pollIntervalMs": "60000", "reconnectMaxMs": "200",
            ])
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        #expect(collector.wait(for: 150) == first)
        #expect(node.health.hasPrefix("healthy"), "\(node.health)")

        // A restart of the connector resumes after the saved position: nothing lost, nothing repeated.
        try node.restartConnector()
        let second = testEvents("b", 0..<100)
        _ = try postgres.query(Self.insert(second))
        collector.wait(for: 250)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second)

        // PostgreSQL goes away: unhealthy; rows inserted once it is back arrive, none twice.
        postgres.stop()
        #expect(Wait.until(seconds: 10) { node.health.contains("unhealthy") }, "health: \(node.health)")
        try postgres.restart()
        let third = testEvents("c", 0..<100)
        _ = try postgres.query(Self.insert(third))
        collector.wait(for: 350, seconds: 20)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second + third)
        #expect(Wait.until(seconds: 10) { node.health.hasPrefix("healthy") }, "health: \(node.health)")
    }

    @Test("source: a row whose transaction commits after later rows committed is published, not skipped")
    func lateCommitIsNotSkipped() throws {
        let postgres = try PostgresServer()
        _ = try postgres.query(Self.outboxTable)
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: [
                "mode": "source", "conninfo": postgres.conninfo, "topic": "incoming", "pollIntervalMs": "50",
                "reconnectMaxMs": "200",
            ])
        defer { node.shutDown() }
        let collector = try node.collect("incoming")

        // The connector has connected and made its index (the DDL waits for open transactions on the table, so
        // it must not meet A's).
        let deadline = Date().addingTimeInterval(60)
        while try postgres.query("SELECT to_regclass('plexus_outbox_txid_position') IS NOT NULL").first?.first == "f",
            Date() < deadline
        {
            Thread.sleep(forTimeInterval: 0.05)
        }
        // Writer A takes the first position and keeps its transaction open; writer B commits ten rows after it.
        let writerA = try PostgresSession(postgres.conninfo)
        try writerA.execute("BEGIN")
        let late = testEvents("late", 0..<1)
        try writerA.execute(Self.insert(late))
        let early = testEvents("early", 0..<10)
        _ = try postgres.query(Self.insert(early))
        let positions = try postgres.query("SELECT position FROM plexus_outbox ORDER BY position").map { $0[0] ?? "" }
        #expect(positions.count == 10 && !positions.contains("1"), "A's row holds position 1: \(positions)")
        // B's rows wait behind A's open transaction (several polls pass).
        Thread.sleep(forTimeInterval: 1)
        #expect(collector.all.isEmpty, "published before A ended: \(collector.all.map(\.id))")
        try writerA.execute("COMMIT")
        collector.wait(for: 11)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all.map(\.id) == (late + early).map(\.id))
    }

    @Test("the connector conformance kit passes against the source")
    func conformance() throws {
        let postgres = try PostgresServer()
        _ = try postgres.query(Self.outboxTable)
        // A live outbox: a writer keeps committing rows while the kit runs, so there is always more to read.
        let conninfo = postgres.conninfo
        let done = Atomic<Bool>(false)
        let writer = Thread {
            var n = 0
            while !done.load(ordering: .relaxed) {
                _ = try? PostgresServer.query(conninfo, Self.insert(testEvents("k", n..<(n + 20))))
                n += 20
                Thread.sleep(forTimeInterval: 0.05)
            }
        }
        writer.start()
        defer { done.store(true, ordering: .relaxed) }
        let scratch = try Repository.temporaryDirectory("plexus-postgres-conformance")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let report = try ConnectorConformance.run(
            library: Self.library, manifest: Self.manifest,
            config:
                #"{"mode": "source", "conninfo": "\#(postgres.conninfo)", "topic": "orders", "batchSize": 20, "pollIntervalMs": 50}"#,
            scratch: scratch)
        #expect(report.failed == 0, "\n\(report.text)")
        let sinkRules = Conformance.rules(for: .connector).map(\.name).filter { $0.hasPrefix("connector.sink.") }
        #expect(report.notApplicableRules == sinkRules, "\n\(report.text)")
    }
}

/// Runs the connector conformance kit against a shipped connector library and manifest.
enum ConnectorConformance {
    static func run(library: String, manifest: String, config: String, fault: String? = nil, scratch: URL) throws
        -> ConformanceReport
    {
        var options = ConformanceOptions()
        options.completionTimeout = .seconds(2)
        options.connectorObserve = .seconds(3)
        options.ruleTimeout = .seconds(30)
        options.faultConfigJSON = fault
        // A manifest whose schema has required keys does not load without values (the values are checked when
        // it is parsed, before the kit's configuration replaces them): a copy carries `config` as its values.
        var text = try String(contentsOf: Repository.root.appendingPathComponent(manifest), encoding: .utf8)
        guard let range = text.range(of: "\nconfig:\n") else {
            throw HarnessError(description: "\(manifest) has no config section")
        }
        text.replaceSubrange(range, with: "\nconfig:\n  values: \(config)\n")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        let copy = scratch.appendingPathComponent((manifest as NSString).lastPathComponent)
        try text.write(to: copy, atomically: true, encoding: .utf8)
        return try Conformance.run(
            .connector, library: try Repository.products(holding: library) + "/" + library,
            manifest: copy.path, configJSON: config,
            dataDirectory: scratch.appendingPathComponent("data").path,
            cacheDirectory: scratch.appendingPathComponent("cache").path, options: options)
    }
}

/// One libpq connection a test keeps open (to hold a transaction).
final class PostgresSession: @unchecked Sendable {
    // Safe: used from the one test that owns it.
    private let connection: OpaquePointer

    init(_ conninfo: String) throws {
        guard let made = PQconnectdb(conninfo) else { throw HarnessError(description: "libpq: no connection") }
        guard PQstatus(made) == CONNECTION_OK else {
            defer { PQfinish(made) }
            throw HarnessError(description: String(cString: PQerrorMessage(made)))
        }
        connection = made
    }

    func execute(_ sql: String) throws {
        let result = PQexec(connection, sql)
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            throw HarnessError(description: String(cString: PQresultErrorMessage(result)))
        }
    }

    deinit { PQfinish(connection) }
}
