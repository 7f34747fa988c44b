import Foundation
import PlexusConformance
import PlexusCore
import Synchronization
import Testing

/// The connector conformance kit (`plexus conformance --kind connector`) against the shipped connectors, each
/// with its real external system: Redis Streams source and sink (a redis-server on a free loopback port), the
/// Files source and sink (real files), the PostgreSQL sink (`initdb` + `postgres`).
///
/// Every rule must pass, or be not applicable with its reason: a sink is not a source (and the reverse), which
/// the kit tells from what the instance does after it started. Each sink also runs the fault rule, with a
/// configuration whose external system is unreachable. A source is fed by a writer thread while the kit runs,
/// as a real source is: the kit's rules (a refused publish, a publish held over a stop) need publishes after
/// the first ones.
@Suite("Conformance kit: shipped connectors", .serialized)
struct ShippedConnectorConformanceTests {
    static var options: ConformanceOptions {
        var options = ConformanceOptions()
        options.completionTimeout = .seconds(2)
        options.connectorObserve = .seconds(3)
        options.ruleTimeout = .seconds(30)
        return options
    }

    static let rules = Conformance.rules(for: .connector).map(\.name)
    static let sinkRules = rules.filter { $0.hasPrefix("connector.sink.") }
    static let sourceRules = rules.filter { $0.hasPrefix("connector.source.") }

    /// Runs the kit on a connector library with `config` as its whole configuration. The manifest is the one
    /// the kit derives from the library's descriptor: the shipped manifests (`manifest`, named for the reader)
    /// declare required keys without values, which the kit's manifest loading refuses before `config` applies.
    static func run(manifest: String, library: String, config: String, fault: String? = nil) throws
        -> ConformanceReport
    {
        let scratch = try Repository.temporaryDirectory("plexus-connector-conformance")
        defer { try? FileManager.default.removeItem(at: scratch) }
        var options = options
        options.faultConfigJSON = fault
        let directory = try Repository.products(holding: library)
        let shipped = try String(contentsOf: Repository.root.appendingPathComponent(manifest), encoding: .utf8)
        #expect(shipped.contains("library: \(library)"), "\(manifest) ships \(library)")
        return try Conformance.run(
            .connector, library: directory + "/" + library,
            manifest: nil, configJSON: config,
            dataDirectory: scratch.appendingPathComponent("data").path,
            cacheDirectory: scratch.appendingPathComponent("cache").path, options: options)
    }

