import Synchronization

/// The health of a connector and its metrics, through the host: unhealthy, with the reason, while the
/// external system is unreachable; healthy again after the next success.
///
/// - Important: Thread-safe; every method may be called from any thread.
public final class ConnectorHealth: Sendable {
    let host: Host
    let name: String
    private let reason = Mutex<String?>("not connected yet")

    public init(host: Host, name: String) {
        self.host = host
        self.name = name
    }

    /// Records a failure to reach or use the external system; `health()` then throws `reason`.
    public func unhealthy(_ reason: String) {
        let changed = self.reason.withLock { current -> Bool in
            defer { current = reason }
            return current != reason
        }
        if changed {
            host.log(.warning, "\(name): unhealthy: \(reason)")
            host.gauge("connector_connected", 0)
        }
    }

    /// Records a success with the external system.
    public func healthy() {
        let changed = reason.withLock { current -> Bool in
            defer { current = nil }
            return current != nil
        }
        if changed {
            host.log(.info, "\(name): connected")
            host.gauge("connector_connected", 1)
        }
    }

    /// The reason the connector is unhealthy, `nil` when it is healthy.
    public var problem: String? { reason.withLock { $0 } }

    /// Throws the reason when unhealthy (for `Plugin.health()`).
    /// - Throws: `PluginError` (`PX_ERR_UNAVAILABLE`) with the reason.
    public func check() throws {
        if let problem { throw PluginError(PX_ERR_UNAVAILABLE, "\(name): \(problem)") }
    }
}
