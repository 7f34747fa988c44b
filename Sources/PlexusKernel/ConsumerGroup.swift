import Foundation
import NIOCore
import PlexusABI
import PlexusCore
import Synchronization
import Tracing

/// One consumer group on one topic: reads the topic's stream from the group's committed offset, hands each
/// event to one member (clustering; a broadcast member is a group of its own), and carries out the delivery
/// contract (docs/delivery.md): acknowledgements, retries with backoff, timeouts, dead letters, ordering
/// per partition key, and a bound on unacknowledged events per member.
///
/// State lives under one lock. Plugin code (deliveries) and storage calls run outside it: `plan` decides
/// under the lock, `run` acts after it is released, so a storage completion or an ack that arrives on the
/// same thread cannot deadlock.
final class ConsumerGroup: Sendable {
    struct Member: Sendable {
        let id: UInt64
        let owner: ObjectIdentifier
        /// The subscribing plugin's name (spans' attributes, the admin API's member list).
        let ownerName: String
        /// The pool loop this member's deliveries run on, in order (docs/abi.md, "Threading").
        let loop: any EventLoop
        /// Closed when the member leaves; `unsubscribe` waits on it for a delivery in progress.
        let gate: CallGate
        let deliver: @Sendable (UnsafePointer<px_delivery>) -> Void
        var inFlight = 0
    }

    /// An event read but not yet done: where it lies in its read batch (kept alive by this reference until
    /// the event is settled), and how far its delivery got.
    struct Pending: Sendable {
        var offset: UInt64
        var batch: RecordBatch
        var index: Int
        var attempt: UInt32
        var key: String?
        var lastError = ""

        /// The record as the storage lent it (or the kernel's one copy of it).
        var record: UnsafePointer<px_record> { batch.record(at: index) }
    }

    struct Flight: Sendable {
        var pending: Pending
        var member: UInt64
        /// When the attempt times out (clock nanoseconds).
        var deadline: UInt64
    }

    enum Action: Sendable {
        case read(from: UInt64, max: Int)
        case deliver(member: Member, deliveryID: UInt64, pending: Pending)
        case commit(UInt64)
        case deadLetter(Pending, reason: String)
        /// Wake up at this time to time out unanswered deliveries (one timer per group, not per delivery).
        case sweep(at: UInt64)
    }

    struct State: Sendable {
        var initialized = false
        var readOffset: UInt64 = 0
        var reading = false
        var ready: [Pending] = []
        var inFlight: [UInt64: Flight] = [:]
        var retrying: [UInt64: Pending] = [:]
        var deadLettering = 0
        var done = Set<UInt64>()
        var committed: UInt64 = 0
        var lastCommitted: UInt64 = 0
        var committing = false
        var keyHolder: [String: UInt64] = [:]
        var members: [UInt64: Member] = [:]
        var rotation: [UInt64] = []
        var nextMember = 0
        var nextSequence: UInt64 = 1
        var closed = false
        /// The earliest time a timeout sweep is scheduled for, if any.
        var sweepAt: UInt64?
    }

    /// Events a group holds in memory at most (read but not yet done).
    static let maxBuffered = 1024
    static let readBatch = 256

    let id: UInt64
    let topic: String
    let name: String
    let policy: DeliveryPolicy
    let filters: [(AttributeKey, [UInt8])]
    /// The storage and stream the group reads and commits to; both change when the storage is replaced on a
    /// running node (`rebind`).
    private let target: Mutex<(storage: StorageBinding, stream: StorageBinding.Stream)>
    var storage: StorageBinding { target.withLock { $0.storage } }
    /// The storage and stream, read together (a rebind between two separate reads would mix them).
    var bound: (storage: StorageBinding, stream: StorageBinding.Stream) { target.withLock { $0 } }
    let clock: any DeliveryClock
    /// This group's metric handles (labels `topic` and `group`).
    let metrics: GroupMetrics
    let tracing: KernelTracing
    /// The `deliver` span of each delivery of a traced event, until it is settled (only with tracing on).
    private let spans = Mutex<[UInt64: any Span]>([:])
    /// Publishes dead letters (through the router).
    let publish:
        @Sendable (String, [CloudEvent], @escaping @Sendable (Result<UInt64, StorageBinding.Failure>) -> Void) -> Void
    let state = Mutex(State())
    /// The pool loop the group's own passes (`schedulePump`) run on.
    let loop: any EventLoop = KernelPool.next()
    private let pumpScheduled = Atomic<Bool>(false)

