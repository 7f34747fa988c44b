import Histogram

/// Percentiles of one latency distribution, in microseconds, as OpenMessaging Benchmark reports them.
public struct LatencySummary: Codable, Sendable, Equatable {
    /// The number of samples.
    public var count: UInt64
    public var mean: Double
    public var p50: UInt64
    public var p75: UInt64
    public var p95: UInt64
    public var p99: UInt64
    public var p99_9: UInt64
    public var p99_99: UInt64
    public var max: UInt64

    public init(
        count: UInt64, mean: Double, p50: UInt64, p75: UInt64, p95: UInt64, p99: UInt64, p99_9: UInt64,
        p99_99: UInt64, max: UInt64
    ) {
        self.count = count
        self.mean = mean
        self.p50 = p50
        self.p75 = p75
        self.p95 = p95
        self.p99 = p99
        self.p99_9 = p99_9
        self.p99_99 = p99_99
        self.max = max
    }

    /// The percentiles of `histogram`; all zero when it is empty.
    ///
    /// Each percentile is the highest value equivalent to the recorded sample at that rank (three
    /// significant digits), so it is never below the true value by more than the histogram's precision.
    public init(_ histogram: Histogram<UInt64>) {
        guard histogram.totalCount > 0 else {
            self.init(count: 0, mean: 0, p50: 0, p75: 0, p95: 0, p99: 0, p99_9: 0, p99_99: 0, max: 0)
            return
        }
        self.init(
            count: histogram.totalCount, mean: histogram.mean, p50: histogram.valueAtPercentile(50),
            p75: histogram.valueAtPercentile(75), p95: histogram.valueAtPercentile(95),
            p99: histogram.valueAtPercentile(99), p99_9: histogram.valueAtPercentile(99.9),
            p99_99: histogram.valueAtPercentile(99.99), max: histogram.max)
    }

    /// The columns of the human-readable table, in order.
    public static let columns = ["p50", "p75", "p95", "p99", "p99.9", "p99.99", "max"]

    /// The values for ``columns``.
    public var values: [UInt64] { [p50, p75, p95, p99, p99_9, p99_99, max] }
}
