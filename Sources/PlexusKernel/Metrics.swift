import Foundation
import Synchronization

/// Counters, gauges and histogram summaries reported by the kernel and its plugins, exposed in the
/// Prometheus text format at the admin endpoint's `/metrics`.
public final class MetricsRegistry: Sendable {
    private struct Summary {
        var count: UInt64 = 0
        var sum: Double = 0
    }

    /// A metric's identity; its exposition name is built only when exported.
    private struct Key: Hashable {
        var name: String
        var plugin: String
    }

    private struct State {
        var counters: [Key: UInt64] = [:]
        var gauges: [Key: Double] = [:]
        var summaries: [Key: Summary] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Adds to a counter. `plugin` becomes a label.
    public func add(_ name: String, plugin: String, _ delta: UInt64) {
        let key = Key(name: name, plugin: plugin)
        state.withLock { $0.counters[key, default: 0] &+= delta }
    }

    public func set(_ name: String, plugin: String, _ value: Double) {
        let key = Key(name: name, plugin: plugin)
        state.withLock { $0.gauges[key] = value }
    }

    public func record(_ name: String, plugin: String, _ value: Double) {
        let key = Key(name: name, plugin: plugin)
        state.withLock {
            $0.summaries[key, default: Summary()].count += 1
            $0.summaries[key, default: Summary()].sum += value
        }
    }

    /// The current value of a counter (tests, tools).
    public func counter(_ name: String, plugin: String) -> UInt64 {
        state.withLock { $0.counters[Key(name: name, plugin: plugin)] ?? 0 }
    }

    /// All metrics in the Prometheus text exposition format.
    public func prometheusText() -> String {
        let s = state.withLock { $0 }
        var lines: [String] = []
        for (key, value) in s.counters { lines.append("\(Self.name(key))\(Self.labels(key)) \(value)") }
        for (key, value) in s.gauges { lines.append("\(Self.name(key))\(Self.labels(key)) \(value)") }
        for (key, value) in s.summaries {
            lines.append("\(Self.name(key))_count\(Self.labels(key)) \(value.count)")
            lines.append("\(Self.name(key))_sum\(Self.labels(key)) \(value.sum)")
        }
        return lines.sorted().joined(separator: "\n") + "\n"
    }

    private static func name(_ key: Key) -> String {
        "plexus_" + String(key.name.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") ? $0 : "_" })
    }

    private static func labels(_ key: Key) -> String { "{plugin=\(ConfigValue.quote(key.plugin))}" }
}