    init(
        id: UInt64, topic: String, name: String, policy: DeliveryPolicy, filters: [(String, String)],
        storage: StorageBinding, stream: StorageBinding.Stream, clock: any DeliveryClock, metrics: MetricsRegistry,
        tracing: KernelTracing = .off,
        publish:
            @escaping @Sendable (
                String, [CloudEvent], @escaping @Sendable (Result<UInt64, StorageBinding.Failure>) -> Void
            ) -> Void
    ) {
        self.id = id
        self.topic = topic
        self.name = name
        self.policy = policy
        self.filters = filters.map { (AttributeKey($0.0), Array($0.1.utf8)) }
        self.target = Mutex((storage, stream))
        self.clock = clock
        self.metrics = GroupMetrics(metrics, topic: topic, group: name)
        self.tracing = tracing
        self.publish = publish
    }

    // MARK: Starting

    /// Finds where the group starts: its committed offset, or else the subscription's start position.
    /// While the storage is being replaced (`PX_ERR_UNAVAILABLE`), it asks again 100 ms later rather than
    /// start from a guess.
    func initialize(start: UInt32, startOffset: UInt64) {
        let (storage, stream) = bound
        storage.fetchOffset(stream, group: name) { result in
            let again: @Sendable () -> Void = { [weak self] in
                guard let self, !self.state.withLock({ $0.closed }) else { return }
                self.clock.schedule(at: self.clock.now() &+ 100_000_000) { [weak self] in
                    self?.initialize(start: start, startOffset: startOffset)
                }
            }
            if case .failure(let failure) = result, failure.status == PX_ERR_UNAVAILABLE.status { return again() }
            var position: UInt64 = 0
            switch result {
            case .success(let committed?):
                position = committed
            case .success(nil), .failure:
                let (storage, stream) = self.bound
                let extent: (first: UInt64, next: UInt64)
                do {
                    extent = try storage.info(stream)
                } catch let failure as StorageBinding.Failure where failure.status == PX_ERR_UNAVAILABLE.status {
                    return again()
                } catch {
                    extent = (0, 0)
                }
                switch start {
                case UInt32(PX_START_EARLIEST.rawValue): position = extent.first
                case UInt32(PX_START_OFFSET.rawValue): position = max(startOffset, extent.first)
                default: position = extent.next
                }
            }
            self.state.withLock { s in
                s.initialized = true
                s.readOffset = position
                s.committed = position
                s.lastCommitted = position
            }
            self.pump()
        }
    }

    // MARK: Members

    func join(_ member: Member) {
        state.withLock { s in
            s.members[member.id] = member
            s.rotation.append(member.id)
        }
        pump()
    }

    /// Removes a member; its unacknowledged events go back to be delivered to others.
    func leave(_ memberID: UInt64) -> Member? {
        var returned: [UInt64] = []
        let member = state.withLock { s -> Member? in
            guard let member = s.members.removeValue(forKey: memberID) else { return nil }
            s.rotation.removeAll { $0 == memberID }
            for (deliveryID, flight) in s.inFlight where flight.member == memberID {
                s.inFlight[deliveryID] = nil
                var pending = flight.pending
                pending.attempt += 1
                Self.requeue(&s, pending)
                returned.append(deliveryID)
            }
            return member
        }
        if tracing.tracer != nil {
            for deliveryID in returned { endSpan(deliveryID, outcome: "returned", error: "the member left") }
        }
        pump()
        return member
    }

    var isEmpty: Bool { state.withLock { $0.members.isEmpty } }

    // MARK: Acknowledgements

