import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// Routes publishes to the storage plugin bound to each topic, acknowledges them once stored, and feeds the
/// delivery engine. The data path of docs/delivery.md.
public final class Router: Sendable {
    let config: TopicConfig
    let engine: DeliveryEngine
    let metrics: MetricsRegistry
    /// Spans for traced events (off unless the node was given a tracer).
    let tracing: KernelTracing
    private let storages = Mutex<[String: StorageBinding]>([:])
    /// The default storage the node chose for topics without a binding when the node file names none.
    private let chosenDefault = Mutex<String?>(nil)
    /// Every topic's stream: open, or being opened with the callers that wait for it (its future). One topic
    /// gets one stream handle; no lock is held while a storage opens a stream.
    private let streams = Mutex<[String: Slot]>([:])
    /// Topics created and retention set through the admin API, kept in the data directory (`TopicSettings`).
    let settings = TopicSettings()
    /// Publish and delivery rates per topic over the last seconds (`TopicRates`).
    let rates = TopicRates()

    /// A topic's open stream, with its metric handles (made once, when it opens).
    struct OpenTopic: Sendable {
        let binding: StorageBinding
        let stream: StorageBinding.Stream
        let metrics: TopicMetrics
    }

    private enum Slot {
        case open(OpenTopic)
        case opening(StorageBinding, [@Sendable (Result<OpenTopic, Refusal>) -> Void])
    }

    /// A publish or subscribe the router refuses, with the status to report.
    public struct Refusal: Error, CustomStringConvertible {
        public var status: px_status
        public var message: String
        public var description: String { message }
    }

    init(config: TopicConfig, clock: any DeliveryClock, metrics: MetricsRegistry, tracing: KernelTracing = .off) {
        self.config = config
        self.metrics = metrics
        self.tracing = tracing
        self.engine = DeliveryEngine(clock: clock, metrics: metrics, tracing: tracing)
        engine.router = WeakRouter(self)
    }

    /// Makes a started storage plugin available to topics.
    func bind(_ binding: StorageBinding) {
        storages.withLock { $0[binding.name] = binding }
    }

    /// Sets the storage for topics without a binding when the node file names none (`nil`: refuse them).
    func choose(defaultStorage name: String?) {
        chosenDefault.withLock { $0 = name }
    }

    /// The storage for topics without a binding: the node file's, else the one the node chose.
    var defaultStorage: String? { config.defaultStorage ?? chosenDefault.withLock { $0 } }

    /// The durability a bound storage declares (`px_durability`); `nil` when it is not bound.
    func durability(of name: String) -> UInt32? { storages.withLock { $0[name]?.durability } }

