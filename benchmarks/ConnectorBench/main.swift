// The connector benchmark (make bench-connectors): each shipped connector in a node in this process
// (memory-storage), beside what its external system does with its own client and the same batching, in one run.
//
// A sink row publishes N events into the topic and measures until the connector wrote the N-th one (its
// `transferred`/`written` operation), then checks the external system holds N; its baseline writes the same
// bytes with the same batch size over one connection (redis-benchmark -P, a libpq INSERT or COPY loop, an
// append+fsync loop). A source row fills the external system with N events first, starts the node, and measures
// from the first event published into the topic to the N-th; its baseline is the rate of the sink of the same
// connector. Rows are data (`Row`): adding a connector is a manifest, its config values and a baseline.
import CHiredis
import CLibpq
import Foundation
import Logging
import PlexusBench
import PlexusCore
import PlexusKernel
import Synchronization

struct Options {
    var libraries = ".build/release"
    var directory = ".build/bench-connectors"
    var events = 20_000
    var batch = 100
    var size = 1024
    var only: Set<String> = []

    init(_ arguments: [String]) {
        var i = 1
        while i < arguments.count {
            let value = i + 1 < arguments.count ? arguments[i + 1] : ""
            switch arguments[i] {
            case "--libraries": libraries = value
            case "--dir": directory = value
            case "--events": events = Int(value) ?? events
            case "--batch": batch = Int(value) ?? batch
            case "--size": size = Int(value) ?? size
            case "--rows": only = Set(value.split(separator: ",").map(String.init))
            default: break
            }
            i += 2
        }
    }
}

/// What went wrong in one row: its context and why.
struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

let options = Options(CommandLine.arguments)
let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }

// MARK: Events

/// The n-th benchmark event: `size` bytes of printable data (JSON, Redis and PostgreSQL carry it unchanged).
func benchEvent(_ n: Int) -> CloudEvent {
    let digits = Array(String(n).utf8)
    var data = [UInt8](repeating: UInt8(ascii: "x"), count: max(options.size, digits.count))
    data.replaceSubrange(0..<digits.count, with: digits)
    return CloudEvent(
        id: "bench-\(n)", source: "/bench", type: "bench.event", datacontenttype: "application/octet-stream",
        data: data)
}

/// Polls `condition` every 2 ms until it holds or `seconds` passed; whether it held.
@discardableResult
func waitUntil(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    while ContinuousClock.now < deadline {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: 0.002)
    }
    return try condition()
}

func seconds(_ duration: Duration) -> Double {
    Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}

func which(_ program: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(directory)/\(program)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}

/// Runs a program to its end; its standard output, or an error with its output when it failed.
func runProgram(_ executable: String, _ arguments: [String]) throws -> String {
    let process = Process()
    let pipe = Pipe()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw BenchFailure("\(executable) \(arguments.prefix(4).joined(separator: " ")) failed: \(output)")
    }
    return output
}

// MARK: Servers

/// A server child process, stopped with `stopSignal` (then SIGKILL) when the run ends.
final class ServerProcess {
    let process = Process()
    let stopSignal: Int32

    init(_ arguments: [String], log: String, stopSignal: Int32) throws {
        self.stopSignal = stopSignal
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        _ = FileManager.default.createFile(atPath: log, contents: nil)
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
    }

    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, stopSignal)
        if !waitUntil(seconds: 10, { !process.isRunning }) { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }
}

/// redis-server on a free loopback port: append-only file with `appendfsync everysec` (Redis's default for
/// AOF), no RDB snapshots. Stopped with SIGKILL (it may not see SIGTERM with this process's signal mask).
final class Redis {
    let port: Int
    let server: ServerProcess

    init(directory: String) throws {
        guard let executable = which("redis-server") else {
            throw BenchFailure("redis-server is not installed: run scripts/interop-deps")
        }
        port = try LoopbackPorts.one()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        server = try ServerProcess(
            [
                executable, "--port", String(port), "--bind", "127.0.0.1", "--dir", directory, "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "", "--daemonize", "no",
            ], log: directory + "/redis.log", stopSignal: SIGKILL)
        guard waitUntil(seconds: 10, { (try? command(["PING"])) == "PONG" }) else {
            throw BenchFailure("redis-server did not start")
        }
    }

