import CLibpq
import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Where the source is in its outbox table: the writing transaction's id and the row's `position` within it.
/// Saved as the text `<txid>:<position>`.
struct OutboxCursor: Equatable, Sendable {
    var txid: UInt64
    var position: Int64

    static let start = OutboxCursor(txid: 0, position: 0)

    var bytes: [UInt8] { Array("\(txid):\(position)".utf8) }

    /// Reads a saved cursor.
    /// - Throws: `PostgresError` when the bytes are not `<txid>:<position>`.
    init(bytes: [UInt8]) throws {
        let parts = String(decoding: bytes, as: UTF8.self).split(separator: ":")
        guard parts.count == 2, let txid = UInt64(parts[0]), let position = Int64(parts[1]) else {
            throw PostgresError(
                context: "saved position",
                reason: "'\(String(decoding: bytes, as: UTF8.self))' is not <txid>:<position>")
        }
        self.init(txid: txid, position: position)
    }

    init(txid: UInt64, position: Int64) {
        self.txid = txid
        self.position = position
    }
}

/// Reads an outbox table in commit-safe order and publishes its rows as events.
///
/// Rows are read ordered by `(txid, position)` and only from transactions older than the oldest one still
/// running (`txid < pg_snapshot_xmin(pg_current_snapshot())`): every transaction below that horizon has
/// ended, so no row can appear later before the cursor. Ordering by `position` alone would not be safe: a
/// `bigserial` value is taken when the row is inserted, so a transaction that commits late can make a row
/// with a smaller position visible after larger ones were read. A long-running transaction therefore holds
/// back publishing (never loses a row).
///
/// With `notifyChannel` set it `LISTEN`s and wakes on a notification; otherwise (and as a fallback) it polls
/// every `pollIntervalMs`.
final class PostgresSource: SourceDriver, @unchecked Sendable {
    // Safe: `SourceConnector` calls a driver from its one thread only; the mutable state is touched there.
    let conninfo: String
    let table: String
    let createTable: Bool
    let notifyChannel: String
    let pollIntervalMs: Int
    let host: Host
    let name: String
    private var connection: OpaquePointer?
    private var cursor = OutboxCursor.start
    private var nextPoll: UInt64 = 0
    private var woken = true

    /// - Parameters:
    ///   - table: the outbox table, already checked and quoted by `PostgresTable.quoted`.
    ///   - notifyChannel: a channel to LISTEN on, or empty to poll only.
    init(
        conninfo: String, table: String, createTable: Bool, notifyChannel: String, pollIntervalMs: Int, host: Host,
        name: String
    ) throws {
        self.conninfo = conninfo
        self.table = try PostgresTable.quoted(table)
        self.createTable = createTable
        guard notifyChannel.isEmpty || PostgresTable.isPlainName(notifyChannel) else {
            throw PluginError.invalidArgument(
                "'notifyChannel' must be a lowercase name of letters, digits and '_', not '\(notifyChannel)'")
        }
        self.notifyChannel = notifyChannel
        self.pollIntervalMs = pollIntervalMs
        self.host = host
        self.name = name
    }

    deinit { if let connection { PQfinish(connection) } }

    /// The outbox table's definition (created when `createTable`), in the README.
    var createStatements: [String] {
        var statements = [
            """
            CREATE TABLE IF NOT EXISTS \(table) (
                position bigserial PRIMARY KEY,
                txid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                id text, source text NOT NULL, type text NOT NULL, specversion text NOT NULL DEFAULT '1.0',
                subject text, time text, datacontenttype text, dataschema text,
                extensions jsonb NOT NULL DEFAULT '{}', data bytea NOT NULL DEFAULT '')
            """,
            "CREATE INDEX IF NOT EXISTS \(PostgresTable.derived(table, "_txid_position", qualified: false)) ON \(table) (txid, position)",
        ]
        if !notifyChannel.isEmpty {
            let function = PostgresTable.derived(table, "_notify")
            statements += [
                """
                CREATE OR REPLACE FUNCTION \(function)() RETURNS trigger LANGUAGE plpgsql AS
                $$ BEGIN PERFORM pg_notify('\(notifyChannel)', ''); RETURN NULL; END $$
                """,
                """
                CREATE OR REPLACE TRIGGER \(PostgresTable.derived(table, "_notify", qualified: false))
                AFTER INSERT ON \(table) FOR EACH STATEMENT EXECUTE FUNCTION \(function)()
                """,
            ]
        }
        return statements
    }

