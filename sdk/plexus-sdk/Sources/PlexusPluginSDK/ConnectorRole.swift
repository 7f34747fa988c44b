/// A connector plugin that is a source or a sink by its `mode` key: the framework object it runs, and the
/// lifecycle calls its `Plugin` forwards to it (`start`, `stop`, `health`), so a connector's plugin type only
/// says how it builds each role.
public enum ConnectorRole: Sendable {
    case source(SourceConnector)
    case sink(SinkConnector)

    /// The role `config`'s `mode` names (`defaultMode` when the key is absent or empty), built by `source` or
    /// `sink`.
    /// - Throws: `PluginError.invalidArgument` naming the instance when `mode` is neither; what the builder
    ///   throws.
    public static func from(
        _ config: PluginConfig, defaultMode: String = "", source: () throws -> SourceConnector,
        sink: () throws -> SinkConnector
    ) throws -> ConnectorRole {
        let mode = config.entries["mode"].flatMap { $0.isEmpty ? nil : $0 } ?? defaultMode
        switch mode {
        case "source": return .source(try source())
        case "sink": return .sink(try sink())
        default:
            throw PluginError.invalidArgument(
                "\(config.instanceName): 'mode' must be 'source' or 'sink', not '\(mode)'")
        }
    }

    public func start() throws {
        switch self {
        case .source(let source): try source.start()
        case .sink(let sink): try sink.start()
        }
    }

    public func stop(timeout: Duration) throws {
        switch self {
        case .source(let source): try source.stop(timeout: timeout)
        case .sink(let sink): try sink.stop(timeout: timeout)
        }
    }

    /// Throws the reason while the external system is unreachable (`ConnectorHealth`).
    public func health() throws {
        switch self {
        case .source(let source): try source.health.check()
        case .sink(let sink): try sink.health.check()
        }
    }

    /// Events published (source) or written (sink) since this instance started.
    public var transferred: UInt64 {
        switch self {
        case .source(let source): source.publishedCount
        case .sink(let sink): sink.writtenCount
        }
    }
}
