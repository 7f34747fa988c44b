import Foundation

/// The report as text tables for the terminal: one per section, then the targets of issue 6 with the ratios.
public enum ReportText {
    static func right(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }

    static func left(_ text: String, _ width: Int) -> String {
        text + String(repeating: " ", count: max(0, width - text.count))
    }

    static func ratio(_ value: Double?) -> String { value.map { String(format: "%.2fx", $0) } ?? "-" }

    static func rate(_ value: Double) -> String { String(format: "%.0f", value) }

    /// The three-member table: Plexus and etcd side by side at each concurrency, with the two ratios.
    public static func durable(_ durable: RaftBenchReport.Durable, _ report: RaftBenchReport) -> String {
        var lines = [
            "3 members, durable commit on 127.0.0.1: Plexus raft-log (fsync always, acknowledged once a quorum "
                + "has it on disk) over TCP",
            "vs etcd \(durable.etcdVersion ?? "3.4") (default fsync) over gRPC KV/Put; \(report.payloadSize)-byte "
                + "records, the leader's address, C writes in flight, \(format(report.warmupSeconds)) s warm-up + "
                + "\(format(report.seconds)) s per level; latencies in µs",
        ]
        let header = [
            right("C", 5), right("plexus ops/s", 13), right("p50", 7), right("p99", 7), right("max", 8),
            right("err", 5), " |", right("etcd ops/s", 11), right("p50", 7), right("p99", 7), right("max", 8),
            right("err", 5), " |", right("ops/s ratio", 12), right("p99 ratio", 10),
        ]
        lines.append(header.joined(separator: " "))
        for row in durable.rows {
            let line =
                [right(String(row.concurrency), 5)] + cells(row.plexus, 13) + [" |"] + cells(row.etcd, 11) + [
                    " |", right(ratio(row.throughputRatio), 12), right(ratio(row.p99Ratio), 10),
                ]
            lines.append(line.joined(separator: " "))
        }
        if let error = durable.plexusError { lines.append("plexus: not run: \(error)") }
        if let error = durable.etcdError { lines.append("etcd: not run: \(error)") }
        for row in durable.rows {
            for (name, level) in [("plexus", row.plexus), ("etcd", row.etcd)] {
                if let level, !level.errorSamples.isEmpty {
                    lines.append("\(name) C=\(row.concurrency) errors (by first occurrence):")
                    lines += level.errorSamples.map { "  \($0)" }
                }
            }
        }
        lines += durable.notes
        return lines.joined(separator: "\n")
    }

    /// The ledger table: ledger-storage (E=3, Qw=2, Qa=2) and raft-log (three members) side by side at each
    /// concurrency, with the two ratios.
    public static func ledger(_ ledger: RaftBenchReport.Ledger, _ report: RaftBenchReport) -> String {
        var lines = [
            "3 nodes on 127.0.0.1: ledger-storage (3 bookies, E=3 Qw=2 Qa=2, journal fdatasync before a bookie "
                + "acknowledges) vs raft-log (3 members, fsync always)",
            "both over TCP to one node (the ledger's writer, raft's leader); \(report.payloadSize)-byte events, one per "
                + "publish, C in flight, \(format(report.warmupSeconds)) s warm-up + \(format(report.seconds)) s per "
                + "level; latencies in µs",
        ]
        let header = [
            right("C", 5), right("ledger ops/s", 13), right("p50", 7), right("p99", 7), right("max", 8),
            right("err", 5), " |", right("raft ops/s", 11), right("p50", 7), right("p99", 7), right("max", 8),
            right("err", 5), " |", right("ops/s ratio", 12), right("p99 ratio", 10),
        ]
        lines.append(header.joined(separator: " "))
        for row in ledger.rows {
            let line =
                [right(String(row.concurrency), 5)] + cells(row.ledger, 13) + [" |"] + cells(row.raft, 11) + [
                    " |", right(ratio(row.throughputRatio), 12), right(ratio(row.p99Ratio), 10),
                ]
            lines.append(line.joined(separator: " "))
        }
        if let error = ledger.ledgerError { lines.append("ledger-storage: not run: \(error)") }
        if let error = ledger.raftError { lines.append("raft-log: not run: \(error)") }
        for row in ledger.rows {
            for (name, level) in [("ledger", row.ledger), ("raft", row.raft)] {
                if let level, !level.errorSamples.isEmpty {
                    lines.append("\(name) C=\(row.concurrency) errors (by first occurrence):")
                    lines += level.errorSamples.map { "  \($0)" }
                }
            }
        }
        lines += ledger.notes
        return lines.joined(separator: "\n")
    }

