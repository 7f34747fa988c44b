import Foundation
import Logging
import PlexusABI
import Synchronization

/// The kernel's side of one plugin instance: what `px_host *` points at.
///
/// Host functions recover it from the handle and so know who is calling. It counts the completions the
/// kernel still owes the instance, so that `on_destroy` starts only after the last one ran.
final class PluginContext: Sendable {
    let name: String
    let logger: Logger
    let services: HostServices
    /// The plugin's own metrics (`counter_add`, `gauge_set`, `histogram_record`), labelled `plugin`.
    let metrics: PluginMetrics
    /// Events this plugin published that were stored.
    let published: MetricsRegistry.Counter
    private let owedCompletions = Atomic<Int>(0)
    /// The metrics the instance made (`px_host_api.metric_create`); they live as long as the context.
    let metricHandles = Mutex<[PluginMetric.Key: PluginMetric]>([:])

    init(name: String, logger: Logger, services: HostServices) {
        self.name = name
        self.logger = logger
        self.services = services
        self.metrics = services.metrics.plugin(name)
        self.published = services.metrics.counter(
            "plexus_plugin_events_published_total", help: "Events a plugin published that were stored.",
            labels: [("plugin", name)])
    }

    /// The handle passed to the plugin. The kernel keeps the context alive for the life of the process
    /// (an abandoned plugin may still call in), so the handle is never dangling.
    var handle: OpaquePointer { OpaquePointer(Unmanaged.passUnretained(self).toOpaque()) }

    static func from(_ handle: OpaquePointer?) -> PluginContext? {
        guard let handle else { return nil }
        return Unmanaged<PluginContext>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
    }

    var id: ObjectIdentifier { ObjectIdentifier(self) }

    func owe() { owedCompletions.add(1, ordering: .relaxed) }
    func paid() { owedCompletions.subtract(1, ordering: .releasing) }

    /// Waits until every owed completion ran, or the deadline passed; true when none is owed.
    func drainCompletions(until deadline: ContinuousClock.Instant) -> Bool {
        while owedCompletions.load(ordering: .acquiring) > 0 {
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.002)
        }
        return true
    }
}
