import CLibpq
import PlexusPluginSDK

/// A failure talking to PostgreSQL: what was being done and the server's or libpq's message.
struct PostgresError: Error, CustomStringConvertible {
    var context: String
    var reason: String
    var description: String { "\(context): \(reason)" }
}

/// Inserts each batch of events into a table with one multi-row `INSERT … ON CONFLICT (source, id) DO
/// NOTHING` (one statement, so one transaction): an event delivered again is not inserted twice, and the
/// batch is acknowledged only after the server committed it.
final class PostgresSink: SinkDriver, @unchecked Sendable {
    // Safe: `SinkConnector` calls a driver for worker `w` from that worker's thread only, and each worker
    // has its own slot of `connections`, allocated before the workers start and never resized.
    static let columns = [
        "source", "id", "type", "specversion", "subject", "time", "datacontenttype", "dataschema", "extensions",
        "data", "topic", "stream_offset",
    ]
    let conninfo: String
    let table: String
    let createTable: Bool
    private let connections: UnsafeMutableBufferPointer<OpaquePointer?>

    /// - Parameter table: a table name, optionally schema-qualified, of letters, digits and underscores.
    init(conninfo: String, table: String, createTable: Bool, workers: Int) throws {
        let parts = table.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count),
            parts.allSatisfy({ part in
                guard let first = part.utf8.first, !(0x30...0x39).contains(first) else { return false }
                return part.utf8.allSatisfy { $0 == 0x5F || (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) }
            })
        else {
            throw PluginError.invalidArgument(
                "'table' must be a lowercase name of letters, digits and '_' (optionally schema.table), not '\(table)'")
        }
        self.conninfo = conninfo
        self.table = parts.map { "\"\($0)\"" }.joined(separator: ".")
        self.createTable = createTable
        connections = .allocate(capacity: workers)
        connections.initialize(repeating: nil)
    }

    deinit {
        for case let connection? in connections { PQfinish(connection) }
        _ = connections.deinitialize()
        connections.deallocate()
    }

    func connect(worker: Int) throws {
        disconnect(worker: worker)
        guard let connection = PQconnectdb(conninfo) else {
            throw PostgresError(context: "cannot connect", reason: "libpq could not allocate a connection")
        }
        guard PQstatus(connection) == CONNECTION_OK else {
            let reason = Self.message(connection)
            PQfinish(connection)
            throw PostgresError(context: "cannot connect", reason: reason)
        }
        connections[worker] = connection
        if createTable {
            try execute(
                worker,
                """
                CREATE TABLE IF NOT EXISTS \(table) (
                    source text NOT NULL, id text NOT NULL, type text NOT NULL, specversion text NOT NULL,
                    subject text, time text, datacontenttype text, dataschema text,
                    extensions jsonb NOT NULL DEFAULT '{}', data bytea NOT NULL,
                    topic text NOT NULL, stream_offset bigint NOT NULL,
                    PRIMARY KEY (source, id))
                """, [])
        }
    }

    func write(worker: Int, _ batch: [Delivery]) throws {
        var sql = "INSERT INTO \(table) (\(Self.columns.joined(separator: ", "))) VALUES "
        var parameters: [[UInt8]?] = []
        let width = Self.columns.count
        for (row, delivery) in batch.enumerated() {
            if row > 0 { sql += ", " }
            sql += "(" + (1...width).map { "$\(row * width + $0)" }.joined(separator: ", ") + ")"
            let event = delivery.event
            let extensions =
                "{"
                + event.extensions.map { CloudEventJSON.quote($0.key) + ":" + CloudEventJSON.quote($0.value) }
                .joined(separator: ",") + "}"
            let texts: [String?] = [
                event.source, event.id, event.type, event.specversion, event.subject, event.time,
                event.datacontenttype, event.dataschema, extensions,
            ]
            parameters += texts.map { $0.map { Array($0.utf8) } }
            parameters.append(event.data)
            parameters.append(Array(delivery.topic.utf8))
            parameters.append(Array(String(delivery.offset).utf8))
        }
        sql += " ON CONFLICT (source, id) DO NOTHING"
        // `data` (the 10th column of each row) goes in binary; everything else as text.
        let binary = Set((0..<batch.count).map { $0 * width + 9 })
        try execute(worker, sql, parameters, binary: binary)
    }

    func disconnect(worker: Int) {
        if let connection = connections[worker] { PQfinish(connection) }
        connections[worker] = nil
    }

    /// Runs one statement with parameters; throws unless it completed.
    private func execute(_ worker: Int, _ sql: String, _ parameters: [[UInt8]?], binary: Set<Int> = []) throws {
        guard let connection = connections[worker] else {
            throw PostgresError(context: "write", reason: "not connected")
        }
        // Every parameter's bytes in one arena, NUL-terminated (text parameters are read as C strings).
        var arena: [UInt8] = []
        var offsets: [Int?] = []
        for parameter in parameters {
            if let parameter {
                offsets.append(arena.count)
                arena.append(contentsOf: parameter)
                arena.append(0)
            } else {
                offsets.append(nil)
            }
        }
        arena.append(0)
        let lengths = parameters.map { Int32(clamping: $0?.count ?? 0) }
        let formats = (0..<parameters.count).map { binary.contains($0) ? Int32(1) : Int32(0) }
        let result = arena.withUnsafeBufferPointer { bytes -> OpaquePointer? in
            let base = UnsafeRawPointer(bytes.baseAddress!)
            let values: [UnsafePointer<CChar>?] = offsets.map { offset in
                offset.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            }
            return values.withUnsafeBufferPointer { values in
                PQexecParams(
                    connection, sql, Int32(parameters.count), nil, values.baseAddress, lengths, formats, 0)
            }
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let reason = result.flatMap { PQresultErrorMessage($0) }.map { String(cString: $0) } ?? ""
            throw PostgresError(
                context: "statement failed", reason: reason.isEmpty ? Self.message(connection) : reason)
        }
    }

    static func message(_ connection: OpaquePointer) -> String {
        PQerrorMessage(connection).map { String(cString: $0) }?.trimmingTrailingNewlines ?? "unknown error"
    }
}

extension String {
    var trimmingTrailingNewlines: String {
        var s = Substring(self)
        while s.last == "\n" { s = s.dropLast() }
        return String(s)
    }
}
