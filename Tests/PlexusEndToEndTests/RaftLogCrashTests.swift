import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// raft-log as a real node's default storage, killed with SIGKILL while producers publish with
/// acknowledgements: after a restart on the same data directory every acknowledged event is at its offset.
@Suite("raft-log crash", .serialized, .timeLimit(.minutes(2)))
struct RaftLogCrashTests {
    static func start(_ directory: TestDirectory, manifests: URL, run: String) async throws -> (NodeProcess, Int) {
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: try directory.subdirectory(run),
            extraArguments: ["--default-storage", "raft-log"])
        return (node, try await node.tcpPort())
    }

    @Test("kill -9 mid-load: every acknowledged event survives at its offset, and the log continues densely")
    func killMidLoad() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        let (node, port) = try await Self.start(directory, manifests: manifests, run: "first")
        defer { node.kill() }
        let client = try await PlexusClient.connect(ClientConfiguration(port: port, name: "crash", reconnect: false))

        let acknowledged = Acknowledged()
        let publishers = 8
        let publishing = Task {
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<publishers {
                    group.addTask {
                        var sequence = 0
                        // Each publisher waits for the acknowledgement of its batch before sending the next,
                        // until the node dies under it.
                        while true {
                            let batch = (0..<(1 + sequence % 4)).map { i in
                                CloudEvent(
                                    id: "p\(publisher)-\(sequence)-\(i)", source: "/crash", type: "io.plexus.crash",
                                    extensions: [("publisher", "\(publisher)")],
                                    data: Array("event \(publisher)/\(sequence)/\(i)".utf8))
                            }
                            sequence += 1
                            guard let first = try? await client.publish(topic: "crash", batch) else { return }
                            acknowledged.add(batch, first: first)
                        }
                    }
                }
            }
        }
        // Bounded by the count: seconds here, up to a minute on a loaded machine (at least 1,000 are needed).
        let loadDeadline = ContinuousClock.now + .seconds(60)
        while acknowledged.count < 3000 && ContinuousClock.now < loadDeadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        node.kill()  // SIGKILL, with publishes in flight
        await publishing.value
        await client.close(timeout: .milliseconds(100))
        let acked = acknowledged.events
        let highest = try #require(acked.keys.max(), "nothing was acknowledged before the kill")
        #expect(acked.count >= 1000, "\(acked.count) events acknowledged before the kill")

        let (again, port2) = try await Self.start(directory, manifests: manifests, run: "second")
        defer { again.kill() }
        let reader = try await PlexusClient.connect(ClientConfiguration(port: port2, name: "check", reconnect: false))
        let received = try await readBack(reader, topic: "crash", through: highest)
        let (missing, changed) = acknowledged.compare(with: received)
        #expect(missing.isEmpty, "acknowledged offsets missing after the restart: \(missing.prefix(20))")
        #expect(changed.isEmpty, "acknowledged offsets holding another event: \(changed.prefix(20))")
        #expect(
            (0...highest).allSatisfy { received[$0] != nil }, "the log is dense up to the last acknowledged offset")

        // New publishes continue right after whatever the log kept.
        let kept = received.keys.max() ?? highest
        let next = try await reader.publish(topic: "crash", CloudEvent(id: "after", source: "/crash", type: "t"))
        #expect(next > highest && next >= kept + 1, "the next offset \(next) follows the recovered log")
        await reader.close()
    }
}

/// The events the node acknowledged, by offset.
final class Acknowledged: Sendable {
    private let byOffset = Mutex<[UInt64: CloudEvent]>([:])

    func add(_ batch: [CloudEvent], first: UInt64) {
        byOffset.withLock { for (i, event) in batch.enumerated() { $0[first + UInt64(i)] = event } }
    }

    var count: Int { byOffset.withLock { $0.count } }
    var events: [UInt64: CloudEvent] { byOffset.withLock { $0 } }
}

/// After a crash and restart: reads a topic from its start through a consumer group (`check` unless told)
/// until every offset up to `highest` is there (or 30 s pass), waits `settle` for what may follow, and returns
/// what arrived, by offset.
func readBack(
    _ reader: PlexusClient, topic: String, through highest: UInt64, settle: Duration = .zero, group: String = "check"
) async throws -> [UInt64: CloudEvent] {
    let stream = try await reader.subscribe(
        topic: topic, options: SubscribeOptions(group: group, start: .earliest, credits: 1000))
    let collected = Mutex<[UInt64: CloudEvent]>([:])
    let collector = Task {
        for await delivery in stream {
            collected.withLock { $0[delivery.offset] = delivery.event }
            delivery.ack()
        }
    }
    let deadline = ContinuousClock.now + .seconds(30)
    while ContinuousClock.now < deadline {
        if collected.withLock({ got in (0...highest).allSatisfy { got[$0] != nil } }) { break }
        try await Task.sleep(for: .milliseconds(50))
    }
    if settle > .zero { try await Task.sleep(for: settle) }
    collector.cancel()
    return collected.withLock { $0 }
}

extension Acknowledged {
    /// The acknowledged offsets absent from `received`, and those holding another event, each sorted.
    func compare(with received: [UInt64: CloudEvent]) -> (missing: [UInt64], changed: [UInt64]) {
        var missing: [UInt64] = []
        var changed: [UInt64] = []
        for (offset, event) in events {
            guard let stored = received[offset] else {
                missing.append(offset)
                continue
            }
            if stored != event { changed.append(offset) }
        }
        return (missing.sorted(), changed.sorted())
    }
}
