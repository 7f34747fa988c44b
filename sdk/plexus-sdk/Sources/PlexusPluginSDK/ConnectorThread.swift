import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A connector's own thread, for blocking work on an external system (a client library's blocking calls),
/// which must never run on a kernel thread.
public final class ConnectorThread: Sendable {
    private let finished = ConnectorSignal()

    private final class Body {
        let run: () -> Void
        init(_ run: @escaping () -> Void) { self.run = run }
    }

    /// Starts `body` on a new thread.
    /// - Throws: `PluginError` (`PX_ERR_RESOURCE_EXHAUSTED`) when the thread cannot be created.
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws {
        let finished = self.finished
        let box = Unmanaged.passRetained(
            Body {
                body()
                finished.signal()
            }
        ).toOpaque()
        #if canImport(Darwin)
            var thread: pthread_t?
        #else
            var thread = pthread_t()
        #endif
        let status = pthread_create(
            &thread, nil,
            { argument in
                guard let argument else { return nil }
                Unmanaged<Body>.fromOpaque(argument).takeRetainedValue().run()
                return nil
            }, box)
        guard status == 0 else {
            Unmanaged<Body>.fromOpaque(box).release()
            throw PluginError(PX_ERR_RESOURCE_EXHAUSTED, "\(name): cannot start a thread (error \(status))")
        }
        #if canImport(Darwin)
            if let thread { pthread_detach(thread) }
        #else
            pthread_detach(thread)
        #endif
    }

    /// Waits until the thread's body returned, at most `timeout`; `true` when it did.
    public func join(timeout: Duration) -> Bool { finished.wait(timeout: timeout) }
}

/// A flag threads wait on: `signal` sets it (and wakes every waiter), `wait` returns once it is set.
public final class ConnectorSignal: @unchecked Sendable {
    // Safe: `mutex`, `condition` and `set` are only touched under `mutex`.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var set = false

    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    public func signal() {
        pthread_mutex_lock(mutex)
        set = true
        pthread_cond_broadcast(condition)
        pthread_mutex_unlock(mutex)
    }

    public var isSet: Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return set
    }

    /// Waits until signalled, at most `timeout`; `true` when signalled.
    @discardableResult
    public func wait(timeout: Duration) -> Bool {
        let deadline = ConnectorClock.deadline(after: timeout)
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        while !set {
            var until = deadline
            if pthread_cond_timedwait(condition, mutex, &until) == ETIMEDOUT { return set }
        }
        return true
    }
}

/// Time for the connector helpers, without Foundation.
public enum ConnectorClock {
    /// Milliseconds of the monotonic clock.
    public static func nowMs() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return UInt64(now.tv_sec) * 1000 + UInt64(now.tv_nsec) / 1_000_000
    }

    /// The wall-clock time `timeout` from now, as `pthread_cond_timedwait` wants it.
    static func deadline(after timeout: Duration) -> timespec {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let (seconds, attoseconds) = timeout.components
        let extraNanos = max(0, attoseconds / 1_000_000_000)
        var sec = Int(now.tv_sec) + Int(max(0, min(seconds, 1_000_000_000)))
        var nsec = Int(now.tv_nsec) + Int(extraNanos)
        sec += nsec / 1_000_000_000
        nsec %= 1_000_000_000
        return timespec(tv_sec: sec, tv_nsec: nsec)
    }
}

/// A first-in first-out queue between the threads that hand work over (kernel threads, which must not block)
/// and the connector's own workers, which wait for it.
public final class ConnectorQueue<Element: Sendable>: @unchecked Sendable {
    // Safe: `items`, `head` and `closed` are only touched under `mutex`.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let condition = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var items: [Element] = []
    private var head = 0
    private var closed = false

    public init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(condition, nil)
    }

    deinit {
        pthread_cond_destroy(condition)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        condition.deallocate()
    }

    /// Adds an element; `false` (and nothing added) once the queue is closed. Never blocks for long.
    @discardableResult
    public func push(_ element: Element) -> Bool {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        guard !closed else { return false }
        items.append(element)
        pthread_cond_broadcast(condition)
        return true
    }

    /// How many elements wait.
    public var count: Int {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return items.count - head
    }

    /// Stops taking elements and wakes every waiter; returns the elements that were waiting (the caller
    /// settles them).
    public func close() -> [Element] {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        closed = true
        let rest = Array(items[head...])
        items.removeAll()
        head = 0
        pthread_cond_broadcast(condition)
        return rest
    }

    /// Takes a batch: waits up to `idle` for a first element, then up to `fill` more for the batch to reach
    /// `max` elements. Empty when nothing came within `idle` or the queue is closed.
    public func take(max: Int, idle: Duration, fill: Duration) -> [Element] {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        var until = ConnectorClock.deadline(after: idle)
        while items.count == head && !closed {
            if pthread_cond_timedwait(condition, mutex, &until) == ETIMEDOUT { break }
        }
        guard items.count > head, !closed else { return [] }
        until = ConnectorClock.deadline(after: fill)
        while items.count - head < max && !closed {
            if pthread_cond_timedwait(condition, mutex, &until) == ETIMEDOUT { break }
        }
        guard !closed else { return [] }
        let end = Swift.min(items.count, head + max)
        let batch = Array(items[head..<end])
        head = end
        if head > 1024 && head * 2 > items.count {
            items.removeFirst(head)
            head = 0
        }
        return batch
    }
}

/// The result of an asynchronous call, for a thread that waits for it: `complete` stores it and signals.
public final class ConnectorOutcome<Value: Sendable>: Sendable {
    private let stored = Mutex<Value?>(nil)
    public let done = ConnectorSignal()

    public init() {}

    /// Stores the result (the first one wins) and wakes the waiter.
    public func complete(_ value: Value) {
        stored.withLock { if $0 == nil { $0 = value } }
        done.signal()
    }

    /// The result, once completed.
    public var value: Value? { stored.withLock { $0 } }

    /// Waits at most `timeout` for the result.
    public func wait(timeout: Duration) -> Value? {
        done.wait(timeout: timeout) ? value : nil
    }
}
