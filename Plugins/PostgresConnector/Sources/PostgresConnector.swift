import PlexusPluginSDK

/// A PostgreSQL connector (named `postgres-sink` since it was only a sink; the name is kept for the manifests
/// already deployed): with `mode: sink` (the default) it inserts the events of a topic into a table in
/// batches, idempotent on (source, id); with `mode: source` it publishes the rows of an outbox table into a
/// topic, in commit-safe order, saving its position after each acknowledged publish.
public final class PostgresConnector: Plugin {
    public static let name = "postgres-sink"
    public static let version = "1.1.0"
    public static let kinds: PluginKinds = [.connector]

    let role: ConnectorRole

    public init(host: Host, config: PluginConfig) throws {
        let settings = try ConnectorSettings(config)
        let name = config.instanceName
        let entries = config.entries
        guard let conninfo = entries["conninfo"], !conninfo.isEmpty else {
            throw PluginError.invalidArgument("\(name): 'conninfo' must be a libpq connection string")
        }
        let createTable = (entries["createTable"] ?? "true") == "true"
        do {
            switch entries["mode"].flatMap({ $0.isEmpty ? nil : $0 }) ?? "sink" {
            case "sink":
                guard settings.batchSize <= 5000 else {
                    throw PluginError.invalidArgument("'batchSize' must be at most 5000 (PostgreSQL's parameters)")
                }
                let driver = try PostgresSink(
                    conninfo: conninfo, table: entries["table"].flatMap { $0.isEmpty ? nil : $0 } ?? "plexus_events",
                    createTable: createTable, workers: settings.concurrency)
                role = .sink(SinkConnector(name: name, host: host, settings: settings, driver: driver))
            case "source":
                let interval = entries["pollIntervalMs"].flatMap { $0.isEmpty ? nil : $0 } ?? "1000"
                guard let pollIntervalMs = Int(interval), pollIntervalMs >= 1 else {
                    throw PluginError.invalidArgument("'pollIntervalMs' must be a positive integer, not '\(interval)'")
                }
                let driver = try PostgresSource(
                    conninfo: conninfo, table: entries["table"].flatMap { $0.isEmpty ? nil : $0 } ?? "plexus_outbox",
                    createTable: createTable, notifyChannel: entries["notifyChannel"] ?? "",
                    pollIntervalMs: pollIntervalMs, host: host, name: name)
                let positions = try PositionStores.open(host: host, config: config)
                role = .source(
                    SourceConnector(name: name, host: host, settings: settings, driver: driver, positions: positions))
            case let other:
                throw PluginError.invalidArgument("'mode' must be 'source' or 'sink', not '\(other)'")
            }
        } catch let error as PluginError {
            throw PluginError(status: error.status, "\(name): \(error.message)")
        }
    }

    public func start() throws { try role.start() }

    public func stop(timeout: Duration) throws { try role.stop(timeout: timeout) }

    public func health() throws { try role.health() }

    /// Events published (source) or written (sink) since this instance started.
    var transferred: UInt64 { role.transferred }
}

@_cdecl("px_plugin_entry_v1")
public func postgresConnectorEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(PostgresConnector.self, api, out, err)
}

/// Operation `written`: events this instance published (source) or inserted, or found there already, and
/// acknowledged (sink).
@_cdecl("px_op_postgres_sink_written")
public func postgresSinkWritten(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(PostgresConnector.self, instance)?.transferred ?? 0
}