    /// Withdraws a storage plugin: its groups stop, its streams close; waits (until `deadline`) for calls
    /// into it to finish. True when none runs any more.
    func unbind(_ name: String, until deadline: ContinuousClock.Instant) -> Bool {
        guard let binding = storages.withLock({ $0.removeValue(forKey: name) }) else { return true }
        engine.closeGroups(on: binding)
        let closing = streams.withLock { all -> [StorageBinding.Stream] in
            var mine: [StorageBinding.Stream] = []
            for (topic, slot) in all {
                guard case .open(let open) = slot, open.binding === binding else { continue }
                all[topic] = nil
                mine.append(open.stream)
            }
            return mine
        }
        while binding.calls.load(ordering: .acquiring) > 0 {
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.001)
        }
        for stream in closing { binding.closeStream(stream) }
        return true
    }

    /// The storage a topic is (to be) stored in, per the topics configuration.
    private func binding(for topic: String, create: Bool) throws(Refusal) -> (StorageBinding, TopicConfig.Binding?) {
        // Every way to a stream passes here before it is opened: publish, subscribe, dead letters, pull streams.
        if let problem = TopicName.problem(topic) {
            throw Refusal(status: PX_ERR_INVALID_ARGUMENT.status, message: problem)
        }
        let explicit = config.bindings.first { $0.topic == topic }
        let created = settings.storage(for: topic)
        guard explicit != nil || created != nil || (create && config.autoCreate) else {
            throw Refusal(
                status: PX_ERR_NOT_FOUND.status,
                message: "topic \(TopicName.quoted(topic)) is not bound to a storage and topics.autoCreate is off")
        }
        guard let storageName = explicit?.storage ?? created ?? defaultStorage else {
            throw Refusal(
                status: PX_ERR_UNAVAILABLE.status,
                message:
                    "topic \(TopicName.quoted(topic)) has no storage: it has no binding, the node file names no "
                    + "topics.defaultStorage, and neither \(DefaultStorage.durable) nor \(DefaultStorage.volatile) "
                    + "is active on this node; nothing is acknowledged without a storage")
        }
        guard let binding = storages.withLock({ $0[storageName] }) else {
            throw Refusal(
                status: PX_ERR_UNAVAILABLE.status,
                message: "topic \(TopicName.quoted(topic)) is stored in '\(storageName)', which is not active")
        }
        return (binding, explicit)
    }

    /// Calls `completion` with the topic's stream, opening it on first use: the first caller starts the
    /// open (outside every lock), later callers wait on the same future. Inline when the stream is open.
    func withStream(
        for topic: String, create: Bool, _ completion: @escaping @Sendable (Result<OpenTopic, Refusal>) -> Void
    ) {
        if case .open(let open)? = streams.withLock({ $0[topic] }) { return completion(.success(open)) }
        let binding: StorageBinding
        let explicit: TopicConfig.Binding?
        do {
            (binding, explicit) = try self.binding(for: topic, create: create)
        } catch {
            return completion(.failure(error))
        }
        enum Next {
            case ready(OpenTopic)
            case wait
            case start
        }
        let next = streams.withLock { all -> Next in
            switch all[topic] {
            case .open(let open)?: return .ready(open)
            case .opening(let opener, var waiters)?:
                waiters.append(completion)
                all[topic] = .opening(opener, waiters)
                return .wait
            case nil:
                all[topic] = .opening(binding, [completion])
                return .start
            }
        }
        switch next {
        case .ready(let open): return completion(.success(open))
        case .wait: return
        case .start: break
        }
        let metrics = metrics
        let options = streamOptions(for: topic, explicit: explicit)
        binding.openStream(topic, retentionBytes: options.retentionBytes, retentionMs: options.retentionMs) {
            [weak self] result in
            // An open that waited out a replacement of the storage was made by the instance that took over.
            let mapped = result.map {
                OpenTopic(binding: binding.current, stream: $0, metrics: TopicMetrics(metrics, topic: topic))
            }
            .mapError {
                Refusal(
                    status: $0.status,
                    message: "storage '\(binding.name)' cannot open topic \(TopicName.quoted(topic)): \($0.message)")
            }
            guard let self else { return completion(mapped) }
            // The topic is marked open only once every waiter has run: a publish that arrives meanwhile joins
            // the waiters, so it is appended after the ones that waited for the open, in arrival order (marked
            // open first, a publish arriving before the waiters ran was stored ahead of them).
            while true {
                let waiters = self.streams.withLock { all -> [@Sendable (Result<OpenTopic, Refusal>) -> Void]? in
                    guard case .opening(let opener, let waiters)? = all[topic] else { return nil }
                    guard case .success(let open) = mapped else {
                        all[topic] = nil
                        return waiters
                    }
                    if waiters.isEmpty {
                        all[topic] = .open(open)
                        return nil
                    }
                    all[topic] = .opening(opener, [])
                    return waiters
                }
                guard let waiters else { return }
                for waiter in waiters { waiter(mapped) }
                if case .failure = mapped { return }
            }
        }
    }

    /// The retention a topic's stream is opened with: the admin API's setting, else its binding's, else the
    /// node's default.
    func streamOptions(for topic: String, explicit: TopicConfig.Binding? = nil) -> (
        retentionBytes: UInt64, retentionMs: UInt64
    ) {
        let explicit = explicit ?? config.bindings.first { $0.topic == topic }
        let retention = settings.retention(for: topic)
        return (
            retention?.maxBytes ?? explicit?.retentionBytes ?? config.defaultRetentionBytes,
            retention?.maxAgeMs ?? explicit?.retentionMs ?? config.defaultRetentionMs
        )
    }

    // MARK: Replacing a storage (`Kernel.replaceStorage`)

    /// Every topic whose stream `binding` holds open now.
    func topics(on binding: StorageBinding) -> [String: OpenTopic] {
        openTopics().filter { $0.value.binding === binding }
    }

    /// Points each topic still open on `old` at the stream the new instance opened for it, and moves the
    /// consumer groups reading from `old` to the same streams.
    func switchTopics(from old: StorageBinding, to opened: [String: OpenTopic]) {
        var moved: [UInt: StorageBinding.Stream] = [:]
        streams.withLock { all in
            for (topic, open) in opened {
                guard case .open(let current)? = all[topic], current.binding === old else { continue }
                all[topic] = .open(open)
                moved[UInt(bitPattern: current.stream.pointer)] = open.stream
            }
        }
        guard let binding = opened.first?.value.binding else { return }
        engine.rebindGroups(from: old, to: binding, streams: moved)
    }

    /// Gives up a storage whose replacement failed and whose old image did not start again: its topics are
    /// forgotten (their streams are already closed), its groups stop, and calls that waited fail.
    func abandon(_ binding: StorageBinding) {
        storages.withLock { all in
            if all[binding.name] === binding || all[binding.name]?.isPaused == true { all[binding.name] = nil }
        }
        engine.closeGroups(on: binding)
        streams.withLock { all in
            for (topic, slot) in all {
                guard case .open(let open) = slot, open.binding === binding else { continue }
                all[topic] = nil
            }
        }
        binding.release(to: nil)
    }

    /// The stream a topic is stored in, opened on first use; waits for an open in progress (holding no lock).
    func stream(for topic: String, create: Bool) throws -> OpenTopic {
        if case .open(let open)? = streams.withLock({ $0[topic] }) { return open }
        let result = Mutex<Result<OpenTopic, Refusal>?>(nil)
        let opened = DispatchSemaphore(value: 0)
        withStream(for: topic, create: create) { outcome in
            result.withLock { $0 = outcome }
            opened.signal()
        }
        opened.wait()
        return try result.withLock { $0! }.get()
    }

    /// Every topic whose stream is open now.
    func openTopics() -> [String: OpenTopic] {
        streams.withLock { all in
            all.compactMapValues { slot in
                guard case .open(let open) = slot else { return nil }
                return open
            }
        }
    }

    /// The storage plugins bound now, by name.
    func boundStorages() -> [String: StorageBinding] { storages.withLock { $0 } }

    /// Forgets a topic's open stream (after it was deleted) and returns it for closing.
    func forget(topic: String) -> OpenTopic? {
        streams.withLock { all in
            guard case .open(let open)? = all[topic] else { return nil }
            all[topic] = nil
            return open
        }
    }

    /// Stores a batch of borrowed events: when the topic's stream is open, the caller's pointers go to the
    /// storage's `on_append` as they are (no copy; they need to live only for this call); otherwise they are
    /// copied once and appended when the stream has opened. `completion` gets the first offset once the
    /// storage reports the batch durable, and the topic's groups are told there is more to read.
    /// - Parameter spans: the batch's `publish` spans (tracing on and some event traced); `store` spans start
    ///   when the batch goes to the storage.
    func publish(
        topic: String, events: UnsafeBufferPointer<UnsafePointer<px_event>?>,
        spans: KernelTracing.PublishSpans? = nil, completion: @escaping @Sendable (Result<UInt64, Refusal>) -> Void
    ) {
        if case .open(let open)? = streams.withLock({ $0[topic] }) {
            return append(open, topic: topic, events, spans: spans, completion: completion)
        }
        publish(topic: topic, batch: CEventBatch(copying: events), spans: spans, completion: completion)
    }

    /// Stores a batch the router owns (a copy, or events the kernel made: dead letters).
    func publish(
        topic: String, batch: CEventBatch, spans: KernelTracing.PublishSpans? = nil,
        completion: @escaping @Sendable (Result<UInt64, Refusal>) -> Void
    ) {
        withStream(for: topic, create: true) { [self] result in
            switch result {
            case .success(let open):
                withExtendedLifetime(batch) {
                    append(open, topic: topic, batch.pointers, spans: spans, completion: completion)
                }
            case .failure(let refusal):
                spans?.finish(.failure(refusal))
                completion(.failure(refusal))
            }
        }
    }

    private func append(
        _ target: OpenTopic, topic: String, _ events: UnsafeBufferPointer<UnsafePointer<px_event>?>,
        spans: KernelTracing.PublishSpans?, completion: @escaping @Sendable (Result<UInt64, Refusal>) -> Void
    ) {
        spans?.storing(in: target.binding.name)
        let started = ContinuousClock.now
        let count = UInt64(events.count)
        let bytes = TopicMetrics.bytes(of: events)
        target.binding.append(target.stream, events) { [engine] result in
            switch result {
            case .success(let first):
                let elapsed = ContinuousClock.now - started
                target.metrics.published.increment(by: count)
                target.metrics.publishedBytes.increment(by: bytes)
                target.metrics.publishSeconds.record(
                    Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
                spans?.finish(.success(first))
                completion(.success(first))
                engine.notify(topic: topic)
            case .failure(let failure):
                target.metrics.publishFailures.increment()
                let refusal = Refusal(
                    status: failure.status, message: "storage '\(target.binding.name)': \(failure.message)")
                spans?.finish(.failure(refusal))
                completion(.failure(refusal))
            }
        }
    }
}

