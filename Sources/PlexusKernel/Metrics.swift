import Foundation
import Prometheus
import Synchronization

/// The node's metrics, kernel's and plugins', kept in a swift-prometheus `PrometheusCollectorRegistry` that
/// this kernel owns (never the process-wide `MetricsSystem`: tests run several kernels in one process) and
/// exposed with `# HELP` and `# TYPE` lines in the Prometheus text format at the admin endpoint's `/metrics`.
///
/// Handles are made once per name and label set and kept by whoever updates them: the event path never looks
/// a metric up by name. Labels say what they are: `plugin` for a plugin's own metrics, `topic`, and `group`
/// (a consumer group, always beside its `topic`).
///
/// - Important: Prometheus refuses a name used for two kinds of metric, or with and without labels, and a
///   histogram whose buckets differ from its family's (it traps). The registry checks first: a request that
///   conflicts with its family gets a working handle that is not exported, and is counted in
///   `plexus_metric_conflicts_total{plugin}` when a plugin made it. A family keeps the help text and the
///   buckets it was first made with.
public final class MetricsRegistry: Sendable {
    /// The kind of a metric family.
    public enum Kind: String, Sendable {
        case counter, gauge, histogram
    }

    /// A counter: only goes up. A final class, so that an opaque pointer handed across the C ABI can wrap it.
    public final class Counter: Sendable {
        /// swift-prometheus's counter; `nil` for a topic-labelled family the registry exports itself.
        let exported: Prometheus.Counter?
        /// The same total, readable (Prometheus's counter is write-only); one more relaxed atomic add.
        private let total = Atomic<UInt64>(0)

        init(_ exported: Prometheus.Counter?) { self.exported = exported }

        /// Adds `delta`.
        /// - Important: Any thread; lock-free.
        public func increment(by delta: UInt64 = 1) {
            total.wrappingAdd(delta, ordering: .relaxed)
            exported?.increment(by: Int64(clamping: delta))
        }

        /// The total so far.
        public var value: UInt64 { total.load(ordering: .relaxed) }
    }

    /// A gauge: a value that is set. A final class, like `Counter`.
    public final class Gauge: Sendable {
        /// swift-prometheus's gauge; `nil` for a topic-labelled family the registry exports itself.
        let exported: Prometheus.Gauge?
        private let bits = Atomic<UInt64>(Double.zero.bitPattern)

        init(_ exported: Prometheus.Gauge?) { self.exported = exported }

        /// Sets the value.
        /// - Important: Any thread; lock-free.
        public func set(_ value: Double) {
            bits.store(value.bitPattern, ordering: .relaxed)
            exported?.set(to: value)
        }

        /// The value last set.
        public var value: Double { Double(bitPattern: bits.load(ordering: .relaxed)) }
    }

    /// A histogram with fixed buckets (cumulative `_bucket{le=…}`, `_sum`, `_count`). A final class, like
    /// `Counter`.
    public final class Histogram: Sendable {
        /// swift-prometheus's histogram; `nil` for a topic-labelled family the registry exports itself.
        let exported: Prometheus.ValueHistogram?
        /// Upper bounds and counts per bucket (not cumulative), sum and count: for a topic-labelled family.
        let buckets: [Double]
        private let local: Mutex<(counts: [UInt64], sum: Double, count: UInt64)>

        init(_ exported: Prometheus.ValueHistogram?, buckets: [Double] = []) {
            self.exported = exported
            self.buckets = buckets
            self.local = Mutex((Array(repeating: 0, count: exported == nil ? buckets.count : 0), 0, 0))
        }

        /// Records one observation; NaN is ignored (it would poison the sum).
        /// - Important: Any thread; takes the histogram's own short lock.
        public func record(_ value: Double) {
            guard !value.isNaN else { return }
            if let exported { return exported.record(value) }
            let index = buckets.firstIndex { value <= $0 }
            local.withLock { h in
                if let index { h.counts[index] += 1 }
                h.sum += value
                h.count += 1
            }
        }

        /// Cumulative bucket counts, sum and count (for a topic-labelled family).
        var snapshot: (cumulative: [UInt64], sum: Double, count: UInt64) {
            local.withLock { h in
                var running: UInt64 = 0
                return (
                    h.counts.map {
                        running += $0; return running
                    }, h.sum, h.count
                )
            }
        }
    }

