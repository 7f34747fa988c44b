/// An error the benchmark reports: what failed, against which driver or server, and why.
///
/// Every error names its subject (a driver and its server, a topic, a workload file) so that a reader
/// knows what to fix without reading code.
public struct BenchError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is; stable, for tests and tools.
    public enum Code: String, Sendable {
        /// A driver name the registry does not know.
        case unknownDriver = "unknown-driver"
        /// The server could not be reached or the connection was refused.
        case connectFailed = "connect-failed"
        /// The connection closed while requests were outstanding.
        case connectionClosed = "connection-closed"
        /// The server answered with an error (`-ERR`, a RESP error, a JetStream API error).
        case serverError = "server-error"
        /// The server's answer could not be parsed.
        case protocolViolation = "protocol-violation"
        /// A request got no answer in time.
        case timeout = "timeout"
        /// A command-line or option value is invalid.
        case invalidOption = "invalid-option"
    }

    public var code: Code
    /// What the error is about: `nats 127.0.0.1:4222`, `redis 127.0.0.1:6379 stream bench_x_0`.
    public var subject: String
    /// What went wrong and, where it helps, what was expected.
    public var message: String

    public init(_ code: Code, subject: String, _ message: String) {
        self.code = code
        self.subject = subject
        self.message = message
    }

    public var description: String { "\(subject): \(message) [\(code.rawValue)]" }
}