/// The engine's way back to the router (for dead letters) without a reference cycle.
struct WeakRouter: Sendable {
    weak var router: Router?
    init(_ router: Router) { self.router = router }
}

/// The delivery engine: every consumer group of the node, and which plugin's subscription is which member.
final class DeliveryEngine: Sendable {
    struct GroupKey: Hashable, Sendable {
        var topic: String
        var group: String
    }

    private struct State {
        var groups: [GroupKey: ConsumerGroup] = [:]
        /// The groups of each topic, to wake them when it grows (one lookup per publish, not a scan).
        var byTopic: [String: [ConsumerGroup]] = [:]
        var byID: [UInt64: ConsumerGroup] = [:]
        /// subscription id -> (group, owner)
        var subscriptions: [UInt64: (group: ConsumerGroup, owner: ObjectIdentifier)] = [:]
        var closedOwners: Set<ObjectIdentifier> = []
        var nextGroupID: UInt64 = 1
        var nextSubscriptionID: UInt64 = 1
    }

    let clock: any DeliveryClock
    let metrics: MetricsRegistry
    let tracing: KernelTracing
    private let state = Mutex(State())
    private let routerSlot = Mutex<WeakRouter?>(nil)

    var router: WeakRouter? {
        get { routerSlot.withLock { $0 } }
        set { routerSlot.withLock { $0 = newValue } }
    }

