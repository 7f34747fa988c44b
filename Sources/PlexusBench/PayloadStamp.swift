/// The layout of a benchmark payload: the send time in its first 8 bytes, then padding to the message size.
///
/// The stamp is the producer's ``MonotonicClock`` reading, little-endian; consumers subtract it from their
/// own reading to get the end-to-end latency.
public enum PayloadStamp {
    /// The number of bytes the stamp occupies at the start of every payload.
    public static let size = 8

    /// A payload of `size` bytes whose first 8 bytes hold `nanoseconds`; the rest is a fixed pattern.
    ///
    /// - Parameters:
    ///   - nanoseconds: The send time to stamp.
    ///   - size: The payload's length in bytes; at least ``size``.
    public static func make(nanoseconds: UInt64, size: Int) -> [UInt8] {
        var payload = padding(size: max(size, Self.size))
        stamp(&payload, nanoseconds: nanoseconds)
        return payload
    }

    /// A payload of `size` bytes with a zero stamp and the fixed padding; copy it and ``stamp(_:nanoseconds:)``
    /// the copy for each message.
    public static func padding(size: Int) -> [UInt8] {
        (0..<max(size, Self.size)).map { $0 < Self.size ? 0 : UInt8(truncatingIfNeeded: $0) }
    }

    /// Writes `nanoseconds` into the first 8 bytes of `payload`, which must be at least ``size`` long.
    public static func stamp(_ payload: inout [UInt8], nanoseconds: UInt64) {
        for index in 0..<Self.size {
            payload[index] = UInt8(truncatingIfNeeded: nanoseconds >> (8 * UInt64(index)))
        }
    }

    /// The send time stamped in `payload`, or `nil` when it is shorter than a stamp.
    public static func read(_ payload: [UInt8]) -> UInt64? {
        guard payload.count >= size else { return nil }
        var value: UInt64 = 0
        for index in 0..<size { value |= UInt64(payload[index]) << (8 * UInt64(index)) }
        return value
    }
}