    /// One side's cells of a side-by-side row: ops/s, p50, p99, max, errors.
    static func cells(_ level: LevelResult?, _ width: Int) -> [String] {
        guard let level else {
            return [right("-", width), right("-", 7), right("-", 7), right("-", 8), right("-", 5)]
        }
        return [
            right(rate(level.opsPerSecond), width), right(String(level.latency.p50), 7),
            right(String(level.latency.p99), 7), right(String(level.latency.max), 8),
            right(String(level.errors), 5),
        ]
    }

    /// The single-member table: end-to-end events/s over TCP beside the ceiling, measured on its own.
    public static func single(_ single: RaftBenchReport.Single, _ report: RaftBenchReport) -> String {
        var lines = [
            "1 member (raft-log's defaults: fsync always, group commit), end to end: PlexusClient over TCP -> "
                + "plexus serve -> raft-log; \(report.payloadSize)-byte events,",
            "\(format(report.warmupSeconds)) s warm-up + \(format(report.singleSeconds)) s per level, then the "
                + "ceiling as long; median of \(report.rounds) alternating rounds",
            "ceiling: raw pwrite + fdatasync on the same disk, measured on its own at its best grouping for the "
                + "same window of C (ceil ev/sync), not at the node's events/fsync",
        ]
        lines.append(
            [
                right("C", 5), right("plexus ev/s", 12), right("p50 µs", 8), right("p99 µs", 8), right("err", 5),
                right("events/fsync", 13), right("ceiling ev/s", 13), right("ceil ev/sync", 13),
                right("raw fsync µs", 13), right("ratio", 8),
            ].joined(separator: " "))
        for row in single.rows {
            lines.append(
                [
                    right(String(row.concurrency), 5), right(rate(row.eventsPerSecond), 12),
                    right(String(row.latency.p50), 8), right(String(row.latency.p99), 8),
                    right(String(row.errors), 5), right(String(format: "%.1f", row.eventsPerFsync), 13),
                    right(rate(row.ceilingEventsPerSecond), 13), right(String(row.ceilingEventsPerFsync), 13),
                    right(String(format: "%.0f", row.rawFsyncMicros), 13),
                    right(ratio(row.ratio), 8),
                ].joined(separator: " "))
        }
        if let first = single.rows.first {
            lines.append("entry size on disk: \(first.entryBytes) bytes (56-byte header + encoded event)")
        }
        for row in single.rows where row.roundRatios.count > 1 {
            lines.append(
                "C=\(row.concurrency) rounds: "
                    + row.roundRatios.map { String(format: "%.2fx", $0) }.joined(separator: ", "))
        }
        if let error = single.error { lines.append("single member: not run: \(error)") }
        return lines.joined(separator: "\n")
    }

