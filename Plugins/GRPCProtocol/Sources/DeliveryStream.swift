import PlexusPluginSDK
import Synchronization

/// The deliveries of one streaming subscribe call on their way from kernel threads to the call's writer.
///
/// Deliveries are buffered in an `AsyncStream`; the buffer is bounded by the subscriptions' credits (the
/// kernel's `max_in_flight`), because the kernel sends no more than that many unacknowledged deliveries. Until
/// `open` queues the call's first response, deliveries are held back, so that the client never sees an
/// event before the answer to its subscription. Only deliveries sent on this call may be settled on it.
final class DeliveryStream<Message: Sendable>: Sendable {
    let messages: AsyncStream<Message>
    private let continuation: AsyncStream<Message>.Continuation
    private let state = Mutex<State>(State())

    private struct State {
        var open = false
        var finished = false
        var held: [Message] = []
        var inFlight: Set<UInt64> = []
        var subscriptions: [(topic: String, subscription: Subscription)] = []
    }

    init() {
        (messages, continuation) = AsyncStream.makeStream()
    }

    /// Queues one delivery (kernel threads); `false` when the call has ended (the kernel redelivers it once
    /// the subscription ends).
    @discardableResult
    func deliver(_ deliveryID: UInt64, _ message: Message) -> Bool {
        state.withLock { state in
            guard !state.finished else { return false }
            state.inFlight.insert(deliveryID)
            if state.open {
                continuation.yield(message)
            } else {
                state.held.append(message)
            }
            return true
        }
    }

    /// Queues `first`, then the deliveries held back, and stops holding them back.
    func open(first: Message?) {
        state.withLock { state in
            guard !state.finished else { return }
            if let first { continuation.yield(first) }
            for message in state.held { continuation.yield(message) }
            state.held.removeAll()
            state.open = true
        }
    }

    /// Queues a message that is not a delivery (a response to a client's request on the stream).
    func send(_ message: Message) {
        state.withLock { state in
            guard !state.finished else { return }
            continuation.yield(message)
        }
    }

    /// Takes a delivery out of the in-flight set; `false` when it was not in flight on this call.
    func settle(_ deliveryID: UInt64) -> Bool {
        state.withLock { $0.inFlight.remove(deliveryID) != nil }
    }

    /// Records a subscription made for this call.
    func add(_ subscription: Subscription, topic: String) {
        state.withLock { $0.subscriptions.append((topic, subscription)) }
    }

    /// Takes the subscriptions to `topics` out of the call (to end them).
    func remove(topics: Set<String>) -> [Subscription] {
        state.withLock { state in
            let ending = state.subscriptions.filter { topics.contains($0.topic) }.map(\.subscription)
            state.subscriptions.removeAll { topics.contains($0.topic) }
            return ending
        }
    }

    /// The topics subscribed on this call.
    var topics: [String] { state.withLock { $0.subscriptions.map(\.topic) } }

    /// Ends the stream of messages and drops later deliveries, keeping the subscriptions for `finish`.
    func endMessages() {
        state.withLock { state in
            state.finished = true
            continuation.finish()
        }
    }

    /// Ends the stream; returns the subscriptions to end (their unacknowledged deliveries go to other
    /// members once they are ended).
    func finish() -> [Subscription] {
        state.withLock { state in
            state.finished = true
            continuation.finish()
            defer { state.subscriptions.removeAll() }
            return state.subscriptions.map(\.subscription)
        }
    }
}

/// Publish acknowledgements of one publish stream, and the bound on events awaiting durability.
final class PublishWindow<Ack: Sendable>: Sendable {
    let acks: AsyncStream<Ack>
    private let continuation: AsyncStream<Ack>.Continuation
    private let limit: Int
    private let state = Mutex<State>(State())

    private struct State {
        var pending = 0
        var requests = 0
        var answered = 0
        var readerDone = false
        var waiter: CheckedContinuation<Bool, Never>?
        var cancelled = false
    }

    init(limit: Int) {
        self.limit = limit
        (acks, continuation) = AsyncStream.makeStream()
    }

    /// Waits until `count` more events fit under the bound (a batch larger than the bound waits until
    /// nothing else is pending), then counts them as pending.
    func reserve(_ count: Int) async {
        while true {
            let admitted: Bool = await withCheckedContinuation { (waiter: CheckedContinuation<Bool, Never>) in
                let admitted = state.withLock { state -> Bool in
                    if state.cancelled || state.pending == 0 || state.pending + count <= limit {
                        state.pending += count
                        state.requests += 1
                        return true
                    }
                    state.waiter = waiter
                    return false
                }
                if admitted { waiter.resume(returning: true) }
            }
            if admitted { return }
        }
    }

    /// Answers one request whose `count` events were reserved; any thread.
    func answer(_ ack: Ack, count: Int) {
        let (waiter, finish) = state.withLock { state -> (CheckedContinuation<Bool, Never>?, Bool) in
            state.pending -= count
            state.answered += 1
            continuation.yield(ack)
            let waiter = state.waiter
            state.waiter = nil
            return (waiter, state.readerDone && state.answered == state.requests)
        }
        waiter?.resume(returning: false)
        if finish { continuation.finish() }
    }

    /// Answers a request that reserved nothing (refused before it was published).
    func refuse(_ ack: Ack) {
        state.withLock { state in
            guard !state.readerDone else { return }
            continuation.yield(ack)
        }
    }

    /// The request stream ended: the acks end after the last answer.
    func readerFinished() {
        let finish = state.withLock { state -> Bool in
            state.readerDone = true
            return state.answered == state.requests
        }
        if finish { continuation.finish() }
    }

    /// The call ended early.
    func cancel() {
        let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
            state.cancelled = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: false)
        continuation.finish()
    }
}
