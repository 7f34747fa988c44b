import CHiredis
import Foundation
import PlexusBench

/// A Redis reply, copied out of hiredis.
indirect enum Reply: Equatable {
    case string(String)
    case array([Reply])
    case integer(Int64)
    case null
    case error(String)

    init(_ reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING, REDIS_REPLY_STATUS:
            self = .string(
                r.str.map { String(decoding: UnsafeRawBufferPointer(start: $0, count: Int(r.len)), as: UTF8.self) }
                    ?? "")
        case REDIS_REPLY_ERROR: self = .error(r.str.map { String(cString: $0) } ?? "")
        case REDIS_REPLY_INTEGER: self = .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            self = .array((0..<Int(r.elements)).map { r.element[$0].map { Reply(UnsafePointer($0)) } ?? .null })
        default: self = .null
        }
    }

    var integer: Int64? { if case .integer(let v) = self { v } else { nil } }
    var array: [Reply] { if case .array(let v) = self { v } else { [] } }
    var string: String? { if case .string(let v) = self { v } else { nil } }
}

/// A real redis-server on a free loopback port, with its data (append-only file, fsync always) in a
/// temporary directory, so that a restart keeps every entry written before it.
final class RedisServer: @unchecked Sendable {
    // Safe: used from the one test that owns it.
    let port: Int
    let directory: URL
    private let server: ServerProcess

    init() throws {
        guard let executable = which("redis-server") else {
            throw HarnessError(description: "redis-server is not installed: run scripts/interop-deps")
        }
        port = try LoopbackPorts.free(1)[0]
        directory = try Repository.temporaryDirectory("plexus-redis")
        server = ServerProcess(
            executable: executable,
            arguments: [
                "--port", String(port), "--bind", "127.0.0.1", "--dir", directory.path, "--appendonly", "yes",
                "--appendfsync", "always", "--save", "", "--daemonize", "no",
            ], log: directory.appendingPathComponent("redis.log"), stopSignal: SIGKILL)
        try start()
    }

    func start() throws {
        try server.start()
        let ready = Wait.until(seconds: 10) { (try? command("PING")) == .string("PONG") }
        guard ready else { throw HarnessError(description: "redis-server did not start:\n\(server.output)") }
    }

    func stop() { server.stop() }

    func restart() throws {
        stop()
        try start()
    }

    /// One command on a fresh connection.
    @discardableResult
    func command(_ arguments: String...) throws -> Reply { try command(arguments) }

    func command(_ arguments: [String]) throws -> Reply {
        guard let context = redisConnectWithTimeout("127.0.0.1", Int32(port), timeval(tv_sec: 2, tv_usec: 0)) else {
            throw HarnessError(description: "cannot allocate a hiredis context")
        }
        defer { redisFree(context) }
        guard context.pointee.err == 0 else { throw HarnessError(description: "cannot connect to redis :\(port)") }
        let storage = arguments.map { strdup($0) }
        defer { storage.forEach { free($0) } }
        var argv: [UnsafePointer<CChar>?] = storage.map { $0.map { UnsafePointer($0) } }
        let lengths = arguments.map { $0.utf8.count }
        let reply = redisCommandArgv(context, Int32(argv.count), &argv, lengths)
        guard let reply else { throw HarnessError(description: "no reply from redis :\(port)") }
        defer { freeReplyObject(reply) }
        return Reply(reply.assumingMemoryBound(to: redisReply.self))
    }

    /// The entries of a stream, in order: (entry id, fields).
    func range(_ stream: String) throws -> [(id: String, fields: [String: String])] {
        try command("XRANGE", stream, "-", "+").array.map { entry in
            let parts = entry.array
            var fields: [String: String] = [:]
            let flat = parts.count > 1 ? parts[1].array : []
            for i in stride(from: 0, to: flat.count - 1, by: 2) {
                fields[flat[i].string ?? ""] = flat[i + 1].string ?? ""
            }
            return (parts.first?.string ?? "", fields)
        }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
