import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// A plugin's view of the ABI 1.4 host services (`registry_keepalive`, `kv_*`): the real host table called
/// with a plugin context's handle, each call waited for.
final class KVHostCaller: Sendable {
    struct Answer: Sendable {
        var status: px_status
        var message = ""
        var version: UInt64 = 0
        var revision: UInt64 = 0
        var entry: Entry?
        var entries: [Entry] = []
        /// Whether the status came from the completion (false: returned synchronously).
        var completed = false
    }

    struct Entry: Sendable, Equatable {
        var key: String
        var value: String
        var version: UInt64
        var createRevision: UInt64
        var modRevision: UInt64

        init(_ raw: UnsafePointer<px_kv_entry>) {
            let e = raw.pointee
            key = e.key.string
            value = String(
                decoding: e.value.ptr.map { UnsafeBufferPointer(start: $0, count: e.value.len) }
                    ?? .init(start: nil, count: 0), as: UTF8.self)
            version = e.version
            createRevision = e.create_revision
            modRevision = e.mod_revision
        }
    }

    /// A completion's slot, passed retained as `user`.
    final class Waiter: Sendable {
        let answer = Mutex<Answer?>(nil)
        let calls = Atomic<Int>(0)
        let arrived = DispatchSemaphore(value: 0)

        func complete(_ value: Answer) {
            calls.add(1, ordering: .relaxed)
            answer.withLock { $0 = value }
            arrived.signal()
        }
    }

    /// One watch's changes, as `PUT key=value@revision` / `DELETE key@revision`.
    final class Changes: Sendable {
        let seen = Mutex<[String]>([])
        func wait(for count: Int, seconds: Double = 5) -> [String] {
            let deadline = Date().addingTimeInterval(seconds)
            while seen.withLock({ $0.count }) < count && Date() < deadline { Thread.sleep(forTimeInterval: 0.002) }
            return seen.withLock { $0 }
        }
    }

    let client: LocalClient
    private let changes = Mutex<[UInt64: Changes]>([:])
    /// The host table the calls go through (as a bit pattern: pointers are not Sendable): the kernel's own, or
    /// the one a plugin-host child gives its plugin (`ChildHost.api`).
    private let tableBits: UInt
    private let handleBits: UInt

    init(_ client: LocalClient) {
        self.client = client
        tableBits = UInt(bitPattern: HostServices.api)
        handleBits = UInt(bitPattern: client.context.handle)
    }

    /// Calls through `table` with `handle`, as a plugin given that table does.
    init(_ client: LocalClient, table: UnsafePointer<px_host_api>, handle: OpaquePointer) {
        self.client = client
        tableBits = UInt(bitPattern: table)
        handleBits = UInt(bitPattern: handle)
    }

    /// The handle a plugin passes: the plugin context's, or a plugin-host child's.
    var handle: OpaquePointer { OpaquePointer(bitPattern: handleBits)! }

    private var api: px_host_api { UnsafePointer<px_host_api>(bitPattern: tableBits)!.pointee }

    private func call(_ body: (UnsafeMutableRawPointer, UnsafeMutablePointer<px_error>) -> px_status) -> Answer {
        let waiter = Waiter()
        let user = Unmanaged.passRetained(waiter).toOpaque()
        let (status, message) = StandalonePlugin.withErrorBuffer { err in body(user, err) }
        guard status == PX_OK.status else {
            Unmanaged<Waiter>.fromOpaque(user).release()
            return Answer(status: status, message: message)
        }
        guard waiter.arrived.wait(timeout: .now() + 10) == .success else {
            return Answer(status: PX_ERR_TIMEOUT.status, message: "no completion within 10 s", completed: true)
        }
        return waiter.answer.withLock { $0! }
    }

    private static let writeDone: px_kv_write_done_fn = { user, status, version, revision, error in
        Unmanaged<Waiter>.fromOpaque(user!).takeRetainedValue().complete(
            Answer(status: status, message: error.string, version: version, revision: revision, completed: true))
    }

