import Foundation
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// `standalone-registry` (`Plugins/StandaloneRegistry`) loaded by a real kernel from its shipped manifest and
/// driven through its C registry vtable.
@Suite("standalone-registry through the registry ABI")
struct StandaloneRegistryTests {
    /// Runs `body` with the plugin active in a fresh kernel; stops it afterwards and checks the completion rule.
    static func withRegistry(
        sweepIntervalMs: Int = 1000, _ body: (RegistryDriver, Kernel, ShippedPluginNode) throws -> Void
    ) throws {
        let node = try ShippedPluginNode(
            "standalone-registry", library: "libStandaloneRegistry.so",
            values: ["sweepIntervalMs": "\(sweepIntervalMs)"])
        defer { node.remove() }
        let kernel = try node.kernel()
        defer { kernel.stop() }
        kernel.start()
        let driver = try RegistryDriver(kernel)
        try body(driver, kernel, node)
        driver.ledger.expectCompletionRule()
    }

    static func instance(
        _ service: String, _ id: String, address: String = "127.0.0.1:9000", metadata: [String: String] = [:],
        ttlMs: UInt64 = 0
    ) -> RegistryDriver.Instance {
        .init(service: service, instanceID: id, address: address, metadata: metadata, ttlMs: ttlMs)
    }

    @Test("loads as a registry plugin with a registry table and no storage table")
    func descriptor() throws {
        try Self.withRegistry { driver, kernel, _ in
            let status = try kernel.requireStatus("standalone-registry")
            #expect(status.kinds == ["registry"])
            let loaded = try kernel.requireLoaded("standalone-registry")
            #expect(loaded.descriptor.storage == nil)
            #expect(driver.vtable.pointee.struct_size == UInt32(MemoryLayout<px_registry_vtable>.size))
        }
    }

    @Test("register, look up, replace and deregister instances")
    func registerLookupDeregister() throws {
        try Self.withRegistry { driver, _, _ in
            #expect(try driver.lookup("orders").value().isEmpty, "no instances is not an error")
            let a = Self.instance("orders", "a", metadata: ["zone": "eu", "weight": "3"])
            let b = Self.instance("orders", "b", address: "http://10.0.0.2:8080")
            _ = try driver.register(a).value()
            _ = try driver.register(b).value()
            _ = try driver.register(Self.instance("billing", "x")).value()
            #expect(try driver.lookup("orders").value() == [a, b])

            let moved = Self.instance("orders", "a", address: "127.0.0.1:9999")
            _ = try driver.register(moved).value()
            #expect(try driver.lookup("orders").value() == [moved, b], "registering again replaces")

            _ = try driver.deregister("orders", "a").value()
            #expect(try driver.lookup("orders").value() == [b])
            #expect(try driver.lookup("billing").value().map(\.instanceID) == ["x"])
        }
    }

    @Test("unknown instances, empty names and bad pointers are refused synchronously")
    func refusals() throws {
        try Self.withRegistry { driver, _, _ in
            let unknown = try #require(driver.deregister("orders", "ghost").refusal)
            #expect(unknown.status == PX_ERR_NOT_FOUND.status)
            #expect(unknown.message.contains("ghost"), "\(unknown.message)")
            #expect(driver.register(Self.instance("", "a")).refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.register(Self.instance("orders", "")).refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.deregister("", "a").refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.deregister("orders", "").refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.lookup("").refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.unwatch(987_654) == PX_ERR_NOT_FOUND.status)
            let (status, _) = withErrorBuffer { err in
                driver.vtable.pointee.on_register(driver.instance, nil, { _, _, _ in }, nil, err)
            }
            #expect(status == PX_ERR_INVALID_ARGUMENT.status)
        }
    }

