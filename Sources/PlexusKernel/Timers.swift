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
    private let nextID = Atomic<UInt64>(1)

    /// Starts a timer; `fire` gets the timer's id.
    func start(owner: ObjectIdentifier, delay: UInt64, interval: UInt64, fire: @escaping @Sendable (UInt64) -> Void) -> UInt64 {
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

    /// Cancels a timer; false when there is no such timer (already fired once, or cancelled).
    @discardableResult
    func cancel(_ id: UInt64) -> Bool {
        guard let entry = timers.withLock({ $0.removeValue(forKey: id) }) else { return false }
        entry.source.cancel()
        if DispatchQueue.getSpecific(key: Self.currentTimer) != id {
            entry.queue.sync {}
        }
        return true
    }

    /// Cancels every timer an owner (a plugin instance) left running.
    func cancelAll(owner: ObjectIdentifier) {
        let ids = timers.withLock { $0.filter { $0.value.owner == owner }.map(\.key) }
        for id in ids { cancel(id) }
    }
}