    /// Runs commands as one pipeline on a new connection; the last reply as text (integers in decimal).
    @discardableResult
    func pipeline(_ commands: [[[UInt8]]]) throws -> String {
        guard let context = redisConnectWithTimeout("127.0.0.1", Int32(port), timeval(tv_sec: 5, tv_usec: 0)),
            context.pointee.err == 0
        else { throw BenchFailure("cannot connect to redis :\(port)") }
        defer { redisFree(context) }
        for command in commands {
            var pointers: [UnsafePointer<CChar>?] = []
            var lengths: [Int] = []
            let buffers = command.map { bytes -> UnsafeMutablePointer<CChar> in
                let buffer = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
                bytes.withUnsafeBytes { raw in
                    if let base = raw.baseAddress {
                        UnsafeMutableRawPointer(buffer).copyMemory(from: base, byteCount: raw.count)
                    }
                }
                return buffer
            }
            defer { buffers.forEach { $0.deallocate() } }
            for (buffer, bytes) in zip(buffers, command) {
                pointers.append(UnsafePointer(buffer))
                lengths.append(bytes.count)
            }
            redisAppendCommandArgv(context, Int32(command.count), &pointers, lengths)
        }
        var last = ""
        for _ in commands {
            var raw: UnsafeMutableRawPointer?
            guard redisGetReply(context, &raw) == REDIS_OK, let reply = raw?.assumingMemoryBound(to: redisReply.self)
            else { throw BenchFailure("no reply from redis :\(port)") }
            defer { freeReplyObject(reply) }
            let r = reply.pointee
            switch r.type {
            case REDIS_REPLY_ERROR: throw BenchFailure("redis: \(r.str.map { String(cString: $0) } ?? "")")
            case REDIS_REPLY_INTEGER: last = String(r.integer)
            case REDIS_REPLY_STRING, REDIS_REPLY_STATUS: last = r.str.map { String(cString: $0) } ?? ""
            default: last = ""
            }
        }
        return last
    }

    func command(_ words: [String]) throws -> String { try pipeline([words.map { Array($0.utf8) }]) }

    func length(_ stream: String) throws -> Int { Int(try command(["XLEN", stream])) ?? -1 }

    /// The XADD arguments the connector's sink writes for an event (its StreamEntry layout).
    static func xadd(_ stream: String, _ event: CloudEvent) -> [[UInt8]] {
        var words: [[UInt8]] = ["XADD", stream, "*"].map { Array($0.utf8) }
        for (name, value) in [
            ("specversion", event.specversion), ("id", event.id), ("source", event.source), ("type", event.type),
            ("datacontenttype", event.datacontenttype ?? ""),
        ] {
            words.append(Array(name.utf8))
            words.append(Array(value.utf8))
        }
        words.append(Array("data".utf8))
        words.append(event.data)
        return words
    }

    deinit { server.stop() }
}

/// PostgreSQL 15 (`initdb` + `postgres`) on a free loopback port with its defaults for durability: `fsync=on`,
/// `synchronous_commit=on` (each commit waits for its WAL flush). As root it runs as the `postgres` account.
final class Postgres {
    let port: Int
    let user: String
    let server: ServerProcess