    /// Whether the outbox table, its index and (with a channel) its trigger already exist. The DDL runs only
    /// when one is missing: even `CREATE INDEX IF NOT EXISTS` takes a lock that waits for every open
    /// transaction on the table and queues every writer behind it, so a (re)connecting source would stall the
    /// application's inserts while any transaction on the outbox is open.
    func outboxIsReady() throws -> Bool {
        var sql = "SELECT to_regclass($1) IS NOT NULL AND to_regclass($2) IS NOT NULL"
        var parameters = [table, PostgresTable.derived(table, "_txid_position")]
        if !notifyChannel.isEmpty {
            sql += " AND EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $3)"
            parameters.append(
                String(PostgresTable.derived(table, "_notify", qualified: false).dropFirst().dropLast()))
        }
        return try query(sql, parameters).first?.first == "t"
    }

    func connect(position: [UInt8]?) throws {
        disconnect()
        cursor = try position.map(OutboxCursor.init(bytes:)) ?? .start
        guard let made = PQconnectdb(conninfo) else {
            throw PostgresError(context: "cannot connect", reason: "libpq could not allocate a connection")
        }
        guard PQstatus(made) == CONNECTION_OK else {
            let reason = PostgresSink.message(made)
            PQfinish(made)
            throw PostgresError(context: "cannot connect", reason: reason)
        }
        connection = made
        if createTable, try !outboxIsReady() {
            for statement in createStatements { _ = try query(statement, []) }
        }
        if !notifyChannel.isEmpty { _ = try query("LISTEN \(notifyChannel)", []) }
        woken = true
    }

    func read(max: Int, wait: Duration) throws -> SourceBatch {
        guard let connection else { throw PostgresError(context: "read", reason: "not connected") }
        let now = ConnectorClock.nowMs()
        if woken || now >= nextPoll {
            woken = false
            let rows = try query(
                """
                SELECT txid::text AS cursor_txid, position::text AS cursor_position, (extensions || jsonb_build_object(
                    'specversion', specversion, 'id', coalesce(id, position::text), 'source', source, 'type', type,
                    'subject', subject, 'time', time, 'datacontenttype', datacontenttype, 'dataschema', dataschema,
                    'data_base64', translate(encode(data, 'base64'), E'\\n', '')))::text
                FROM \(table)
                WHERE txid < pg_snapshot_xmin(pg_current_snapshot()) AND (txid, position) > ($1::xid8, $2::bigint)
                ORDER BY \(table).txid, \(table).position LIMIT \(max)
                """, [String(cursor.txid), String(cursor.position)])
            if !rows.isEmpty {
                var events: [CloudEvent] = []
                for row in rows {
                    guard row.count == 3, let txid = row[0].flatMap(UInt64.init),
                        let position = row[1].flatMap(Int64.init)
                    else { throw PostgresError(context: "read \(table)", reason: "unexpected row \(row)") }
                    cursor = OutboxCursor(txid: txid, position: position)
                    do {
                        let event = try CloudEventJSON.decode(Array((row[2] ?? "").utf8))
                        if let problem = event.invalidReason { throw PostgresError(context: "", reason: problem) }
                        events.append(event)
                    } catch {
                        // A row that is no valid event cannot be published: counted and logged, not retried
                        // forever (it would stop every row after it).
                        host.count("connector_rows_invalid")
                        host.log(
                            .error, "\(name): row position \(position) of \(table) skipped, not a valid event: \(error)"
                        )
                    }
                }
                // A full batch: more may be waiting, read again at once.
                woken = rows.count == max
                return SourceBatch(events: events, position: cursor.bytes)
            }
            nextPoll = now + UInt64(pollIntervalMs)
        }
        let waitMs = Int(wait.components.seconds) * 1000 + Int(wait.components.attoseconds / 1_000_000_000_000_000)
        let left = Int(nextPoll > now ? nextPoll - now : 0)
        try waitForWork(connection, ms: Swift.min(waitMs, left))
        return SourceBatch(events: [], position: nil)
    }