    /// Settles a delivery positively; false when the id is unknown (already settled, timed out) or the
    /// delivery was made to another plugin.
    func ack(_ deliveryID: UInt64, owner: ObjectIdentifier) -> Bool {
        let deliveredAt = state.withLock { s -> UInt64? in
            guard let flight = s.inFlight[deliveryID], s.members[flight.member]?.owner == owner else { return nil }
            s.inFlight[deliveryID] = nil
            s.members[flight.member]?.inFlight -= 1
            Self.finish(&s, flight.pending)
            return flight.deadline &- policy.timeout
        }
        guard let deliveredAt else { return false }
        if tracing.tracer != nil { endSpan(deliveryID, outcome: "ack", error: nil) }
        metrics.acked.increment()
        metrics.ackSeconds.record(Double(clock.now() &- deliveredAt) / 1e9)
        schedulePump()
        return true
    }

    /// Settles a delivery negatively: a retry after backoff, or dead-lettering.
    func nack(_ deliveryID: UInt64, owner: ObjectIdentifier?, deadLetter: Bool, reason: String) -> Bool {
        var actions: [Action] = []
        var outcome = "nack"
        let settled = state.withLock { s -> Bool in
            guard let flight = s.inFlight[deliveryID] else { return false }
            if let owner, s.members[flight.member]?.owner != owner { return false }
            s.inFlight[deliveryID] = nil
            s.members[flight.member]?.inFlight -= 1
            var pending = flight.pending
            pending.lastError = reason
            if deadLetter || pending.attempt > policy.retry {
                outcome = policy.deadLetterTopic == nil ? "dropped" : "dead-letter"
                s.deadLettering += 1
                actions.append(
                    .deadLetter(
                        pending,
                        reason: deadLetter
                            ? "rejected: \(reason)" : "gave up after \(pending.attempt) attempts: \(reason)"))
            } else {
                let due = clock.now() &+ policy.delay(afterAttempt: pending.attempt)
                pending.attempt += 1
                s.retrying[pending.offset] = pending
                let offset = pending.offset
                clock.schedule(at: due) { [weak self] in self?.retryDue(offset) }
            }
            return true
        }
        if settled { (deadLetter ? metrics.rejected : metrics.nacked).increment() }
        if settled, tracing.tracer != nil { endSpan(deliveryID, outcome: outcome, error: reason) }
        run(actions)
        if settled { pump() }
        return settled
    }

    private func retryDue(_ offset: UInt64) {
        state.withLock { s in
            guard let pending = s.retrying.removeValue(forKey: offset) else { return }
            Self.requeue(&s, pending)
        }
        metrics.redeliveries.increment()
        pump()
    }

    /// Times out every delivery whose deadline passed, then schedules the next sweep for the earliest one
    /// left. A sweep that was superseded by an earlier one still runs; it only finds less to do.
    private func sweep(scheduledAt: UInt64) {
        let now = clock.now()
        let (expired, next) = state.withLock { s -> ([UInt64], UInt64?) in
            if s.sweepAt == scheduledAt { s.sweepAt = nil }
            let expired = s.inFlight.filter { $0.value.deadline <= now }.map(\.key)
            let remaining = s.inFlight.values.filter { $0.deadline > now }.map(\.deadline).min()
            guard let remaining, s.sweepAt.map({ remaining < $0 }) ?? true else { return (expired, nil) }
            s.sweepAt = remaining
            return (expired, remaining)
        }
        for deliveryID in expired.sorted() { timedOut(deliveryID) }
        if let next { clock.schedule(at: next) { [weak self] in self?.sweep(scheduledAt: next) } }
    }

    private func timedOut(_ deliveryID: UInt64) {
        let seconds = Double(policy.timeout) / 1e9
        if nack(deliveryID, owner: nil, deadLetter: false, reason: "not acknowledged within \(seconds) s") {
            metrics.timeouts.increment()
        }
    }

    // MARK: The loop

    /// New events may be in the stream.
    func notify() { schedulePump() }

    /// Runs `pump` soon on the group's own pool loop. Requests made before it runs share one pass, so a burst
    /// of acknowledgements or publishes costs one plan, and publishers and subscribers do not take turns on
    /// the group's lock.
    func schedulePump() {
        guard !pumpScheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        loop.execute { [self] in
            pumpScheduled.store(false, ordering: .releasing)
            pump()
        }
    }