    init(directory: String) throws {
        let debian = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: debian)) ?? []).sorted {
            (Int($0) ?? 0) > (Int($1) ?? 0)
        }
        guard
            let version = versions.first(where: { FileManager.default.fileExists(atPath: "\(debian)/\($0)/bin/initdb") }
            )
        else { throw BenchFailure("no PostgreSQL server binaries in \(debian): run scripts/interop-deps") }
        let bin = "\(debian)/\(version)/bin"
        port = try LoopbackPorts.one()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let asRoot = getuid() == 0
        user = asRoot ? "postgres" : ProcessInfo.processInfo.userName
        var prefix: [String] = []
        if asRoot {
            guard let setpriv = which("setpriv") else { throw BenchFailure("running as root without setpriv") }
            prefix = [setpriv, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
            _ = try runProgram("/bin/chown", ["-R", "postgres", directory])
        }
        let cluster = directory + "/cluster"
        let initdb = prefix + [bin + "/initdb", "-D", cluster, "-U", user, "--auth=trust", "-E", "UTF8"]
        _ = try runProgram(initdb[0], Array(initdb.dropFirst()))
        let postgres =
            prefix + [
                bin + "/postgres", "-D", cluster, "-p", String(port), "-k", directory, "-c",
                "listen_addresses=127.0.0.1",
            ]
        server = try ServerProcess(postgres, log: directory + "/postgres.log", stopSignal: SIGINT)
        guard waitUntil(seconds: 20, { (try? Connection(conninfo).query("SELECT 1")) == "1" }) else {
            throw BenchFailure("postgres did not start")
        }
    }

    var conninfo: String { "host=127.0.0.1 port=\(port) dbname=postgres user=\(user) connect_timeout=5" }

    deinit { server.stop() }

    /// One libpq connection.
    final class Connection {
        let connection: OpaquePointer

        init(_ conninfo: String) throws {
            guard let connection = PQconnectdb(conninfo), PQstatus(connection) == CONNECTION_OK else {
                throw BenchFailure("libpq: cannot connect (\(conninfo))")
            }
            self.connection = connection
        }

        deinit { PQfinish(connection) }

        /// Runs `sql`; the first column of the first row, if any.
        @discardableResult
        func query(_ sql: String) throws -> String? {
            let result = PQexec(connection, sql)
            defer { PQclear(result) }
            try check(result, sql)
            return PQntuples(result) > 0 ? String(cString: PQgetvalue(result, 0, 0)) : nil
        }

        func check(_ result: OpaquePointer?, _ what: String) throws {
            let status = PQresultStatus(result)
            guard status == PGRES_COMMAND_OK || status == PGRES_TUPLES_OK || status == PGRES_COPY_IN else {
                throw BenchFailure("\(what.prefix(60)): \(String(cString: PQresultErrorMessage(result)))")
            }
        }

        /// The sink's statement for `events`: one multi-row INSERT with parameters, `data` in binary.
        func insert(_ table: String, _ events: ArraySlice<CloudEvent>, firstOffset: Int) throws {
            let width = Postgres.columns.count
            var sql = "INSERT INTO \(table) (\(Postgres.columns.joined(separator: ", "))) VALUES "
            var parameters: [[UInt8]?] = []
            for (row, event) in events.enumerated() {
                if row > 0 { sql += ", " }
                sql += "(" + (1...width).map { "$\(row * width + $0)" }.joined(separator: ", ") + ")"
                let texts: [String?] = [
                    event.source, event.id, event.type, event.specversion, event.subject, event.time,
                    event.datacontenttype, event.dataschema, "{}",
                ]
                parameters += texts.map { $0.map { Array($0.utf8) } }
                parameters.append(event.data)
                parameters.append(Array("bench".utf8))
                parameters.append(Array(String(firstOffset + row).utf8))
            }
            sql += " ON CONFLICT (source, id) DO NOTHING"
            var arena: [UInt8] = []
            var offsets: [Int?] = []
            for parameter in parameters {
                if let parameter {
                    offsets.append(arena.count)
                    arena += parameter
                    arena.append(0)
                } else {
                    offsets.append(nil)
                }
            }
            let lengths = parameters.map { Int32($0?.count ?? 0) }
            let formats = (0..<parameters.count).map { $0 % width == 9 ? Int32(1) : Int32(0) }
            let result = arena.withUnsafeBytes { raw -> OpaquePointer? in
                let values: [UnsafePointer<CChar>?] = offsets.map { offset in
                    offset.map { raw.baseAddress!.advanced(by: $0).assumingMemoryBound(to: CChar.self) }
                }
                return PQexecParams(connection, sql, Int32(parameters.count), nil, values, lengths, formats, 0)
            }
            defer { PQclear(result) }
            try check(result, "INSERT")
        }

        /// The same rows through `COPY … FROM STDIN` (text format, `data` as bytea hex), one COPY per batch.
        func copy(_ table: String, _ events: ArraySlice<CloudEvent>, firstOffset: Int) throws {
            let start = PQexec(connection, "COPY \(table) (\(Postgres.columns.joined(separator: ", "))) FROM STDIN")
            try check(start, "COPY")
            PQclear(start)
            var text = ""
            let hex = Array("0123456789abcdef".utf8)
            for (row, event) in events.enumerated() {
                var data = [UInt8]()
                data.reserveCapacity(event.data.count * 2)
                for byte in event.data {
                    data.append(hex[Int(byte >> 4)])
                    data.append(hex[Int(byte & 15)])
                }
                let fields = [
                    event.source, event.id, event.type, event.specversion, "\\N", "\\N",
                    event.datacontenttype ?? "\\N", "\\N", "{}", "\\\\x" + String(decoding: data, as: UTF8.self),
                    "bench", String(firstOffset + row),
                ]
                text += fields.joined(separator: "\t") + "\n"
            }
            let bytes = Array(text.utf8)
            let sent = bytes.withUnsafeBytes {
                PQputCopyData(connection, $0.baseAddress!.assumingMemoryBound(to: CChar.self), Int32($0.count))
            }
            guard sent == 1, PQputCopyEnd(connection, nil) == 1 else {
                throw BenchFailure("COPY: \(String(cString: PQerrorMessage(connection)))")
            }
            while let result = PQgetResult(connection) {
                defer { PQclear(result) }
                try check(result, "COPY end")
            }
        }
    }

    /// The sink's table and columns (PostgresSink), so that the baselines write the same rows.
    static let columns = [
        "source", "id", "type", "specversion", "subject", "time", "datacontenttype", "dataschema", "extensions",
        "data", "topic", "stream_offset",
    ]

    static func createTable(_ name: String) -> String {
        """
        CREATE TABLE IF NOT EXISTS \(name) (
            source text NOT NULL, id text NOT NULL, type text NOT NULL, specversion text NOT NULL,
            subject text, time text, datacontenttype text, dataschema text,
            extensions jsonb NOT NULL DEFAULT '{}', data bytea NOT NULL,
            topic text NOT NULL, stream_offset bigint NOT NULL,
            PRIMARY KEY (source, id))
        """
    }
}

// MARK: The node

/// A node in this process: memory-storage for every topic and one connector from its manifest, with `values`
/// as its `config.values`.
final class BenchNode: Sendable {
    let root: String
    let kernel: Kernel
    let client: LocalClient
    let name: String

