import PlexusPluginSDK

/// A PostgreSQL sink: inserts the events of a topic into a table in batches, idempotent on (source, id).
public final class PostgresConnector: Plugin {
    public static let name = "postgres-sink"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    let sink: SinkConnector

    public init(host: Host, config: PluginConfig) throws {
        let settings = try ConnectorSettings(config)
        let name = config.instanceName
        guard let conninfo = config.entries["conninfo"], !conninfo.isEmpty else {
            throw PluginError.invalidArgument("\(name): 'conninfo' must be a libpq connection string")
        }
        guard settings.batchSize <= 5000 else {
            throw PluginError.invalidArgument("\(name): 'batchSize' must be at most 5000 (PostgreSQL's parameters)")
        }
        let driver: PostgresSink
        do {
            driver = try PostgresSink(
                conninfo: conninfo, table: config.entries["table"] ?? "plexus_events",
                createTable: (config.entries["createTable"] ?? "true") == "true", workers: settings.concurrency)
        } catch let error as PluginError {
            throw PluginError(status: error.status, "\(name): \(error.message)")
        }
        sink = SinkConnector(name: name, host: host, settings: settings, driver: driver)
    }

    public func start() throws { try sink.start() }
    public func stop(timeout: Duration) throws { try sink.stop(timeout: timeout) }
    public func health() throws { try sink.health.check() }
}

@_cdecl("px_plugin_entry_v1")
public func postgresConnectorEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(PostgresConnector.self, api, out, err)
}

/// Operation `written`: events this instance inserted (or found there already) and acknowledged.
@_cdecl("px_op_postgres_sink_written")
public func postgresSinkWritten(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(PostgresConnector.self, instance)?.sink.writtenCount ?? 0
}
