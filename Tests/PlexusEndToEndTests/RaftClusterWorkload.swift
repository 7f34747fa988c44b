import Foundation
import PlexusClient
import PlexusCore
import Synchronization

/// Every id a workload sent and every offset a node acknowledged, kept as the acknowledgements arrive (also
/// the late ones, after the publisher stopped waiting).
final class PublishLedger: Sendable {
    private struct State {
        var published: Set<String> = []
        /// The node each id was sent to.
        var sentVia: [String: String] = [:]
        var acknowledged: [String: UInt64] = [:]
        var acknowledgedVia: [String: Int] = [:]
        var failures: [String: Int] = [:]
        var timeouts = 0
    }

    private let state = Mutex(State())

    /// Records ids about to be sent to `node`: from now on they may turn up in a log.
    func sending(_ ids: [String], via node: String) {
        state.withLock { state in
            state.published.formUnion(ids)
            for id in ids { state.sentVia[id] = node }
        }
    }

    /// Records a batch acknowledged by `node` with the offset of its first event.
    func acknowledged(_ ids: [String], first: UInt64, via node: String) {
        state.withLock { state in
            for (i, id) in ids.enumerated() { state.acknowledged[id] = first + UInt64(i) }
            state.acknowledgedVia[node, default: 0] += ids.count
        }
    }

    func failed(_ reason: String) { state.withLock { $0.failures[reason, default: 0] += 1 } }
    func timedOut() { state.withLock { $0.timeouts += 1 } }

    var sentCount: Int { state.withLock { $0.published.count } }
    /// Batches whose publisher stopped waiting for an answer.
    var timeoutCount: Int { state.withLock { $0.timeouts } }
    var acknowledgedCount: Int { state.withLock { $0.acknowledged.count } }
    /// Events acknowledged through each node's clients.
    var acknowledgedVia: [String: Int] { state.withLock { $0.acknowledgedVia } }

    var snapshot: LedgerSnapshot {
        state.withLock { LedgerSnapshot(published: $0.published, acknowledged: $0.acknowledged) }
    }

    /// Only what was sent to `node` (for nodes that do not replicate: each one's log holds just that).
    func snapshot(via node: String) -> LedgerSnapshot {
        state.withLock { state in
            let ids = Set(state.published.filter { state.sentVia[$0] == node })
            return LedgerSnapshot(published: ids, acknowledged: state.acknowledged.filter { ids.contains($0.key) })
        }
    }

    var summary: String {
        state.withLock { state in
            "\(state.published.count) events sent, \(state.acknowledged.count) acknowledged "
                + "(by node: \(state.acknowledgedVia.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", "))), "
                + "\(state.timeouts) batches timed out, failures: "
                + (state.failures.isEmpty
                    ? "none"
                    : state.failures.sorted { $0.key < $1.key }.map { "\($0.value)× \($0.key)" }.joined(separator: "; "))
        }
    }
}

/// Publishers with acknowledgements against the nodes of a cluster, bounded in events and time.
///
/// Each publisher is connected to one node (publishers are spread over the nodes; followers forward to the
/// leader) and sends batches of 1…`maxBatch` events with ids unique to the run, waiting for each batch's
/// acknowledgement (up to `publishTimeout`) before the next. Errors and timeouts are expected while faults
/// are injected: they are counted, and what they leave unacknowledged is only `published` in the ledger. A
/// client whose node went away reconnects with backoff.
final class ClusterWorkload: Sendable {
    struct Configuration: Sendable {
        var topic = "faults"
        var publishersPerNode = 2
        var maxBatch = 3
        /// Events sent by all publishers together, at most.
        var maxEvents = 20_000
        /// The publishers stop after this long even if nobody stops them.
        var duration: Duration = .seconds(60)
        var publishTimeout: Duration = .seconds(3)
        /// Payload bytes per event.
        var dataBytes = 64
        /// How long each publisher waits after an answered batch before the next (zero: at once).
        var pace: Duration = .zero
    }

    enum Outcome: Sendable {
        case acknowledged
        case failed(PlexusClientError)
        case timedOut
    }

    let ledger = PublishLedger()
    let configuration: Configuration
    private let stopping = Atomic<Bool>(false)
    private let running = Mutex<Task<Void, Never>?>(nil)

    /// Starts publishing to the nodes' TCP ports (node id → port).
    init(ports: [String: Int], configuration: Configuration = Configuration()) {
        self.configuration = configuration
        let assignments = ports.sorted { $0.key < $1.key }.flatMap { node in
            (0..<configuration.publishersPerNode).map { _ in node }
        }
        let task = Task { [self] in
            await withTaskGroup(of: Void.self) { group in
                for (number, assignment) in assignments.enumerated() {
                    group.addTask { await self.publish(as: number, to: assignment.key, port: assignment.value) }
                }
            }
        }
        running.withLock { $0 = task }
    }