    init(manifest: String, values: [String: String], root: String) throws {
        self.root = root
        let manifests = root + "/manifests"
        try FileManager.default.createDirectory(atPath: manifests, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            atPath: "plugin-manifests/memory-storage.yaml", toPath: manifests + "/memory-storage.yaml")
        var text = try String(contentsOfFile: manifest, encoding: .utf8)
        let lines = values.sorted { $0.key < $1.key }.map { "    \($0.key): \(Self.quoted($0.value))\n" }.joined()
        guard let range = text.range(of: "\nconfig:\n") else { throw BenchFailure("\(manifest) has no config") }
        text.replaceSubrange(range, with: "\nconfig:\n  values:\n\(lines)")
        name = try ManifestParser.parse(text, path: manifest).name
        try text.write(toFile: manifests + "/\(name).yaml", atomically: true, encoding: .utf8)
        var config = NodeConfig()
        config.nodeID = "bench-node"
        config.dataDirectory = root + "/data"
        config.manifestDirectories = [manifests]
        config.pluginSearchPath = [URL(fileURLWithPath: options.libraries).standardizedFileURL.path]
        config.topics.defaultStorage = "memory-storage"
        config.adminPort = 0
        config.watchPlugins = false
        kernel = Kernel(config: config, logger: quiet)
        kernel.start()
        client = LocalClient(kernel: kernel, name: "bench")
        guard kernel.status(of: name)?.state == .active else {
            let reason = kernel.status(of: name)?.lastError ?? "?"
            kernel.stop()
            throw BenchFailure("\(name) did not start: \(reason)")
        }
    }