    /// Buckets for histograms whose unit the kernel does not know (a plugin's `histogram_record`): decades
    /// with 1-2.5-5 steps from 0.001 to 1,000,000, wide enough for seconds, milliseconds or bytes.
    public static let pluginBuckets: [Double] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500,
        5000, 10000, 25000, 50000, 100_000, 250_000, 500_000, 1_000_000,
    ]

    private struct Family {
        var kind: Kind
        var help: String
        var labelled: Bool
        var buckets: [Double]
    }

    private struct Key: Hashable {
        var name: String
        var labels: [String]

        init(_ name: String, _ labels: [(String, String)]) {
            self.name = name
            self.labels = labels.flatMap { [$0.0, $0.1] }
        }
    }

    private struct State {
        var families: [String: Family] = [:]
        var counters: [Key: Counter] = [:]
        var gauges: [Key: Gauge] = [:]
        var histograms: [Key: Histogram] = [:]
        var plugins: [String: PluginMetrics] = [:]
        var detached = 0
        /// Topic-labelled families, exported by the registry itself (see `isPerTopic`).
        var perTopic: [String: PerTopicFamily] = [:]
    }

    /// A family labelled by topic (one series per topic, or per topic and group). swift-prometheus copies a
    /// family's whole table on every new label set, so making 10,000 topics' series through it takes time
    /// quadratic in the topics (about a minute); the registry keeps these itself, in the same exposition.
    private struct PerTopicFamily {
        var help: String
        var kind: Kind
        var series: [(labels: [(String, String)], metric: PerTopicMetric)] = []
    }

    private enum PerTopicMetric {
        case counter(Counter)
        case gauge(Gauge)
        case histogram(Histogram)
    }

    /// Whether a series belongs to a topic-labelled family.
    private static func isPerTopic(_ labels: [(String, String)]) -> Bool { labels.contains { $0.0 == "topic" } }

    /// The Prometheus registry behind the handles; `/metrics` is its exposition.
    public let prometheus = PrometheusCollectorRegistry()
    /// Where conflicting requests get their handles: never exported.
    private let detached = PrometheusCollectorRegistry()
    private let state = Mutex(State())

    public init() {}

    // MARK: Handles

    /// The counter `name` with `labels`, made on first use and the same handle afterwards.
    /// - Parameters:
    ///   - name: a full metric name (`plexus_…_total`).
    ///   - help: the `# HELP` text of its family (the first one given is kept).
    ///   - labels: label names and values, always in the same order for one family.
    public func counter(_ name: String, help: String, labels: [(String, String)] = []) -> Counter {
        let key = Key(name, labels)
        return state.withLock { s in
            if let made = s.counters[key] { return made }
            let made: Counter
            if Self.isPerTopic(labels), Self.admitPerTopic(&s, name, .counter, help: help) {
                made = Counter(nil)
                s.perTopic[name]!.series.append((labels, .counter(made)))
            } else if let descriptor = Self.admit(
                &s, name, .counter, help: help, labelled: !labels.isEmpty, buckets: [])
            {
                made = Counter(prometheus.makeCounter(descriptor: descriptor, labels: labels))
            } else {
                made = Counter(detached.makeCounter(descriptor: Self.detachedName(&s), labels: []))
            }
            s.counters[key] = made
            return made
        }
    }

    /// The gauge `name` with `labels`, made on first use (see `counter`).
    public func gauge(_ name: String, help: String, labels: [(String, String)] = []) -> Gauge {
        let key = Key(name, labels)
        return state.withLock { s in
            if let made = s.gauges[key] { return made }
            let made: Gauge
            if Self.isPerTopic(labels), Self.admitPerTopic(&s, name, .gauge, help: help) {
                made = Gauge(nil)
                s.perTopic[name]!.series.append((labels, .gauge(made)))
            } else if let descriptor = Self.admit(&s, name, .gauge, help: help, labelled: !labels.isEmpty, buckets: [])
            {
                made = Gauge(prometheus.makeGauge(descriptor: descriptor, labels: labels))
            } else {
                made = Gauge(detached.makeGauge(descriptor: Self.detachedName(&s), labels: []))
            }
            s.gauges[key] = made
            return made
        }
    }

    /// The histogram `name` with `labels`, made on first use (see `counter`).
    /// - Parameter buckets: upper bounds, ascending; a family keeps the buckets it was first made with.
    public func histogram(_ name: String, help: String, labels: [(String, String)] = [], buckets: [Double])
        -> Histogram
    {
        let key = Key(name, labels)
        return state.withLock { s in
            if let made = s.histograms[key] { return made }
            let made: Histogram
            let sorted = buckets.filter(\.isFinite).sorted()
            if Self.isPerTopic(labels), Self.admitPerTopic(&s, name, .histogram, help: help, buckets: sorted) {
                made = Histogram(nil, buckets: s.families[name]?.buckets ?? sorted)
                s.perTopic[name]!.series.append((labels, .histogram(made)))
            } else if let descriptor = Self.admit(
                &s, name, .histogram, help: help, labelled: !labels.isEmpty, buckets: sorted),
                let family = s.families[name]
            {
                made = Histogram(
                    prometheus.makeValueHistogram(descriptor: descriptor, labels: labels, buckets: family.buckets))
            } else {
                made = Histogram(
                    detached.makeValueHistogram(descriptor: Self.detachedName(&s), labels: [], buckets: sorted))
            }
            s.histograms[key] = made
            return made
        }
    }

    /// The metrics one plugin reports through `counter_add`, `gauge_set` and `histogram_record`, labelled
    /// with its name; made once per plugin.
    public func plugin(_ name: String) -> PluginMetrics {
        if let made = state.withLock({ $0.plugins[name] }) { return made }
        // Made outside the lock: it registers a counter of its own.
        let made = PluginMetrics(plugin: name, registry: self)
        return state.withLock { s in
            if let first = s.plugins[name] { return first }
            s.plugins[name] = made
            return made
        }
    }

    /// Checks a request against its family, recording the family on first use. Returns the descriptor to make
    /// the metric with, or `nil` when the request conflicts with the family.
    private static func admit(
        _ s: inout State, _ name: String, _ kind: Kind, help: String, labelled: Bool, buckets: [Double]
    ) -> MetricNameDescriptor? {
        guard let family = s.families[name] else {
            s.families[name] = Family(kind: kind, help: help, labelled: labelled, buckets: buckets)
            return MetricNameDescriptor(metricName: name, unitName: "", helpText: help)
        }
        guard family.kind == kind, family.labelled == labelled else { return nil }
        return MetricNameDescriptor(metricName: name, unitName: "", helpText: family.help)
    }

    /// Like `admit`, for a topic-labelled family: true when the request fits the family (made on first use).
    private static func admitPerTopic(
        _ s: inout State, _ name: String, _ kind: Kind, help: String, buckets: [Double] = []
    ) -> Bool {
        if s.perTopic[name] == nil {
            guard s.families[name] == nil else { return false }
            s.families[name] = Family(kind: kind, help: help, labelled: true, buckets: buckets)
            s.perTopic[name] = PerTopicFamily(help: help, kind: kind)
        }
        return s.perTopic[name]!.kind == kind
    }

    private static func detachedName(_ s: inout State) -> MetricNameDescriptor {
        s.detached += 1
        return MetricNameDescriptor(metricName: "detached_\(s.detached)", unitName: "", helpText: "")
    }

    /// Whether `name` is registered as a family of another kind or labelling (tests, tools).
    public func kind(of name: String) -> Kind? { state.withLock { $0.families[name]?.kind } }

    // MARK: Plugins' name-based reports

    /// Adds to a plugin's counter (`counter_add`), looked up by name in the plugin's cache.
    public func add(_ name: String, plugin: String, _ delta: UInt64) { self.plugin(plugin).add(name, delta) }

    /// Sets a plugin's gauge (`gauge_set`).
    public func set(_ name: String, plugin: String, _ value: Double) { self.plugin(plugin).set(name, value) }

    /// Records into a plugin's histogram (`histogram_record`).
    public func record(_ name: String, plugin: String, _ value: Double) { self.plugin(plugin).record(name, value) }

    // MARK: Reading (tests, tools)

    /// The total of a plugin's counter as reported through `counter_add`; 0 when it never reported it.
    public func counter(_ name: String, plugin: String) -> UInt64 {
        counterValue(PluginMetrics.metricName(name), labels: [("plugin", plugin)])
    }

    /// The total of the counter `name` with exactly `labels`; 0 when there is none.
    public func counterValue(_ name: String, labels: [(String, String)]) -> UInt64 {
        state.withLock { $0.counters[Key(name, labels)]?.value } ?? 0
    }

    /// The value of the gauge `name` with exactly `labels`; `nil` when there is none.
    public func gaugeValue(_ name: String, labels: [(String, String)]) -> Double? {
        state.withLock { $0.gauges[Key(name, labels)]?.value }
    }

    /// Every exported metric in the Prometheus text exposition format.
    public func prometheusText() -> String {
        var text = prometheus.emitToString()
        let families = state.withLock { $0.perTopic }
        for (name, family) in families.sorted(by: { $0.key < $1.key }) {
            text += "# HELP \(name) \(family.help)\n# TYPE \(name) \(family.kind.rawValue)\n"
            for (labels, metric) in family.series {
                switch metric {
                case .counter(let counter):
                    text += "\(name)\(Self.render(labels)) \(counter.value)\n"
                case .gauge(let gauge):
                    text += "\(name)\(Self.render(labels)) \(gauge.value)\n"
                case .histogram(let histogram):
                    let (cumulative, sum, count) = histogram.snapshot
                    for (bound, total) in zip(histogram.buckets, cumulative) {
                        text += "\(name)_bucket\(Self.render(labels + [("le", "\(bound)")])) \(total)\n"
                    }
                    text += "\(name)_bucket\(Self.render(labels + [("le", "+Inf")])) \(count)\n"
                    text += "\(name)_sum\(Self.render(labels)) \(sum)\n"
                    text += "\(name)_count\(Self.render(labels)) \(count)\n"
                }
            }
        }
        return text
    }

    /// `{a="x",b="y"}` with values escaped as the text format says (backslash, quote, newline).
    private static func render(_ labels: [(String, String)]) -> String {
        guard !labels.isEmpty else { return "" }
        let pairs = labels.map { key, value -> String in
            var escaped = ""
            for c in value {
                switch c {
                case "\\": escaped += "\\\\"
                case "\"": escaped += "\\\""
                case "\n": escaped += "\\n"
                default: escaped.append(c)
                }
            }
            return "\(key)=\"\(escaped)\""
        }
        return "{" + pairs.joined(separator: ",") + "}"
    }
}

