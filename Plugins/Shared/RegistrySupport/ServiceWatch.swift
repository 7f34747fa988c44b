import Dispatch
import PlexusPluginSDK
import Synchronization

/// One watch of a service, for a registry plugin: its handler runs on a serial queue of its own, so calls
/// never overlap and keep their order (the contract of `px_registry_on_watch`).
public final class ServiceWatch: Sendable {
    public let id: UInt64
    public let service: String
    private let handler: @Sendable (WatchEvent) -> Void
    private let queue: DispatchQueue
    private let active = Atomic<Bool>(true)
    private static let current = DispatchSpecificKey<UInt64>()

    /// - Parameter label: names the queue (`plexus.<plugin>.watch.<id>`).
    public init(id: UInt64, service: String, label: String, handler: @escaping @Sendable (WatchEvent) -> Void) {
        self.id = id
        self.service = service
        self.handler = handler
        queue = DispatchQueue(label: "\(label).watch.\(id)")
        queue.setSpecific(key: Self.current, value: id)
    }

    /// Queues events for the handler, in order.
    public func sendAll(_ events: [WatchEvent]) {
        guard !events.isEmpty else { return }
        queue.async { [self] in
            for event in events {
                guard active.load(ordering: .acquiring) else { return }
                handler(event)
            }
        }
    }

    /// Queues an event for the handler.
    public func send(_ event: WatchEvent) { sendAll([event]) }

    /// Stops the watch; when it returns the handler is not running (unless called from the handler itself)
    /// and will not run again.
    public func end() {
        active.store(false, ordering: .releasing)
        if DispatchQueue.getSpecific(key: Self.current) != id { queue.sync {} }
    }
}
