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
        let length = max(size, Self.size)
        return [UInt8](unsafeUninitializedCapacity: length) { buffer, initialized in
            var stamp = nanoseconds.littleEndian
            withUnsafeBytes(of: &stamp) { bytes in
                for index in 0..<Self.size { buffer[index] = bytes[index] }
            }
            for index in Self.size..<length { buffer[index] = UInt8(truncatingIfNeeded: index) }
            initialized = length
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
