import PlexusPluginSDK

/// A files connector: with `mode: source` it tails a JSON-lines file into a topic (position: inode and byte
/// offset; rotation and truncation handled); with `mode: sink` it appends the events of a topic to a file as
/// CloudEvents JSON lines (fsync `always` before the acknowledgement, or every `interval`).
public final class FileConnector: Plugin {
    public static let name = "file-connector"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    let role: ConnectorRole

    public init(host: Host, config: PluginConfig) throws {
        var settings = try ConnectorSettings(config)
        let name = config.instanceName
        guard let path = config.entries["path"], path.hasPrefix("/") else {
            throw PluginError.invalidArgument("\(name): 'path' must be an absolute file path")
        }
        switch config.entries["mode"] ?? "" {
        case "source":
            let positions = try PositionStores.open(host: host, config: config)
            role = .source(
                SourceConnector(
                    name: name, host: host, settings: settings, driver: FileSource(path: path), positions: positions))
        case "sink":
            guard settings.concurrency == 1 else {
                throw PluginError.invalidArgument("\(name): 'concurrency' must be 1: one file has one writer")
            }
            settings.concurrency = 1
            let policy = config.entries["fsync"] ?? "always"
            guard policy == "always" || policy == "interval" else {
                throw PluginError.invalidArgument("\(name): 'fsync' must be 'always' or 'interval', not '\(policy)'")
            }
            let interval = UInt64(config.entries["fsyncIntervalMs"] ?? "") ?? 1000
            let driver = FileSink(path: path, syncAlways: policy == "always", intervalMs: interval)
            role = .sink(SinkConnector(name: name, host: host, settings: settings, driver: driver))
        case let other:
            throw PluginError.invalidArgument("\(name): 'mode' must be 'source' or 'sink', not '\(other)'")
        }
    }

    public func start() throws { try role.start() }

    public func stop(timeout: Duration) throws { try role.stop(timeout: timeout) }

    public func health() throws { try role.health() }

    /// Events published (source) or written (sink) since this instance started.
    var transferred: UInt64 { role.transferred }
}

@_cdecl("px_plugin_entry_v1")
public func fileConnectorEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(FileConnector.self, api, out, err)
}

/// Operation `transferred`: events published (source) or written (sink) since this instance started.
@_cdecl("px_op_file_connector_transferred")
public func fileConnectorTransferred(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(FileConnector.self, instance)?.transferred ?? 0
}
