import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// A node started without a `topics` section has one delivery path like any other: it stores every topic in
/// its default storage (raft-log when it runs, else memory-storage, else none) and says which in its log.
@Suite("default storage", .serialized, .timeLimit(.minutes(3)))
struct DefaultStorageTests {
    /// The shipped manifests without the named ones.
    static func manifests(_ directory: TestDirectory, without removed: [String]) throws -> URL {
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        for name in removed {
            try FileManager.default.removeItem(at: manifests.appendingPathComponent("\(name).yaml"))
        }
        return manifests
    }

    static func start(_ directory: TestDirectory, manifests: URL, run: String) async throws -> (NodeProcess, Int) {
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: try directory.subdirectory(run))
        return (node, try await node.tcpPort())
    }

    /// Collects the events of `topic` from the earliest offset through a new group, until `done` holds of
    /// what arrived or `timeout` passes.
    static func readBack(
        port: Int, topic: String, timeout: Duration = .seconds(30), until done: ([UInt64: CloudEvent]) -> Bool
    ) async throws -> [UInt64: CloudEvent] {
        let reader = try await PlexusClient.connect(ClientConfiguration(port: port, name: "check", reconnect: false))
        let stream = try await reader.subscribe(
            topic: topic, options: SubscribeOptions(group: "check", start: .earliest, credits: 1000))
        let collected = Mutex<[UInt64: CloudEvent]>([:])
        let collector = Task {
            for await delivery in stream {
                collected.withLock { $0[delivery.offset] = delivery.event }
                delivery.ack()
            }
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline, !collected.withLock({ done($0) }) {
            try await Task.sleep(for: .milliseconds(50))
        }
        collector.cancel()
        await reader.close(timeout: .milliseconds(100))
        return collected.withLock { $0 }
    }

    @Test("no topics section, raft-log available: 2,000 acknowledged events survive kill -9")
    func raftLogByDefault() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        let (node, port) = try await Self.start(directory, manifests: manifests, run: "first")
        defer { node.kill() }
        #expect(
            node.stderr.contains("topics: no topics section; default storage raft-log (durable)"),
            "the node says which storage it chose:\n\(node.stderr)")

        let client = try await PlexusClient.connect(ClientConfiguration(port: port, name: "load", reconnect: false))
        let acknowledged = Acknowledged()
        let publishers = 8
        let batches = 25
        let batchSize = 10
        try await withThrowingTaskGroup(of: Void.self) { group in
            for publisher in 0..<publishers {
                group.addTask {
                    for sequence in 0..<batches {
                        let batch = (0..<batchSize).map { i in
                            CloudEvent(
                                id: "p\(publisher)-\(sequence)-\(i)", source: "/default", type: "io.plexus.default",
                                data: Array("event \(publisher)/\(sequence)/\(i)".utf8))
                        }
                        let first = try await client.publish(topic: "orders", batch)
                        acknowledged.add(batch, first: first)
                    }
                }
            }
            try await group.waitForAll()
        }
        await client.close(timeout: .milliseconds(100))
        let acked = acknowledged.events
        try #require(acked.count == publishers * batches * batchSize, "every publish was acknowledged")

        node.kill()  // SIGKILL: nothing is flushed on the way out
        let (again, port2) = try await Self.start(directory, manifests: manifests, run: "second")
        defer { again.kill() }
        let received = try await Self.readBack(port: port2, topic: "orders") { got in
            acked.keys.allSatisfy { got[$0] != nil }
        }
        var missing: [UInt64] = []
        var changed: [UInt64] = []
        for (offset, event) in acked {
            guard let stored = received[offset] else {
                missing.append(offset)
                continue
            }
            if stored != event { changed.append(offset) }
        }
        #expect(
            missing.isEmpty,
            "\(missing.count) acknowledged events missing after kill -9: \(missing.sorted().prefix(20))")
        #expect(changed.isEmpty, "acknowledged offsets holding another event: \(changed.sorted().prefix(20))")
    }

    @Test("no topics section, no raft-log: memory-storage stores the topics, with a warning that it is not durable")
    func memoryStorageFallback() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try Self.manifests(directory, without: ["raft-log"])
        let (node, port) = try await Self.start(directory, manifests: manifests, run: "first")
        defer { node.kill() }
        let line = try #require(
            node.stderr.split(separator: "\n").first { $0.contains("default storage memory-storage") },
            "the node says which storage it chose:\n\(node.stderr)")
        #expect(line.contains("warning"), "a storage that is not durable is a warning: \(line)")
        #expect(line.contains("topics: no topics section; default storage memory-storage (not durable"), "\(line)")

        let client = try await PlexusClient.connect(ClientConfiguration(port: port, name: "load", reconnect: false))
        let events = (0..<20).map { CloudEvent(id: "m\($0)", source: "/default", type: "io.plexus.default") }
        let first = try await client.publish(topic: "orders", events)
        await client.close(timeout: .milliseconds(100))
        let received = try await Self.readBack(port: port, topic: "orders") { got in
            (0..<UInt64(events.count)).allSatisfy { got[first + $0] != nil }
        }
        for (index, event) in events.enumerated() {
            #expect(received[first + UInt64(index)] == event, "event \(index) is stored at its offset")
        }
    }

    @Test("no topics section and no storage plugin: publishes are refused, never acknowledged")
    func noStorageRefuses() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try Self.manifests(directory, without: ["raft-log", "memory-storage"])
        let (node, port) = try await Self.start(directory, manifests: manifests, run: "first")
        defer { node.kill() }
        #expect(
            node.stderr.contains(
                "neither raft-log nor memory-storage is active; publishes to topics without a binding"),
            "the node says that it has no storage:\n\(node.stderr)")

        let client = try await PlexusClient.connect(ClientConfiguration(port: port, name: "load", reconnect: false))
        let outcome: Result<UInt64, any Error>
        do {
            outcome = .success(
                try await client.publish(
                    topic: "orders", CloudEvent(id: "x", source: "/default", type: "io.plexus.default")))
        } catch {
            outcome = .failure(error)
        }
        await client.close(timeout: .milliseconds(100))
        switch outcome {
        case .success(let offset):
            Issue.record("a publish without a storage was acknowledged at offset \(offset)")
        case .failure(let error):
            let refusal = try #require(error as? PlexusClientError, "\(error)")
            #expect(refusal.code == .refused, "\(refusal)")
            #expect(refusal.message.contains("topic 'orders' has no storage"), "\(refusal)")
        }
    }
}