    /// The checks every shipped connector's report must meet: nothing failed, every rule reported in the
    /// suite's order, and exactly the other role's rules not applicable, each saying why.
    static func expectConforms(_ report: ConformanceReport, sink: Bool) {
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.results.map(\.rule) == rules, "\n\(report.text)")
        let other = sink ? sourceRules : sinkRules
        #expect(report.notApplicableRules == other, "\n\(report.text)")
        let why = sink ? "did not publish" : "did not subscribe"
        for result in report.results where result.notApplicable {
            #expect(result.reason?.contains(why) == true, "\(result.line)")
        }
    }

    /// A writer that adds one event to a source's external system every 10 ms until stopped.
    final class Feeder: Sendable {
        private let running = Atomic<Bool>(true)
        private let count = Atomic<Int>(0)
        private let finished = DispatchSemaphore(value: 0)

        /// `write(n)` adds the n-th event; its failures (the system briefly away) are skipped.
        init(_ write: @escaping @Sendable (Int) throws -> Void) {
            let thread = Thread { [self] in
                var n = 0
                while running.load(ordering: .relaxed) {
                    if (try? write(n)) != nil {
                        n += 1
                        count.store(n, ordering: .relaxed)
                    }
                    Thread.sleep(forTimeInterval: 0.01)
                }
                finished.signal()
            }
            thread.start()
        }

        var written: Int { count.load(ordering: .relaxed) }

        /// Stops the writer and waits until its thread ended.
        func stop() {
            guard running.exchange(false, ordering: .relaxed) else { return }
            finished.wait()
        }
    }

    static func event(_ prefix: String, _ n: Int) -> CloudEvent {
        CloudEvent(
            id: "\(prefix)-\(n)", source: "/conformance-feeder", type: "test.event", datacontenttype: "text/plain",
            data: Array("payload \(n)".utf8))
    }

    // MARK: Redis Streams

    static let redisManifest = "Plugins/RedisStreamsConnector/redis-streams.yaml"
    static let redisLibrary = "libRedisStreamsConnector.so"

    @Test("Redis Streams sink: every sink rule passes against a real redis-server, the fault rule on port 1")
    func redisSink() throws {
        let redis = try RedisServer()
        let report = try Self.run(
            manifest: Self.redisManifest, library: Self.redisLibrary,
            config: #"{"mode": "sink", "port": \#(redis.port), "stream": "out", "topic": "orders"}"#,
            fault: #"{"mode": "sink", "port": 1, "stream": "out", "topic": "orders", "reconnectMaxMs": 100}"#)
        Self.expectConforms(report, sink: true)
        let ids = try redis.range("out").compactMap { $0.fields["id"] }
        #expect(ids.contains { $0.hasPrefix("conformance-answer-") }, "the sink wrote what it acknowledged: \(ids)")
    }

    @Test("Redis Streams source: every source rule passes, fed with entries while the kit runs")
    func redisSource() throws {
        let redis = try RedisServer()
        let feeder = Feeder { n in
            let e = Self.event("r", n)
            let reply = try redis.command(
                "XADD", "in", "*", "id", e.id, "source", e.source, "type", e.type, "datacontenttype",
                e.datacontenttype ?? "", "data", String(decoding: e.data, as: UTF8.self))
            if case .error(let message) = reply { throw HarnessError(description: message) }
        }
        defer { feeder.stop() }
        let report = try Self.run(
            manifest: Self.redisManifest, library: Self.redisLibrary,
            config:
                #"{"mode": "source", "port": \#(redis.port), "stream": "in", "topic": "incoming", "reconnectMaxMs": 100}"#
        )
        feeder.stop()
        Self.expectConforms(report, sink: false)
        #expect(feeder.written > 0)
    }

    // MARK: Files

    static let fileManifest = "Plugins/FileConnector/file-connector.yaml"
    static let fileLibrary = "libFileConnector.so"

    @Test("Files sink: every sink rule passes; the fault rule with the file in a directory that does not exist")
    func fileSink() throws {
        let directory = try Repository.temporaryDirectory("plexus-file-conformance")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("out.jsonl").path
        let missing = directory.appendingPathComponent("missing/out.jsonl").path
        let report = try Self.run(
            manifest: Self.fileManifest, library: Self.fileLibrary,
            config: #"{"mode": "sink", "path": "\#(path)", "topic": "orders"}"#,
            fault: #"{"mode": "sink", "path": "\#(missing)", "topic": "orders", "reconnectMaxMs": 100}"#)
        Self.expectConforms(report, sink: true)
        let written = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        #expect(written.contains("conformance-answer-"), "the sink wrote what it acknowledged")
        #expect(!FileManager.default.fileExists(atPath: missing), "the fault configuration wrote nothing")
    }

    @Test("Files source: every source rule passes, tailing a file appended to while the kit runs")
    func fileSource() throws {
        let directory = try Repository.temporaryDirectory("plexus-file-conformance")
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("in.jsonl").path
        FileManager.default.createFile(atPath: path, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
        defer { try? handle.close() }
        let feeder = Feeder { n in
            try handle.seekToEnd()
            try handle.write(contentsOf: Data((CloudEventJSON.encode(Self.event("f", n)) + "\n").utf8))
        }
        defer { feeder.stop() }
        let report = try Self.run(
            manifest: Self.fileManifest, library: Self.fileLibrary,
            config: #"{"mode": "source", "path": "\#(path)", "topic": "lines", "reconnectMaxMs": 100}"#)
        feeder.stop()
        Self.expectConforms(report, sink: false)
        #expect(feeder.written > 0)
    }

    // MARK: PostgreSQL

    @Test("PostgreSQL sink: every sink rule passes against a real server, the fault rule on port 1")
    func postgresSink() throws {
        let postgres = try PostgresServer()
        let fault = "host=127.0.0.1 port=1 dbname=postgres user=\(postgres.user) connect_timeout=1"
        let report = try Self.run(
            manifest: "Plugins/PostgresConnector/postgres-sink.yaml", library: "libPostgresConnector.so",
            config: #"{"conninfo": "\#(postgres.conninfo)", "table": "conformance_events", "topic": "orders"}"#,
            fault:
                #"{"conninfo": "\#(fault)", "table": "conformance_events", "topic": "orders", "reconnectMaxMs": 100}"#
        )
        Self.expectConforms(report, sink: true)
        let rows = try postgres.query("SELECT count(*) FROM conformance_events WHERE id LIKE 'conformance-answer-%'")
        #expect((Int(rows.first?.first.flatMap { $0 } ?? "") ?? 0) > 0, "the sink inserted what it acknowledged")
    }
}
