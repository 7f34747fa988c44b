import Foundation
import PlexusBench

/// One kill of a leader.
public struct FailoverSample: Codable, Sendable, Equatable {
    public var kill: Int
    /// The node killed (the stream's leader) and the leader after it.
    public var killed: String
    public var newLeader: String
    /// The node the writer was connected to (never the killed one: its appends were forwarded).
    public var writerNode: String
    /// From the `kill -9` to the first acknowledgement of a write sent after it, in milliseconds; `nil` when none
    /// came within the timeout.
    public var failoverMs: Double?
    /// From restarting the killed node to its commit index reaching the leader's, in milliseconds.
    public var catchUpMs: Double?
    /// Writes that failed around this kill.
    public var failedWrites: UInt64
}

/// The failover figures: the samples, their median, p90 and max (nearest rank), and how many were under 2 s.
///
/// A kill after which no write was acknowledged within the timeout ranks above every measured one; a percentile
/// that falls on such a kill is `nil` ("no recovery").
public struct FailoverSummary: Codable, Sendable, Equatable {
    public var samples: [FailoverSample]
    public var medianMs: Double?
    public var p90Ms: Double?
    public var maxMs: Double?
    public var underTwoSeconds: Int
    /// Kills with no acknowledged write within the timeout.
    public var noRecovery: Int

    public init(samples: [FailoverSample]) {
        self.samples = samples
        let times = samples.compactMap(\.failoverMs).sorted()
        noRecovery = samples.count - times.count
        let ranked: [Double?] = times.map { $0 } + Array(repeating: nil, count: noRecovery)
        func rank(_ p: Double) -> Double? {
            guard !ranked.isEmpty else { return nil }
            return ranked[min(ranked.count - 1, max(0, Int((p * Double(ranked.count)).rounded(.up)) - 1))]
        }
        medianMs = rank(0.5)
        p90Ms = rank(0.9)
        maxMs = rank(1)
        underTwoSeconds = times.filter { $0 < 2000 }.count
    }
}

/// Kills the leader of a stream `kills` times under a light write load sent to another node, and measures how
/// long writes stop each time.
public struct FailoverTest: Sendable {
    public var kills: Int
    public var rate: Double
    public var payloadSize: Int
    /// How long one kill may take to see an acknowledged write again before it counts as no recovery.
    public var recoveryTimeout: Duration

    public init(kills: Int, rate: Double, payloadSize: Int, recoveryTimeout: Duration = .seconds(30)) {
        self.kills = kills
        self.rate = rate
        self.payloadSize = payloadSize
        self.recoveryTimeout = recoveryTimeout
    }

    /// Runs the kills against `cluster` (already started) on `stream`.
    ///
    /// - Parameter progress: Gets one line per kill.
    /// - Throws: ``HarnessError`` when the cluster cannot be brought back to a leader and caught-up members
    ///   between kills (a kill that merely recovers slowly is a result, not an error).
    public func run(
        cluster: PlexusCluster, stream: String, progress: @Sendable (String) -> Void
    ) async throws -> FailoverSummary {
        try await cluster.prime(stream: stream, through: cluster.nodes[0])
        // The window holds a whole recovery timeout of writes: writes stuck with the dead leader must not stop
        // the writer from sending the ones that time the failover.
        let window = max(64, Int(rate * Double(recoveryTimeout.nanoseconds) / 1e9))
        let writer = PacedWriter(
            topic: stream, payload: benchPayload(size: payloadSize), rate: rate, window: window)
        var samples: [FailoverSample] = []
        do {
            for kill in 1...kills {
                let leader = try await cluster.leader(of: stream)
                // The writer goes to a node that is not the leader, so its appends are forwarded.
                if writer.nodeID == nil || writer.nodeID == leader.id {
                    guard let other = cluster.nodes.first(where: { $0 !== leader && $0.isRunning }) else {
                        throw HarnessError("no running node besides the leader \(leader.id)")
                    }
                    try await writer.connect(to: other.id, port: other.tcpPort)
                }
                // The load flows before the kill: a write sent now is acknowledged.
                writer.watch(from: MonotonicClock.nanoseconds())
                guard await writer.firstAcknowledgement(timeout: .seconds(30)) != nil else {
                    throw HarnessError(
                        "before kill \(kill): no write through node \(writer.nodeID ?? "?") acknowledged in 30 s "
                            + "(last error: \(writer.counts.lastError ?? "none"))")
                }
                let failedBefore = writer.counts.failed
                let killedAt = MonotonicClock.nanoseconds()
                writer.watch(from: killedAt)
                leader.kill9()
                let acknowledged = await writer.firstAcknowledgement(timeout: recoveryTimeout)
                let failoverMs = acknowledged.map { Double($0 - killedAt) / 1e6 }
                let newLeader = (try? await cluster.leader(of: stream, timeout: .seconds(10)))?.id ?? "?"
                let restartAt = MonotonicClock.nanoseconds()
                try await leader.start()
                try await cluster.waitCaughtUp(leader, stream: stream)
                let catchUpMs = Double(MonotonicClock.nanoseconds() - restartAt) / 1e6
                let sample = FailoverSample(
                    kill: kill, killed: leader.id, newLeader: newLeader, writerNode: writer.nodeID ?? "?",
                    failoverMs: failoverMs, catchUpMs: catchUpMs, failedWrites: writer.counts.failed - failedBefore)
                samples.append(sample)
                progress(
                    "kill \(kill)/\(kills): leader \(sample.killed) killed, writes through \(sample.writerNode) "
                        + "acknowledged again after "
                        + (failoverMs.map { String(format: "%.0f ms", $0) } ?? "— (none in \(recoveryTimeout))")
                        + ", new leader \(newLeader), \(sample.failedWrites) writes failed; restarted node caught "
                        + "up in \(String(format: "%.0f ms", catchUpMs))")
            }
        } catch {
            await writer.stop()
            throw error
        }
        await writer.stop()
        return FailoverSummary(samples: samples)
    }
}
