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
    let client: PluginContext
    private let subscribers = Mutex<[Subscriber]>([])

    init() throws {
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
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        kernel = Kernel(config: config, logger: logger, clock: clock)
        kernel.start()
        guard kernel.status(of: "memory-storage")?.state == .active else {
            throw Failure(
                description: "memory-storage did not start: \(kernel.status(of: "memory-storage")?.lastError ?? "?")")
        }
        client = PluginContext(name: "test-client", logger: logger, services: kernel.services)
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
        let box = PublishBox()
        let batch = CEventBatch(events)
        let status = withExtendedLifetime(batch) {
            withPXStr(topic) { topicStr in
                ErrorBuffer.with { err in
                    HostServices.api.pointee.publish(
                        client.handle, topicStr, batch.pointers.baseAddress, batch.pointers.count,
                        { user, status, first, error in
                            guard let user else { return }
                            let box = Unmanaged<PublishBox>.fromOpaque(user).takeRetainedValue()
                            box.result.withLock { $0 = (status, first, error.string) }
                            box.done.signal()
                        }, Unmanaged.passRetained(box).toOpaque(), err)
                }
            }
        }
        guard status == PX_OK.status else { throw Failure(description: "publish refused: \(StatusText.name(status))") }
        guard box.done.wait(timeout: .now() + 5) == .success, let (code, first, message) = box.result.withLock({ $0 })
        else {
            throw Failure(description: "publish was never acknowledged")
        }
        guard code == PX_OK.status else {
            throw Failure(description: "publish failed: \(StatusText.name(code)) \(message)")
        }
        return first
    }

    final class PublishBox: Sendable {
        let done = DispatchSemaphore(value: 0)
        let result = Mutex<(px_status, UInt64, String)?>(nil)
    }

    /// Subscribes through `px_host_api.subscribe`; `configure` sets delivery options on the spec.
    func subscribe(
        _ topic: String, group: String, broadcast: Bool = false, filters: [(String, String)] = [],
        configure: (inout px_subscription_spec) -> Void = { _ in }
    ) throws -> Subscriber {
        let subscriber = Subscriber(harness: self)
        let pairs = filters.map { (key: $0.0, value: $0.1) }
        let status: (px_status, String) = withPXStr(topic) { topicStr in
            withPXStr(group) { groupStr in
                withKVArray(pairs) { kvs in
                    var spec = px_subscription_spec()
                    spec.struct_size = UInt32(MemoryLayout<px_subscription_spec>.size)
                    spec.topic = topicStr
                    spec.group = groupStr
                    spec.group_mode =
                        broadcast ? UInt32(PX_GROUP_BROADCAST.rawValue) : UInt32(PX_GROUP_CLUSTERING.rawValue)
                    spec.filters = kvs.baseAddress
                    spec.filter_count = kvs.count
                    spec.start_position = UInt32(PX_START_EARLIEST.rawValue)
                    spec.deliver = { user, delivery in
                        guard let user, let delivery else { return }
                        Unmanaged<Subscriber>.fromOpaque(user).takeUnretainedValue().received(delivery)
                    }
                    spec.user = Unmanaged.passUnretained(subscriber).toOpaque()
                    configure(&spec)
                    return ErrorBuffer.with { err in
                        var id: UInt64 = 0
                        let status = HostServices.api.pointee.subscribe(client.handle, &spec, &id, err)
                        subscriber.id.store(id, ordering: .relaxed)
                        return (status, ErrorBuffer.text(err))
                    }
                }
            }
        }
        guard status.0 == PX_OK.status else {
            throw Failure(description: "subscribe refused: \(StatusText.name(status.0)) \(status.1)")
        }
        subscribers.withLock { $0.append(subscriber) }
        return subscriber
    }
}

/// Lends key/value pairs as a `px_kv` array.
func withKVArray<R>(_ pairs: [(key: String, value: String)], _ body: (UnsafeBufferPointer<px_kv>) -> R) -> R {
    let strings = pairs.flatMap { [strdup($0.key), strdup($0.value)] }
    defer { strings.forEach { free($0) } }
    let kvs = (0..<pairs.count).map { i in
        px_kv(
            key: px_str(ptr: strings[2 * i], len: pairs[i].key.utf8.count),
            value: px_str(ptr: strings[2 * i + 1], len: pairs[i].value.utf8.count))
    }
    return kvs.withUnsafeBufferPointer(body)
}

/// One subscription of the test client: records every delivery.
final class Subscriber: Sendable {
    struct Received: Sendable {
        var deliveryID: UInt64
        var attempt: UInt32
        var offset: UInt64
        var event: CloudEvent
        var topic: String
    }

    let id = Atomic<UInt64>(0)
    let deliveries = Mutex<[Received]>([])
    let unsubscribed = Atomic<Bool>(false)
    /// Acknowledge every delivery as it arrives.
    let autoAck = Atomic<Bool>(false)
    private let harness: DeliveryHarness

    init(harness: DeliveryHarness) { self.harness = harness }

    func received(_ d: UnsafePointer<px_delivery>) {
        guard let record = d.pointee.record, let event = record.pointee.event else { return }
        let item = Received(
            deliveryID: d.pointee.delivery_id, attempt: d.pointee.attempt, offset: record.pointee.offset,
            event: CloudEvent(copying: event), topic: d.pointee.topic.string)
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
    func ack(_ item: Received) -> px_status {
        HostServices.api.pointee.ack(harness.client.handle, item.deliveryID)
    }

    @discardableResult
    func nack(_ item: Received, deadLetter: Bool = false, reason: String = "test") -> px_status {
        withPXStr(reason) {
            HostServices.api.pointee.nack(
                harness.client.handle, item.deliveryID,
                deadLetter ? PX_NACK_DEAD_LETTER.rawValue : PX_NACK_RETRY.rawValue, $0)
        }
    }

    func unsubscribe() {
        guard !unsubscribed.exchange(true, ordering: .relaxed) else { return }
        _ = HostServices.api.pointee.unsubscribe(harness.client.handle, id.load(ordering: .relaxed))
    }
}
