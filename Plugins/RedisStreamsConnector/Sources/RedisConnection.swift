import CHiredis
import PlexusPluginSDK

/// A Redis reply, copied out of hiredis's reply object.
enum RedisValue: Equatable {
    case string([UInt8])
    case array([RedisValue])
    case integer(Int64)
    case null
    case status(String)
    case error(String)

    init(copying reply: UnsafePointer<redisReply>) {
        let r = reply.pointee
        switch r.type {
        case REDIS_REPLY_STRING:
            self = .string(r.str.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(r.len))) } ?? [])
        case REDIS_REPLY_STATUS: self = .status(r.str.map { String(cString: $0) } ?? "")
        case REDIS_REPLY_ERROR: self = .error(r.str.map { String(cString: $0) } ?? "")
        case REDIS_REPLY_INTEGER: self = .integer(Int64(r.integer))
        case REDIS_REPLY_ARRAY:
            var items: [RedisValue] = []
            for i in 0..<Int(r.elements) {
                if let element = r.element[i] {
                    items.append(RedisValue(copying: element))
                } else {
                    items.append(.null)
                }
            }
            self = .array(items)
        default: self = .null
        }
    }

    var text: String? {
        switch self {
        case .string(let bytes): String(decoding: bytes, as: UTF8.self)
        case .status(let s): s
        default: nil
        }
    }
}

/// A failure talking to Redis: the command and hiredis's or the server's reason.
struct RedisError: Error, CustomStringConvertible {
    var context: String
    var reason: String
    var description: String { "\(context): \(reason)" }
}

/// One blocking connection to a Redis server through hiredis, used by one thread at a time.
final class RedisConnection {
    private let context: UnsafeMutablePointer<redisContext>
    let address: String

    /// Connects to `host:port`; every later call waits at most `timeoutMs` for the server.
    /// - Throws: `RedisError` when the server cannot be reached.
    init(host: String, port: Int, timeoutMs: Int) throws {
        address = "redis \(host):\(port)"
        let timeout = timeval(tv_sec: timeoutMs / 1000, tv_usec: (timeoutMs % 1000) * 1000)
        guard let context = redisConnectWithTimeout(host, Int32(clamping: port), timeout) else {
            throw RedisError(context: address, reason: "cannot allocate a connection")
        }
        if context.pointee.err != 0 {
            let reason = Self.errorText(context)
            redisFree(context)
            throw RedisError(context: "cannot connect to \(address)", reason: reason)
        }
        redisSetTimeout(context, timeout)
        self.context = context
    }

    deinit { redisFree(context) }

    /// Sends one command and waits for its reply; an error reply is returned, not thrown.
    /// - Throws: `RedisError` when the connection fails (it is then unusable).
    func command(_ arguments: [[UInt8]]) throws -> RedisValue {
        try pipeline([arguments])[0]
    }

    func command(_ arguments: String...) throws -> RedisValue {
        try command(arguments.map { Array($0.utf8) })
    }

    /// Sends every command, then reads every reply (one round trip for the lot).
    /// - Throws: `RedisError` when the connection fails (it is then unusable).
    func pipeline(_ commands: [[[UInt8]]]) throws -> [RedisValue] {
        for arguments in commands {
            let status = Self.withArgv(arguments) { argc, argv, lengths in
                redisAppendCommandArgv(context, argc, argv, lengths)
            }
            guard status == REDIS_OK else {
                throw RedisError(context: "\(address): cannot queue a command", reason: Self.errorText(context))
            }
        }
        var replies: [RedisValue] = []
        replies.reserveCapacity(commands.count)
        for _ in commands {
            var reply: UnsafeMutableRawPointer?
            guard redisGetReply(context, &reply) == REDIS_OK, let reply else {
                throw RedisError(context: "\(address): no reply", reason: Self.errorText(context))
            }
            let typed = reply.assumingMemoryBound(to: redisReply.self)
            replies.append(RedisValue(copying: typed))
            freeReplyObject(reply)
        }
        return replies
    }

    private static func withArgv<R>(
        _ arguments: [[UInt8]],
        _ body: (Int32, UnsafeMutablePointer<UnsafePointer<CChar>?>, UnsafePointer<Int>) -> R
    ) -> R {
        var arena: [UInt8] = []
        var offsets: [Int] = []
        for argument in arguments {
            offsets.append(arena.count)
            arena.append(contentsOf: argument)
        }
        arena.append(0)
        let lengths = arguments.map(\.count)
        return arena.withUnsafeBufferPointer { bytes in
            let base = UnsafeRawPointer(bytes.baseAddress!)
            var argv: [UnsafePointer<CChar>?] = offsets.map { (base + $0).assumingMemoryBound(to: CChar.self) }
            return argv.withUnsafeMutableBufferPointer { pointers in
                lengths.withUnsafeBufferPointer { body(Int32(arguments.count), pointers.baseAddress!, $0.baseAddress!) }
            }
        }
    }

    private static func errorText(_ context: UnsafeMutablePointer<redisContext>) -> String {
        withUnsafeBytes(of: context.pointee.errstr) { raw in
            let bytes = raw.prefix { $0 != 0 }
            return bytes.isEmpty ? "error \(context.pointee.err)" : String(decoding: bytes, as: UTF8.self)
        }
    }
}
