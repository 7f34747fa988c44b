import PlexusABI
import Synchronization

/// A metric a plugin made through `px_host_api.metric_create`: the `px_metric *` it records into without a
/// name lookup. Kept by the plugin's context, so the handle stays valid until the instance is destroyed.
final class PluginMetric: Sendable {
    enum Kind: UInt32, Sendable {
        case counter = 1
        case gauge = 2
        case histogram = 3
    }

    /// The registry's handle behind the plugin's `px_metric *`.
    enum Handle: Sendable {
        case counter(MetricsRegistry.Counter)
        case gauge(MetricsRegistry.Gauge)
        case histogram(MetricsRegistry.Histogram)
    }

    let kind: Kind
    let name: String
    let handle: Handle

    init(kind: Kind, name: String, handle: Handle) {
        self.kind = kind
        self.name = name
        self.handle = handle
    }

    /// Records per the kind: a counter adds whole units (the fraction is dropped, negative values ignored), a gauge sets, a
    /// histogram observes. Non-finite values are ignored.
    func record(_ value: Double) {
        guard value.isFinite else { return }
        switch handle {
        case .counter(let counter):
            guard value >= 1 else { return }
            counter.increment(by: UInt64(min(value, 0x1p62)))
        case .gauge(let gauge):
            gauge.set(value)
        case .histogram(let histogram):
            histogram.record(value)
        }
    }

    /// The identity under which a plugin's handles are shared: the same name, kind and labels, one handle.
    struct Key: Hashable, Sendable {
        var name: String
        var labels: [String]
    }
}

extension PluginMetric.Kind {
    /// The registry's name for the kind.
    var registryKind: MetricsRegistry.Kind {
        switch self {
        case .counter: return .counter
        case .gauge: return .gauge
        case .histogram: return .histogram
        }
    }
}

extension PluginContext {
    /// The handle for a metric spec, made on first use.
    /// - Throws: `Router.Refusal` for a malformed spec or a name already used with another kind.
    func metricHandle(_ spec: px_metric_spec) throws -> PluginMetric {
        guard let kind = PluginMetric.Kind(rawValue: spec.kind) else {
            throw Router.Refusal(
                status: PX_ERR_INVALID_ARGUMENT.status, message: "unknown metric kind \(spec.kind) (1 to 3)")
        }
        let name = spec.name.string
        guard !name.isEmpty, name.utf8.allSatisfy({ $0 == 95 || (48...57).contains($0) || (97...122).contains($0) }),
            !(48...57).contains(name.utf8.first ?? 0)
        else {
            throw Router.Refusal(
                status: PX_ERR_INVALID_ARGUMENT.status,
                message: "metric name '\(name)' must be lower-case letters, digits and '_', not starting with a digit")
        }
        guard spec.label_count <= 16, spec.labels != nil || spec.label_count == 0 else {
            throw Router.Refusal(
                status: PX_ERR_INVALID_ARGUMENT.status, message: "a metric has 0 to 16 labels; got \(spec.label_count)")
        }
        var labels: [(String, String)] = [("plugin", self.name)]
        for i in 0..<spec.label_count {
            guard let pair = spec.labels?[i] else { continue }
            let label = pair.key.string
            guard !label.isEmpty, label != "plugin", label.utf8.allSatisfy({ $0 == 95 || (97...122).contains($0) })
            else {
                throw Router.Refusal(
                    status: PX_ERR_INVALID_ARGUMENT.status,
                    message:
                        "metric label '\(label)' must be lower-case letters and '_' (and not 'plugin', which the kernel sets)"
                )
            }
            labels.append((label, pair.value.string))
        }
        var buckets: [Double] = []
        if spec.bucket_count > 0 {
            guard spec.bucket_count <= 64, let bounds = spec.buckets else {
                throw Router.Refusal(
                    status: PX_ERR_INVALID_ARGUMENT.status,
                    message:
                        "a histogram has 1 to 64 buckets and needs their array; got bucket_count \(spec.bucket_count)")
            }
            buckets = Array(UnsafeBufferPointer(start: bounds, count: spec.bucket_count))
            guard buckets.allSatisfy(\.isFinite), zip(buckets, buckets.dropFirst()).allSatisfy({ $0 < $1 }) else {
                throw Router.Refusal(
                    status: PX_ERR_INVALID_ARGUMENT.status, message: "histogram buckets must be finite and increasing")
            }
        }
        let exported = "plexus_" + name + (kind == .counter && !name.hasSuffix("_total") ? "_total" : "")
        let help = spec.help.string.isEmpty ? "Reported by plugins through metric_create." : spec.help.string
        let key = PluginMetric.Key(name: exported, labels: labels.map { "\($0.0)=\($0.1)" })
        let registry = services.metrics
        return try metricHandles.withLock { handles in
            if let existing = handles[key], existing.kind == kind { return existing }
            if let taken = registry.kind(of: exported), taken != kind.registryKind {
                throw Router.Refusal(
                    status: PX_ERR_ALREADY_EXISTS.status,
                    message: "metric '\(exported)' already exists as a \(taken)")
            }
            let handle: PluginMetric.Handle
            switch kind {
            case .counter: handle = .counter(registry.counter(exported, help: help, labels: labels))
            case .gauge: handle = .gauge(registry.gauge(exported, help: help, labels: labels))
            case .histogram:
                handle = .histogram(
                    registry.histogram(
                        exported, help: help, labels: labels,
                        buckets: buckets.isEmpty ? MetricsRegistry.pluginBuckets : buckets))
            }
            let made = PluginMetric(kind: kind, name: exported, handle: handle)
            handles[key] = made
            return made
        }
    }
}