    @Test("a watch sees every live instance first, then each change in order, and nothing after unwatch")
    func watch() throws {
        try Self.withRegistry { driver, _, _ in
            let a = Self.instance("orders", "a")
            let b = Self.instance("orders", "b")
            _ = try driver.register(b).value()
            _ = try driver.register(a).value()
            _ = try driver.register(Self.instance("billing", "x")).value()

            let watcher = try driver.watch("orders")
            #expect(watcher.wait(count: 2) == [.put(a), .put(b)], "the live instances first")

            let c = Self.instance("orders", "c", metadata: ["v": "2"])
            _ = try driver.register(c).value()
            _ = try driver.deregister("orders", "a").value()
            _ = try driver.register(Self.instance("billing", "y")).value()
            let b2 = Self.instance("orders", "b", address: "127.0.0.1:7000")
            _ = try driver.register(b2).value()
            _ = try driver.register(b2).value()
            #expect(
                watcher.wait(count: 5) == [.put(a), .put(b), .put(c), .delete(a), .put(b2)],
                "changes in order; other services and a same-content re-registration are not reported")
            #expect(!watcher.overlapped, "never two calls at once for one watch")

            #expect(driver.unwatch(watcher.id) == PX_OK.status)
            let seen = watcher.events.count
            _ = try driver.register(Self.instance("orders", "d")).value()
            Thread.sleep(forTimeInterval: 0.05)
            #expect(watcher.events.count == seen, "nothing after unwatch")
            #expect(driver.unwatch(watcher.id) == PX_ERR_NOT_FOUND.status)
        }
    }

    @Test("many changes from many threads reach two watches in one order")
    func concurrentChanges() throws {
        try Self.withRegistry { driver, _, _ in
            let first = try driver.watch("busy")
            let second = try driver.watch("busy")
            DispatchQueue.concurrentPerform(iterations: 8) { worker in
                for i in 0..<20 {
                    _ = driver.register(Self.instance("busy", "w\(worker)-\(i)"))
                }
            }
            let one = first.wait(count: 160)
            let two = second.wait(count: 160)
            #expect(one.count == 160)
            #expect(one == two, "every watch sees the changes in the order they happened")
            #expect(!first.overlapped && !second.overlapped)
            #expect(driver.unwatch(first.id) == PX_OK.status && driver.unwatch(second.id) == PX_OK.status)
        }
    }

    @Test("instances expire after their TTL unless registered again; watches see the expiry as a delete")
    func ttl() throws {
        try Self.withRegistry(sweepIntervalMs: 10) { driver, _, _ in
            let watcher = try driver.watch("leased")
            let short = Self.instance("leased", "short", ttlMs: 60)
            // Renewed every 50 ms with a 400 ms TTL: it outlives `short` by far, even on a loaded machine.
            let renewed = Self.instance("leased", "renewed", ttlMs: 400)
            let forever = Self.instance("leased", "forever")
            _ = try driver.register(short).value()
            _ = try driver.register(renewed).value()
            _ = try driver.register(forever).value()
            for _ in 0..<6 {
                Thread.sleep(forTimeInterval: 0.05)
                _ = try driver.register(renewed).value()
            }
            #expect(try driver.lookup("leased").value().map(\.instanceID) == ["forever", "renewed"])
            let events = watcher.wait(count: 4)
            #expect(events == [.put(short), .put(renewed), .put(forever), .delete(short)])
            #expect(watcher.wait(count: 5).last == .delete(renewed), "once no longer renewed, it expires too")
            #expect(try driver.lookup("leased").value().map(\.instanceID) == ["forever"])
            #expect(driver.unwatch(watcher.id) == PX_OK.status)
        }
    }

    @Test("instances survive a restart through registry.json")
    func persistence() throws {
        let node = try ShippedPluginNode("standalone-registry", library: "libStandaloneRegistry.so")
        defer { node.remove() }
        let kept = Self.instance("orders", "kept", metadata: ["zone": "eu"])
        let leased = Self.instance("orders", "leased", ttlMs: 600_000)
        do {
            let kernel = try node.kernel()
            defer { kernel.stop() }
            kernel.start()
            let driver = try RegistryDriver(kernel)
            _ = try driver.register(kept).value()
            _ = try driver.register(leased).value()
            _ = try driver.register(Self.instance("orders", "gone")).value()
            _ = try driver.deregister("orders", "gone").value()
            driver.ledger.expectCompletionRule()
        }
        let file = node.dataDirectory + "/registry.json"
        let text = try String(contentsOfFile: file, encoding: .utf8)
        #expect(text.contains("\"kept\"") && !text.contains("\"gone\""), "\(text)")
        #expect(!FileManager.default.fileExists(atPath: file + ".tmp"), "the temporary file was renamed")

        let restarted = try node.kernel()
        defer { restarted.stop() }
        restarted.start()
        let driver = try RegistryDriver(restarted)
        #expect(try driver.lookup("orders").value() == [kept, leased])
    }

    @Test("a corrupt registry.json fails the plugin's creation with a reason naming the file")
    func corruptFile() throws {
        let node = try ShippedPluginNode("standalone-registry", library: "libStandaloneRegistry.so")
        defer { node.remove() }
        try FileManager.default.createDirectory(atPath: node.dataDirectory, withIntermediateDirectories: true)
        try "{not json".write(toFile: node.dataDirectory + "/registry.json", atomically: true, encoding: .utf8)
        let kernel = try node.kernel()
        defer { kernel.stop() }
        kernel.start()
        let status = try kernel.requireStatus("standalone-registry")
        #expect(status.state == .failed)
        #expect(status.lastError?.contains("PX_ERR_CORRUPTION") == true, "\(status.lastError ?? "")")
        #expect(status.lastError?.contains("registry.json") == true, "\(status.lastError ?? "")")
    }
}