    private static let getDone: px_kv_get_done_fn = { user, status, entry, revision, error in
        Unmanaged<Waiter>.fromOpaque(user!).takeRetainedValue().complete(
            Answer(
                status: status, message: error.string, revision: revision, entry: entry.map(Entry.init),
                completed: true))
    }

    private static let listDone: px_kv_list_done_fn = { user, status, entries, count, revision, error in
        let copies = (0..<count).compactMap { entries?[$0].map(Entry.init) }
        Unmanaged<Waiter>.fromOpaque(user!).takeRetainedValue().complete(
            Answer(status: status, message: error.string, revision: revision, entries: copies, completed: true))
    }

    private static let done: px_done_fn = { user, status, error in
        Unmanaged<Waiter>.fromOpaque(user!).takeRetainedValue().complete(
            Answer(status: status, message: error.string, completed: true))
    }

    private static let watched: px_kv_watch_fn = { user, kind, entry in
        guard let entry else { return }
        let e = Entry(entry)
        let text =
            kind == PX_WATCH_PUT.rawValue
            ? "PUT \(e.key)=\(e.value)@\(e.modRevision)" : "DELETE \(e.key)@\(e.modRevision)"
        Unmanaged<Changes>.fromOpaque(user!).takeUnretainedValue().seen.withLock { $0.append(text) }
    }

    func put(_ key: String, _ value: String, expected: UInt64 = UInt64.max) -> Answer {
        let bytes = Array(value.utf8)
        return call { user, err in
            withPXStr(key) { key in
                bytes.withUnsafeBufferPointer { b in
                    api.kv_put(
                        handle, key, px_bytes(ptr: b.baseAddress, len: b.count), expected, Self.writeDone, user, err)
                }
            }
        }
    }

    func delete(_ key: String, expected: UInt64 = UInt64.max) -> Answer {
        call { user, err in withPXStr(key) { api.kv_delete(handle, $0, expected, Self.writeDone, user, err) } }
    }

    func get(_ key: String) -> Answer {
        call { user, err in withPXStr(key) { api.kv_get(handle, $0, Self.getDone, user, err) } }
    }

    func list(_ prefix: String) -> Answer {
        call { user, err in withPXStr(prefix) { api.kv_list(handle, $0, Self.listDone, user, err) } }
    }

    func keepAlive(_ service: String, _ id: String) -> Answer {
        call { user, err in
            withPXStr(service) { s in withPXStr(id) { api.registry_keepalive(handle, s, $0, Self.done, user, err) } }
        }
    }

    /// Registers through `registry_register` (the kernel keeps TTL instances alive).
    func register(_ service: String, _ id: String, ttlMs: UInt64) -> Answer {
        call { user, err in
            withPXStr(service) { s in
                withPXStr(id) { i in
                    withPXStr("127.0.0.1:1") { a in
                        var instance = px_service_instance(
                            struct_size: UInt32(MemoryLayout<px_service_instance>.size), reserved: 0, service: s,
                            instance_id: i, address: a, metadata: nil, metadata_count: 0, ttl_ms: ttlMs)
                        return api.registry_register(handle, &instance, Self.done, user, err)
                    }
                }
            }
        }
    }

    func deregister(_ service: String, _ id: String) -> Answer {
        call { user, err in
            withPXStr(service) { s in withPXStr(id) { api.registry_deregister(handle, s, $0, Self.done, user, err) } }
        }
    }

    /// Instance ids registered in `service`, through `registry_lookup`.
    func lookup(_ service: String) -> [String] {
        final class Found: Sendable {
            let ids = Mutex<[String]>([])
            let done = DispatchSemaphore(value: 0)
        }
        let found = Found()
        let user = Unmanaged.passRetained(found).toOpaque()
        let status = withPXStr(service) { s in
            api.registry_lookup(
                handle, s,
                { user, _, instances, count, _ in
                    let found = Unmanaged<Found>.fromOpaque(user!).takeRetainedValue()
                    found.ids.withLock { ids in
                        for index in 0..<count { ids.append(instances?[index]?.pointee.instance_id.string ?? "") }
                    }
                    found.done.signal()
                }, user, nil)
        }
        guard status == PX_OK.status else {
            Unmanaged<Found>.fromOpaque(user).release()
            return ["(lookup returned \(StatusText.name(status)))"]
        }
        _ = found.done.wait(timeout: .now() + 10)
        return found.ids.withLock { $0.sorted() }
    }

