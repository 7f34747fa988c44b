import PlexusPluginSDK
import Synchronization

/// Logs every event of the topics it subscribes to, one line each, and acknowledges it: the simplest
/// consumer, and a Swift plugin written against the SDK.
public final class ConsoleSink: Plugin {
    public static let name = "console-sink"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    struct Settings: Decodable {
        var topics: [String]
        var group: String
        var showData: Bool
    }

    let host: Host
    let settings: Settings
    private let subscriptions = Mutex<[Subscription]>([])
    let received = Atomic<UInt64>(0)

    public init(host: Host, config: PluginConfig) throws {
        self.host = host
        self.settings = try config.decode(Settings.self)
        guard !settings.topics.isEmpty, !settings.topics.contains(where: \.isEmpty) else {
            throw PluginError.invalidArgument("console-sink: 'topics' must list at least one non-empty topic")
        }
    }

    public func start() throws {
        var made: [Subscription] = []
        do {
            for topic in settings.topics {
                made.append(try host.subscribe(topic: topic, group: settings.group) { [self] in log($0) })
            }
        } catch {
            // on_start undoes its partial work: end the subscriptions made before the failure.
            for subscription in made { host.unsubscribe(subscription) }
            throw error
        }
        subscriptions.withLock { $0.append(contentsOf: made) }
    }

    /// Logs one delivery and acknowledges it.
    private func log(_ delivery: Delivery) {
        let event = delivery.event
        var line = "\(delivery.topic)@\(delivery.offset) id=\(event.id) type=\(event.type) source=\(event.source)"
        if settings.showData {
            line += " data=\(String(decoding: event.data.prefix(512), as: UTF8.self))"
        }
        host.log(.info, line)
        received.add(1, ordering: .relaxed)
        host.count("events_received")
        host.ack(delivery)
    }

    public func stop(timeout: Duration) throws {
        let all = subscriptions.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for subscription in all { host.unsubscribe(subscription) }
    }
}

@_cdecl("px_plugin_entry_v1")
public func consoleSinkEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(ConsoleSink.self, api, out, err)
}

/// Operation `received`: how many events this instance has logged.
@_cdecl("px_op_console_sink_received")
public func consoleSinkReceived(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(ConsoleSink.self, instance)?.received.load(ordering: .relaxed) ?? 0
}
