import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// ledger-storage as a real node's topic storage, killed with SIGKILL while producers publish with
/// acknowledgements. After a restart on the same data directory (which recovers the ledger the dead process
/// left open: fenced, closed at its last entry) a checker reads the topic from the start: every acknowledged
/// event is at its offset, the offsets are dense, and nothing is visible that was never published or that
/// appears twice; publishing continues after the recovered end.
@Suite("ledger-storage crash", .serialized, .timeLimit(.minutes(2)))
struct LedgerStorageCrashTests {
    static func start(_ directory: TestDirectory, manifests: URL, run: String) async throws -> (NodeProcess, Int) {
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: try directory.subdirectory(run),
            extraArguments: ["--default-storage", "ledger-storage"])
        return (node, try await node.tcpPort())
    }

    @Test("kill -9 mid-load: every acknowledged event survives at its offset; nothing unpublished is visible")
    func killMidLoad() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        let (node, port) = try await Self.start(directory, manifests: manifests, run: "first")
        defer { node.kill() }
        let client = try await PlexusClient.connect(ClientConfiguration(port: port, name: "crash", reconnect: false))

        let acknowledged = Acknowledged()
        let attempted = Published()
        let publishing = Task {
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<6 {
                    group.addTask {
                        var sequence = 0
                        while true {
                            let batch = (0..<(1 + sequence % 3)).map { i in
                                CloudEvent(
                                    id: "p\(publisher)-\(sequence)-\(i)", source: "/ledger-crash",
                                    type: "io.plexus.crash",
                                    data: Array("event \(publisher)/\(sequence)/\(i)".utf8))
                            }
                            sequence += 1
                            attempted.add(batch)
                            guard let first = try? await client.publish(topic: "ledger-crash", batch) else { return }
                            acknowledged.add(batch, first: first)
                        }
                    }
                }
            }
        }
        // Bounded by the count: a second or two here, up to a minute on a loaded machine.
        let loadDeadline = ContinuousClock.now + .seconds(60)
        while acknowledged.count < 1500 && ContinuousClock.now < loadDeadline {
            try await Task.sleep(for: .milliseconds(5))
        }
        node.kill()  // SIGKILL, with publishes in flight
        await publishing.value
        await client.close(timeout: .milliseconds(100))
        let acked = acknowledged.events
        let highest = try #require(acked.keys.max(), "nothing was acknowledged before the kill")
        #expect(acked.count >= 500, "\(acked.count) events acknowledged before the kill")

        let (again, port2) = try await Self.start(directory, manifests: manifests, run: "second")
        defer { again.kill() }
        let reader = try await PlexusClient.connect(ClientConfiguration(port: port2, name: "check", reconnect: false))
        // What follows the last acknowledged offset (entries durable but not acknowledged before the kill) has
        // a moment to arrive too.
        let received = try await readBack(reader, topic: "ledger-crash", through: highest, settle: .milliseconds(300))
        let published = attempted.events
        let (missing, changed) = acknowledged.compare(with: received)
        #expect(missing.isEmpty, "acknowledged offsets missing after the restart: \(missing.prefix(20))")
        #expect(changed.isEmpty, "acknowledged offsets holding another event: \(changed.prefix(20))")
        let end = (received.keys.max() ?? 0) + 1
        #expect((0..<end).allSatisfy { received[$0] != nil }, "the visible offsets are dense from 0 to \(end)")
        let unpublished = received.filter { published[$0.value.id] != $0.value }.keys.sorted()
        #expect(unpublished.isEmpty, "visible events nobody published: offsets \(unpublished.prefix(20))")
        let ids = received.values.map(\.id)
        #expect(Set(ids).count == ids.count, "an event is visible twice")

        // New publishes continue right after the recovered end.
        let next = try await reader.publish(topic: "ledger-crash", CloudEvent(id: "after", source: "/c", type: "t"))
        #expect(
            next >= end && next <= UInt64(published.count),
            "the next offset \(next) follows the recovered end \(end), within the \(published.count) published")
        await reader.close()
    }
}

/// Every event a publisher sent (acknowledged or not), by id.
final class Published: Sendable {
    private let byID = Mutex<[String: CloudEvent]>([:])

    func add(_ batch: [CloudEvent]) { byID.withLock { for event in batch { $0[event.id] = event } } }

    var events: [String: CloudEvent] { byID.withLock { $0 } }
}