    init(clock: any DeliveryClock, metrics: MetricsRegistry, tracing: KernelTracing = .off) {
        self.clock = clock
        self.metrics = metrics
        self.tracing = tracing
    }

    /// Joins (creating if needed) the consumer group a subscription names.
    /// - Parameters:
    ///   - ownerName: the subscribing plugin's name; a broadcast subscription is a group of its own per plugin.
    func subscribe(
        owner: ObjectIdentifier, ownerName: String, spec: px_subscription_spec, policy: DeliveryPolicy,
        filters: [(String, String)], deliver: @escaping @Sendable (UnsafePointer<px_delivery>) -> Void
    ) throws -> UInt64 {
        guard let router = router?.router else {
            throw Router.Refusal(status: PX_ERR_UNAVAILABLE.status, message: "the node is shutting down")
        }
        let topic = spec.topic.string
        var group = spec.group.string
        if group.isEmpty { group = "\(ownerName)" }
        let broadcast = spec.group_mode == UInt32(PX_GROUP_BROADCAST.rawValue)
        let target = try router.stream(for: topic, create: true)
        let publish:
            @Sendable (String, [CloudEvent], @escaping @Sendable (Result<UInt64, StorageBinding.Failure>) -> Void) ->
                Void = {
                    [weak router] topic, events, done in
                    guard let router else {
                        return done(
                            .failure(.init(status: PX_ERR_UNAVAILABLE.status, message: "the node is shutting down")))
                    }
                    router.publish(topic: topic, batch: CEventBatch(events)) { result in
                        done(result.mapError { StorageBinding.Failure(status: $0.status, message: $0.message) })
                    }
                }
        let (consumerGroup, created, id) = try state.withLock { s -> (ConsumerGroup, Bool, UInt64) in
            guard !s.closedOwners.contains(owner) else {
                throw Router.Refusal(
                    status: PX_ERR_FAILED_PRECONDITION.status, message: "the plugin is stopping; it may not subscribe")
            }
            // A broadcast member is a group of its own, named for its plugin and its rank among that
            // plugin's members, so that it resumes its own offsets after a restart.
            var groupName = group
            if broadcast {
                var rank = 1
                while s.groups[GroupKey(topic: topic, group: "\(group)#\(ownerName)#\(rank)")].map({ !$0.isEmpty })
                    == true
                {
                    rank += 1
                }
                groupName = "\(group)#\(ownerName)#\(rank)"
            }
            let key = GroupKey(topic: topic, group: groupName)
            let id = s.nextSubscriptionID
            s.nextSubscriptionID += 1
            if let existing = s.groups[key], existing.storage === target.binding {
                s.subscriptions[id] = (existing, owner)
                return (existing, false, id)
            }
            let made = ConsumerGroup(
                id: s.nextGroupID, topic: topic, name: groupName, policy: policy, filters: filters,
                storage: target.binding,
                stream: target.stream, clock: clock, metrics: metrics, tracing: tracing, publish: publish)
            s.nextGroupID += 1
            if let replaced = s.groups[key] { s.byTopic[topic]?.removeAll { $0 === replaced } }
            s.groups[key] = made
            s.byTopic[topic, default: []].append(made)
            s.byID[made.id] = made
            s.subscriptions[id] = (made, owner)
            return (made, true, id)
        }
        // No queue or thread of its own: the member is pinned to one pool loop, which keeps its deliveries in order.
        consumerGroup.join(
            ConsumerGroup.Member(
                id: id, owner: owner, ownerName: ownerName, loop: KernelPool.next(), gate: CallGate(), deliver: deliver)
        )
        if created { consumerGroup.initialize(start: spec.start_position, startOffset: spec.start_offset) }
        return id
    }

