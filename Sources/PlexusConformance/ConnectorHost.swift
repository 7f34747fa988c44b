import Foundation
import PlexusABI
import PlexusCore
import PlexusKernel
import Synchronization

/// Where a connector instance is in its life, as its host saw it: the phase each host call is recorded in.
enum ConnectorPhase: Int, Sendable, Comparable {
    /// From `on_create` until `on_stop` is called.
    case running
    /// `on_stop` is running.
    case stopping
    /// `on_stop` returned; `on_destroy` has not yet returned.
    case stopped
    /// `on_destroy` returned: no call may come any more.
    case destroyed

    static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// One call a connector made into its host.
struct HostCall: Sendable {
    let function: String
    let phase: ConnectorPhase
    let at: ContinuousClock.Instant
}

/// What the kit answers a publish with.
enum PublishAnswer: Sendable {
    /// Store it: the completion reports success, soon, from another thread.
    case accept
    /// Refuse it synchronously: `publish` returns this status and the completion is never called.
    case refuse(px_status)
    /// Accept the call, then fail it through the completion with this status.
    case fail(px_status)
    /// Accept the call and keep the completion: the publish stays unfinished until the instance stops, when
    /// it completes with `PX_ERR_UNAVAILABLE` (as a node owes every completion before `on_destroy`).
    case hold
}

/// One publish a connector made.
struct PublishRecord: Sendable {
    let topic: String
    let events: [CloudEvent]
    /// `EventCheck`'s reason per event that is not a valid CloudEvent.
    let invalid: [String]
    let answer: PublishAnswer
    let phase: ConnectorPhase

    var ids: [String] { events.map(\.id) }

    var accepted: Bool {
        if case .accept = answer { return true }
        return false
    }
}

/// One delivery the kit made to a sink, and how the sink answered it.
struct DeliveryRecord: Sendable {
    let id: UInt64
    let subscription: UInt64
    let eventID: String
    let attempt: UInt32
    /// How long the `px_deliver_fn` call took.
    var duration: Duration = .zero
    /// Each ack (`nil` action) or nack (the `px_nack_action`), with the phase it came in.
    var answers: [(action: UInt32?, phase: ConnectorPhase)] = []

    var acked: Bool { answers.first.map { $0.action == nil } ?? false }
    var nacked: Bool { answers.first.map { $0.action != nil } ?? false }
}

/// One subscription a connector made.
struct SubscriptionRecord: @unchecked Sendable {
    // Safe: `user` is the plugin's opaque context, only handed back to its own deliver function.
    let id: UInt64
    let topic: String
    let group: String
    let maxInFlight: UInt32
    let deliver: px_deliver_fn
    let user: UnsafeMutableRawPointer?
    var unsubscribedIn: ConnectorPhase?
}

/// The host a connector under test runs on: a `px_host_api` table of the kit's own, handed to the instance
/// through `StandalonePlugin.start(dataDirectory:host:)`, so that the kit sees and answers every publish,
/// subscription, acknowledgement and timer, and can deliver events itself.
///
/// One host per instance (so that calls of an old instance stay attributed to it); the metadata store
/// (`KVStore`) is shared by the instances of one run, as a node's registry outlives a plugin restart.
///
/// - Important: A host is never freed: a plugin may keep its handle and call in late (the kit records such
///   calls as violations instead of crashing).
final class ConnectorHost: @unchecked Sendable {
    // Safe: every mutable field is behind `state` (a Mutex); `table` is written once in init, then only read.
    let name: String
    let kv: KVStore
    let table: UnsafeMutablePointer<px_host_api>
    private let state = Mutex(State())
    private let deliveryLock = NSCondition()
    /// Completions and work items the host still owes the instance (all run before `on_destroy`).
    private let owed = Atomic<Int>(0)
    private var activeDeliveries = 0

    struct State: @unchecked Sendable {
        // Safe: the raw pointers are the plugin's opaque contexts, only handed back to its own functions.
        var phase: ConnectorPhase = .running
        var calls: [HostCall] = []
        var publishes: [PublishRecord] = []
        var subscriptions: [UInt64: SubscriptionRecord] = [:]
        var deliveries: [UInt64: DeliveryRecord] = [:]
        var unknownAnswers: [UInt64] = []
        var held: [(done: px_append_done_fn, user: UnsafeMutableRawPointer?)] = []
        var timers: [UInt64: HostTimer] = [:]
        var logs: [String] = []
        var policy: @Sendable (String, [CloudEvent]) -> PublishAnswer = { _, _ in .accept }
        var nextID: UInt64 = 1
        var offsets: [String: UInt64] = [:]
        /// Metadata-store watches the instance holds.
        var kvWatches: Set<UInt64> = []
    }