    /// The failover lines: median, p90, max and how many kills recovered in under 2 s.
    public static func failover(_ failover: RaftBenchReport.Failover) -> String {
        var lines = [
            "Leader failover, 3 members: kill -9 of the stream's leader under a light load sent to another member; "
                + "time from the kill to the first acknowledged write sent after it"
        ]
        if let summary = failover.summary {
            func ms(_ value: Double?) -> String { value.map { String(format: "%.0f ms", $0) } ?? "no recovery" }
            lines.append(
                "kills: \(summary.samples.count); median \(ms(summary.medianMs)), p90 \(ms(summary.p90Ms)), "
                    + "max \(ms(summary.maxMs)); under 2 s: \(summary.underTwoSeconds)/\(summary.samples.count)"
                    + (summary.noRecovery > 0
                        ? "; no write acknowledged within the timeout: \(summary.noRecovery)" : ""))
            let catchUps = summary.samples.compactMap(\.catchUpMs).sorted()
            if let worst = catchUps.last {
                lines.append(
                    "restarted leader caught up (commit index = leader's): median "
                        + String(format: "%.0f ms, max %.0f ms", catchUps[(catchUps.count - 1) / 2], worst))
            }
        }
        if let error = failover.error { lines.append("failover: not run: \(error)") }
        return lines.joined(separator: "\n")
    }

    /// The targets of issue 6, each with its measured ratio and whether it was met.
    public static func targets(_ report: RaftBenchReport) -> String {
        var rows: [[String]] = []
        func verdict(_ value: Double?, _ met: (Double) -> Bool) -> String {
            guard let value else { return "not measured" }
            return met(value) ? "met" : "missed"
        }
        if let durable = report.durable {
            for row in durable.rows {
                rows.append([
                    "3 members C=\(row.concurrency): throughput plexus/etcd", ratio(row.throughputRatio), ">= 2x",
                    verdict(row.throughputRatio) { $0 >= 2 },
                ])
                rows.append([
                    "3 members C=\(row.concurrency): p99 latency plexus/etcd", ratio(row.p99Ratio), "<= 1x",
                    verdict(row.p99Ratio) { $0 <= 1 },
                ])
            }
            if durable.rows.isEmpty {
                rows.append(["3 members: plexus vs etcd", "-", ">= 2x, <= 1x", "not measured"])
            }
        }
        if let single = report.single {
            for row in single.rows {
                rows.append([
                    "1 member C=\(row.concurrency): events/s plexus/ceiling", ratio(row.ratio), ">= 0.70x",
                    verdict(row.ratio) { $0 >= 0.70 },
                ])
            }
            if single.rows.isEmpty { rows.append(["1 member: plexus/ceiling", "-", ">= 0.70x", "not measured"]) }
        }
        if let failover = report.failover {
            if let summary = failover.summary, !summary.samples.isEmpty {
                rows.append([
                    "failover: kills with a write acknowledged < 2 s",
                    "\(summary.underTwoSeconds)/\(summary.samples.count)", "all",
                    summary.underTwoSeconds == summary.samples.count ? "met" : "missed",
                ])
            } else {
                rows.append(["failover: kills with a write acknowledged < 2 s", "-", "all", "not measured"])
            }
        }
        if let ledger = report.ledger {
            for row in ledger.rows {
                rows.append([
                    "ledger E=3 Qw=2 Qa=2 C=\(row.concurrency): throughput ledger/raft-log", ratio(row.throughputRatio),
                    ">= 1x", verdict(row.throughputRatio) { $0 >= 1 },
                ])
                rows.append([
                    "ledger E=3 Qw=2 Qa=2 C=\(row.concurrency): p99 ledger/raft-log", ratio(row.p99Ratio), "<= 1x",
                    verdict(row.p99Ratio) { $0 <= 1 },
                ])
            }
            if ledger.rows.isEmpty { rows.append(["ledger vs raft-log", "-", ">= 1x, <= 1x", "not measured"]) }
        }
        let widths = (0..<4).map { column in
            ([["target", "measured", "goal", ""]] + rows).map { $0[column].count }.max() ?? 0
        }
        return
            ([report.ledger != nil && report.durable == nil ? "Issue 15 targets" : "Targets"]
            + ([["target", "measured", "goal", ""]] + rows).map { row in
                [left(row[0], widths[0]), right(row[1], widths[1]), left(row[2], widths[2]), row[3]].joined(
                    separator: "   ")
            }).joined(separator: "\n")
    }

    static func format(_ seconds: Double) -> String {
        seconds == seconds.rounded() ? String(Int(seconds)) : String(format: "%.1f", seconds)
    }
}
