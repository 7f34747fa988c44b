import PlexusABI
import Synchronization

/// A timer started with `Host.startTimer`; pass it to `Host.cancel(_:)` to end it.
///
/// A reference: copies share one timer, and only the first `cancel` of any of them acts.
public final class HostTimer: @unchecked Sendable {
    // Safe: `id` and `box` are immutable; `box` is an opaque retained reference released exactly once, by
    // whoever wins `ended` (a `cancel`, or a one-shot timer after it fired).
    public let id: UInt64
    let box: UnsafeMutableRawPointer
    private let ended = Atomic<Bool>(false)

    init(id: UInt64, box: UnsafeMutableRawPointer) {
        self.id = id
        self.box = box
    }

    /// Marks the timer ended; `true` only for the first caller.
    func claim() -> Bool {
        ended.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
    }
}

/// What a timer's `user` pointer holds: the body, and (once started) the timer, so that a one-shot timer can
/// release itself after firing.
final class TimerBox: @unchecked Sendable {
    // Safe: `body` is immutable and @Sendable; `timer` is written once under its lock.
    let body: @Sendable () -> Void
    let oneShot: Bool
    let timer = Mutex<HostTimer?>(nil)

    init(body: @escaping @Sendable () -> Void, oneShot: Bool) {
        self.body = body
        self.oneShot = oneShot
    }
}

extension Host {
    /// Starts a timer on the kernel's shared pool.
    /// - Parameters:
    ///   - delay: until the first firing.
    ///   - interval: between later firings; `nil` fires once.
    ///   - body: runs on a thread of the kernel's shared pool, never concurrently with itself; must return quickly.
    /// - Throws: `PluginError` when the kernel refuses the timer.
    public func startTimer(
        after delay: Duration, every interval: Duration? = nil, _ body: @escaping @Sendable () -> Void
    )
        throws -> HostTimer
    {
        let box = TimerBox(body: body, oneShot: interval == nil)
        let user = Unmanaged.passRetained(box).toOpaque()
        var id: UInt64 = 0
        // Holding the box's lock across timer_start keeps a one-shot timer that fires at once from looking
        // for its HostTimer before it exists.
        let (status, message) = box.timer.withLock { slot -> (px_status, String) in
            let result = Self.errorBuffer { err in
                api.pointee.timer_start(
                    handle, Self.nanoseconds(delay), interval.map(Self.nanoseconds) ?? 0,
                    { user, _ in
                        guard let user else { return }
                        let box = Unmanaged<TimerBox>.fromOpaque(user).takeUnretainedValue()
                        withExtendedLifetime(box) {
                            box.body()
                            // A one-shot timer is over once it has fired: release it unless cancelled first.
                            if box.oneShot, let timer = box.timer.withLock({ $0 }), timer.claim() {
                                Unmanaged<TimerBox>.fromOpaque(user).release()
                            }
                        }
                    }, user, &id, err)
            }
            if result.0 == PX_OK.status { slot = HostTimer(id: id, box: user) }
            return result
        }
        guard status == PX_OK.status, let timer = box.timer.withLock({ $0 }) else {
            Unmanaged<TimerBox>.fromOpaque(user).release()
            throw PluginError(status: status, message)
        }
        return timer
    }

    /// Cancels a timer. When it returns, the timer's body is not running and will not run, unless `cancel`
    /// is called from inside that body. Later calls for the same timer do nothing.
    public func cancel(_ timer: HostTimer) {
        guard timer.claim() else { return }
        _ = api.pointee.timer_cancel(handle, timer.id)
        Unmanaged<TimerBox>.fromOpaque(timer.box).release()
    }

    static func nanoseconds(_ duration: Duration) -> UInt64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0 else { return 0 }
        let (whole, overflow) = UInt64(seconds).multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? UInt64.max : whole &+ UInt64(attoseconds / 1_000_000_000)
    }
}