    static func quoted(_ value: String) -> String {
        if Int(value) != nil || value == "true" || value == "false" { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            + "\""
    }

    /// The connector's event count (its `transferred` or `written` operation).
    func count(_ operation: String) -> Int {
        (try? kernel.callOperation(plugin: name, operation: operation, arguments: [])).flatMap { Int($0) } ?? 0
    }

    func stop() {
        kernel.stop()
        try? FileManager.default.removeItem(atPath: root)
    }
}

// MARK: Measurements

/// The common connector settings of every row: `batchSize` B, one worker, a window of two batches (one being
/// written, the next one filling).
func connectorValues(_ values: [String: String]) -> [String: String] {
    values.merging(
        ["batchSize": String(options.batch), "maxInFlight": String(2 * options.batch), "concurrency": "1"],
        uniquingKeysWith: { own, _ in own })
}

nonisolated(unsafe) var scratchCounter = 0
func scratch(_ label: String) -> String {
    scratchCounter += 1
    return URL(fileURLWithPath: options.directory).standardizedFileURL.path + "/\(label)-\(getpid())-\(scratchCounter)"
}

/// A sink: N events published into its topic (batches of B, each waited for), timed from the first publish
/// until the connector reports N written; `stored` then counts them in the external system.
func sinkRate(manifest: String, values: [String: String], operation: String, stored: () throws -> Int) throws
    -> Double
{
    let node = try BenchNode(manifest: manifest, values: connectorValues(values), root: scratch("node"))
    defer { node.stop() }
    let topic = values["topic"] ?? "bench"
    let events = (0..<options.events).map(benchEvent)
    let started = ContinuousClock.now
    let publisher = Thread {
        for chunk in stride(from: 0, to: events.count, by: options.batch) {
            _ = try? node.client.publishAndWait(topic, Array(events[chunk..<min(events.count, chunk + options.batch)]))
        }
    }
    publisher.start()
    guard waitUntil(seconds: 300, { node.count(operation) >= options.events }) else {
        throw BenchFailure("\(node.name) wrote \(node.count(operation)) of \(options.events) within 300 s")
    }
    let elapsed = seconds(ContinuousClock.now - started)
    let held = try stored()
    guard held >= options.events else {
        throw BenchFailure("\(node.name) reported \(options.events) written but the system holds \(held)")
    }
    return Double(options.events) / elapsed
}

/// A source: the external system already holds N events; timed from the first event published into the
/// topic to the N-th (the connector's own count), then the topic is read back: N events, in order.
func sourceRate(manifest: String, values: [String: String], operation: String) throws -> Double {
    let node = try BenchNode(manifest: manifest, values: connectorValues(values), root: scratch("node"))
    defer { node.stop() }
    var first: ContinuousClock.Instant?
    let done = waitUntil(seconds: 300) {
        let count = node.count(operation)
        if first == nil, count > 0 { first = ContinuousClock.now }
        return count >= options.events
    }
    let end = ContinuousClock.now
    guard done, let first else {
        throw BenchFailure("\(node.name) published \(node.count(operation)) of \(options.events) within 300 s")
    }
    // Read back: every event in the topic, in order (the first batch's count is not in the timing).
    let received = Mutex<[(offset: UInt64, id: String)]>([])
    var subscription = SubscriptionOptions()
    subscription.start = .earliest
    subscription.maxInFlight = 1000
    let client = node.client
    _ = try client.subscribe(topic: values["topic"] ?? "bench", group: "bench-check", options: subscription) {
        delivery in
        received.withLock { $0.append((delivery.offset, delivery.event.id)) }
        _ = client.ack(delivery)
    }
    waitUntil(seconds: 60) { received.withLock { $0.count } >= options.events }
    // In the topic's order (deliveries may be handed over on more than one thread).
    let ids = received.withLock { $0 }.sorted { $0.offset < $1.offset }.map(\.id)
    guard ids == (0..<options.events).map({ "bench-\($0)" }) else {
        throw BenchFailure(
            "\(node.name): the topic holds \(ids.count) events, not bench-0 … bench-\(options.events - 1) in order")
    }
    // The first batch published is left out of the timing (its start is unknown): N − B events.
    let counted = Double(max(1, options.events - options.batch))
    return counted / max(seconds(end - first), 1e-6)
}

// MARK: Rows

/// One row of the table: the connector's rate and its baseline's, measured one after the other.
struct Row {
    let name: String
    let baselineName: String
    let measure: () throws -> Double
    /// The baseline; gets the rates measured so far by row name (a source compares with its sink).
    let baseline: ([String: Double]) throws -> Double
}

/// The payloads the MQTT and NATS sinks publish for events 0..<n (their CloudEvents JSON), made before any
/// timing; how fast one thread encodes them is printed, since each sink encodes its events inside its timing.
func encodedPayloads(_ n: Int) -> [[UInt8]] {
    let events = (0..<n).map(benchEvent)
    let started = ContinuousClock.now
    let payloads = events.map { Array(CloudEventJSON.encode($0).utf8) }
    let rate = Double(n) / max(seconds(ContinuousClock.now - started), 1e-6)
    print("  (CloudEventJSON.encode of the \(n) payloads: \(String(format: "%.0f", rate)) events/s on one thread)")
    return payloads
}

/// The rows, in the order they run: a server, the connector's manifest and config, and a baseline.
func rows(_ work: String) throws -> [Row] {
    var rows: [Row] = []
    let n = options.events
    let b = options.batch
    let wanted = { (key: String) in options.only.isEmpty || options.only.contains(key) }

    if wanted("redis-sink") || wanted("redis-source") {
        let redis = try Redis(directory: work + "/redis")
        let manifest = "Plugins/RedisStreamsConnector/redis-streams.yaml"
        let base = ["port": String(redis.port), "topic": "bench"]
        if wanted("redis-sink") {
            rows.append(
                Row(
                    name: "Redis Streams sink (XADD, pipeline of \(b))",
                    baselineName: "redis-benchmark -c 1 -P \(b) XADD",
                    measure: {
                        try sinkRate(
                            manifest: manifest, values: base.merging(["mode": "sink", "stream": "sunk"]) { a, _ in a },
                            operation: "transferred", stored: { try redis.length("sunk") })
                    },
                    baseline: { _ in
                        guard let tool = which("redis-benchmark") else { throw BenchFailure("no redis-benchmark") }
                        let words = Redis.xadd("baseline", benchEvent(0)).map { String(decoding: $0, as: UTF8.self) }
                        let output = try runProgram(
                            tool,
                            [
                                "-h", "127.0.0.1", "-p", String(redis.port), "-c", "1", "-P", String(b), "-n",
                                String(n),
                                "--csv",
                            ] + words)
                        // The last CSV line: "<command>","<requests per second>",…
                        guard let line = output.split(separator: "\n").last(where: { $0.hasPrefix("\"XADD") }),
                            let rate = Double(line.split(separator: ",")[1].trimmingCharacters(in: ["\""]))
                        else { throw BenchFailure("redis-benchmark printed no rate: \(output.suffix(300))") }
                        return rate
                    }))
        }
        if wanted("redis-source") {
            rows.append(
                Row(
                    name: "Redis Streams source (XREADGROUP COUNT \(b))", baselineName: "the Redis Streams sink",
                    measure: {
                        for chunk in stride(from: 0, to: n, by: 1000) {
                            try redis.pipeline(
                                (chunk..<min(n, chunk + 1000)).map { Redis.xadd("filled", benchEvent($0)) })
                        }
                        guard try redis.length("filled") == n else { throw BenchFailure("the stream was not filled") }
                        return try sourceRate(
                            manifest: manifest,
                            values: base.merging(["mode": "source", "stream": "filled"]) { a, _ in a },
                            operation: "transferred")
                    },
                    baseline: { rates in
                        guard let rate = rates["Redis Streams sink (XADD, pipeline of \(b))"] else {
                            throw BenchFailure("the sink row did not run")
                        }
                        return rate
                    }))
        }
        retained.append(redis)
    }

    if wanted("postgres-sink") || wanted("postgres-copy") {
        let postgres = try Postgres(directory: work + "/postgres")
        let connection = try Postgres.Connection(postgres.conninfo)
        try connection.query(Postgres.createTable("baseline_events"))
        let manifest = "Plugins/PostgresConnector/postgres-sink.yaml"
        let sinkName = "PostgreSQL sink (INSERT of \(b) rows)"
        let sink = {
            try sinkRate(
                manifest: manifest,
                values: ["conninfo": postgres.conninfo, "table": "sunk_events", "topic": "bench"],
                operation: "written",
                stored: { Int(try connection.query("SELECT count(*) FROM sunk_events") ?? "") ?? -1 })
        }
        /// A libpq loop over N events in batches of B on one connection, each batch its own transaction.
        func loop(_ table: String, _ write: (ArraySlice<CloudEvent>, Int) throws -> Void) throws -> Double {
            try connection.query("DROP TABLE IF EXISTS \(table)")
            try connection.query(Postgres.createTable(table))
            let events = (0..<n).map(benchEvent)
            let started = ContinuousClock.now
            for chunk in stride(from: 0, to: n, by: b) { try write(events[chunk..<min(n, chunk + b)], chunk) }
            let rate = Double(n) / seconds(ContinuousClock.now - started)
            let rows = Int(try connection.query("SELECT count(*) FROM \(table)") ?? "") ?? -1
            guard rows == n else { throw BenchFailure("\(table) holds \(rows) rows, not \(n)") }
            return rate
        }
        if wanted("postgres-sink") {
            rows.append(
                Row(
                    name: sinkName, baselineName: "libpq INSERT loop, \(b) rows a statement", measure: sink,
                    baseline: { _ in
                        try loop("baseline_events") { try connection.insert("baseline_events", $0, firstOffset: $1) }
                    }))
        }
        if wanted("postgres-copy") {
            rows.append(
                Row(
                    name: "PostgreSQL sink (the same run's figure)", baselineName: "libpq COPY loop, \(b) rows a COPY",
                    measure: {
                        guard let rate = ratesSoFar[sinkName] else { return try sink() }
                        return rate
                    },
                    baseline: { _ in
                        try loop("baseline_copy") { try connection.copy("baseline_copy", $0, firstOffset: $1) }
                    }))
        }
        retained.append(postgres)
        retained.append(connection)
    }

    if wanted("file-sink") || wanted("file-source") {
        let directory = work + "/files"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let manifest = "Plugins/FileConnector/file-connector.yaml"
        let sinkName = "Files sink (fsync every batch of \(b))"
        let lines = (0..<n).map { Array((CloudEventJSON.encode(benchEvent($0)) + "\n").utf8) }
        if wanted("file-sink") {
            let path = directory + "/sunk.jsonl"
            rows.append(
                Row(
                    name: sinkName, baselineName: "write + fsync loop, \(b) lines a write",
                    measure: {
                        try sinkRate(
                            manifest: manifest,
                            values: ["mode": "sink", "path": path, "fsync": "always", "topic": "bench"],
                            operation: "transferred",
                            stored: {
                                (try String(contentsOfFile: path, encoding: .utf8)).utf8.lazy.filter { $0 == 0x0A }
                                    .count
                            })
                    },
                    baseline: { _ in
                        let target = directory + "/baseline.jsonl"
                        let fd = open(target, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                        guard fd >= 0 else { throw BenchFailure("cannot open \(target)") }
                        defer { close(fd) }
                        let started = ContinuousClock.now
                        for chunk in stride(from: 0, to: n, by: b) {
                            // As the sink does: the batch's lines encoded, one write, one fsync.
                            var bytes: [UInt8] = []
                            for k in chunk..<min(n, chunk + b) {
                                bytes += Array((CloudEventJSON.encode(benchEvent(k)) + "\n").utf8)
                            }
                            let written = bytes.withUnsafeBytes { write(fd, $0.baseAddress!, $0.count) }
                            guard written == bytes.count, fsync(fd) == 0 else {
                                throw BenchFailure("write/fsync failed")
                            }
                        }
                        return Double(n) / seconds(ContinuousClock.now - started)
                    }))
        }
        if wanted("file-source") {
            let path = directory + "/filled.jsonl"
            rows.append(
                Row(
                    name: "Files source (tail, batches of \(b))", baselineName: "the Files sink",
                    measure: {
                        _ = FileManager.default.createFile(atPath: path, contents: Data(lines.joined()))
                        return try sourceRate(
                            manifest: manifest, values: ["mode": "source", "path": path, "topic": "bench"],
                            operation: "transferred")
                    },
                    baseline: { rates in
                        guard let rate = rates[sinkName] else { throw BenchFailure("the sink row did not run") }
                        return rate
                    }))
        }
    }

    if wanted("mqtt-sink") || wanted("mqtt-source") || wanted("mqtt-pub") {
        let mosquitto = try Mosquitto(directory: work + "/mosquitto", queued: n + 1000)
        let manifest = "Plugins/MQTTConnector/mqtt-connector.yaml"
        let base = ["port": String(mosquitto.port), "topic": "bench"]
        let sinkName = "MQTT sink (QoS 1, PUBACKs of \(b) awaited)"
        let payloads = encodedPayloads(n)
        if wanted("mqtt-sink") {
            rows.append(
                Row(
                    name: sinkName, baselineName: "libmosquitto QoS 1 loop, \(b) then PUBACKs",
                    measure: {
                        let before = try mosquitto.publishesReceived()
                        return try sinkRate(
                            manifest: manifest,
                            values: base.merging(["mode": "sink", "mqttTopic": "sunk"]) { a, _ in a },
                            operation: "transferred",
                            stored: { try mosquitto.publishesReceived(atLeast: before + n) - before })
                    },
                    baseline: { _ in
                        // The same payloads (the sink's CloudEvents JSON), the sink's batching and window.
                        let client = try MQTTBenchClient(port: mosquitto.port, id: "bench-baseline")
                        let before = try mosquitto.publishesReceived()
                        let started = ContinuousClock.now
                        for chunk in stride(from: 0, to: n, by: b) {
                            try client.publish("baseline", payloads[chunk..<min(n, chunk + b)])
                        }
                        let rate = Double(n) / seconds(ContinuousClock.now - started)
                        let received = try mosquitto.publishesReceived(atLeast: before + n) - before
                        guard received >= n else { throw BenchFailure("mosquitto received \(received) of \(n)") }
                        return rate
                    }))
        }
        if wanted("mqtt-source") {
            rows.append(
                Row(
                    name: "MQTT source (QoS 1 session, spool per batch)", baselineName: "the MQTT sink",
                    measure: {
                        // The source's persistent session first, so that the broker queues the N messages for it.
                        do {
                            let session = try MQTTBenchClient(
                                port: mosquitto.port, id: "bench-source", cleanSession: false)
                            try session.subscribe("filled")
                        }
                        let publisher = try MQTTBenchClient(port: mosquitto.port, id: "bench-filler")
                        for chunk in stride(from: 0, to: n, by: 1000) {
                            try publisher.publish("filled", payloads[chunk..<min(n, chunk + 1000)])
                        }
                        return try sourceRate(
                            manifest: manifest,
                            values: base.merging(["mode": "source", "mqttTopic": "filled", "clientID": "bench-source"])
                            {
                                a, _ in a
                            },
                            operation: "transferred")
                    },
                    baseline: { rates in
                        guard let rate = rates[sinkName] else { throw BenchFailure("the sink row did not run") }
                        return rate
                    }))
        }
        if wanted("mqtt-pub") {
            rows.append(
                Row(
                    name: "MQTT sink (the same run's figure)", baselineName: "mosquitto_pub -l -q 1 -M 20",
                    measure: {
                        guard let rate = ratesSoFar[sinkName] else { throw BenchFailure("run mqtt-sink with mqtt-pub") }
                        return rate
                    },
                    baseline: { _ in
                        // mosquitto_pub -l: one QoS 1 message per line of its standard input (the same JSON
                        // payloads, which hold no newline), 20 in flight, no batch barrier; it exits after the
                        // last PUBACK. Timed from its start to its exit.
                        guard let tool = which("mosquitto_pub") else { throw BenchFailure("no mosquitto_pub") }
                        let input = work + "/mosquitto/lines"
                        _ = FileManager.default.createFile(
                            atPath: input, contents: Data(payloads.map { $0 + [0x0A] }.joined()))
                        let before = try mosquitto.publishesReceived()
                        let process = Process()
                        process.executableURL = URL(fileURLWithPath: tool)
                        process.arguments = [
                            "-h", "127.0.0.1", "-p", String(mosquitto.port), "-q", "1", "-M", "20", "-t", "pubbed",
                            "-l", "-i", "bench-mosquitto-pub",
                        ]
                        process.standardInput = FileHandle(forReadingAtPath: input)
                        let started = ContinuousClock.now
                        try process.run()
                        process.waitUntilExit()
                        let rate = Double(n) / seconds(ContinuousClock.now - started)
                        guard process.terminationStatus == 0 else { throw BenchFailure("mosquitto_pub failed") }
                        let received = try mosquitto.publishesReceived(atLeast: before + n) - before
                        guard received >= n else { throw BenchFailure("mosquitto received \(received) of \(n)") }
                        return rate
                    }))
        }
        retained.append(mosquitto)
    }

    if wanted("nats-sink") || wanted("nats-source") || wanted("nats-core-sink") {
        let nats = try NATSServer(directory: work + "/nats")
        let client = try NATSBenchClient(url: nats.url)
        let manifest = "Plugins/NATSConnector/nats-connector.yaml"
        let base = ["url": nats.url, "topic": "bench"]
        let sinkName = "NATS JetStream sink (PubAck per message)"
        let messages = encodedPayloads(n).enumerated().map { (id: "bench-\($0.offset)", payload: $0.element) }
        if wanted("nats-sink") {
            rows.append(
                Row(
                    name: sinkName, baselineName: "libnats js_Publish loop, PubAck each",
                    measure: {
                        try sinkRate(
                            manifest: manifest,
                            values: base.merging([
                                "mode": "sink", "jetstream": "true", "stream": "SUNK", "subject": "sunk",
                            ]) { a, _ in a },
                            operation: "transferred", stored: { try client.count("SUNK") })
                    },
                    baseline: { _ in
                        try client.addStream("BASELINE", subject: "baseline")
                        let started = ContinuousClock.now
                        for chunk in stride(from: 0, to: n, by: b) {
                            try client.publishToStream("baseline", messages[chunk..<min(n, chunk + b)])
                        }
                        let rate = Double(n) / seconds(ContinuousClock.now - started)
                        let held = try client.count("BASELINE")
                        guard held == n else { throw BenchFailure("stream BASELINE holds \(held), not \(n)") }
                        return rate
                    }))
        }
        if wanted("nats-source") {
            rows.append(
                Row(
                    name: "NATS JetStream source (pull consumer, fetch \(b))", baselineName: "the NATS JetStream sink",
                    measure: {
                        try client.addStream("FILLED", subject: "filled")
                        try client.publishToStream("filled", messages[...])
                        guard try client.count("FILLED") == n else { throw BenchFailure("FILLED was not filled") }
                        return try sourceRate(
                            manifest: manifest,
                            values: base.merging([
                                "mode": "source", "jetstream": "true", "stream": "FILLED", "subject": "filled",
                                "durable": "bench",
                            ]) { a, _ in a },
                            operation: "transferred")
                    },
                    baseline: { rates in
                        guard let rate = rates[sinkName] else { throw BenchFailure("the sink row did not run") }
                        return rate
                    }))
        }
        if wanted("nats-core-sink") {
            // Core NATS keeps nothing: a file-storage stream over each side's subject counts what arrived (the
            // server stores both sides' messages alike; neither publisher waits for it).
            let held = { (stream: String) in
                var count = -1
                try waitUntil(seconds: 10) {
                    count = try client.count(stream)
                    return count >= n
                }
                return count
            }
            rows.append(
                Row(
                    name: "NATS core sink (publish \(b), flush)", baselineName: "libnats publish loop, flush per \(b)",
                    measure: {
                        try client.addStream("CORESUNK", subject: "coresunk")
                        return try sinkRate(
                            manifest: manifest,
                            values: base.merging(["mode": "sink", "subject": "coresunk"]) { a, _ in a },
                            operation: "transferred", stored: { try held("CORESUNK") })
                    },
                    baseline: { _ in
                        try client.addStream("COREBASELINE", subject: "corebaseline")
                        let payloads = messages.map(\.payload)
                        let started = ContinuousClock.now
                        for chunk in stride(from: 0, to: n, by: b) {
                            try client.publish("corebaseline", payloads[chunk..<min(n, chunk + b)])
                        }
                        let rate = Double(n) / seconds(ContinuousClock.now - started)
                        let count = try held("COREBASELINE")
                        guard count == n else { throw BenchFailure("stream COREBASELINE holds \(count), not \(n)") }
                        return rate
                    }))
        }
        retained.append(nats)
        retained.append(client)
    }
    return rows
}

/// Servers and connections the rows use, kept until the run ends.
nonisolated(unsafe) var retained: [AnyObject] = []
/// Each row's rate by name, as measured so far.
nonisolated(unsafe) var ratesSoFar: [String: Double] = [:]

// MARK: The run

let work = scratch("run")
try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
print(
    "bench-connectors: \(options.events) events of \(options.size) bytes of data, batches of \(options.batch), one connection each side, memory-storage (libraries: \(options.libraries))"
)
var table: [(String, Double?, String, Double?, String)] = []
var failures = 0
do {
    for row in try rows(work) {
        var rate: Double?
        var base: Double?
        var note = ""
        do {
            rate = try row.measure()
            ratesSoFar[row.name] = rate
            base = try row.baseline(ratesSoFar)
        } catch {
            note = "\(error)"
            failures += 1
        }
        table.append((row.name, rate, row.baselineName, base, note))
        let shown = [rate, base].map { $0.map { String(format: "%.0f", $0) } ?? "-" }
        print(
            "  \(row.name): \(shown[0]) events/s; \(row.baselineName): \(shown[1])\(note.isEmpty ? "" : "  (\(note))")")
    }
} catch {
    print("bench-connectors: \(error)")
    retained.removeAll()
    try? FileManager.default.removeItem(atPath: work)
    exit(1)
}
retained.removeAll()
try? FileManager.default.removeItem(atPath: work)

func pad(_ text: String, _ width: Int) -> String {
    text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0)
}
let nameWidth = max(9, table.map(\.0.count).max() ?? 0)
let baseWidth = max(8, table.map(\.2.count).max() ?? 0)
print("")
print(
    "\(pad("connector", nameWidth))  \(pad("events/s", 10))  \(pad("baseline", baseWidth))  \(pad("events/s", 10))  ratio"
)
for (name, rate, baseName, base, _) in table {
    let r = rate.map { String(format: "%.0f", $0) } ?? "-"
    let b = base.map { String(format: "%.0f", $0) } ?? "-"
    let ratio = rate.flatMap { r in base.map { String(format: "%.2f", r / $0) } } ?? "-"
    print("\(pad(name, nameWidth))  \(pad(r, 10))  \(pad(baseName, baseWidth))  \(pad(b, 10))  \(ratio)")
}
print("target: each sink >= 0.50 x its baseline; each source >= 0.50 x its sink")
exit(failures == 0 ? 0 : 1)