    init(name: String, kv: KVStore) {
        self.name = name
        self.kv = kv
        let table = UnsafeMutablePointer<px_host_api>.allocate(capacity: 1)
        table.initialize(to: Self.template)
        self.table = table
    }

    /// What the plugin is given: the table, and this host as the `px_host *` handle.
    var hostTable: StandalonePlugin.HostTable {
        // Retained once and never released: see the class's note.
        let handle = OpaquePointer(Unmanaged.passRetained(self).toOpaque())
        return StandalonePlugin.HostTable(api: UnsafePointer(table), handle: handle)
    }

    static func from(_ handle: OpaquePointer?) -> ConnectorHost? {
        guard let handle else { return nil }
        return Unmanaged<ConnectorHost>.fromOpaque(UnsafeRawPointer(handle)).takeUnretainedValue()
    }

    // MARK: What the kit reads and sets

    var snapshot: State { state.withLock { $0 } }
    var phase: ConnectorPhase { state.withLock { $0.phase } }

    /// Sets how the following publishes are answered.
    func setPolicy(_ policy: @escaping @Sendable (String, [CloudEvent]) -> PublishAnswer) {
        state.withLock { $0.policy = policy }
    }

    func setPhase(_ phase: ConnectorPhase) { state.withLock { $0.phase = phase } }

    /// What a node does between `on_stop` and `on_destroy`: every held publish completes (with
    /// `PX_ERR_UNAVAILABLE`), and the timers and subscriptions the instance left are ended.
    func releaseAfterStop() {
        let (held, timers) = state.withLock {
            s -> ([(done: px_append_done_fn, user: UnsafeMutableRawPointer?)], [HostTimer]) in
            defer {
                s.held = []
                s.timers = [:]
            }
            return (s.held, Array(s.timers.values))
        }
        for timer in timers { _ = timer.cancel() }
        for watch in state.withLock({ s -> Set<UInt64> in
            defer { s.kvWatches = [] }
            return s.kvWatches
        }) {
            _ = kv.unwatch(watch)
        }
        for (done, user) in held {
            withPXStr("the node stopped before the event was stored") { done(user, PX_ERR_UNAVAILABLE.status, 0, $0) }
        }
        let deadline = ContinuousClock.now + .seconds(10)
        while owed.load(ordering: .acquiring) > 0, ContinuousClock.now < deadline {
            Thread.sleep(forTimeInterval: 0.001)
        }
        state.withLock { s in
            for id in Array(s.subscriptions.keys) where s.subscriptions[id]?.unsubscribedIn == nil {
                s.subscriptions[id]?.unsubscribedIn = .destroyed
            }
        }
    }

    /// Calls of the given functions made in `phase` or later.
    func calls(in phases: Set<ConnectorPhase>, except allowed: Set<String> = []) -> [HostCall] {
        state.withLock { $0.calls.filter { phases.contains($0.phase) && !allowed.contains($0.function) } }
    }

    /// Every event id the instance published whose publish was accepted.
    var acceptedIDs: [String] { state.withLock { $0.publishes.filter(\.accepted).flatMap(\.ids) } }

    // MARK: Deliveries