    /// Ends a subscription: no delivery to it runs or starts after this returns (unless called from one);
    /// its unacknowledged events go to the group's other members.
    ///
    /// Waits for a delivery in progress unless `wait` is false or the caller runs on the member's loop: then
    /// no delivery to it is running, or the caller is that delivery. Never waits on an event loop future.
    func unsubscribe(_ id: UInt64, owner: ObjectIdentifier, wait: Bool = true) -> Bool {
        guard
            let entry = state.withLock({ s -> (group: ConsumerGroup, owner: ObjectIdentifier)? in
                guard s.subscriptions[id]?.owner == owner else { return nil }
                return s.subscriptions.removeValue(forKey: id)
            })
        else { return false }
        if let member = entry.group.leave(id) {
            member.gate.close()
            if wait && !member.loop.inEventLoop { member.gate.waitUntilIdle() }
        }
        return true
    }

    func unsubscribeAll(owner: ObjectIdentifier, wait: Bool) {
        let ids = state.withLock { s in
            s.closedOwners.insert(owner)
            return s.subscriptions.filter { $0.value.owner == owner }.map(\.key)
        }
        for id in ids { _ = unsubscribe(id, owner: owner, wait: wait) }
    }

    /// Whether a delivery id was made by this engine (the group id sits in its top bits).
    static func owns(_ deliveryID: UInt64) -> Bool { deliveryID >> 40 != 0 }