    /// Stops the group and lets go of every event it holds, so the storage's lent read batches are released
    /// (the storage is going away).
    func close() {
        state.withLock { s in
            s.closed = true
            s.ready = []
            s.inFlight = [:]
            s.retrying = [:]
        }
        if tracing.tracer != nil {
            for deliveryID in spans.withLock({ Array($0.keys) }) {
                endSpan(deliveryID, outcome: "closed", error: "the storage is going away")
            }
        }
    }

    /// Lets go of what the group holds of a storage that is being replaced: every read batch the storage lent
    /// is exchanged for a copy the kernel owns, so the old instance can stop while events stay in flight (their
    /// delivery ids, attempts and timeouts unchanged).
    func detachBatches() {
        state.withLock { s in
            var copies: [ObjectIdentifier: RecordBatch] = [:]
            func detach(_ pending: inout Pending) {
                let key = ObjectIdentifier(pending.batch)
                if let copy = copies[key] {
                    pending.batch = copy
                } else {
                    let copy = pending.batch.detached()
                    copies[key] = copy
                    pending.batch = copy
                }
            }
            for index in s.ready.indices { detach(&s.ready[index]) }
            for key in Array(s.inFlight.keys) { detach(&s.inFlight[key]!.pending) }
            for key in Array(s.retrying.keys) { detach(&s.retrying[key]!) }
        }
    }

    /// Reads and commits from now on go to `storage`'s `stream` (the instance that replaced the old one).
    func rebind(to storage: StorageBinding, stream: StorageBinding.Stream) {
        target.withLock { $0 = (storage, stream) }
        schedulePump()
    }

    func pump() {
        let actions = state.withLock { plan(&$0) }
        run(actions)
    }

    private func plan(_ s: inout State) -> [Action] {
        guard s.initialized, !s.closed else { return [] }
        var actions: [Action] = []
        let buffered = s.ready.count + s.inFlight.count + s.retrying.count + s.deadLettering
        if !s.reading && buffered < Self.maxBuffered {
            s.reading = true
            actions.append(.read(from: s.readOffset, max: min(Self.readBatch, Self.maxBuffered - buffered)))
        }
        // Events taken from the front of `ready` are removed in one step at the end (not one shift per event);
        // those skipped for a held key stay, in order.
        var index = 0
        var skipped: [Pending] = []
        defer { if index > 0 { s.ready.replaceSubrange(0..<index, with: skipped) } }
        while index < s.ready.count, !s.rotation.isEmpty {
            let pending = s.ready[index]
            if policy.ordered, let key = pending.key, let holder = s.keyHolder[key], holder != pending.offset {
                skipped.append(pending)
                index += 1
                continue
            }
            guard let member = nextMember(&s) else { break }
            index += 1
            if policy.ordered, let key = pending.key { s.keyHolder[key] = pending.offset }
            let deliveryID = (id << 40) | (s.nextSequence & 0xFF_FFFF_FFFF)
            s.nextSequence += 1
            let deadline = clock.now() &+ policy.timeout
            s.inFlight[deliveryID] = Flight(pending: pending, member: member.id, deadline: deadline)
            s.members[member.id]?.inFlight += 1
            actions.append(.deliver(member: member, deliveryID: deliveryID, pending: pending))
            if s.sweepAt.map({ deadline < $0 }) ?? true {
                s.sweepAt = deadline
                actions.append(.sweep(at: deadline))
            }
        }
        if s.committed > s.lastCommitted && !s.committing {
            s.committing = true
            actions.append(.commit(s.committed))
        }
        return actions
    }

    /// The next member with room for another unacknowledged event, round robin.
    private func nextMember(_ s: inout State) -> Member? {
        for _ in 0..<s.rotation.count {
            let candidate = s.rotation[s.nextMember % s.rotation.count]
            s.nextMember = (s.nextMember + 1) % s.rotation.count
            if let member = s.members[candidate], member.inFlight < policy.maxInFlight { return member }
        }
        return nil
    }