/// Drives a registry plugin's C vtable as the kernel does.
final class RegistryDriver: @unchecked Sendable {
    // Safe: see StorageDriver; `watchers` is behind a mutex.
    let vtable: UnsafePointer<px_registry_vtable>
    let instance: UnsafeMutableRawPointer
    let ledger = ProbeLedger()

    /// A service instance as the test sees it.
    struct Instance: Equatable, Sendable {
        var service: String
        var instanceID: String
        var address: String
        var metadata: [String: String]
        var ttlMs: UInt64

        init(service: String, instanceID: String, address: String, metadata: [String: String], ttlMs: UInt64) {
            self.service = service
            self.instanceID = instanceID
            self.address = address
            self.metadata = metadata
            self.ttlMs = ttlMs
        }

        init(copying c: UnsafePointer<px_service_instance>) {
            var metadata: [String: String] = [:]
            for i in 0..<c.pointee.metadata_count {
                if let kv = c.pointee.metadata?[i] { metadata[kv.key.string] = kv.value.string }
            }
            self.init(
                service: c.pointee.service.string, instanceID: c.pointee.instance_id.string,
                address: c.pointee.address.string, metadata: metadata, ttlMs: c.pointee.ttl_ms)
        }

        /// Lends the instance as a `px_service_instance` for the duration of `body`.
        func withC<R>(_ body: (UnsafePointer<px_service_instance>) -> R) -> R {
            let pairs = metadata.sorted { $0.key < $1.key }
            let texts = [service, instanceID, address] + pairs.flatMap { [$0.key, $0.value] }
            let strings = texts.map { strdup($0) }
            defer { strings.forEach { free($0) } }
            func str(_ i: Int) -> px_str { px_str(ptr: UnsafePointer(strings[i]), len: texts[i].utf8.count) }
            let kvs = (0..<pairs.count).map { px_kv(key: str(3 + 2 * $0), value: str(4 + 2 * $0)) }
            return kvs.withUnsafeBufferPointer { kvBuffer in
                var c = px_service_instance(
                    struct_size: UInt32(MemoryLayout<px_service_instance>.size), reserved: 0, service: str(0),
                    instance_id: str(1), address: str(2), metadata: kvBuffer.baseAddress, metadata_count: pairs.count,
                    ttl_ms: ttlMs)
                return withUnsafePointer(to: &c) { body($0) }
            }
        }
    }