    /// Delivers one event to a subscription on the calling thread and records how long the call took.
    /// - Returns: the delivery's id, or `nil` when the subscription is gone.
    @discardableResult
    func deliver(_ event: CloudEvent, to subscription: UInt64, attempt: UInt32 = 1) -> UInt64? {
        let prepared = state.withLock { s -> (SubscriptionRecord, UInt64)? in
            guard let sub = s.subscriptions[subscription], sub.unsubscribedIn == nil else { return nil }
            let id = s.nextID
            s.nextID += 1
            s.deliveries[id] = DeliveryRecord(
                id: id, subscription: subscription, eventID: event.id, attempt: attempt)
            return (sub, id)
        }
        guard let (sub, id) = prepared else { return nil }
        deliveryLock.lock()
        activeDeliveries += 1
        deliveryLock.unlock()
        defer {
            deliveryLock.lock()
            activeDeliveries -= 1
            deliveryLock.broadcast()
            deliveryLock.unlock()
        }
        let batch = CEventBatch([event])
        let started = ContinuousClock.now
        withExtendedLifetime(batch) {
            withPXStr(sub.topic) { topic in
                var record = px_record()
                record.struct_size = UInt32(MemoryLayout<px_record>.size)
                record.offset = id
                record.event = batch.event(at: 0)
                withUnsafePointer(to: &record) { recordPointer in
                    var delivery = px_delivery()
                    delivery.struct_size = UInt32(MemoryLayout<px_delivery>.size)
                    delivery.attempt = attempt
                    delivery.delivery_id = id
                    delivery.subscription_id = subscription
                    delivery.topic = topic
                    delivery.record = recordPointer
                    sub.deliver(sub.user, &delivery)
                }
            }
        }
        let duration = ContinuousClock.now - started
        state.withLock { $0.deliveries[id]?.duration = duration }
        return id
    }

    /// Records a metadata-store watch the instance made (`true`) or ended (`false`: whether it held it).
    @discardableResult
    func trackWatch(_ id: UInt64, _ held: Bool) -> Bool {
        state.withLock { s in held ? s.kvWatches.insert(id).inserted : s.kvWatches.remove(id) != nil }
    }

    func delivery(_ id: UInt64) -> DeliveryRecord? { state.withLock { $0.deliveries[id] } }

    /// The subscriptions still open.
    var openSubscriptions: [SubscriptionRecord] {
        state.withLock { $0.subscriptions.values.filter { $0.unsubscribedIn == nil }.sorted { $0.id < $1.id } }
    }

    // MARK: Recording

    func record(_ function: String) {
        state.withLock { $0.calls.append(HostCall(function: function, phase: $0.phase, at: .now)) }
    }

    fileprivate func publish(
        topic: String, events: [CloudEvent], invalid: [String], done: px_append_done_fn, user: UnsafeMutableRawPointer?
    ) -> PublishAnswer {
        let (answer, offset) = state.withLock { s -> (PublishAnswer, UInt64) in
            let answer = s.policy(topic, events)
            s.publishes.append(
                PublishRecord(topic: topic, events: events, invalid: invalid, answer: answer, phase: s.phase))
            let offset = s.offsets[topic, default: 0]
            switch answer {
            case .accept: s.offsets[topic] = offset + UInt64(events.count)
            case .hold: s.held.append((done, user))
            case .refuse, .fail: break
            }
            return (answer, offset)
        }
        let box = UnsafeSendable((done, user))
        switch answer {
        case .accept:
            owe {
                box.value.0(box.value.1, PX_OK.status, offset, px_str(ptr: nil, len: 0))
            }
        case .fail(let status):
            owe {
                withPXStr("refused by the conformance kit") { box.value.0(box.value.1, status, 0, $0) }
            }
        case .refuse, .hold:
            break
        }
        return answer
    }

    /// Runs `body` soon on another thread, as a completion the host owes the instance.
    func owe(_ body: @escaping @Sendable () -> Void) {
        owed.add(1, ordering: .relaxed)
        DispatchQueue.global().async { [self] in
            body()
            owed.subtract(1, ordering: .releasing)
        }
    }

    fileprivate func subscribe(_ spec: px_subscription_spec) -> UInt64? {
        guard let deliver = spec.deliver else { return nil }
        return state.withLock { s in
            let id = s.nextID
            s.nextID += 1
            s.subscriptions[id] = SubscriptionRecord(
                id: id, topic: spec.topic.string, group: spec.group.string, maxInFlight: spec.max_in_flight,
                deliver: deliver, user: spec.user)
            return id
        }
    }

    fileprivate func unsubscribe(_ id: UInt64) -> px_status {
        let found = state.withLock { s -> Bool in
            guard s.subscriptions[id]?.unsubscribedIn == nil, s.subscriptions[id] != nil else { return false }
            s.subscriptions[id]?.unsubscribedIn = s.phase
            return true
        }
        guard found else { return PX_ERR_NOT_FOUND.status }
        // After unsubscribe returns no delivery may be running: wait for the kit's (bounded).
        deliveryLock.lock()
        let deadline = Date().addingTimeInterval(5)
        while activeDeliveries > 0, deliveryLock.wait(until: deadline) {}
        deliveryLock.unlock()
        return PX_OK.status
    }

