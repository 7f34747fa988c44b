/// One RESP2 reply from a Redis server.
enum RESPValue: Sendable, Equatable {
    /// `+OK`
    case simpleString(String)
    /// `-ERR …`, `-BUSYGROUP …`: the command failed.
    case error(String)
    /// `:42`
    case integer(Int)
    /// `$5\r\nhello`, or `$-1` (`nil`).
    case bulkString([UInt8]?)
    /// `*2\r\n…`, or `*-1` (`nil`, e.g. a blocking read that timed out).
    case array([RESPValue]?)

    /// The elements of an array reply, or `nil` for anything else (a null array included).
    var elements: [RESPValue]? {
        if case .array(let elements?) = self { return elements }
        return nil
    }

    /// The bytes of a bulk string, or `nil` for anything else.
    var bytes: [UInt8]? {
        if case .bulkString(let bytes?) = self { return bytes }
        return nil
    }
}

/// One argument of a Redis command, sent as a RESP bulk string.
enum RESPArgument: Sendable, ExpressibleByStringLiteral {
    case text(String)
    case bytes([UInt8])

    init(stringLiteral value: String) { self = .text(value) }
}