    enum Event: Equatable, Sendable {
        case put(Instance)
        case delete(Instance)
    }

    /// Collects one watch's events; notices two calls running at once.
    final class Watcher: @unchecked Sendable {
        // Safe: guarded by `lock`; `inside` is atomic.
        private let lock = NSCondition()
        private var received: [Event] = []
        private let inside = Atomic<Bool>(false)
        private let overlaps = Atomic<Int>(0)
        var id: UInt64 = 0

        func receive(_ kind: UInt32, _ instance: UnsafePointer<px_service_instance>?) {
            if inside.exchange(true, ordering: .acquiring) { overlaps.add(1, ordering: .relaxed) }
            defer { inside.store(false, ordering: .releasing) }
            guard let instance else { return }
            let copied = Instance(copying: instance)
            let event: Event = kind == PX_WATCH_PUT.rawValue ? .put(copied) : .delete(copied)
            // Widen the window in which an overlapping call would be seen.
            Thread.sleep(forTimeInterval: 0.0002)
            lock.withLock {
                received.append(event)
                lock.broadcast()
            }
        }

        var events: [Event] { lock.withLock { received } }
        var overlapped: Bool { overlaps.load(ordering: .relaxed) > 0 }

        /// The events once there are at least `count` (or after 5 s).
        func wait(count: Int) -> [Event] {
            let deadline = Date().addingTimeInterval(5)
            return lock.withLock {
                while received.count < count && lock.wait(until: deadline) {}
                return received
            }
        }

        var user: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
    }

    /// Watchers stay alive as long as the driver: a late call must find its watcher.
    private let watchers = Mutex<[Watcher]>([])

    init(_ kernel: Kernel, plugin: String = "standalone-registry") throws {
        let loaded = try kernel.requireLoaded(plugin)
        vtable = try #require(loaded.descriptor.registry, "a registry plugin hangs a registry vtable")
        instance = loaded.instance
    }

    func register(_ value: Instance) -> HookOutcome<Void> {
        ledger.call("register") { user, err in
            value.withC {
                vtable.pointee.on_register(
                    instance, $0,
                    { user, status, error in CompletionProbe<Void>.from(user)?.record(status, (), error.string) },
                    user, err)
            }
        }
    }

    func deregister(_ service: String, _ id: String) -> HookOutcome<Void> {
        ledger.call("deregister") { user, err in
            withPXStr(service) { serviceStr in
                withPXStr(id) {
                    vtable.pointee.on_deregister(
                        instance, serviceStr, $0,
                        { user, status, error in CompletionProbe<Void>.from(user)?.record(status, (), error.string) },
                        user, err)
                }
            }
        }
    }

    func lookup(_ service: String) -> HookOutcome<[Instance]> {
        ledger.call("lookup") { user, err in
            withPXStr(service) {
                vtable.pointee.on_lookup(
                    instance, $0,
                    { user, status, instances, count, error in
                        let copied = (0..<count).compactMap { instances?[$0].map(Instance.init(copying:)) }
                        CompletionProbe<[Instance]>.from(user)?.record(status, copied, error.string)
                    }, user, err)
            }
        }
    }

    func watch(_ service: String) throws -> Watcher {
        let watcher = Watcher()
        watchers.withLock { $0.append(watcher) }
        var id: UInt64 = 0
        let (status, message) = withErrorBuffer { err in
            withPXStr(service) {
                vtable.pointee.on_watch(
                    instance, $0,
                    { user, kind, instance in
                        guard let user else { return }
                        Unmanaged<Watcher>.fromOpaque(user).takeUnretainedValue().receive(kind, instance)
                    }, watcher.user, &id, err)
            }
        }
        try #require(status == PX_OK.status, "on_watch: \(message)")
        watcher.id = id
        return watcher
    }

    func unwatch(_ id: UInt64) -> px_status { vtable.pointee.on_unwatch(instance, id) }
}
