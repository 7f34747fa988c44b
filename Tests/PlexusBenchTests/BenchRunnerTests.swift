import Foundation
import PlexusBench
import Testing

/// The runner against an in-process driver: pacing, the message bound, the warmup, the report's counts.
@Suite("Runner")
struct BenchRunnerTests {
    @Test("At 2000 msg/s for 1 s after 0.5 s of warmup: about 3000 sent, 2000 measured, all consumed")
    func paced() async throws {
        let workload = Workload(
            name: "paced", messageSize: 64, producerRate: 2000, producers: 2, consumers: 2, durationSeconds: 1,
            warmupSeconds: 0.5, maxInFlight: 10)
        let report = try await BenchRunner(workload: workload, driver: InProcessDriver(), server: "-").run()
        let table = Comment(rawValue: ReportFormatter.table(report))
        #expect((2700...3100).contains(report.sent), table)
        #expect(report.published == report.sent && report.consumed == report.sent, table)
        #expect(abs(report.publishRate - 2000) < 200, table)
        #expect(abs(report.consumeRate - 2000) < 200, table)
        // Latencies only for messages sent after the warmup.
        #expect((1800...2100).contains(Int(report.endToEndLatency.count)), table)
        #expect(report.series.reduce(0) { $0 + $1.published } == report.published, table)
        #expect(report.notes.isEmpty && report.errorSamples.isEmpty, table)
        #expect(report.label == "in-process" && report.driver == "in-process")
    }

    @Test("At max rate the run stops at maxMessages")
    func boundedByCount() async throws {
        let workload = Workload(
            name: "bounded", messageSize: 16, producers: 3, durationSeconds: 30, maxInFlight: 5, maxMessages: 600)
        let report = try await BenchRunner(workload: workload, driver: InProcessDriver(), server: "-").run()
        #expect(report.sent == 600 && report.consumed == 600, Comment(rawValue: ReportFormatter.table(report)))
    }

    @Test("A completion run twice is counted once and reported in the notes")
    func repeatedCompletion() async throws {
        let workload = Workload(name: "twice", messageSize: 16, durationSeconds: 5, maxInFlight: 4, maxMessages: 100)
        let report = try await BenchRunner(
            workload: workload, driver: InProcessDriver(completeTwice: true), server: "-"
        )
        .run()
        #expect(report.sent == 100 && report.published == 100)
        #expect(report.notes.contains { $0.contains("more than once") }, "\(report.notes)")
    }

    @Test("The JSON report round-trips and the table names every percentile")
    func formats() async throws {
        let workload = Workload(name: "fmt", messageSize: 16, durationSeconds: 5, maxMessages: 50)
        let report = try await BenchRunner(workload: workload, driver: InProcessDriver(), server: "-", label: "x").run()
        let decoded = try JSONDecoder().decode(BenchReport.self, from: ReportFormatter.json(report))
        #expect(decoded == report)
        let table = ReportFormatter.table(report)
        for column in LatencySummary.columns { #expect(table.contains(column), "\(table)") }
        #expect(table.hasPrefix("x: workload fmt, driver in-process"))
    }
}