    fileprivate func answer(_ id: UInt64, action: UInt32?) -> px_status {
        state.withLock { s in
            guard s.deliveries[id] != nil else {
                s.unknownAnswers.append(id)
                return PX_ERR_NOT_FOUND.status
            }
            let first = s.deliveries[id]?.answers.isEmpty ?? false
            s.deliveries[id]?.answers.append((action, s.phase))
            return first ? PX_OK.status : PX_ERR_NOT_FOUND.status
        }
    }

    fileprivate func startTimer(
        delay: UInt64, interval: UInt64, fn: @escaping px_timer_fn, user: UnsafeMutableRawPointer?
    )
        -> UInt64
    {
        let id = state.withLock { s -> UInt64 in
            defer { s.nextID += 1 }
            return s.nextID
        }
        let timer = HostTimer(id: id, delayNanoseconds: delay, intervalNanoseconds: interval, fn: fn, user: user)
        state.withLock { $0.timers[id] = timer }
        timer.start()
        return id
    }

    fileprivate func cancelTimer(_ id: UInt64) -> px_status {
        guard let timer = state.withLock({ $0.timers.removeValue(forKey: id) }) else { return PX_ERR_NOT_FOUND.status }
        return timer.cancel() ? PX_OK.status : PX_ERR_NOT_FOUND.status
    }

    fileprivate func log(_ level: Int32, _ text: String) {
        state.withLock { s in
            if s.logs.count < 1000 { s.logs.append("[\(level)] \(text)") }
        }
    }

    // MARK: The table

    /// A metric handle: which host it belongs to.
    final class Metric {
        let host: ConnectorHost
        init(host: ConnectorHost) { self.host = host }
    }

