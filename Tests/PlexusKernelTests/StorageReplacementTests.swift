import Foundation
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// Replacing a storage plugin on a running node, in process with the memory storage (the durable storage under
/// load: StorageUpgradeTests, end to end): the pause holds calls without failing them, a replaced storage
/// serves its open topics and groups, and a storage that keeps events in memory is not replaced while it holds
/// some.
@Suite("Storage replacement")
struct StorageReplacementTests {
    /// Rewrites memory-storage's manifest (`text` replaced by `replacement`) and scans until the node has
    /// applied it.
    static func upgrade(_ harness: DeliveryHarness, _ text: String, _ replacement: String) throws -> [DeploymentChange]
    {
        let file = harness.root.appendingPathComponent("manifests/memory-storage.yaml")
        let original = try String(contentsOf: file, encoding: .utf8)
        let changed = original.replacingOccurrences(of: text, with: replacement)
        try #require(changed != original)
        try changed.write(to: file, atomically: true, encoding: .utf8)
        var changes: [DeploymentChange] = []
        let deadline = Date().addingTimeInterval(10)
        while changes.isEmpty, Date() < deadline {
            Thread.sleep(forTimeInterval: Kernel.settleTime)
            changes = harness.kernel.reconcile().changes
        }
        return changes
    }

    @Test("a paused storage holds a publish until the pause ends, then stores it")
    func pauseHoldsCalls() throws {
        let harness = try DeliveryHarness()
        defer { harness.shutDown() }
        try harness.publish("orders", [DeliveryHarness.event("a")])
        let binding = try #require(harness.kernel.services.router.boundStorages()["memory-storage"])
        #expect(binding.pause(until: .now + .seconds(5)))
        let stored = Mutex<Result<UInt64, LocalClient.Failure>?>(nil)
        try harness.client.publish("orders", batch: CEventBatch([DeliveryHarness.event("b")])) { result in
            stored.withLock { $0 = result }
        }
        Thread.sleep(forTimeInterval: 0.2)
        #expect(stored.withLock { $0 } == nil, "the publish reached a paused storage")
        binding.resume()
        let deadline = Date().addingTimeInterval(5)
        while stored.withLock({ $0 }) == nil, Date() < deadline { Thread.sleep(forTimeInterval: 0.005) }
        let result = try #require(stored.withLock { $0 })
        #expect(try result.get() == 1)
    }

    @Test("a storage that holds no event is replaced: its open topic and group move to the new instance")
    func replacedWhileEmpty() throws {
        let harness = try DeliveryHarness()
        defer { harness.shutDown() }
        let subscriber = try harness.subscribe("orders", group: "billing")
        subscriber.autoAck.store(true, ordering: .relaxed)
        let before = try #require(harness.kernel.services.router.boundStorages()["memory-storage"])

        let changes = try Self.upgrade(harness, "\ndeadlines:", "\n  values:\n    maxEventBytes: 100000\ndeadlines:")
        #expect(changes.map(\.action) == [.upgrade], "\(changes)")
        #expect(changes.first?.message.contains("1 stream(s) reopened") == true, "\(changes)")
        let after = try #require(harness.kernel.services.router.boundStorages()["memory-storage"])
        #expect(after !== before)
        #expect(harness.kernel.status(of: "memory-storage")?.state == .active)
        #expect(harness.kernel.status(of: "memory-storage")?.previousVersion == "1.0.0")

        // The topic's stream and the group are the new instance's: a publish is stored there and delivered.
        #expect(try harness.publish("orders", [DeliveryHarness.event("a")]) == 0)
        let received = subscriber.wait(for: 1)
        #expect(received.map(\.event.id) == ["a"])
        #expect(harness.kernel.services.router.openTopics()["orders"]?.binding === after)
    }

    @Test("a new version that does not start: the old image starts again and serves the open topic and group")
    func failedStartRestartsOld() throws {
        let harness = try DeliveryHarness()
        defer { harness.shutDown() }
        let subscriber = try harness.subscribe("orders", group: "billing")
        subscriber.autoAck.store(true, ordering: .relaxed)
        let before = try #require(harness.kernel.services.router.boundStorages()["memory-storage"])

        // The library says 1.0.0: a manifest that says 1.0.1 fails to load.
        let changes = try Self.upgrade(harness, "\nversion: 1.0.0\n", "\nversion: 1.0.1\n")
        #expect(changes.map(\.action) == [.refuse], "\(changes)")
        #expect(changes.first?.message.contains("version 1.0.0 was restarted and serves") == true, "\(changes)")
        let status = harness.kernel.status(of: "memory-storage")
        #expect(status?.state == .active)
        #expect(status?.version == "1.0.0")
        #expect(status?.deployment?.contains("was restarted") == true, "\(status?.deployment ?? "none")")
        let again = try #require(harness.kernel.services.router.boundStorages()["memory-storage"])
        #expect(again !== before)

        #expect(try harness.publish("orders", [DeliveryHarness.event("a")]) == 0)
        #expect(subscriber.wait(for: 1).map(\.event.id) == ["a"])
        #expect(harness.kernel.services.router.openTopics()["orders"]?.binding === again)
    }

    @Test("a storage that keeps events in memory is not replaced while it holds some; it keeps serving")
    func memoryHoldingEventsRefused() throws {
        let harness = try DeliveryHarness()
        defer { harness.shutDown() }
        try harness.publish("orders", [DeliveryHarness.event("a")])
        let changes = try Self.upgrade(harness, "\ndeadlines:", "\n  values:\n    maxEventBytes: 100000\ndeadlines:")
        #expect(changes.map(\.action) == [.refuse], "\(changes)")
        #expect(changes.first?.message.contains("holds events of 'orders'") == true, "\(changes)")
        #expect(harness.kernel.status(of: "memory-storage")?.version == "1.0.0")
        #expect(try harness.publish("orders", [DeliveryHarness.event("b")]) == 1)
    }
}
