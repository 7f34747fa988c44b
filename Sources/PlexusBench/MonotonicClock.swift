#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Nanoseconds of the system's monotonic clock, the time base of send stamps and latencies.
///
/// Producers and consumers run in one process, so a stamp written by a producer can be compared with the
/// clock when a consumer receives the message.
public enum MonotonicClock {
    /// The current value of `CLOCK_MONOTONIC`, in nanoseconds.
    ///
    /// - Important: Any thread; no allocation.
    @inline(__always)
    public static func nanoseconds() -> UInt64 {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return UInt64(spec.tv_sec) &* 1_000_000_000 &+ UInt64(spec.tv_nsec)
    }
}