    func watch(_ prefix: String, from: UInt64 = 0) -> (Answer, UInt64, Changes) {
        let recorder = Changes()
        var id: UInt64 = 0
        let user = Unmanaged.passRetained(recorder).toOpaque()
        let (status, message) = StandalonePlugin.withErrorBuffer { err in
            withPXStr(prefix) { api.kv_watch(handle, $0, from, Self.watched, user, &id, err) }
        }
        if status == PX_OK.status {
            // The watch's own reference, released by `unwatch` once the registry promises no further call. A
            // watch never ended (its node stopped first) keeps its recorder for the life of the test process:
            // a registry may still call it while it stops.
            changes.withLock { $0[id] = recorder }
        } else {
            Unmanaged<Changes>.fromOpaque(user).release()
        }
        return (Answer(status: status, message: message), id, recorder)
    }

    func unwatch(_ id: UInt64) -> px_status {
        let status = api.kv_unwatch(handle, id)
        if status == PX_OK.status, let recorder = changes.withLock({ $0.removeValue(forKey: id) }) {
            Unmanaged.passUnretained(recorder).release()  // the watch's reference, taken in `watch`
        }
        return status
    }
}

/// The ABI 1.4 host services routed through a real kernel to its registry: the standalone registry, no
/// registry, and a registry built against 1.3 without the hooks; and the kernel's keep-alive.
@Suite("Registry metadata store and leases through the kernel (ABI 1.4)")
struct RegistryMetadataTests {
    static func withStandalone(
        values: [String: String] = ["sweepIntervalMs": "10"],
        _ body: (KVHostCaller, Kernel, ShippedPluginNode) throws -> Void
    ) throws {
        let node = try ShippedPluginNode("standalone-registry", library: "libStandaloneRegistry.so", values: values)
        defer { node.remove() }
        let kernel = try node.kernel()
        defer { kernel.stop() }
        kernel.start()
        #expect(kernel.status(of: "standalone-registry")?.state == .active)
        try body(KVHostCaller(LocalClient(kernel: kernel, name: "kv-client")), kernel, node)
    }

    @Test("a plugin's kv calls reach the standalone registry: put, CAS, get, list, watch, delete")
    func routedToStandalone() throws {
        try Self.withStandalone { kv, _, _ in Self.putGetListWatchDelete(kv) }
    }

