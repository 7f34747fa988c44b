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

    let kind: Kind
    let name: String
    let plugin: String
    let labels: [(String, String)]
    let metrics: MetricsRegistry

    init(kind: Kind, name: String, plugin: String, labels: [(String, String)], metrics: MetricsRegistry) {
        self.kind = kind
        self.name = name
        self.plugin = plugin
        self.labels = labels
        self.metrics = metrics
    }

    /// Records per the kind: a counter adds (negative values ignored), a gauge sets, a histogram observes.
    func record(_ value: Double) {
        guard value.isFinite else { return }
        switch kind {
        case .counter:
            guard value >= 0 else { return }
            metrics.add(name, plugin: plugin, UInt64(value.rounded()))
        case .gauge:
            metrics.set(name, plugin: plugin, value)
        case .histogram:
            metrics.record(name, plugin: plugin, value)
        }
    }

    /// The identity under which a plugin's handles are shared: the same name, kind and labels, one handle.
    struct Key: Hashable, Sendable {
        var name: String
        var labels: [String]
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
        var labels: [(String, String)] = []
        for i in 0..<spec.label_count {
            guard let pair = spec.labels?[i] else { continue }
            labels.append((pair.key.string, pair.value.string))
        }
        let key = PluginMetric.Key(name: name, labels: labels.map { "\($0.0)=\($0.1)" })
        return try metricHandles.withLock { handles in
            if let existing = handles[key] {
                guard existing.kind == kind else {
                    throw Router.Refusal(
                        status: PX_ERR_ALREADY_EXISTS.status,
                        message: "metric '\(name)' already exists as another kind")
                }
                return existing
            }
            if let clash = handles.values.first(where: { $0.name == name && $0.kind != kind }) {
                throw Router.Refusal(
                    status: PX_ERR_ALREADY_EXISTS.status,
                    message: "metric '\(clash.name)' already exists as another kind")
            }
            let made = PluginMetric(
                kind: kind, name: name, plugin: self.name, labels: labels, metrics: services.metrics)
            handles[key] = made
            return made
        }
    }
}
