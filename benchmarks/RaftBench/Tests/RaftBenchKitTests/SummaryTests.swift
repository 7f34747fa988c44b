import Foundation
import PlexusBench
import Testing

@testable import RaftBenchKit

@Suite("summaries and ratios")
struct SummaryTests {
    static func sample(_ ms: Double?) -> FailoverSample {
        FailoverSample(
            kill: 1, killed: "a", newLeader: "b", writerNode: "c", failoverMs: ms, catchUpMs: 10, failedWrites: 0)
    }

    @Test("failover: median, p90 and max by nearest rank; under 2 s counted")
    func failover() {
        let summary = FailoverSummary(samples: (1...20).map { Self.sample(Double($0) * 150) })
        #expect(summary.medianMs == 1500)
        #expect(summary.p90Ms == 2700)
        #expect(summary.maxMs == 3000)
        #expect(summary.underTwoSeconds == 13)
        #expect(summary.noRecovery == 0)
    }

    @Test("failover: a kill without recovery ranks above every measured one")
    func noRecovery() {
        let summary = FailoverSummary(samples: [Self.sample(800), Self.sample(nil), Self.sample(600)])
        #expect(summary.medianMs == 800)
        #expect(summary.maxMs == nil)
        #expect(summary.underTwoSeconds == 2 && summary.noRecovery == 1)
        #expect(FailoverSummary(samples: []).medianMs == nil)
    }

    static func level(_ rate: Double, p99: UInt64) -> LevelResult {
        LevelResult(
            concurrency: 1, completed: 10, errors: 0, seconds: 1, opsPerSecond: rate,
            latency: LatencySummary(
                count: 10, mean: 1, p50: 1, p75: 1, p95: 1, p99: p99, p99_9: p99, p99_99: p99, max: p99),
            errorSamples: [])
    }

    @Test("durable ratios: plexus over etcd; none without both")
    func durableRatios() {
        let row = RaftBenchReport.DurableRow(
            concurrency: 16, plexus: Self.level(9000, p99: 2000), etcd: Self.level(3000, p99: 4000))
        #expect(row.throughputRatio == 3)
        #expect(row.p99Ratio == 0.5)
        #expect(RaftBenchReport.DurableRow(concurrency: 1, etcd: Self.level(1, p99: 1)).throughputRatio == nil)
    }

    @Test("the targets table says met, missed or not measured")
    func targets() {
        var report = RaftBenchReport(
            machine: "m", startedAt: "t", payloadSize: 1024, warmupSeconds: 1, seconds: 1, singleSeconds: 1, rounds: 1)
        var durable = RaftBenchReport.Durable()
        durable.rows = [
            .init(concurrency: 1, plexus: Self.level(900, p99: 2000), etcd: Self.level(300, p99: 1000)),
            .init(concurrency: 16, etcd: Self.level(3000, p99: 4000)),
        ]
        durable.plexusError = "node a exited"
        report.durable = durable
        report.failover = RaftBenchReport.Failover()
        let text = ReportText.targets(report)
        #expect(text.contains("3 members C=1: throughput plexus/etcd") && text.contains("3.00x"))
        #expect(text.split(separator: "\n").contains { $0.contains("C=1: p99") && $0.hasSuffix("missed") })
        #expect(
            text.split(separator: "\n").contains { $0.contains("C=16: throughput") && $0.hasSuffix("not measured") })
        #expect(text.split(separator: "\n").contains { $0.contains("failover") && $0.hasSuffix("not measured") })
        #expect(!report.complete)
        #expect(ReportText.durable(durable, report).contains("plexus: not run: node a exited"))
    }
}

@Suite("JSON report")
struct ReportJSONTests {
    @Test("ratios are in the JSON and survive a round trip")
    func ratios() throws {
        var row = RaftBenchReport.DurableRow(concurrency: 16, etcd: SummaryTests.level(3000, p99: 4000))
        #expect(row.throughputRatio == nil)
        row.plexus = SummaryTests.level(6000, p99: 1000)
        let json = String(decoding: try JSONEncoder().encode(row), as: UTF8.self)
        #expect(json.contains(#""throughputRatio":2"#) && json.contains(#""p99Ratio":0.25"#))
        #expect(try JSONDecoder().decode(RaftBenchReport.DurableRow.self, from: Data(json.utf8)) == row)
    }
}