    func ack(_ deliveryID: UInt64, owner: ObjectIdentifier) -> Bool {
        state.withLock { $0.byID[deliveryID >> 40] }?.ack(deliveryID, owner: owner) ?? false
    }

    func nack(_ deliveryID: UInt64, owner: ObjectIdentifier, deadLetter: Bool, reason: String) -> Bool {
        state.withLock { $0.byID[deliveryID >> 40] }?.nack(
            deliveryID, owner: owner, deadLetter: deadLetter, reason: reason) ?? false
    }

    func notify(topic: String) {
        let groups = state.withLock { $0.byTopic[topic] ?? [] }
        for group in groups { group.notify() }
    }

    /// Every consumer group of the node, by topic and group name.
    func allGroups() -> [GroupKey: ConsumerGroup] { state.withLock { $0.groups } }

    /// Closes and forgets one group that has no members (the admin API's reset and delete): a later
    /// subscription makes a new one, which starts from the offset the storage then holds.
    /// - Returns: `false` when the group has members (nothing changed).
    func removeIdleGroup(_ key: GroupKey) -> Bool {
        let removed = state.withLock { s -> ConsumerGroup?? in
            guard let group = s.groups[key] else { return .some(nil) }
            guard group.isEmpty else { return nil }
            s.groups[key] = nil
            s.byTopic[key.topic]?.removeAll { $0 === group }
            if s.byTopic[key.topic]?.isEmpty == true { s.byTopic[key.topic] = nil }
            s.byID[group.id] = nil
            return .some(group)
        }
        guard let removed else { return false }
        removed?.close()
        return true
    }

    /// Every group reading from `binding` exchanges the read batches it holds for copies (`detachBatches`).
    func detachGroups(on binding: StorageBinding) {
        let groups = state.withLock { s in s.groups.values.filter { $0.storage === binding } }
        for group in groups { group.detachBatches() }
    }

    /// Moves every group reading from `old` to `new`, each to the stream that replaced its own (a group whose
    /// stream was not reopened stops).
    func rebindGroups(from old: StorageBinding, to new: StorageBinding, streams: [UInt: StorageBinding.Stream]) {
        let groups = state.withLock { s in s.groups.values.filter { $0.storage === old } }
        for group in groups {
            if let stream = streams[UInt(bitPattern: group.bound.stream.pointer)] {
                group.rebind(to: new, stream: stream)
            }
        }
        // A group whose stream was not reopened still reads from `old`: it stops like any group of a storage
        // that went away.
        closeGroups(on: old)
    }

    /// Stops every group reading from a storage plugin that is going away.
    func closeGroups(on binding: StorageBinding) {
        let closing = state.withLock { s -> [ConsumerGroup] in
            let mine = s.groups.filter { $0.value.storage === binding }
            for (key, group) in mine {
                s.groups[key] = nil
                s.byTopic[key.topic]?.removeAll { $0 === group }
                if s.byTopic[key.topic]?.isEmpty == true { s.byTopic[key.topic] = nil }
            }
            return Array(mine.values)
        }
        for group in closing { group.close() }
    }
}
