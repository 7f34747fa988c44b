import Foundation
import PlexusBench
import PlexusClient
import PlexusCore
import Synchronization

/// A light, steady write load for the failover test: one publish every `1 / rate` seconds through one client
/// connection, at most `window` unacknowledged, on a thread of its own. It can move to another node between
/// kills and tells when the first write sent at or after a given instant is acknowledged.
public final class PacedWriter: Sendable {
    private struct State {
        var client: PlexusClient?
        var nodeID: String?
        var outstanding = 0
        var acknowledged: UInt64 = 0
        var failed: UInt64 = 0
        var lastError: String?
        /// Writes sent at or after this instant are watched; the first one acknowledged sets `firstAck`.
        var watchFrom: UInt64?
        var firstAck: UInt64?
        var stopped = false
    }

    private let state = Mutex(State())
    private let topic: String
    private let payload: [UInt8]
    private let interval: UInt64
    private let window: Int
    private let finished = Atomic<Bool>(false)

    /// Starts the writer thread; it sends nothing until ``connect(to:port:)``.
    public init(topic: String, payload: [UInt8], rate: Double, window: Int = 64) {
        self.topic = topic
        self.payload = payload
        self.interval = UInt64(1e9 / max(1, rate))
        self.window = max(1, window)
        let thread = Thread { [self] in loop() }
        thread.name = "plexus-bench-raft-writer"
        thread.start()
    }

    /// The node the writer sends to.
    public var nodeID: String? { state.withLock { $0.nodeID } }

    /// Writes acknowledged and failed so far, and the last failure.
    public var counts: (acknowledged: UInt64, failed: UInt64, lastError: String?) {
        state.withLock { ($0.acknowledged, $0.failed, $0.lastError) }
    }

    /// Moves the writer to the node `id` at `port`: new writes go there; those in flight on the old connection
    /// finish there.
    ///
    /// - Throws: `PlexusClientError` when the node cannot be reached (the writer keeps its old connection).
    public func connect(to id: String, port: Int) async throws {
        let client = try await PlexusWriteTarget.connect(
            host: Loopback.host, port: port, name: "bench-raft-failover", reconnect: true)
        let old = state.withLock { state -> PlexusClient? in
            defer {
                state.client = client
                state.nodeID = id
            }
            return state.client
        }
        if let old { Task { await old.close() } }
    }

    /// Watches writes sent from `instant` (``MonotonicClock`` nanoseconds) on.
    public func watch(from instant: UInt64) {
        state.withLock {
            $0.watchFrom = instant
            $0.firstAck = nil
        }
    }

    /// Waits until a watched write is acknowledged and returns when (``MonotonicClock`` nanoseconds); `nil`
    /// after `timeout`.
    public func firstAcknowledgement(timeout: Duration) async -> UInt64? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let ack = state.withLock({ $0.firstAck }) { return ack }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return state.withLock { $0.firstAck }
    }

    /// Stops sending and closes the connection.
    public func stop() async {
        let client = state.withLock { state -> PlexusClient? in
            state.stopped = true
            return state.client
        }
        while !finished.load(ordering: .acquiring) { try? await Task.sleep(for: .milliseconds(5)) }
        await client?.close(timeout: .seconds(2))
    }

    private func loop() {
        var next = MonotonicClock.nanoseconds()
        var sequence: UInt64 = 0
        while true {
            let now = MonotonicClock.nanoseconds()
            if now < next { usleep(UInt32(min((next - now) / 1000, 100_000))) }
            if MonotonicClock.nanoseconds() < next { continue }
            next += interval
            // A writer that fell behind (a long stall) does not burst to catch up: the load stays light.
            next = max(next, MonotonicClock.nanoseconds())
            let client = state.withLock { state -> PlexusClient?? in
                if state.stopped { return .some(nil) }
                guard let client = state.client, state.outstanding < window else { return nil }
                state.outstanding += 1
                return client
            }
            guard let client else { continue }
            guard let client else { break }
            sequence += 1
            let sent = MonotonicClock.nanoseconds()
            let event = CloudEvent(id: "f\(sequence)", source: "/bench/raft/failover", type: "bench", data: payload)
            client.publish(topic: topic, [event]) { [self] result in
                let acknowledged = MonotonicClock.nanoseconds()
                state.withLock { state in
                    state.outstanding -= 1
                    switch result {
                    case .success:
                        state.acknowledged += 1
                        if let from = state.watchFrom, sent >= from, state.firstAck == nil {
                            state.firstAck = acknowledged
                        }
                    case .failure(let error):
                        state.failed += 1
                        state.lastError = "\(error)"
                    }
                }
            }
        }
        finished.store(true, ordering: .releasing)
    }
}
