import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusPluginSDK

/// The SDK's metadata store values (ABI 1.4) and the registry table it builds for a `RegistryPlugin`.
@Suite("Metadata store values and registry export")
struct KeyValueTests {
    @Test("a version condition maps to expected_version and back: any, absent, exactly")
    func versions() {
        #expect(KVVersion.any.raw == UInt64.max && KVVersion.absent.raw == 0 && KVVersion.exactly(7).raw == 7)
        for version in [KVVersion.any, .absent, .exactly(1), .exactly(42)] {
            #expect(KVVersion(raw: version.raw) == version)
        }
        #expect(KVVersion.absent.admits(current: 0) && !KVVersion.absent.admits(current: 1))
        #expect(KVVersion.exactly(3).admits(current: 3) && !KVVersion.exactly(3).admits(current: 2))
        #expect(KVVersion.any.admits(current: 0) && KVVersion.any.admits(current: 9))
    }

    @Test("an entry laid out in C reads back field for field, empty value and multi-byte key included")
    func entryRoundTrip() {
        for entry in [
            KVEntry(key: "a/é/1", value: Array("value".utf8), version: 3, createRevision: 5, modRevision: 9),
            KVEntry(key: "k", value: [], version: 0, createRevision: 0, modRevision: 12),
        ] {
            entry.withC { raw in
                #expect(raw.pointee.struct_size == UInt32(MemoryLayout<px_kv_entry>.size))
                #expect(KVEntry(copying: raw) == entry)
            }
        }
        let entries = (0..<3).map {
            KVEntry(
                key: "p/\($0)", value: Array(repeating: UInt8($0), count: $0), version: 1, createRevision: 1,
                modRevision: 1)
        }
        let copied = withCEntries(entries) { pointers, count in
            (0..<count).map { KVEntry(copying: pointers![$0]!) }
        }
        #expect(copied == entries)
    }

    @Test("a failed version condition names the key and its current version and carries the conflict")
    func conflict() {
        let error = PluginError.kvConflict(key: "cluster/leader", currentVersion: 4, revision: 17)
        #expect(error.status == PX_ERR_FAILED_PRECONDITION.status)
        #expect(error.message.contains("cluster/leader") && error.message.contains("4"), "\(error.message)")
        #expect(error.conflict == KVConflict(key: "cluster/leader", currentVersion: 4, revision: 17))
        #expect(PluginError(PX_ERR_IO, "disk").conflict == nil)
        #expect(PluginError.kvConflict(key: "x", currentVersion: 0, revision: 1).message.contains("absent"))
    }

    @Test("a watch change keeps its kind and entry; an unknown kind is refused")
    func changes() {
        let entry = KVEntry(key: "k", value: [1], version: 2, createRevision: 1, modRevision: 2)
        entry.withC { raw in
            #expect(KVChange(kind: PX_WATCH_PUT.rawValue, copying: raw) == .put(entry))
            #expect(KVChange(kind: PX_WATCH_DELETE.rawValue, copying: raw)?.kind == PX_WATCH_DELETE.rawValue)
            #expect(KVChange(kind: 9, copying: raw) == nil)
        }
        #expect(KVChange.put(entry).revision == 2)
    }
}

/// A registry with only the 1.3 methods: the SDK's defaults answer the 1.4 hooks.
final class PlainTestRegistry: RegistryPlugin {
    static let name = "plain-test-registry"
    static let version = "1.0.0"

    init(host: Host, config: PluginConfig) throws {}
    init() {}
    func start() throws {}
    func stop(timeout: Duration) throws {}

    func register(_ instance: ServiceInstance, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void) {
        completion(.success(()))
    }

    func deregister(
        service: String, instanceID: String, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) {
        completion(.success(()))
    }

    func lookup(service: String, completion: @escaping @Sendable (Result<[ServiceInstance], PluginError>) -> Void) {
        completion(.success([]))
    }

    func watch(service: String, handler: @escaping @Sendable (WatchEvent) -> Void) throws -> UInt64 { 1 }
    func unwatch(_ id: UInt64) throws {}
}

@Suite("Registry export of ABI 1.4")
struct RegistryExportKVTests {
    @Test("the table has every 1.4 hook; a registry without them answers PX_ERR_UNSUPPORTED saying which")
    func defaultsAreUnsupported() throws {
        let table = RegistryExport.install(PlainTestRegistry.self).pointee
        #expect(table.struct_size == UInt32(MemoryLayout<px_registry_vtable>.size))
        #expect(
            table.on_keepalive != nil && table.on_kv_get != nil && table.on_kv_put != nil && table.on_kv_delete != nil
                && table.on_kv_list != nil && table.on_kv_watch != nil && table.on_kv_unwatch != nil)
        let plugin = Unmanaged.passRetained(PlainTestRegistry())
        defer { plugin.release() }
        let instance = plugin.toOpaque()
        let (status, message) = Host.errorBuffer { err in
            withPXStr("k") { key in table.on_kv_get(instance, key, { _, _, _, _, _ in }, nil, err) }
        }
        #expect(status == PX_ERR_UNSUPPORTED.status)
        #expect(message == "registry 'plain-test-registry' has no metadata store", "\(message)")
        let (keepAlive, why) = Host.errorBuffer { err in
            withPXStr("s") { s in withPXStr("i") { table.on_keepalive(instance, s, $0, { _, _, _ in }, nil, err) } }
        }
        #expect(keepAlive == PX_ERR_UNSUPPORTED.status && why.contains("no keep-alive"), "\(why)")
        var id: UInt64 = 0
        let watch = Host.errorBuffer { err in
            withPXStr("p/") { table.on_kv_watch(instance, $0, 0, { _, _, _ in }, nil, &id, err) }
        }
        #expect(watch.0 == PX_ERR_UNSUPPORTED.status)
    }
}