    /// Waits until at least `count` events are acknowledged; false if `timeout` passes first.
    func waitForAcknowledged(_ count: Int, timeout: Duration) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ledger.acknowledgedCount < count {
            if ContinuousClock.now > deadline { return false }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return true
    }

    /// Waits until `more` events beyond those acknowledged now are acknowledged; false on timeout.
    func waitForProgress(_ more: Int, timeout: Duration) async -> Bool {
        await waitForAcknowledged(ledger.acknowledgedCount + more, timeout: timeout)
    }

    /// Stops the publishers and waits for them (each answers or gives up its batch in flight first).
    func stop() async {
        stopping.store(true, ordering: .relaxed)
        await running.withLock { $0 }?.value
    }

    private var shouldStop: Bool {
        stopping.load(ordering: .relaxed) || ledger.sentCount >= configuration.maxEvents
    }

    private func publish(as number: Int, to node: String, port: Int) async {
        let deadline = ContinuousClock.now + configuration.duration
        var client: PlexusClient?
        var sequence = 0
        while !shouldStop && ContinuousClock.now < deadline {
            guard let connected = client else {
                client = try? await PlexusClient.connect(
                    ClientConfiguration(
                        port: port, name: "fault-publisher-\(number)", connectTimeout: .seconds(1),
                        reconnect: true, reconnectDelay: .milliseconds(50), reconnectMaxDelay: .milliseconds(500)))
                if client == nil { try? await Task.sleep(for: .milliseconds(100)) }
                continue
            }
            let batch = (0..<(1 + sequence % configuration.maxBatch)).map { i in
                CloudEvent(
                    id: "p\(number)-\(sequence)-\(i)", source: "/faults/\(node)", type: "io.plexus.fault",
                    extensions: [("publisher", "\(number)")],
                    data: Array(
                        String(repeating: "\(number).\(sequence).\(i)|", count: 16).utf8.prefix(configuration.dataBytes)
                    ))
            }
            sequence += 1
            switch await publish(batch, with: connected, via: node) {
            case .acknowledged, .timedOut:
                if configuration.pace > .zero { try? await Task.sleep(for: configuration.pace) }
            case .failed:
                try? await Task.sleep(for: max(configuration.pace, .milliseconds(50)))
            }
        }
        await client?.close(timeout: .seconds(2))
    }

    /// Publishes one batch and waits for its answer up to `publishTimeout`. An acknowledgement that arrives
    /// later is still recorded in the ledger.
    func publish(_ batch: [CloudEvent], with client: PlexusClient, via node: String) async -> Outcome {
        let ids = batch.map(\.id)
        ledger.sending(ids, via: node)
        let waiter = OnceContinuation()
        let timeout = configuration.publishTimeout
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Outcome, Never>) in
            waiter.set(continuation)
            client.publish(topic: configuration.topic, batch) { [ledger] result in
                switch result {
                case .success(let first):
                    ledger.acknowledged(ids, first: first, via: node)
                    waiter.resume(.acknowledged)
                case .failure(let error):
                    ledger.failed("\(error.code)\(error.status.map { " status \($0)" } ?? "")")
                    waiter.resume(.failed(error))
                }
            }
            waiter.arm(timeout: timeout)
        }
        if case .timedOut = outcome { ledger.timedOut() }
        return outcome
    }
}

/// A continuation resumed once, by the answer or by a timer, whichever comes first.
private final class OnceContinuation: Sendable {
    private let state = Mutex<
        (continuation: CheckedContinuation<ClusterWorkload.Outcome, Never>?, timer: Task<Void, Never>?)
    >((nil, nil))

    func set(_ continuation: CheckedContinuation<ClusterWorkload.Outcome, Never>) {
        state.withLock { $0.continuation = continuation }
    }

    func arm(timeout: Duration) {
        let timer = Task { [self] in
            try? await Task.sleep(for: timeout)
            if !Task.isCancelled { resume(.timedOut) }
        }
        let answered = state.withLock { state in
            state.timer = timer
            return state.continuation == nil
        }
        if answered { timer.cancel() }
    }

    func resume(_ outcome: ClusterWorkload.Outcome) {
        let (continuation, timer) = state.withLock { state in
            defer { state = (nil, nil) }
            return state
        }
        timer?.cancel()
        continuation?.resume(returning: outcome)
    }
}
