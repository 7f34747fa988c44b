/// The outcome of one benchmark run, as written to JSON and printed as a table.
///
/// Rates are messages per second over the measured window (after the warmup); latencies are in
/// microseconds and only count messages sent in that window.
public struct BenchReport: Codable, Sendable, Equatable {
    /// The run's name in tables and plots (`jetstream`, `nats-ff`, `plexus`); the driver name by default.
    public var label: String
    /// The driver's name.
    public var driver: String
    /// What a completed publish and a consumed message meant for this driver.
    public var semantics: String
    /// The server's `HOST:PORT`.
    public var server: String
    /// The workload as run (with `--rate` and `--fire-and-forget` applied).
    public var workload: Workload
    /// When the run started, ISO 8601.
    public var startedAt: String
    /// The machine: cores and operating system, so figures are read with it in mind.
    public var machine: String
    /// The length of the measured window in seconds.
    public var measuredSeconds: Double

    /// Sends started over the whole run.
    public var sent: Int
    /// Publishes completed without error over the whole run.
    public var published: Int
    /// Publishes completed with an error (closed before an acknowledgement included).
    public var publishErrors: Int
    /// Messages consumed over the whole run (duplicates included).
    public var consumed: Int
    /// Errors consumers reported (lost connections, failed acknowledgements).
    public var consumerErrors: Int
    /// Consumed payloads too short to hold a send stamp.
    public var malformed: Int

    /// Publish completions per second in the measured window.
    public var publishRate: Double
    /// Messages consumed per second in the measured window.
    public var consumeRate: Double
    /// From calling `send` to its completion.
    public var publishLatency: LatencySummary
    /// From the send stamp to the consumer receiving the message.
    public var endToEndLatency: LatencySummary

    /// Publishes completed and messages consumed in each second from the start (warmup included).
    public var series: [SeriesPoint]
    /// The first few error messages, publish and consume.
    public var errorSamples: [String]
    /// Anything that makes the figures less than they seem (a drain that timed out, lost messages).
    public var notes: [String]

    /// One second of the time series.
    public struct SeriesPoint: Codable, Sendable, Equatable {
        /// Seconds since the run started; the measured window starts at `workload.warmupSeconds`.
        public var second: Int
        public var published: Int
        public var consumed: Int
    }
}
