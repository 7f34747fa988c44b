import Foundation
import Testing

/// Random faults against a three-node raft-log cluster under an acknowledged write load, then the same
/// settle-and-check as every fault scenario (`RaftClusterTests.finish`).
///
/// `PLEXUS_SOAK_MINUTES` sizes it (`make soak` sets it, `SOAK_MINUTES=30 make soak` for longer); without it
/// the run is a short one of about 25 s. `PLEXUS_SOAK_SEED` replays a run: every run prints its seed and the
/// faults it injected.
@Suite("raft-log cluster soak", .serialized, .timeLimit(.minutes(180)))
struct RaftClusterSoakTests {
    /// The faults the soak picks from; each is undone before the next.
    enum Fault: String, CaseIterable {
        case killLeader = "kill -9 the leader"
        case killFollower = "kill -9 a follower"
        case pauseLeader = "SIGSTOP the leader"
        case pauseFollower = "SIGSTOP a follower"
        case isolateLeader = "cut the leader off"
        case isolateFollower = "cut a follower off"
        case cutLink = "cut one directed link"
        case leaderCannotSend = "cut the leader's links to the others, one way"
        case slowLinks = "delay every link by 50 ms"
        case restartAll = "kill -9 every node and start them again"
        case flipBitOnFollower = "flip a bit mid-log on a stopped follower"
        case truncateSegmentOnFollower = "truncate a segment of a stopped follower"
        case flipBitOnLeader = "flip a bit mid-log on the stopped leader"
    }

    /// SplitMix64: a small seeded generator, so that a run can be replayed.
    struct SeededGenerator: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A soak's length (`PLEXUS_SOAK_MINUTES`, else `standard`) and its seeded generator (`PLEXUS_SOAK_SEED`,
    /// else a random seed); prints both under `label`, so that a run can be replayed.
    static func settings(label: String, standard: Duration) -> (duration: Duration, seed: UInt64, SeededGenerator) {
        let environment = ProcessInfo.processInfo.environment
        let minutes = environment["PLEXUS_SOAK_MINUTES"].flatMap(Double.init)
        let duration: Duration = minutes.map { .milliseconds(Int($0 * 60_000)) } ?? standard
        let seed = environment["PLEXUS_SOAK_SEED"].flatMap { UInt64($0) } ?? UInt64.random(in: 1...UInt64.max)
        print("\(label): seed \(seed) (PLEXUS_SOAK_SEED), faults for \(duration)")
        return (duration, seed, SeededGenerator(state: seed))
    }

    @Test("random faults for PLEXUS_SOAK_MINUTES (about 25 s without it), then every replica checked")
    func soak() async throws {
        var (duration, seed, random) = Self.settings(label: "soak", standard: .seconds(25))
        let stream = RaftClusterTests.stream

        // Damage is repaired by cutting the log (the damaged member then neither votes nor stands until it has
        // refetched what it lost); 1 MiB segments, so that damage also falls in sealed segments.
        try await RaftCluster.run(raftValues: ["repairOnStart": "truncate", "segmentBytes": "1048576"]) { cluster in
            // Bounded: paced to about 200,000 events over the run (some 45 MB of log per node; the short run
            // goes unpaced), at most 400,000, and the publishers stop a minute after the faults end at the latest.
            let seconds = Double(duration.components.seconds)
            let pace = Duration.milliseconds(Int(max(0, 6 * 2 / (200_000 / seconds) * 1000 - 2)))
            let workload = RaftClusterTests.load(
                cluster, maxEvents: 400_000, duration: duration + .seconds(60), pace: pace)
            print("soak: publishers pause \(pace) between batches")
            _ = try await RaftClusterTests.warmUp(cluster, workload)
            var injected: [String] = []
            let end = ContinuousClock.now + duration
            while ContinuousClock.now < end {
                let (leader, _) = try await cluster.waitForLeader(stream, timeout: .seconds(30))
                let followers = cluster.ids.filter { $0 != leader }
                let follower = followers.randomElement(using: &random)!
                let fault = Fault.allCases.randomElement(using: &random)!
                let hold = Duration.milliseconds(Int.random(in: 500...4000, using: &random))
                var undo: [() async throws -> Void] = []
                switch fault {
                case .killLeader, .killFollower:
                    let victim = fault == .killLeader ? leader : follower
                    try cluster.kill(victim)
                    undo.append { try await cluster.start(victim) }
                case .pauseLeader, .pauseFollower:
                    let victim = fault == .pauseLeader ? leader : follower
                    try cluster.pause(victim)
                    undo.append { try cluster.resume(victim) }
                case .isolateLeader, .isolateFollower:
                    try cluster.isolate(fault == .isolateLeader ? leader : follower)
                    undo.append { cluster.healAll() }
                case .cutLink:
                    let from = cluster.ids.randomElement(using: &random)!
                    let to = cluster.ids.filter { $0 != from }.randomElement(using: &random)!
                    try cluster.cut(from: from, to: to)
                    undo.append { try cluster.heal(from: from, to: to) }
                case .leaderCannotSend:
                    for other in followers { try cluster.cut(from: leader, to: other) }
                    undo.append { cluster.healAll() }
                case .slowLinks:
                    for proxy in cluster.proxies.values { proxy.delay = .milliseconds(50) }
                    undo.append { for proxy in cluster.proxies.values { proxy.delay = .zero } }
                case .restartAll:
                    for id in cluster.ids { try cluster.kill(id) }
                    undo.append { try await cluster.start(cluster.ids) }
                case .flipBitOnFollower, .truncateSegmentOnFollower, .flipBitOnLeader:
                    let victim = fault == .flipBitOnLeader ? leader : follower
                    try cluster.kill(victim)
                    let directory = try cluster.streamDirectory(victim, stream)
                    let log = try RaftSegmentReader.read(directory: directory)
                    let candidates = log.entries.filter { $0.bodyLength > 0 && $0.index < log.lastIndex }
                    if let entry = candidates.randomElement(using: &random) {
                        if fault == .truncateSegmentOnFollower {
                            try RaftClusterCorruptionTests.truncateSegment(in: directory, at: entry.index)
                        } else {
                            try RaftClusterCorruptionTests.flipBit(in: directory, at: entry.index)
                        }
                    }
                    undo.append { try await cluster.start(victim) }
                }
                injected.append("\(fault.rawValue) (leader \(leader), follower \(follower), \(hold))")
                try await Task.sleep(for: hold)
                for step in undo { try await step() }
                await RaftClusterTests.expectProgress(
                    workload, "after \(fault.rawValue)", more: 50, within: .seconds(30))
            }
            print("soak: \(injected.count) faults:\n  " + injected.joined(separator: "\n  "))
            try await RaftClusterTests.finish(cluster, workload, readBackLimit: 50_000, "soak (seed \(seed))")
        }
    }
}