    /// Put, compare-and-swap, get, list, watch and delete against an empty store: the body the in-process test
    /// and the process-isolation proxy's test share.
    static func putGetListWatchDelete(_ kv: KVHostCaller) {
        let (watching, watchID, changes) = kv.watch("app/")
        #expect(watching.status == PX_OK.status, "\(watching.message)")
        let created = kv.put("app/a", "1", expected: 0)
        #expect(created.status == PX_OK.status && created.version == 1 && created.completed, "\(created)")
        let stale = kv.put("app/a", "x", expected: 0)
        #expect(stale.status == PX_ERR_FAILED_PRECONDITION.status && stale.version == 1, "\(stale)")
        #expect(stale.message.contains("app/a"), "the refusal names the key: \(stale.message)")
        let swapped = kv.put("app/a", "2", expected: 1)
        #expect(swapped.status == PX_OK.status && swapped.version == 2 && swapped.revision == created.revision + 1)
        let other = kv.put("app/b", "3")
        let outside = kv.put("apples", "no")
        #expect(other.status == PX_OK.status && outside.status == PX_OK.status)

        let read = kv.get("app/a")
        #expect(read.status == PX_OK.status && read.entry?.value == "2" && read.entry?.version == 2)
        #expect(read.entry?.createRevision == created.revision && read.entry?.modRevision == swapped.revision)
        let absent = kv.get("app/none")
        #expect(absent.status == PX_ERR_NOT_FOUND.status && absent.entry == nil && absent.completed)

        let listed = kv.list("app/")
        #expect(listed.entries.map(\.key) == ["app/a", "app/b"] && listed.revision == outside.revision)

        let deleted = kv.delete("app/a", expected: 2)
        #expect(deleted.status == PX_OK.status && deleted.version == 0)
        #expect(kv.delete("app/a").status == PX_ERR_NOT_FOUND.status)

        let seen = changes.wait(for: 4)
        #expect(
            seen == [
                "PUT app/a=1@\(created.revision)", "PUT app/a=2@\(swapped.revision)",
                "PUT app/b=3@\(other.revision)",
                "DELETE app/a@\(deleted.revision)",
            ], "in revision order, nothing outside the prefix")
        #expect(kv.unwatch(watchID) == PX_OK.status)
        #expect(kv.unwatch(watchID) == PX_ERR_NOT_FOUND.status, "a watch ends once")
    }

    @Test("without a registry every 1.4 host call is PX_ERR_UNSUPPORTED, synchronously, saying why")
    func noRegistry() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        Self.refusedWithoutRegistry(KVHostCaller(h.client))
        #expect(HostServices.api.pointee.struct_size == UInt32(MemoryLayout<px_host_api>.size))
    }

    /// Every 1.4 call refused synchronously with the reason, its completion never called (a node without a
    /// registry): shared with the process-isolation proxy's test.
    static func refusedWithoutRegistry(_ kv: KVHostCaller) {
        for answer in [kv.put("a", "1"), kv.get("a"), kv.delete("a"), kv.list(""), kv.watch("a").0] {
            #expect(answer.status == PX_ERR_UNSUPPORTED.status && !answer.completed, "\(answer)")
            #expect(answer.message.contains("no registry plugin is active"), "\(answer.message)")
        }
        let keepAlive = kv.keepAlive("svc", "a")
        #expect(keepAlive.status == PX_ERR_UNSUPPORTED.status && keepAlive.message.contains("keep-alive"))
        #expect(!keepAlive.completed)
    }

    @Test("a registry built against 1.3: its hooks serve, the 1.4 calls answer UNSUPPORTED naming it")
    func registryOneThree() throws {
        let node = try FixtureNode()
        defer { node.remove() }
        try node.writeManifest(
            fixture: "abi13_registry", kind: "registry", abi: "{major: 1, minor: 3}",
            extra: """
                provides:
                  - {capability: registry, version: 1.0.0}
                operations:
                  - {name: registered, symbol: px_op_abi13_registry_registered, signature: "uint64 (instance)"}
                  - {name: calls, symbol: px_op_abi13_registry_calls, signature: "uint64 (instance)"}
                """)
        let kernel = try node.kernel()
        defer { kernel.stop() }
        kernel.start()
        #expect(
            kernel.status(of: "abi13-registry")?.state == .active,
            "\(kernel.status(of: "abi13-registry")?.lastError ?? "")")
        let loaded = try kernel.requireLoaded("abi13-registry")
        let table = try #require(loaded.descriptor.registry)
        #expect(Int(table.pointee.struct_size) == ABIStruct.size("px_registry_vtable", minor: 3))
        #expect(
            table.pointee.on_keepalive == nil && table.pointee.on_kv_get == nil && table.pointee.on_kv_unwatch == nil)

        let kv = KVHostCaller(LocalClient(kernel: kernel, name: "kv-client"))
        for answer in [kv.put("a", "1"), kv.get("a"), kv.delete("a"), kv.list(""), kv.watch("a").0] {
            #expect(answer.status == PX_ERR_UNSUPPORTED.status && !answer.completed, "\(answer)")
            #expect(answer.message == "registry 'abi13-registry' has no metadata store", "\(answer.message)")
        }
        #expect(kv.keepAlive("svc", "a").message == "registry 'abi13-registry' has no keep-alive")
        // Its 1.3 hooks still serve, and the kernel's renewal of a TTL instance calls nothing it lacks.
        #expect(kv.register("svc", "a", ttlMs: 30).status == PX_OK.status)
        #expect(kv.lookup("svc") == ["a"])
        Thread.sleep(forTimeInterval: 0.2)
        func count(_ operation: String) throws -> Int {
            Int(try kernel.callOperation(plugin: "abi13-registry", operation: operation, arguments: [])) ?? -1
        }
        #expect(try count("registered") == 1)
        #expect(try count("calls") == 2, "register and lookup only: no keep-alive reached past its table")
    }

    @Test("the kernel renews a plugin's TTL instance until it stops; then it expires within its TTL")
    func kernelKeepAlive() throws {
        try Self.withStandalone { kv, kernel, _ in
            let ttl: UInt64 = 300
            #expect(kv.register("leased", "kept", ttlMs: ttl).status == PX_OK.status)
            #expect(kv.register("leased", "forever", ttlMs: 0).status == PX_OK.status)
            #expect(kernel.services.leases.count == 1, "only the TTL instance is renewed")
            // Four TTLs later it is still there: the kernel renewed it every 100 ms.
            Thread.sleep(forTimeInterval: Double(ttl) * 4 / 1000)
            #expect(kv.lookup("leased") == ["forever", "kept"])
            // The plugin stops (what the lifecycle does when it does): renewals stop, the instance expires.
            let stopped = ContinuousClock.now
            kernel.services.release(owner: kv.ownerID, wait: true)
            #expect(kernel.services.leases.count == 0)
            var ids = kv.lookup("leased")
            while ids.contains("kept") && ContinuousClock.now - stopped < .seconds(5) {
                Thread.sleep(forTimeInterval: 0.02)
                ids = kv.lookup("leased")
            }
            #expect(ids == ["forever"], "expired after the plugin stopped")
            #expect(ContinuousClock.now - stopped < .milliseconds(Int(ttl)) + .seconds(2))
        }
    }

    @Test("a deregistered instance is no longer renewed, and a lost one is registered again")
    func leaseEndsAndRecovers() throws {
        try Self.withStandalone { kv, kernel, _ in
            #expect(kv.register("leased", "a", ttlMs: 200).status == PX_OK.status)
            #expect(kv.deregister("leased", "a").status == PX_OK.status)
            #expect(kernel.services.leases.count == 0)
            Thread.sleep(forTimeInterval: 0.3)
            #expect(kv.lookup("leased").isEmpty, "not brought back after its deregistration")

            #expect(kv.register("leased", "b", ttlMs: 150).status == PX_OK.status)
            // The registry loses it behind the kernel's back (as when it expired during a long pause): the next
            // renewal finds it gone and registers it again from the kernel's copy.
            _ = try RegistryDriver(kernel).deregister("leased", "b").value()
            var ids = kv.lookup("leased")
            let deadline = Date().addingTimeInterval(3)
            while ids != ["b"] && Date() < deadline {
                Thread.sleep(forTimeInterval: 0.02)
                ids = kv.lookup("leased")
            }
            #expect(ids == ["b"])
            #expect(kv.keepAlive("leased", "b").status == PX_OK.status)
        }
    }
}

