/// How to reach an etcd cluster.
public struct EtcdConfiguration: Sendable, Equatable {
    /// One client URL of a member.
    public struct Endpoint: Sendable, Equatable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }

        /// Parses `host:port`, `http://host:port` or `https://host:port` (an IPv6 host in brackets).
        /// - Throws: `EtcdError` (`.invalidConfiguration`) naming the text.
        public init(parsing text: String) throws {
            var rest = Substring(text)
            for scheme in ["http://", "https://"] where rest.hasPrefix(scheme) { rest = rest.dropFirst(scheme.count) }
            while rest.hasSuffix("/") { rest = rest.dropLast() }
            let bad = EtcdError(.invalidConfiguration, operation: "parse endpoint", "'\(text)' is not host:port")
            guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
                (1...65535).contains(port)
            else { throw bad }
            var host = rest[..<colon]
            if host.hasPrefix("["), host.hasSuffix("]") { host = host.dropFirst().dropLast() }
            guard !host.isEmpty else { throw bad }
            self.init(host: String(host), port: port)
        }

        public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    }

    /// TLS to the members: files in PEM.
    public struct TLS: Sendable, Equatable {
        /// The CA that signed the members' certificates; empty: the system's roots.
        public var caFile: String
        /// A client certificate and its key, for members that require one; both or neither.
        public var certFile: String
        public var keyFile: String

        public init(caFile: String = "", certFile: String = "", keyFile: String = "") {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
        }
    }

    /// Tried in order; a failure moves to the next.
    public var endpoints: [Endpoint]
    /// etcd authentication (the `Authenticate` RPC); empty: none.
    public var username: String = ""
    public var password: String = ""
    public var tls: TLS?
    /// How long the first call on a newly chosen endpoint may wait for its connection, on top of the
    /// request timeout.
    public var dialTimeout: Duration = .seconds(2)
    /// How long a unary call may take before it fails (and the next endpoint is tried).
    public var requestTimeout: Duration = .seconds(5)

    public init(endpoints: [Endpoint]) {
        self.endpoints = endpoints
    }
}