    nonisolated(unsafe) private static let template: px_host_api = {
        var t = px_host_api()
        t.struct_size = UInt32(MemoryLayout<px_host_api>.size)
        t.abi_major = UInt16(PX_ABI_VERSION_MAJOR)
        t.abi_minor = UInt16(PX_ABI_VERSION_MINOR)
        t.kernel_version = UnsafePointer(strdup(PlexusVersion.kernel))
        t.log = { host, level, message in
            guard let h = ConnectorHost.from(host) else { return }
            h.record("log")
            h.log(level, message.string)
        }
        t.counter_add = { host, _, _ in ConnectorHost.from(host)?.record("counter_add") }
        t.gauge_set = { host, _, _ in ConnectorHost.from(host)?.record("gauge_set") }
        t.histogram_record = { host, _, _ in ConnectorHost.from(host)?.record("histogram_record") }
        t.publish = { host, topic, events, count, done, user, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("publish")
            guard let done, count == 0 || events != nil else {
                setError(err, "publish needs events and a completion")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            var copies: [CloudEvent] = []
            var invalid: [String] = []
            for index in 0..<count {
                guard let event = events?[index] else {
                    invalid.append("event \(index) is NULL")
                    continue
                }
                if let reason = EventCheck.invalidReason(event) { invalid.append(reason) }
                copies.append(CloudEvent(copying: event))
            }
            switch h.publish(topic: topic.string, events: copies, invalid: invalid, done: done, user: user) {
            case .refuse(let status):
                setError(err, "refused by the conformance kit (try again later)")
                return status
            default:
                return PX_OK.status
            }
        }
        t.subscribe = { host, spec, out, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("subscribe")
            guard let spec, let id = h.subscribe(spec.pointee) else {
                setError(err, "subscribe needs a spec with a deliver function")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            out?.pointee = id
            return PX_OK.status
        }
        t.unsubscribe = { host, id in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("unsubscribe")
            return h.unsubscribe(id)
        }
        t.ack = { host, id in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("ack")
            return h.answer(id, action: nil)
        }
        t.nack = { host, id, action, _ in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("nack")
            return h.answer(id, action: action)
        }
        t.timer_start = { host, delay, interval, fn, user, out, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("timer_start")
            guard let fn else {
                setError(err, "timer_start needs a function")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            out?.pointee = h.startTimer(delay: delay, interval: interval, fn: fn, user: user)
            return PX_OK.status
        }
        t.timer_cancel = { host, id in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("timer_cancel")
            return h.cancelTimer(id)
        }
        t.registry_register = { host, _, _, _, err in ConnectorHost.unsupported(host, "registry_register", err) }
        t.registry_deregister = { host, _, _, _, _, err in ConnectorHost.unsupported(host, "registry_deregister", err) }
        t.registry_lookup = { host, _, _, _, err in ConnectorHost.unsupported(host, "registry_lookup", err) }
        t.registry_watch = { host, _, _, _, _, err in ConnectorHost.unsupported(host, "registry_watch", err) }
        t.registry_unwatch = { host, _ in
            ConnectorHost.from(host)?.record("registry_unwatch")
            return PX_ERR_NOT_FOUND.status
        }
        t.storage_read = { host, _, _, _, _, _, _, err in ConnectorHost.unsupported(host, "storage_read", err) }
        t.run = { host, fn, user, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("run")
            guard let fn else {
                setError(err, "run needs a function")
                return PX_ERR_INVALID_ARGUMENT.status
            }
            let box = UnsafeSendable((fn, user))
            h.owe { box.value.0(box.value.1) }
            return PX_OK.status
        }
        t.metric_create = { host, _, out, err in
            guard let h = ConnectorHost.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
            h.record("metric_create")
            out?.pointee = OpaquePointer(Unmanaged.passRetained(Metric(host: h)).toOpaque())
            return PX_OK.status
        }
        t.metric_record = { metric, _ in
            guard let metric else { return }
            Unmanaged<Metric>.fromOpaque(UnsafeRawPointer(metric)).takeUnretainedValue().host.record("metric_record")
        }
        t.listen = { host, _, _, _, _, err in ConnectorHost.unsupported(host, "listen", err) }
        ConnectorHost.installKV(&t)
        return t
    }()

    private static func unsupported(_ host: OpaquePointer?, _ function: String, _ err: UnsafeMutablePointer<px_error>?)
        -> px_status
    {
        from(host)?.record(function)
        setError(err, "the conformance kit's connector host does not offer \(function)")
        return PX_ERR_UNSUPPORTED.status
    }
}

func setError(_ err: UnsafeMutablePointer<px_error>?, _ text: String) {
    text.withCString { px_error_set(err, $0) }
}

/// A value the compiler cannot see is sendable (C function pointers with their `void *` context).
struct UnsafeSendable<T>: @unchecked Sendable {
    // Safe: used only to hand a C completion and its context to the thread that calls it once.
    let value: T
    init(_ value: T) { self.value = value }
}

/// A host timer on a thread of its own: first after its delay, then every interval (0: once). After
/// `cancel` returns the function is not running and will not run, unless cancel was called from inside it.
final class HostTimer: @unchecked Sendable {
    // Safe: mutable fields are guarded by `condition`.
    let id: UInt64
    private let delay: UInt64
    private let interval: UInt64
    private let fn: px_timer_fn
    private let user: UnsafeMutableRawPointer?
    private let condition = NSCondition()
    private var cancelled = false
    private var running = false
    private var fired = false
    private var thread: Thread?

    init(
        id: UInt64, delayNanoseconds: UInt64, intervalNanoseconds: UInt64, fn: @escaping px_timer_fn,
        user: UnsafeMutableRawPointer?
    ) {
        self.id = id
        self.delay = delayNanoseconds
        self.interval = intervalNanoseconds
        self.fn = fn
        self.user = user
    }

    func start() {
        let thread = Thread { [self] in loop() }
        thread.name = "plexus.conformance.timer"
        thread.stackSize = 1 << 20
        condition.lock()
        self.thread = thread
        condition.unlock()
        thread.start()
    }

    private func loop() {
        var next = Date().addingTimeInterval(Double(delay) / 1e9)
        while true {
            condition.lock()
            while !cancelled, condition.wait(until: next) {}
            if cancelled {
                condition.unlock()
                return
            }
            running = true
            condition.unlock()
            fn(user, id)
            condition.lock()
            running = false
            fired = true
            condition.broadcast()
            let stop = cancelled || interval == 0
            condition.unlock()
            if stop { return }
            next = max(Date(), next.addingTimeInterval(Double(max(interval, 1_000_000)) / 1e9))
        }
    }

    /// Cancels the timer; false for a one-shot timer that already fired.
    func cancel() -> Bool {
        condition.lock()
        defer { condition.unlock() }
        if interval == 0, fired { return false }
        cancelled = true
        condition.broadcast()
        if Thread.current !== thread {
            while running { condition.wait() }
        }
        return true
    }
}
