import NIOCore
import NIOPosix

/// What a driver needs to reach its server and how it should publish.
public struct DriverOptions: Sendable {
    /// The server's host, e.g. `127.0.0.1`.
    public var host: String
    /// The server's TCP port.
    public var port: Int
    /// Whether a publish completes once written to the socket instead of once acknowledged by the server.
    public var fireAndForget: Bool
    /// How long connecting and each setup request may take.
    public var timeoutSeconds: Double
    /// Driver-specific settings (`key=value` on the command line), for drivers that need more than the above.
    public var settings: [String: String]
    /// The event loops the driver's connections run on.
    public var eventLoopGroup: any EventLoopGroup

    public init(
        host: String = "127.0.0.1", port: Int, fireAndForget: Bool = false, timeoutSeconds: Double = 10,
        settings: [String: String] = [:],
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.host = host
        self.port = port
        self.fireAndForget = fireAndForget
        self.timeoutSeconds = timeoutSeconds
        self.settings = settings
        self.eventLoopGroup = eventLoopGroup
    }

    /// Options for a `HOST:PORT` address.
    ///
    /// - Throws: ``BenchError`` with code `invalidOption` when `address` is not `HOST:PORT` with a port in 1...65535.
    public init(address: String, fireAndForget: Bool = false) throws {
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]),
            (1...65535).contains(port), colon != address.startIndex
        else {
            throw BenchError(.invalidOption, subject: "--server \(address)", "expected HOST:PORT, e.g. 127.0.0.1:4222")
        }
        self.init(host: String(address[..<colon]), port: port, fireAndForget: fireAndForget)
    }

    /// `host:port`, for messages.
    public var address: String { "\(host):\(port)" }
}
