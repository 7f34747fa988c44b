import NIOCore

/// How a `PlexusClient` connects and behaves.
public struct ClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Names this client in the server's logs.
    public var name: String
    /// The token the server requires, if any.
    public var token: String
    /// The heartbeat interval proposed to the server; the server may lower it.
    public var heartbeat: Duration
    public var connectTimeout: Duration
    /// How long a subscribe or unsubscribe waits for the server's answer.
    public var requestTimeout: Duration
    /// Reconnection after a lost connection: the first delay, doubled after each failed attempt up to
    /// `reconnectMaxDelay`. After a GOODBYE from the server (a protocol plugin replaced or stopping: its
    /// successor may already listen on the same socket) the first attempt is made at once, and the delays
    /// start only if it fails. `reconnect` false: a lost connection closes the client.
    public var reconnect: Bool
    public var reconnectDelay: Duration
    public var reconnectMaxDelay: Duration
    /// Single publishes issued close together travel in one `PUBLISH` frame of at most this many events
    /// and about this many bytes.
    public var maxBatchEvents: Int
    public var maxBatchBytes: Int
    /// The largest frame the client accepts from the server.
    public var maxFrameSize: Int
    /// The event loops the client runs on; `nil`: NIO's shared singleton group.
    public var eventLoopGroup: (any EventLoopGroup)?

    public init(
        host: String = "127.0.0.1", port: Int = 10000, name: String = "plexus-client", token: String = "",
        heartbeat: Duration = .seconds(10), connectTimeout: Duration = .seconds(5),
        requestTimeout: Duration = .seconds(10), reconnect: Bool = true,
        reconnectDelay: Duration = .milliseconds(100), reconnectMaxDelay: Duration = .seconds(5),
        maxBatchEvents: Int = 512, maxBatchBytes: Int = 256 << 10, maxFrameSize: Int = 4 << 20,
        eventLoopGroup: (any EventLoopGroup)? = nil
    ) {
        self.host = host
        self.port = port
        self.name = name
        self.token = token
        self.heartbeat = heartbeat
        self.connectTimeout = connectTimeout
        self.requestTimeout = requestTimeout
        self.reconnect = reconnect
        self.reconnectDelay = reconnectDelay
        self.reconnectMaxDelay = reconnectMaxDelay
        self.maxBatchEvents = maxBatchEvents
        self.maxBatchBytes = maxBatchBytes
        self.maxFrameSize = maxFrameSize
        self.eventLoopGroup = eventLoopGroup
    }

    /// Parses `HOST:PORT` (or `:PORT`, or a bare port) into host and port.
    /// - Throws: `PlexusClientError` (invalid argument) for anything else.
    public mutating func setAddress(_ address: String) throws {
        let parts = address.split(separator: ":", omittingEmptySubsequences: false)
        let hostPart = parts.count == 2 ? String(parts[0]) : (parts.count == 1 ? "" : nil)
        guard let hostPart, let port = Int(parts.last ?? ""), (1...65535).contains(port) else {
            throw PlexusClientError(.invalidArgument, "'\(address)' is not HOST:PORT")
        }
        if !hostPart.isEmpty { host = hostPart }
        self.port = port
    }
}

/// Why a client operation failed.
public struct PlexusClientError: Error, Sendable, CustomStringConvertible, Equatable {
    public enum Code: Sendable, Equatable {
        /// The client has no connection at the moment (it may be reconnecting).
        case notConnected
        /// The connection was lost with the operation in flight: it may or may not have taken effect.
        case connectionLost
        /// The server refused the operation; `status` says why.
        case refused
        /// The client was closed.
        case closed
        case invalidArgument
        case timeout
    }

    public var code: Code
    public var status: WireStatusCode?
    public var message: String

    public init(_ code: Code, _ message: String, status: WireStatusCode? = nil) {
        self.code = code
        self.message = message
        self.status = status
    }

    public var description: String {
        if let status { return "\(message) (status \(status))" }
        return message
    }
}

/// A protocol status code as a plain number, so that users of the client need not import the codec.
public typealias WireStatusCode = UInt16