    func disconnect() {
        if let connection { PQfinish(connection) }
        connection = nil
    }

    /// Waits up to `ms` for a notification (when listening) or just `ms` (when polling).
    private func waitForWork(_ connection: OpaquePointer, ms: Int) throws {
        guard ms > 0 else { return }
        guard !notifyChannel.isEmpty else {
            usleep(UInt32(ms) * 1000)
            return
        }
        if !drainNotifications(connection) {
            var descriptor = pollfd(fd: PQsocket(connection), events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(ms))
            if ready > 0 {
                guard PQconsumeInput(connection) == 1 else {
                    throw PostgresError(context: "LISTEN \(notifyChannel)", reason: PostgresSink.message(connection))
                }
                _ = drainNotifications(connection)
            }
        }
    }

    /// Takes every pending notification; whether there was one (then the next read queries at once).
    private func drainNotifications(_ connection: OpaquePointer) -> Bool {
        var any = false
        while let notification = PQnotifies(connection) {
            PQfreemem(notification)
            any = true
        }
        if any { woken = true }
        return any
    }

    /// Runs one statement with text parameters; the rows as text (nil for NULL).
    private func query(_ sql: String, _ parameters: [String]) throws -> [[String?]] {
        guard let connection else { throw PostgresError(context: "query", reason: "not connected") }
        let result = PostgresTable.withCStrings(parameters) { values in
            PQexecParams(connection, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK else {
            let reason = result.flatMap { PQresultErrorMessage($0) }.map { String(cString: $0) } ?? ""
            throw PostgresError(
                context: "statement failed", reason: reason.isEmpty ? PostgresSink.message(connection) : reason)
        }
        return (0..<PQntuples(result)).map { row in
            (0..<PQnfields(result)).map { column in
                PQgetisnull(result, row, column) != 0 ? nil : String(cString: PQgetvalue(result, row, column))
            }
        }
    }
}

/// Table and identifier names the connector puts into SQL: checked, then double-quoted.
enum PostgresTable {
    /// A lowercase name of letters, digits and '_', not starting with a digit.
    static func isPlainName<S: StringProtocol>(_ name: S) -> Bool {
        guard let first = name.utf8.first, !(0x30...0x39).contains(first) else { return false }
        return name.utf8.allSatisfy { $0 == 0x5F || (0x30...0x39).contains($0) || (0x61...0x7A).contains($0) }
    }

    /// `table` (optionally `schema.table`) checked and quoted.
    /// - Throws: `PluginError` (`PX_ERR_INVALID_ARGUMENT`) when it is not plain names.
    static func quoted(_ table: String) throws -> String {
        let parts = table.split(separator: ".", omittingEmptySubsequences: false)
        guard (1...2).contains(parts.count), parts.allSatisfy(isPlainName) else {
            throw PluginError.invalidArgument(
                "'table' must be a lowercase name of letters, digits and '_' (optionally schema.table), not '\(table)'")
        }
        return parts.map { "\"\($0)\"" }.joined(separator: ".")
    }

    /// A name derived from a quoted table: `"s"."t"` + `_notify` gives `"s"."t_notify"` (or `"t_notify"` when
    /// not `qualified`).
    static func derived(_ quoted: String, _ suffix: String, qualified: Bool = true) -> String {
        var parts = quoted.split(separator: ".").map { String($0.dropFirst().dropLast()) }
        parts[parts.count - 1] += suffix
        if !qualified { parts = [parts[parts.count - 1]] }
        return parts.map { "\"\($0)\"" }.joined(separator: ".")
    }

    /// Calls `body` with the strings as a C array of NUL-terminated strings.
    static func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
        var arena: [UInt8] = []
        var offsets: [Int] = []
        for string in strings {
            offsets.append(arena.count)
            arena.append(contentsOf: string.utf8)
            arena.append(0)
        }
        arena.append(0)
        return arena.withUnsafeBufferPointer { bytes in
            let base = UnsafeRawPointer(bytes.baseAddress!)
            let values: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            return values.withUnsafeBufferPointer { body($0.baseAddress) }
        }
    }
}
