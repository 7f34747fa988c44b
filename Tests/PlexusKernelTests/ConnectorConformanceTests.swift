import Foundation
import PlexusConformance
import Testing

@testable import PlexusKernel

/// The connector suite against connectors whose verdict is known: the well-behaved fixture sink and source
/// pass, each deliberately broken fixture fails exactly the rules its header lists, and the shipped
/// HeartbeatSource and ConsoleSink pass, with the rules of the role they do not take (and, for the
/// heartbeat, a declared generator, the rules about events it could take again) reported as not applicable.
@Suite("Conformance kit: connectors")
struct ConnectorConformanceTests {
    typealias Scratch = ConformanceTests.Scratch

    static var options: ConformanceOptions {
        var options = ConformanceOptions()
        options.completionTimeout = .seconds(2)
        options.connectorObserve = .seconds(3)
        options.ruleTimeout = .seconds(30)
        return options
    }

    static let sinkRules = Conformance.rules(for: .connector).map(\.name).filter { $0.hasPrefix("connector.sink.") }
    static let sourceRules = Conformance.rules(for: .connector).map(\.name).filter {
        $0.hasPrefix("connector.source.")
    }

    /// Runs the connector suite; `fault` names a configuration whose external system is unreachable.
    static func run(
        library: String, manifest: String? = nil, config: String? = nil, fault: String? = nil, scratch: Scratch
    ) throws -> ConformanceReport {
        var options = options
        options.faultConfigJSON = fault
        return try Conformance.run(
            .connector, library: library, manifest: manifest, configJSON: config, dataDirectory: scratch.data,
            cacheDirectory: scratch.cache, options: options)
    }

    /// A sink fixture's configuration: its file under the scratch directory, or (fault) in a directory that
    /// does not exist.
    static func sinkConfig(_ scratch: Scratch, fault: Bool = false) -> String {
        #"{"topic": "orders", "path": "\#(scratch.root)\#(fault ? "/missing/dir" : "")/out.log"}"#
    }

    @Test("the fixture sink passes every sink rule, its fault configuration included; source rules do not apply")
    func fixtureSink() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.root, withIntermediateDirectories: true)
        let report = try Self.run(
            library: try FixtureLibraries.library("conformance_sink"), config: Self.sinkConfig(scratch),
            fault: Self.sinkConfig(scratch, fault: true), scratch: scratch)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.results.map(\.rule) == Conformance.rules(for: .connector).map(\.name))
        #expect(report.notApplicableRules == Self.sourceRules, "\n\(report.text)")
        for rule in report.results where rule.notApplicable {
            #expect(rule.reason?.contains("did not publish") == true, "\(rule.line)")
        }
        let written = try String(contentsOfFile: scratch.root + "/out.log", encoding: .utf8)
        #expect(written.contains("conformance-answer-"), "the sink wrote what it acknowledged")
    }

    @Test(
        "the fixture source passes every source rule, its position in its data directory or the host's metadata store; sink rules do not apply",
        arguments: ["file", "kv"])
    func fixtureSource(position: String) throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let report = try Self.run(
            library: try FixtureLibraries.library("conformance_source"),
            config: #"{"topic": "orders", "position": "\#(position)"}"#, scratch: scratch)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.notApplicableRules == Self.sinkRules, "\n\(report.text)")
        #expect(report.summary.hasSuffix("\(Self.sinkRules.count) not applicable"))
        // Where the position was kept: the restart rule passed from the file, or from the kit's store alone.
        #expect(FileManager.default.fileExists(atPath: scratch.data + "/position") == (position == "file"))
    }

    @Test(
        "each broken fixture connector fails exactly the rules its header lists",
        arguments: [
            "broken_sink_acks_twice", "broken_sink_blocks", "broken_sink_acks_on_fault", "broken_source_drops_refused",
        ])
    func brokenConnector(stem: String) throws {
        let listed = try ConformanceTests.rulesListed(in: stem, kind: .connector)
        let rules = Conformance.rules(for: .connector).map(\.name)
        #expect(!listed.isEmpty)
        for rule in listed { #expect(rules.contains(rule), "\(stem).c lists \(rule), which is no rule") }
        let scratch = Scratch()
        defer { scratch.remove() }
        try FileManager.default.createDirectory(atPath: scratch.root, withIntermediateDirectories: true)
        let sink = stem.contains("sink")
        let report = try Self.run(
            library: try FixtureLibraries.library(stem),
            config: sink ? Self.sinkConfig(scratch) : #"{"topic": "orders"}"#,
            fault: sink ? Self.sinkConfig(scratch, fault: true) : nil, scratch: scratch)
        #expect(report.failedRules == rules.filter(listed.contains), "\n\(report.text)")
        for failure in report.results where !failure.passed {
            let reason = failure.reason ?? ""
            #expect(reason.contains("expected") && reason.contains("observed"), "\(failure.rule): \(reason)")
        }
    }

    @Test("HeartbeatSource with its shipped manifest: a valid source and a declared generator")
    func heartbeatSource() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let manifest = FixtureLibraries.repositoryRoot.appendingPathComponent(
            "plugin-manifests/heartbeat-source.yaml"
        ).path
        let report = try Self.run(
            library: try ConformanceTests.builtLibrary("libHeartbeatSource.so"), manifest: manifest,
            config: #"{"topic": "beats", "interval_ms": 20}"#, scratch: scratch)
        #expect(report.failed == 0, "\n\(report.text)")
        let generator = ["connector.source.refused-offered-again", "connector.source.at-least-once-across-restart"]
        #expect(report.notApplicableRules == Self.inOrder(Self.sinkRules + generator), "\n\(report.text)")
        for rule in generator {
            #expect(ConformanceTests.reason(rule, in: report).contains("provides 'event-generator'"))
        }
    }

    @Test("HeartbeatSource without the generator declaration fails the rules about dropped events, as it drops them")
    func heartbeatUndeclared() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let report = try Self.run(
            library: try ConformanceTests.builtLibrary("libHeartbeatSource.so"),
            config: #"{"topic": "beats", "interval_ms": "20"}"#, scratch: scratch)
        #expect(
            report.failedRules == [
                "connector.source.refused-offered-again", "connector.source.at-least-once-across-restart",
            ], "\n\(report.text)")
    }

    @Test("ConsoleSink with its shipped manifest passes the sink rules; it has no external system to fault")
    func consoleSink() throws {
        let scratch = Scratch()
        defer { scratch.remove() }
        let manifest = FixtureLibraries.repositoryRoot.appendingPathComponent("plugin-manifests/console-sink.yaml")
            .path
        let report = try Self.run(
            library: try ConformanceTests.builtLibrary("libConsoleSink.so"), manifest: manifest,
            config: #"{"topics": ["orders"], "showData": false}"#, scratch: scratch)
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(
            report.notApplicableRules == Self.inOrder(Self.sourceRules + ["connector.sink.fault-nacks-never-acks"]),
            "\n\(report.text)")
        #expect(ConformanceTests.reason("connector.sink.fault-nacks-never-acks", in: report).contains("--fault-config"))
    }

    /// Rule names in the order the suite runs them.
    static func inOrder(_ names: [String]) -> [String] {
        Conformance.rules(for: .connector).map(\.name).filter(names.contains)
    }
}
