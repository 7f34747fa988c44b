import PlexusBench

/// Everything one `make bench-raft` measured, as written to the JSON report.
public struct RaftBenchReport: Codable, Sendable {
    /// Three members, durable commit: Plexus against etcd at each concurrency.
    public struct DurableRow: Codable, Sendable, Equatable {
        public var concurrency: Int
        public var plexus: LevelResult? { didSet { updateRatios() } }
        public var etcd: LevelResult? { didSet { updateRatios() } }
        /// Plexus ops/s over etcd ops/s (target ≥ 2); nil unless both ran.
        public private(set) var throughputRatio: Double?
        /// Plexus p99 over etcd p99 (target ≤ 1); nil unless both ran.
        public private(set) var p99Ratio: Double?

        public init(concurrency: Int, plexus: LevelResult? = nil, etcd: LevelResult? = nil) {
            self.concurrency = concurrency
            self.plexus = plexus
            self.etcd = etcd
            updateRatios()
        }

        private mutating func updateRatios() {
            guard let plexus, let etcd else {
                throughputRatio = nil
                p99Ratio = nil
                return
            }
            throughputRatio = etcd.opsPerSecond > 0 ? plexus.opsPerSecond / etcd.opsPerSecond : nil
            p99Ratio =
                etcd.latency.p99 > 0 && plexus.latency.count > 0
                ? Double(plexus.latency.p99) / Double(etcd.latency.p99) : nil
        }
    }

    public struct Durable: Codable, Sendable {
        public var rows: [DurableRow] = []
        /// Why Plexus or etcd did not run (or stopped), if so.
        public var plexusError: String?
        public var etcdError: String?
        public var notes: [String] = []
        public var etcdVersion: String?

        public init() {}
    }

    /// One member: end-to-end events/s over TCP against the disk's group-commit ceiling.
    public struct SingleRow: Codable, Sendable, Equatable {
        public var concurrency: Int
        /// Medians over the rounds.
        public var eventsPerSecond: Double
        public var latency: LatencySummary
        public var errors: UInt64
        public var eventsPerFsync: Double
        public var entryBytes: Int
        public var ceilingEventsPerSecond: Double
        /// The raw loop's best grouping for the window (events per fdatasync); the ceiling is measured on its
        /// own, not at the node's `eventsPerFsync`.
        public var ceilingEventsPerFsync: Int = 0
        public var rawFsyncMicros: Double
        /// Plexus over ceiling, the median of the rounds' ratios (target ≥ 0.70).
        public var ratio: Double
        /// Each round's ratio, in order: their spread shows how noisy the machine was.
        public var roundRatios: [Double] = []

        public init(
            concurrency: Int, eventsPerSecond: Double, latency: LatencySummary, errors: UInt64,
            eventsPerFsync: Double, entryBytes: Int, ceilingEventsPerSecond: Double, rawFsyncMicros: Double,
            ratio: Double
        ) {
            self.concurrency = concurrency
            self.eventsPerSecond = eventsPerSecond
            self.latency = latency
            self.errors = errors
            self.eventsPerFsync = eventsPerFsync
            self.entryBytes = entryBytes
            self.ceilingEventsPerSecond = ceilingEventsPerSecond
            self.rawFsyncMicros = rawFsyncMicros
            self.ratio = ratio
        }
    }

    public struct Single: Codable, Sendable {
        public var rows: [SingleRow] = []
        public var error: String?

        public init() {}
    }

    /// Ledgers against raft-log, both three nodes on 127.0.0.1 over TCP, at each concurrency.
    public struct LedgerRow: Codable, Sendable, Equatable {
        public var concurrency: Int
        public var ledger: LevelResult? { didSet { updateRatios() } }
        public var raft: LevelResult? { didSet { updateRatios() } }
        /// Ledger ops/s over raft-log ops/s (target ≥ 1); nil unless both ran.
        public private(set) var throughputRatio: Double?
        /// Ledger p99 over raft-log p99 (target ≤ 1); nil unless both ran.
        public private(set) var p99Ratio: Double?

        public init(concurrency: Int, ledger: LevelResult? = nil, raft: LevelResult? = nil) {
            self.concurrency = concurrency
            self.ledger = ledger
            self.raft = raft
            updateRatios()
        }

        private mutating func updateRatios() {
            guard let ledger, let raft else {
                throughputRatio = nil
                p99Ratio = nil
                return
            }
            throughputRatio = raft.opsPerSecond > 0 ? ledger.opsPerSecond / raft.opsPerSecond : nil
            p99Ratio =
                raft.latency.p99 > 0 && ledger.latency.count > 0
                ? Double(ledger.latency.p99) / Double(raft.latency.p99) : nil
        }
    }

    public struct Ledger: Codable, Sendable {
        public var rows: [LedgerRow] = []
        /// Why ledger-storage or raft-log did not run (or stopped), if so.
        public var ledgerError: String?
        public var raftError: String?
        public var notes: [String] = []

        public init() {}
    }

    public struct Failover: Codable, Sendable {
        public var summary: FailoverSummary?
        public var error: String?

        public init() {}
    }

    public var machine: String
    public var startedAt: String
    public var payloadSize: Int
    public var warmupSeconds: Double
    public var seconds: Double
    public var singleSeconds: Double
    public var rounds: Int
    public var durable: Durable?
    public var single: Single?
    public var failover: Failover?
    public var ledger: Ledger?

    public init(
        machine: String, startedAt: String, payloadSize: Int, warmupSeconds: Double, seconds: Double,
        singleSeconds: Double, rounds: Int
    ) {
        self.machine = machine
        self.startedAt = startedAt
        self.payloadSize = payloadSize
        self.warmupSeconds = warmupSeconds
        self.seconds = seconds
        self.singleSeconds = singleSeconds
        self.rounds = rounds
    }

    /// Whether every section that was asked for ran to the end (targets missed still count as having run).
    public var complete: Bool {
        if let durable, durable.plexusError != nil || durable.etcdError != nil { return false }
        if let single, single.error != nil { return false }
        if let failover, failover.error != nil { return false }
        if let ledger, ledger.ledgerError != nil || ledger.raftError != nil { return false }
        return true
    }
}