    private func run(_ actions: [Action]) {
        // Deliveries to one member go out in one hop to its loop, in plan order.
        var batches: [(member: Member, deliveries: [(UInt64, Pending)])] = []
        for case .deliver(let member, let deliveryID, let pending) in actions {
            if let index = batches.firstIndex(where: { $0.member.id == member.id }) {
                batches[index].deliveries.append((deliveryID, pending))
            } else {
                batches.append((member, [(deliveryID, pending)]))
            }
        }
        for (member, deliveries) in batches {
            member.loop.execute { [self] in
                // The member may have left, or a delivery timed out, while this waited.
                guard member.gate.enter() else { return }
                defer { member.gate.exit() }
                let current = state.withLock { s in
                    deliveries.filter { s.inFlight[$0.0]?.member == member.id }
                }
                deliver(current, to: member)
            }
        }
        for action in actions {
            switch action {
            case .read(let from, let max):
                let (storage, stream) = bound
                storage.read(stream, from: from, maxRecords: max, maxBytes: 4 << 20) { [self] result in
                    received(result, from: from)
                }
            case .deliver:
                break
            case .commit(let offset):
                let (storage, stream) = bound
                storage.commitOffset(stream, group: name, offset: offset) { [self] result in
                    state.withLock { s in
                        s.committing = false
                        if case .success = result { s.lastCommitted = max(s.lastCommitted, offset) }
                    }
                    if case .success = result { updateLag(committed: offset) }
                    if case .failure(let failure) = result {
                        metrics.offsetCommitFailures.increment()
                        clock.schedule(at: clock.now() &+ 100_000_000) { [weak self] in self?.pump() }
                        _ = failure
                    } else {
                        pump()
                    }
                }
            case .deadLetter(let pending, let reason):
                deadLetter(pending, reason: reason)
            case .sweep(let at):
                clock.schedule(at: at) { [weak self] in self?.sweep(scheduledAt: at) }
            }
        }
    }

    /// Sets `plexus_group_lag`: the stream's next offset minus the group's committed offset.
    private func updateLag(committed: UInt64? = nil) {
        // A closed group's stream is being closed: ask the storage nothing more about it.
        let (storage, stream) = bound
        guard let known = state.withLock({ s in s.closed ? nil : s.committed }),
            let extent = try? storage.info(stream)
        else { return }
        let offset = committed ?? known
        metrics.lag.set(Double(extent.next > offset ? extent.next - offset : 0))
    }

    private func received(_ result: Result<RecordBatch, StorageBinding.Failure>, from: UInt64) {
        switch result {
        case .success(let batch):
            defer { updateLag() }
            state.withLock { s in
                s.reading = false
                for index in 0..<batch.count {
                    let record = batch.record(at: index)
                    let offset = record.pointee.offset
                    guard offset >= s.readOffset, let event = record.pointee.event else { continue }
                    let key =
                        policy.ordered
                        ? EventCheck.attribute(event, Self.partitionKey).map { String(decoding: $0, as: UTF8.self) }
                        : nil
                    let pending = Pending(offset: offset, batch: batch, index: index, attempt: 1, key: key)
                    if filters.allSatisfy({ EventCheck.attribute(event, $0.0)?.elementsEqual($0.1) == true }) {
                        s.ready.append(pending)
                    } else {
                        Self.finish(&s, pending)
                    }
                }
                s.readOffset = max(s.readOffset, batch.nextOffset)
            }
            if batch.count > 0 { pump() }
        case .failure(let failure):
            let (storage, stream) = bound
            if failure.status == PX_ERR_OUT_OF_RANGE.status, let extent = try? storage.info(stream), from < extent.first
            {
                // Trimmed away under us: what is gone cannot be delivered; go on from the first retained.
                metrics.skippedTrimmed.increment(by: extent.first - from)
                state.withLock { s in
                    s.reading = false
                    s.readOffset = extent.first
                    if s.committed < extent.first {
                        s.committed = extent.first
                        s.done = s.done.filter { $0 >= extent.first }
                    }
                }
                pump()
            } else {
                metrics.readFailures.increment()
                state.withLock { $0.reading = false }
                clock.schedule(at: clock.now() &+ 100_000_000) { [weak self] in self?.pump() }
            }
        }
    }