/// One plugin's own metrics: what it reports by name through the host API, in a cache of its own (so plugins
/// do not contend for one lock), exported as `plexus_<name>` with the label `plugin`. A final class, so that
/// the kernel can hand a C-visible opaque pointer to it.
public final class PluginMetrics: Sendable {
    public let plugin: String
    /// Unowned: the registry keeps this object in its cache, and whoever else holds it (a plugin's context)
    /// holds the kernel's services, and so the registry, too.
    private unowned let registry: MetricsRegistry
    private let counters = Mutex<[String: MetricsRegistry.Counter]>([:])
    private let gauges = Mutex<[String: MetricsRegistry.Gauge]>([:])
    private let histograms = Mutex<[String: MetricsRegistry.Histogram]>([:])
    /// Reports dropped because their name was taken by a metric of another kind.
    private let conflicts: MetricsRegistry.Counter

    init(plugin: String, registry: MetricsRegistry) {
        self.plugin = plugin
        self.registry = registry
        self.conflicts = registry.counter(
            "plexus_metric_conflicts_total",
            help: "Metrics a plugin reported under a name already used by a metric of another kind (not exported).",
            labels: [("plugin", plugin)])
    }

    /// The exported name of a plugin's metric: `plexus_` and the name, with every character Prometheus does
    /// not allow replaced by `_`.
    static func metricName(_ name: String) -> String {
        "plexus_" + String(name.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") ? $0 : "_" })
    }

    private var labels: [(String, String)] { [("plugin", plugin)] }

    /// The counter `name` of this plugin: its handle, made on first use.
    public func counter(_ name: String) -> MetricsRegistry.Counter {
        if let made = counters.withLock({ $0[name] }) { return made }
        let exported = Self.metricName(name)
        let made = registry.counter(exported, help: "Reported by plugins through counter_add.", labels: labels)
        if registry.kind(of: exported) != .counter { conflicts.increment() }
        counters.withLock { $0[name] = made }
        return made
    }

    /// The gauge `name` of this plugin: its handle, made on first use.
    public func gauge(_ name: String) -> MetricsRegistry.Gauge {
        if let made = gauges.withLock({ $0[name] }) { return made }
        let exported = Self.metricName(name)
        let made = registry.gauge(exported, help: "Reported by plugins through gauge_set.", labels: labels)
        if registry.kind(of: exported) != .gauge { conflicts.increment() }
        gauges.withLock { $0[name] = made }
        return made
    }

    /// The histogram `name` of this plugin (buckets `MetricsRegistry.pluginBuckets`): its handle.
    public func histogram(_ name: String) -> MetricsRegistry.Histogram {
        if let made = histograms.withLock({ $0[name] }) { return made }
        let exported = Self.metricName(name)
        let made = registry.histogram(
            exported, help: "Reported by plugins through histogram_record.", labels: labels,
            buckets: MetricsRegistry.pluginBuckets)
        if registry.kind(of: exported) != .histogram { conflicts.increment() }
        histograms.withLock { $0[name] = made }
        return made
    }

    func add(_ name: String, _ delta: UInt64) { counter(name).increment(by: delta) }
    func set(_ name: String, _ value: Double) { gauge(name).set(value) }
    func record(_ name: String, _ value: Double) { histogram(name).record(value) }
}