/// The standalone registry's metadata store on disk (`kv.log`): what survives a restart, the bounded history
/// and the log's compaction.
@Suite("standalone-registry metadata store on disk")
struct StandaloneKVStoreTests {
    @Test("keys, versions and revisions survive a restart; a watch resumes across it; a torn tail is cut off")
    func restart() throws {
        let node = try ShippedPluginNode("standalone-registry", library: "libStandaloneRegistry.so")
        defer { node.remove() }
        var revisions: [UInt64] = []
        do {
            let kernel = try node.kernel()
            kernel.start()
            let kv = KVHostCaller(LocalClient(kernel: kernel))
            for (key, value) in [("cfg/a", "1"), ("cfg/b", "2"), ("cfg/a", "3")] {
                revisions.append(kv.put(key, value).revision)
            }
            revisions.append(kv.delete("cfg/b").revision)
            kernel.stop()
        }
        #expect(revisions == [1, 2, 3, 4])
        // A crash in the middle of an append leaves part of a record: it was never acknowledged.
        let log = node.dataDirectory + "/kv.log"
        let handle = try #require(FileHandle(forWritingAtPath: log))
        handle.seekToEndOfFile()
        handle.write(Data([40, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]))
        handle.closeFile()

        let kernel = try node.kernel()
        defer { kernel.stop() }
        kernel.start()
        #expect(kernel.status(of: "standalone-registry")?.state == .active)
        let kv = KVHostCaller(LocalClient(kernel: kernel))
        let a = kv.get("cfg/a")
        #expect(a.entry?.value == "3" && a.entry?.version == 2 && a.entry?.createRevision == 1 && a.revision == 4)
        #expect(kv.get("cfg/b").status == PX_ERR_NOT_FOUND.status)
        let (_, _, changes) = kv.watch("cfg/", from: 2)
        #expect(kv.put("cfg/c", "5").revision == 5, "revisions go on from the restored one")
        #expect(changes.wait(for: 4) == ["PUT cfg/b=2@2", "PUT cfg/a=3@3", "DELETE cfg/b@4", "PUT cfg/c=5@5"])
    }

