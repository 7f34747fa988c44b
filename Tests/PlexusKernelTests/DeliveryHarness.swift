import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// A node with the memory storage bound to every topic and a manual clock, and a client that speaks to it
/// through the real host API table, as a plugin would.
final class DeliveryHarness: Sendable {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let root: URL
    let kernel: Kernel
    let clock = ManualDeliveryClock()
    let client: LocalClient
    private let subscribers = Mutex<[Subscriber]>([])

    init(tracing: KernelTracing = .off, topics configure: (inout TopicConfig) -> Void = { _ in }) throws {
        let repository = ManifestSamples.repositoryRoot()
        let pluginDirectory = repository.appendingPathComponent(".build/debug").path
        guard FileManager.default.fileExists(atPath: pluginDirectory + "/libMemoryStorage.so") else {
            throw Failure(
                description:
                    "libMemoryStorage.so is not built in \(pluginDirectory): run `swift build` before `swift test`")
        }
        root = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-delivery-\(UUID().uuidString)")
        let manifests = root.appendingPathComponent("manifests")
        try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: repository.appendingPathComponent("plugin-manifests/memory-storage.yaml"),
            to: manifests.appendingPathComponent("memory-storage.yaml"))
        var config = NodeConfig()
        config.dataDirectory = root.appendingPathComponent("data").path
        config.manifestDirectories = [manifests.path]
        config.pluginSearchPath = [pluginDirectory]
        config.topics.defaultStorage = "memory-storage"
        configure(&config.topics)
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        kernel = Kernel(config: config, logger: logger, clock: clock, tracing: tracing)
        kernel.start()
        guard kernel.status(of: "memory-storage")?.state == .active else {
            throw Failure(
                description: "memory-storage did not start: \(kernel.status(of: "memory-storage")?.lastError ?? "?")")
        }
        client = LocalClient(kernel: kernel, name: "test-client")
    }

    deinit {
        try? FileManager.default.removeItem(at: root)
    }

    func shutDown() {
        for subscriber in subscribers.withLock({ $0 }) { subscriber.unsubscribe() }
        kernel.stop()
    }

    static func event(_ id: String, key: String? = nil, type: String = "test.event") -> CloudEvent {
        CloudEvent(
            id: id, source: "/test", type: type, extensions: key.map { [("partitionkey", $0)] } ?? [],
            data: Array(id.utf8))
    }

    /// Publishes through `px_host_api.publish` and waits for the acknowledgement.
    @discardableResult
    func publish(_ topic: String, _ events: [CloudEvent]) throws -> UInt64 {
        try client.publishAndWait(topic, events)
    }

    /// Subscribes through `px_host_api.subscribe`, from the earliest offset; `configure` sets options.
    func subscribe(
        _ topic: String, group: String, broadcast: Bool = false, filters: [(String, String)] = [],
        configure: (inout LocalClient.Options) -> Void = { _ in }
    ) throws -> Subscriber {
        var options = LocalClient.Options()
        options.start = .earliest
        options.broadcast = broadcast
        options.filters = filters.map { (key: $0.0, value: $0.1) }
        configure(&options)
        let subscriber = Subscriber(client: client)
        let id = try client.subscribe(topic: topic, group: group, options: options) { subscriber.received($0) }
        subscriber.id.store(id, ordering: .relaxed)
        subscribers.withLock { $0.append(subscriber) }
        return subscriber
    }
}

/// One subscription of the test client: records every delivery.
final class Subscriber: Sendable {
    typealias Received = LocalClient.Delivery

    let id = Atomic<UInt64>(0)
    let deliveries = Mutex<[Received]>([])
    let unsubscribed = Atomic<Bool>(false)
    /// Acknowledge every delivery as it arrives.
    let autoAck = Atomic<Bool>(false)
    private let client: LocalClient

    init(client: LocalClient) { self.client = client }

    func received(_ item: Received) {
        deliveries.withLock { $0.append(item) }
        if autoAck.load(ordering: .relaxed) { _ = ack(item) }
    }

    var count: Int { deliveries.withLock { $0.count } }
    var all: [Received] { deliveries.withLock { $0 } }

    /// Waits (real time, bounded) until at least `count` deliveries arrived.
    @discardableResult
    func wait(for count: Int, seconds: Double = 5) -> [Received] {
        let deadline = Date().addingTimeInterval(seconds)
        while self.count < count && Date() < deadline { Thread.sleep(forTimeInterval: 0.002) }
        return all
    }

    /// Gives in-flight dispatches a moment, for checks that nothing more arrives.
    func settle() -> Int {
        Thread.sleep(forTimeInterval: 0.15)
        return count
    }

    @discardableResult
    func ack(_ item: Received) -> px_status { client.ack(item) }

    @discardableResult
    func nack(_ item: Received, deadLetter: Bool = false, reason: String = "test") -> px_status {
        client.nack(item, deadLetter: deadLetter, reason: reason)
    }

    func unsubscribe() {
        guard !unsubscribed.exchange(true, ordering: .relaxed) else { return }
        client.unsubscribe(id.load(ordering: .relaxed))
    }
}
