import Dispatch
import Synchronization

/// The host's timers (`px_host_api.timer_start` / `timer_cancel`).
///
/// Each timer fires on its own serial queue, so one timer's callback never overlaps itself, and cancel can
/// wait for a running callback by a `sync` on that queue (skipped when cancel is called from the callback).
final class TimerService: Sendable {
    private final class Entry: @unchecked Sendable {
        // Safe: `source` and `queue` are set once before the entry is published; `owner` is immutable.
        let queue: DispatchQueue
        let source: DispatchSourceTimer
        let owner: ObjectIdentifier
        init(queue: DispatchQueue, source: DispatchSourceTimer, owner: ObjectIdentifier) {
            self.queue = queue
            self.source = source
            self.owner = owner
        }
    }

    private static let currentTimer = DispatchSpecificKey<UInt64>()
    private let timers = Mutex<[UInt64: Entry]>([:])
    /// Owners that are being torn down: they may start no new timer.
    private let closed = Mutex<Set<ObjectIdentifier>>([])
    private let nextID = Atomic<UInt64>(1)

    /// Starts a timer; `fire` gets the timer's id. `nil` when the owner is being torn down.
    func start(owner: ObjectIdentifier, delay: UInt64, interval: UInt64, fire: @escaping @Sendable (UInt64) -> Void)
        -> UInt64?
    {
        guard !closed.withLock({ $0.contains(owner) }) else { return nil }
        let id = nextID.wrappingAdd(1, ordering: .relaxed).oldValue
        let queue = DispatchQueue(label: "plexus.timer.\(id)")
        queue.setSpecific(key: Self.currentTimer, value: id)
        let source = DispatchSource.makeTimerSource(queue: queue)
        let deadline = DispatchTime.now() + .nanoseconds(Int(min(delay, UInt64(Int.max))))
        if interval > 0 {
            source.schedule(deadline: deadline, repeating: .nanoseconds(Int(min(interval, UInt64(Int.max)))))
        } else {
            source.schedule(deadline: deadline)
        }
        let entry = Entry(queue: queue, source: source, owner: owner)
        source.setEventHandler { [weak self] in
            guard let self, self.timers.withLock({ $0[id] != nil }) else { return }
            fire(id)
            if interval == 0 { _ = self.timers.withLock { $0.removeValue(forKey: id) } }
        }
        timers.withLock { $0[id] = entry }
        source.resume()
        return id
    }

    /// Cancels one of `owner`'s timers; false when it has no such timer (already fired once, or cancelled).
    /// Waits for a running callback unless called from it, or unless `wait` is false.
    @discardableResult
    func cancel(_ id: UInt64, owner: ObjectIdentifier, wait: Bool = true) -> Bool {
        let entry = timers.withLock { timers -> Entry? in
            guard timers[id]?.owner == owner else { return nil }
            return timers.removeValue(forKey: id)
        }
        guard let entry else { return false }
        entry.source.cancel()
        if wait && DispatchQueue.getSpecific(key: Self.currentTimer) != id {
            entry.queue.sync {}
        }
        return true
    }

    /// Cancels every timer an owner (a plugin instance) left running, and refuses it new ones.
    /// `wait: false` for an abandoned plugin, whose callbacks may never return.
    func cancelAll(owner: ObjectIdentifier, wait: Bool) {
        closed.withLock { _ = $0.insert(owner) }
        let ids = timers.withLock { $0.filter { $0.value.owner == owner }.map(\.key) }
        for id in ids { cancel(id, owner: owner, wait: wait) }
    }
}
