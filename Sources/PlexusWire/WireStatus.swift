/// The status carried by `PUBLISH_ACK` and `ERROR` frames (docs/protocols/tcp.md, "Status codes").
///
/// 0 to 15 mean what the `px_status` of the same number means in `plexus.h`; 64 and up are the
/// protocol's own.
public struct WireStatus: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let ok = WireStatus(rawValue: 0)
    public static let invalidArgument = WireStatus(rawValue: 1)
    public static let notFound = WireStatus(rawValue: 2)
    public static let unsupported = WireStatus(rawValue: 4)
    public static let timeout = WireStatus(rawValue: 6)
    public static let unavailable = WireStatus(rawValue: 7)
    public static let resourceExhausted = WireStatus(rawValue: 8)
    public static let permissionDenied = WireStatus(rawValue: 14)
    public static let internalError = WireStatus(rawValue: 15)
    /// A frame whose length was right but whose body could not be read.
    public static let malformedFrame = WireStatus(rawValue: 64)
    /// A frame type this server does not know.
    public static let unknownFrameType = WireStatus(rawValue: 65)
    /// A frame that is not allowed now (anything before `HELLO`, a second `HELLO`, a server-only frame).
    public static let protocolViolation = WireStatus(rawValue: 66)
    /// `HELLO` without a token the server accepts.
    public static let unauthenticated = WireStatus(rawValue: 67)
    /// A length field above the receiver's maximum frame size, or below the header size.
    public static let frameTooLarge = WireStatus(rawValue: 68)
    /// No complete frame within the idle timeout.
    public static let idleTimeout = WireStatus(rawValue: 69)
    /// A magic or protocol version the server does not speak.
    public static let unsupportedVersion = WireStatus(rawValue: 70)

    public var description: String {
        switch self {
        case .ok: "ok"
        case .invalidArgument: "invalid argument"
        case .notFound: "not found"
        case .unsupported: "unsupported"
        case .timeout: "timeout"
        case .unavailable: "unavailable"
        case .resourceExhausted: "resource exhausted"
        case .permissionDenied: "permission denied"
        case .internalError: "internal error"
        case .malformedFrame: "malformed frame"
        case .unknownFrameType: "unknown frame type"
        case .protocolViolation: "protocol violation"
        case .unauthenticated: "unauthenticated"
        case .frameTooLarge: "frame too large"
        case .idleTimeout: "idle timeout"
        case .unsupportedVersion: "unsupported version"
        default: "status \(rawValue)"
        }
    }
}

/// Why bytes could not be read as frames. `fatal` errors mean the byte stream can no longer be trusted:
/// the receiver sends an `ERROR` frame with the fatal flag and closes the connection.
public struct WireError: Error, Equatable, Sendable, CustomStringConvertible {
    public var status: WireStatus
    public var message: String
    /// The frame the error is about: its type and correlation id; 0 when unknown.
    public var frameType: UInt8
    public var frameID: UInt64
    public var fatal: Bool

    public init(_ status: WireStatus, _ message: String, frameType: UInt8 = 0, frameID: UInt64 = 0, fatal: Bool) {
        self.status = status
        self.message = message
        self.frameType = frameType
        self.frameID = frameID
        self.fatal = fatal
    }

    public var description: String { "\(status): \(message)" }
}
