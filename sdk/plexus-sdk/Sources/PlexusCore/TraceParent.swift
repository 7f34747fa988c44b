/// A W3C Trace Context `traceparent` value (Trace Context Level 1, section 3.2), as the CloudEvents Distributed
/// Tracing extension carries it in an event's `traceparent` attribute: `version-traceid-parentid-flags`.
///
/// Parsing follows the specification's rules for a receiver: lowercase hex only; version `ff` is invalid; version
/// `00` is exactly 55 characters; a later version is at least 55 characters and, when longer, has a `-` after
/// the flags (what follows is ignored); neither the trace id nor the parent id may be all zeros.
public struct TraceParent: Sendable, Hashable, CustomStringConvertible {
    /// Two hex digits.
    public var version: String
    /// 32 lowercase hex digits, not all zero.
    public var traceID: String
    /// 16 lowercase hex digits, not all zero: the span of the event's creation.
    public var parentID: String
    /// The trace flags; bit 0 is `sampled`.
    public var flags: UInt8

    public var sampled: Bool { flags & 1 == 1 }

    /// The value in its version-00 form.
    public var description: String {
        let hex = Array("0123456789abcdef".utf8)
        let f = String(decoding: [hex[Int(flags >> 4)], hex[Int(flags & 15)]], as: UTF8.self)
        return "00-\(traceID)-\(parentID)-\(f)"
    }

    public init(traceID: String, parentID: String, flags: UInt8) {
        self.version = "00"
        self.traceID = traceID
        self.parentID = parentID
        self.flags = flags
    }

    /// Parses a value; `nil` when it breaks a rule of the specification (the reason is `problem(_:)`).
    public init?(_ text: String) {
        guard Self.problem(text) == nil else { return nil }
        let bytes = Array(text.utf8)
        version = String(decoding: bytes[0..<2], as: UTF8.self)
        traceID = String(decoding: bytes[3..<35], as: UTF8.self)
        parentID = String(decoding: bytes[36..<52], as: UTF8.self)
        flags = Self.hexByte(bytes[53], bytes[54])!
    }

    /// What makes a value invalid, or `nil` when it is a valid `traceparent`.
    public static func problem(_ text: String) -> String? {
        let bytes = Array(text.utf8)
        guard bytes.count >= 55 else {
            return "traceparent '\(text)' is shorter than version-traceid-parentid-flags (55 characters)"
        }
        for dash in [2, 35, 52] where bytes[dash] != UInt8(ascii: "-") {
            return "traceparent '\(text)' needs '-' between version, trace id, parent id and flags"
        }
        let fields: [(name: String, range: Range<Int>)] = [
            ("version", 0..<2), ("trace id", 3..<35), ("parent id", 36..<52), ("flags", 53..<55),
        ]
        for field in fields where !bytes[field.range].allSatisfy(isLowerHex) {
            return "traceparent '\(text)': the \(field.name) is not lowercase hex"
        }
        if bytes[0] == UInt8(ascii: "f") && bytes[1] == UInt8(ascii: "f") {
            return "traceparent '\(text)': version ff is invalid"
        }
        let versionZero = bytes[0] == UInt8(ascii: "0") && bytes[1] == UInt8(ascii: "0")
        if versionZero && bytes.count != 55 {
            return "traceparent '\(text)': version 00 is exactly 55 characters"
        }
        if bytes.count > 55 && bytes[55] != UInt8(ascii: "-") {
            return "traceparent '\(text)': a later version's extra fields follow a '-'"
        }
        if bytes[3..<35].allSatisfy({ $0 == UInt8(ascii: "0") }) {
            return "traceparent '\(text)': the trace id is all zeros"
        }
        if bytes[36..<52].allSatisfy({ $0 == UInt8(ascii: "0") }) {
            return "traceparent '\(text)': the parent id is all zeros"
        }
        return nil
    }

    private static func isLowerHex(_ c: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(c) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(c)
    }

    private static func hexByte(_ high: UInt8, _ low: UInt8) -> UInt8? {
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
            default: return nil
            }
        }
        guard let h = value(high), let l = value(low) else { return nil }
        return h << 4 | l
    }
}
