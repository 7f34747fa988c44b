import NIOCore
import Synchronization

/// The host's timers (`px_host_api.timer_start` / `timer_cancel`), on the kernel pool.
///
/// Each timer is pinned to one pool loop and lives in that loop's scheduled-task heap: no thread, queue or
/// dispatch source per timer. A firing re-arms the timer only after its callback returned, so one timer's
/// callback never overlaps itself; a repeating timer keeps its period (a late firing does not shift the ones
/// after it, and periods missed entirely are skipped, not made up).
///
/// `cancel` closes the timer's `CallGate` and waits for a callback in progress, except on the timer's own loop
/// (then the callback is not running, or it is the caller: a timer cancelling itself or a sibling on its loop).
final class TimerService: Sendable {
    private final class Entry: Sendable {
        let owner: ObjectIdentifier
        let loop: any EventLoop
        let interval: UInt64
        let fire: @Sendable (UInt64) -> Void
        let gate = CallGate()
        /// The firing scheduled next, so that a cancel frees its slot in the loop's heap at once.
        let next = Mutex<Scheduled<Void>?>(nil)

        init(owner: ObjectIdentifier, loop: any EventLoop, interval: UInt64, fire: @escaping @Sendable (UInt64) -> Void)
        {
            self.owner = owner
            self.loop = loop
            self.interval = interval
            self.fire = fire
        }
    }

    private let timers = Mutex<[UInt64: Entry]>([:])
    /// Owners that are being torn down: they may start no new timer.
    private let closed = Mutex<Set<ObjectIdentifier>>([])
    private let nextID = Atomic<UInt64>(1)

    /// Starts a timer; `fire` gets the timer's id. `nil` when the owner is being torn down.
    /// - Parameters:
    ///   - loop: the pool loop the timer is pinned to; the next one in turn unless given (tests pin timers).
    func start(
        owner: ObjectIdentifier, delay: UInt64, interval: UInt64, on loop: any EventLoop = KernelPool.next(),
        fire: @escaping @Sendable (UInt64) -> Void
    ) -> UInt64? {
        guard !closed.withLock({ $0.contains(owner) }) else { return nil }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let entry = Entry(owner: owner, loop: loop, interval: interval, fire: fire)
        timers.withLock { $0[id] = entry }
        let now = NIODeadline.now().uptimeNanoseconds
        arm(entry, id: id, at: now.addingReportingOverflow(delay).overflow ? UInt64.max : now + delay)
        return id
    }

    /// Schedules the entry's next firing, unless it was cancelled meanwhile.
    private func arm(_ entry: Entry, id: UInt64, at deadline: UInt64) {
        // Under the entry's lock, so a concurrent cancel either sees this task or closed the gate first.
        entry.next.withLock { next in
            guard !entry.gate.isClosed else { return }
            next = entry.loop.scheduleTask(deadline: .uptimeNanoseconds(deadline)) { [weak self] in
                self?.fire(entry, id: id, due: deadline)
            }
        }
    }

    /// Runs on the entry's loop.
    private func fire(_ entry: Entry, id: UInt64, due: UInt64) {
        guard entry.gate.enter() else { return }
        entry.fire(id)
        entry.gate.exit()
        if entry.interval == 0 {
            // A one-shot timer is over once it fired: cancelling it now finds nothing. (Dropping its task also
            // breaks the entry → task → entry cycle.)
            entry.next.withLock { next in
                entry.gate.close()
                next = nil
            }
            timers.withLock { if $0[id] === entry { $0[id] = nil } }
            return
        }
        // The next period after the one that fired; those already past (a slow callback, a busy loop) are skipped.
        let now = NIODeadline.now().uptimeNanoseconds
        var (deadline, overflow) = due.addingReportingOverflow(entry.interval)
        if !overflow && deadline <= now {
            let missed = (now - deadline) / entry.interval + 1
            let skip = missed.multipliedReportingOverflow(by: entry.interval)
            (deadline, overflow) = skip.overflow ? (0, true) : deadline.addingReportingOverflow(skip.partialValue)
        }
        arm(entry, id: id, at: overflow ? UInt64.max : deadline)
    }

    /// Cancels one of `owner`'s timers; false when it has no such timer (already fired once, or cancelled).
    /// Waits for a running callback unless called on the timer's loop (from the callback itself, or from
    /// anything else pinned to that loop, which cannot run at the same time), or unless `wait` is false.
    @discardableResult
    func cancel(_ id: UInt64, owner: ObjectIdentifier, wait: Bool = true) -> Bool {
        let entry = timers.withLock { timers -> Entry? in
            guard timers[id]?.owner == owner else { return nil }
            return timers.removeValue(forKey: id)
        }
        guard let entry else { return false }
        let scheduled = entry.next.withLock { next -> Scheduled<Void>? in
            entry.gate.close()
            defer { next = nil }
            return next
        }
        scheduled?.cancel()
        if wait && !entry.loop.inEventLoop { entry.gate.waitUntilIdle() }
        return true
    }

    /// Cancels every timer an owner (a plugin instance) left running, and refuses it new ones.
    /// `wait: false` for an abandoned plugin, whose callbacks may never return.
    func cancelAll(owner: ObjectIdentifier, wait: Bool) {
        closed.withLock { _ = $0.insert(owner) }
        let ids = timers.withLock { $0.filter { $0.value.owner == owner }.map(\.key) }
        for id in ids { cancel(id, owner: owner, wait: wait) }
    }

    /// How many timers are armed (for tests).
    var count: Int { timers.withLock { $0.count } }
}
