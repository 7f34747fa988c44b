import Foundation
import Synchronization

/// Counters, gauges and histogram summaries reported by the kernel and its plugins, exposed in the
/// Prometheus text format at the admin endpoint's `/metrics`.
public final class MetricsRegistry: Sendable {
    private struct Summary {
        var count: UInt64 = 0
        var sum: Double = 0
    }

    private struct State {
        var counters: [String: UInt64] = [:]
        var gauges: [String: Double] = [:]
        var summaries: [String: Summary] = [:]
    }

    private let state = Mutex(State())

    public init() {}

    /// Adds to a counter. `plugin` becomes a label.
    public func add(_ name: String, plugin: String, _ delta: UInt64) {
        let key = Self.key(name, plugin)
        state.withLock { $0.counters[key, default: 0] &+= delta }
    }

    public func set(_ name: String, plugin: String, _ value: Double) {
        let key = Self.key(name, plugin)
        state.withLock { $0.gauges[key] = value }
    }

    public func record(_ name: String, plugin: String, _ value: Double) {
        let key = Self.key(name, plugin)
        state.withLock {
            $0.summaries[key, default: Summary()].count += 1
            $0.summaries[key, default: Summary()].sum += value
        }
    }

    /// The current value of a counter (tests, tools).
    public func counter(_ name: String, plugin: String) -> UInt64 {
        state.withLock { $0.counters[Self.key(name, plugin)] ?? 0 }
    }

    /// All metrics in the Prometheus text exposition format.
    public func prometheusText() -> String {
        state.withLock { s in
            var lines: [String] = []
            for (key, value) in s.counters.sorted(by: { $0.key < $1.key }) { lines.append("\(key) \(value)") }
            for (key, value) in s.gauges.sorted(by: { $0.key < $1.key }) { lines.append("\(key) \(value)") }
            for (key, value) in s.summaries.sorted(by: { $0.key < $1.key }) {
                let (name, labels) = Self.split(key)
                lines.append("\(name)_count\(labels) \(value.count)")
                lines.append("\(name)_sum\(labels) \(value.sum)")
            }
            return lines.joined(separator: "\n") + "\n"
        }
    }

    private static func key(_ name: String, _ plugin: String) -> String {
        let clean = String(name.map { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") ? $0 : "_" })
        return "plexus_\(clean){plugin=\(ConfigValue.quote(plugin))}"
    }

    private static func split(_ key: String) -> (String, String) {
        guard let brace = key.firstIndex(of: "{") else { return (key, "") }
        return (String(key[..<brace]), String(key[brace...]))
    }
}