    @Test("history beyond the bound answers OUT_OF_RANGE; the log is compacted and still restores everything")
    func boundedHistoryAndCompaction() throws {
        let node = try ShippedPluginNode(
            "standalone-registry", library: "libStandaloneRegistry.so", values: ["kvHistoryChanges": "5"])
        defer { node.remove() }
        let log = node.dataDirectory + "/kv.log"
        do {
            let kernel = try node.kernel()
            kernel.start()
            let kv = KVHostCaller(LocalClient(kernel: kernel))
            // 1,200 changes to 10 keys, from 4 threads: enough for the log to be compacted (it keeps 10 keys and
            // 5 changes), bounded in count.
            DispatchQueue.concurrentPerform(iterations: 4) { worker in
                for i in 0..<300 { _ = kv.put("n/\((worker * 300 + i) % 10)", "\(worker)-\(i)") }
            }
            #expect(kv.list("n/").revision == 1200)
            let refused = kv.watch("n/", from: 1195 - 1)
            #expect(refused.0.status == PX_ERR_OUT_OF_RANGE.status, "\(refused.0)")
            #expect(refused.0.message.contains("no longer kept"), "\(refused.0.message)")
            let (kept, _, changes) = kv.watch("n/", from: 1196)
            #expect(kept.status == PX_OK.status)
            #expect(changes.wait(for: 5).count == 5, "the last five changes replayed")
            kernel.stop()
        }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: log)[.size] as? Int)
        #expect(size < 40_000, "compacted: \(size) bytes for 10 keys and 5 changes, not 1,200 records")
        let kernel = try node.kernel()
        defer { kernel.stop() }
        kernel.start()
        let kv = KVHostCaller(LocalClient(kernel: kernel))
        let listed = kv.list("n/")
        #expect(listed.revision == 1200 && listed.entries.count == 10)
        #expect(listed.entries.map(\.version).reduce(0, +) == 1200, "every put counted in the versions")
        #expect(kv.watch("n/", from: 1196).0.status == PX_OK.status, "the kept history survived the compaction")
        #expect(kv.watch("n/", from: 1195).0.status == PX_ERR_OUT_OF_RANGE.status)
    }
}

extension KVHostCaller {
    /// The plugin context's identity, as the kernel's per-plugin tables key it.
    var ownerID: ObjectIdentifier { client.context.id }
}
