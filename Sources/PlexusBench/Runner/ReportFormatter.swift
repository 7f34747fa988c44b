import Foundation

/// Renders a ``BenchReport`` as JSON or as a table for people.
public enum ReportFormatter {
    /// The report as pretty-printed JSON with sorted keys.
    public static func json(_ report: BenchReport) throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(report)
    }

    /// The report as a table: rates and counts, the latency percentiles, then the per-second series.
    public static func table(_ report: BenchReport) -> String {
        let w = report.workload
        let rate = w.producerRate > 0 ? "\(w.producerRate) msg/s target" : "max rate (maxInFlight \(w.maxInFlight))"
        var lines = [
            "\(report.label): workload \(w.name), driver \(report.driver) at \(report.server)",
            "  \(report.semantics)",
            "  \(w.topics) topic(s) × \(w.producers) producer(s) × \(w.consumers) consumer(s), \(w.messageSize) B, "
                + "\(rate), \(format(w.warmupSeconds)) s warmup + \(format(report.measuredSeconds)) s measured",
            "  machine: \(report.machine)",
            "",
            "  published  \(pad(count(report.published), 12)) msgs  \(pad(count(Int(report.publishRate)), 10)) msg/s"
                + "  errors \(report.publishErrors)  (sent \(count(report.sent)))",
            "  consumed   \(pad(count(report.consumed), 12)) msgs  \(pad(count(Int(report.consumeRate)), 10)) msg/s"
                + "  errors \(report.consumerErrors)"
                + (report.malformed > 0 ? "  malformed \(report.malformed)" : ""),
            "",
        ]
        let header = ["latency µs"] + LatencySummary.columns + ["mean", "samples"]
        var rows: [[String]] = [header]
        for (name, summary) in [("publish", report.publishLatency), ("end-to-end", report.endToEndLatency)] {
            rows.append([name] + summary.values.map(count) + [format(summary.mean), count(Int(summary.count))])
        }
        lines += columns(rows).map { "  " + $0 }
        if !report.series.isEmpty {
            lines.append("")
            lines.append(
                "  per second (published/consumed), from the start; measuring starts at \(format(w.warmupSeconds)) s:")
            var line = " "
            for point in report.series {
                let cell = " \(point.second):\(point.published)/\(point.consumed)"
                if line.count + cell.count > 110 {
                    lines.append(line)
                    line = " "
                }
                line += cell
            }
            lines.append(line)
        }
        for note in report.notes { lines.append("  note: \(note)") }
        for sample in report.errorSamples { lines.append("  error: \(sample)") }
        return lines.joined(separator: "\n")
    }

    /// Rows with each column padded to its widest cell, the first left-aligned, the others right-aligned.
    static func columns(_ rows: [[String]]) -> [String] {
        let widths = (0..<(rows.map(\.count).max() ?? 0)).map { column in
            rows.map { column < $0.count ? $0[column].count : 0 }.max() ?? 0
        }
        return rows.map { row in
            row.enumerated().map { column, cell in
                column == 0
                    ? cell.padding(toLength: widths[column], withPad: " ", startingAt: 0)
                    : pad(cell, widths[column])
            }.joined(separator: "  ")
        }
    }

    /// `1234567` → `1,234,567`.
    static func count<N: BinaryInteger>(_ value: N) -> String {
        let digits = String(value.magnitude)
        var out = ""
        for (index, digit) in digits.enumerated() {
            if index > 0 && (digits.count - index) % 3 == 0 { out.append(",") }
            out.append(digit)
        }
        return (value < 0 ? "-" : "") + out
    }

    private static func pad(_ text: String, _ width: Int) -> String {
        String(repeating: " ", count: max(0, width - text.count)) + text
    }

    private static func format(_ value: Double) -> String {
        value == value.rounded() ? String(Int(value)) : String(format: "%.1f", value)
    }
}
