/// A message the NATS server delivered to one of our subscriptions (`MSG`, or `HMSG` with headers).
struct NATSMessage: Sendable, Equatable {
    var subject: String
    /// The subscription id we chose in `SUB`.
    var sid: Int
    /// The subject to answer on: a request's inbox, or JetStream's `$JS.ACK.…` subject of a delivery.
    var replyTo: String?
    /// The raw header block of an `HMSG` (`NATS/1.0 503\r\n…`), or `nil` for a plain `MSG`.
    var headers: [UInt8]?
    var payload: [UInt8]

    /// The status code in the header block's first line (`NATS/1.0 503` → 503), if any.
    ///
    /// The server answers a request to a subject nobody listens on with status 503 (no responders).
    var status: Int? {
        guard let headers else { return nil }
        let firstLine = headers.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }
        let words = String(decoding: firstLine, as: UTF8.self).split(separator: " ")
        guard words.count >= 2, words[0].hasPrefix("NATS/") else { return nil }
        return Int(words[1])
    }
}

/// One protocol message from a NATS server to a client.
enum NATSFrame: Sendable, Equatable {
    /// `INFO {json}`: the server's description, sent first on every connection.
    case info(String)
    /// `MSG` or `HMSG`: a delivery to one of our subscriptions.
    case message(NATSMessage)
    case ping
    case pong
    /// `+OK`, only sent in verbose mode (we connect with `verbose: false`).
    case ok
    /// `-ERR 'text'`: a protocol or authorization error; the server closes the connection after most.
    case error(String)
}
