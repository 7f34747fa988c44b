import CLibpq
import Foundation
import PlexusBench

/// A real PostgreSQL server (`initdb` + `postgres`) on a free loopback port with its cluster in a temporary
/// directory. The server binaries are found with `pg_config --bindir`, else in Debian's
/// `/usr/lib/postgresql/<version>/bin`. PostgreSQL refuses to run as root: a test running as root runs the
/// server as the `postgres` account the Debian package creates (through `setpriv`).
final class PostgresServer: @unchecked Sendable {
    // Safe: used from the one test that owns it.
    let port: Int
    let directory: URL
    let user: String
    private let server: ServerProcess

    static func binaries() throws -> String {
        var candidates: [String] = []
        if let pgConfig = which("pg_config") {
            let process = Process()
            let pipe = Pipe()
            process.executableURL = URL(fileURLWithPath: pgConfig)
            process.arguments = ["--bindir"]
            process.standardOutput = pipe
            try process.run()
            process.waitUntilExit()
            let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            candidates.append(text.trimmingCharacters(in: .whitespacesAndNewlines))
        }
        let debian = "/usr/lib/postgresql"
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: debian)) ?? []
        candidates += versions.sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "\(debian)/\($0)/bin" }
        for directory in candidates where FileManager.default.isExecutableFile(atPath: directory + "/initdb") {
            return directory
        }
        throw HarnessError(
            description: "no PostgreSQL server binaries (initdb) in \(candidates): run scripts/interop-deps")
    }

    init() throws {
        let bin = try Self.binaries()
        port = try LoopbackPorts.free(1)[0]
        directory = try Repository.temporaryDirectory("plexus-postgres")
        let cluster = directory.appendingPathComponent("cluster").path
        let asRoot = getuid() == 0
        user = asRoot ? "postgres" : ProcessInfo.processInfo.userName
        var prefix: [String] = []
        if asRoot {
            // setpriv executes the server in its own process (runuser would fork and keep the signals).
            guard let setpriv = which("setpriv") else {
                throw HarnessError(description: "running as root and setpriv is missing: cannot start PostgreSQL")
            }
            prefix = [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
            let chown = Process()
            chown.executableURL = URL(fileURLWithPath: "/bin/chown")
            chown.arguments = ["-R", "postgres", directory.path]
            try chown.run()
            chown.waitUntilExit()
        }
        let initdb = Process()
        initdb.executableURL = URL(fileURLWithPath: prefix.first ?? bin + "/initdb")
        initdb.arguments =
            Array(prefix.dropFirst()) + (asRoot ? [bin + "/initdb"] : []) + [
                "-D", cluster, "-U", user, "--auth=trust", "-E", "UTF8", "--no-sync",
            ]
        let initLog = directory.appendingPathComponent("initdb.log")
        FileManager.default.createFile(atPath: initLog.path, contents: nil)
        initdb.standardOutput = try FileHandle(forWritingTo: initLog)
        initdb.standardError = initdb.standardOutput
        try initdb.run()
        initdb.waitUntilExit()
        guard initdb.terminationStatus == 0 else {
            throw HarnessError(
                description: "initdb failed: \((try? String(contentsOf: initLog, encoding: .utf8)) ?? "")")
        }
        let postgres = [
            bin + "/postgres", "-D", cluster, "-p", String(port), "-k", directory.path,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
        ]
        server = ServerProcess(
            executable: prefix.first ?? postgres[0],
            arguments: Array(prefix.dropFirst()) + (asRoot ? postgres : Array(postgres.dropFirst())),
            log: directory.appendingPathComponent("postgres.log"), stopSignal: SIGINT)
        try start()
    }

    var conninfo: String { "host=127.0.0.1 port=\(port) dbname=postgres user=\(user) connect_timeout=2" }

    func start() throws {
        try server.start()
        let ready = Wait.until(seconds: 20) { (try? query("SELECT 1")) == [["1"]] }
        guard ready else { throw HarnessError(description: "postgres did not start:\n\(server.output)") }
    }

    func stop() { server.stop() }

    func restart() throws {
        stop()
        try start()
    }

    /// Runs `sql` on a fresh connection; the rows as text (nil for NULL).
    func query(_ sql: String) throws -> [[String?]] {
        guard let connection = PQconnectdb(conninfo) else { throw HarnessError(description: "libpq: no connection") }
        defer { PQfinish(connection) }
        guard PQstatus(connection) == CONNECTION_OK else {
            throw HarnessError(description: String(cString: PQerrorMessage(connection)))
        }
        let result = PQexec(connection, sql)
        defer { PQclear(result) }
        let status = PQresultStatus(result)
        guard status == PGRES_TUPLES_OK || status == PGRES_COMMAND_OK else {
            throw HarnessError(description: String(cString: PQresultErrorMessage(result)))
        }
        return (0..<PQntuples(result)).map { row in
            (0..<PQnfields(result)).map { column in
                PQgetisnull(result, row, column) != 0 ? nil : String(cString: PQgetvalue(result, row, column))
            }
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