    /// Hands deliveries to a member, in order: each record as its read batch holds it, not rebuilt.
    private func deliver(_ deliveries: [(UInt64, Pending)], to member: Member) {
        guard !deliveries.isEmpty else { return }
        metrics.delivered.increment(by: UInt64(deliveries.count))
        let subscription = member.id
        withPXStr(topic) { topicStr in
            for (deliveryID, pending) in deliveries {
                // Unsubscribed from inside an earlier delivery of this batch: the rest go to other members.
                if member.gate.isClosed { return }
                withExtendedLifetime(pending.batch) {
                    // The span is kept before the plugin is called: it may acknowledge from inside the call.
                    if tracing.tracer != nil,
                        let span = tracing.delivering(
                            pending.record, topic: topic, group: name, attempt: pending.attempt,
                            consumer: member.ownerName, storage: storage.name)
                    {
                        spans.withLock { $0[deliveryID] = span }
                    }
                    var delivery = px_delivery(
                        struct_size: UInt32(MemoryLayout<px_delivery>.size), attempt: pending.attempt,
                        delivery_id: deliveryID, subscription_id: subscription, topic: topicStr,
                        record: pending.record)
                    withUnsafePointer(to: &delivery) { member.deliver($0) }
                }
            }
        }
    }

    /// Ends a delivery's `deliver` span, if it has one: status ok for an acknowledgement, else error with the
    /// reason (a nack, a timeout, a dead letter, a member that left).
    private func endSpan(_ deliveryID: UInt64, outcome: String, error: String?) {
        guard let span = spans.withLock({ $0.removeValue(forKey: deliveryID) }) else { return }
        span.attributes[KernelTracing.Attribute.outcome] = outcome
        if let error {
            span.attributes[KernelTracing.Attribute.error] = error
            if outcome == "dead-letter", let target = policy.deadLetterTopic {
                span.attributes[KernelTracing.Attribute.deadLetterTopic] = target
            }
            span.setStatus(SpanStatus(code: .error, message: error))
        } else {
            span.setStatus(SpanStatus(code: .ok))
        }
        span.end()
    }

    private func deadLetter(_ pending: Pending, reason: String) {
        guard let target = policy.deadLetterTopic else {
            metrics.droppedAfterRetries.increment()
            state.withLock { s in
                s.deadLettering -= 1
                Self.finish(&s, pending)
            }
            pump()
            return
        }
        var event = CloudEvent(copying: pending.record.pointee.event!)
        event.extensions.removeAll { Self.deadLetterExtensions.contains($0.key) }
        event.extensions += [
            ("deadletterreason", reason), ("deadletterattempts", String(pending.attempt)),
            ("deadlettertopic", topic), ("deadlettergroup", name), ("deadletteroffset", String(pending.offset)),
        ]
        publish(target, [event]) { [self] result in
            switch result {
            case .success:
                metrics.deadLettered.increment()
                state.withLock { s in
                    s.deadLettering -= 1
                    Self.finish(&s, pending)
                }
                pump()
            case .failure:
                // The event is not lost: try the dead-letter topic again later.
                metrics.deadLetterFailures.increment()
                clock.schedule(at: clock.now() &+ policy.backoffDelay) { [weak self] in
                    self?.deadLetter(pending, reason: reason)
                }
            }
        }
    }

    static let partitionKey = AttributeKey(PX_EXTENSION_PARTITION_KEY)

    static let deadLetterExtensions: Set<String> = [
        "deadletterreason", "deadletterattempts", "deadlettertopic", "deadlettergroup", "deadletteroffset",
    ]

    // MARK: Bookkeeping

    /// Puts an event back to be delivered, in offset order.
    private static func requeue(_ s: inout State, _ pending: Pending) {
        let index = s.ready.firstIndex { $0.offset > pending.offset } ?? s.ready.endIndex
        s.ready.insert(pending, at: index)
    }

    /// An event is done (acknowledged, filtered out or dead-lettered): release its key and advance the
    /// committed offset over every done offset in a row.
    private static func finish(_ s: inout State, _ pending: Pending) {
        if let key = pending.key, s.keyHolder[key] == pending.offset { s.keyHolder[key] = nil }
        if pending.offset == s.committed {
            s.committed += 1
            while s.done.remove(s.committed) != nil { s.committed += 1 }
        } else if pending.offset > s.committed {
            s.done.insert(pending.offset)
        }
    }
}
