import Dispatch
import Foundation
import LedgerCore
import PlexusPluginSDK
import StorageIO
import Synchronization

/// The registry's metadata store, reached through the host's ABI 1.4 `kv_*` calls, as the `KeyValueBackend`
/// of a `KeyValueMetadataStore` (which gives it the ledger metadata store's semantics: see there for how the
/// standalone registry's and etcd's versions map to `VersionedValue.version`).
///
/// Keys keep their `ledgers/` prefix: they are shared by every node of a cluster with a clustered registry
/// (streams and ledgers are then cluster-wide, one writer per stream by fencing), and the etcd registry puts
/// every key under its own `prefix` (`<prefix>/kv/ledgers/…`), so two clusters with different prefixes on one
/// etcd do not collide.
struct HostKeyValue: KeyValueBackend {
    let host: PlexusPluginSDK.Host

    var name: String { "the registry's metadata store" }

    /// The backend failure a refused or failed host call means.
    static func failure(_ error: any Error) -> KeyValueFailure {
        guard let error = error as? PluginError else { return KeyValueFailure(.other, "\(error)") }
        if let conflict = error.conflict {
            return KeyValueFailure(.conflict(currentVersion: conflict.currentVersion), error.message)
        }
        switch error.status {
        case PX_ERR_FAILED_PRECONDITION.status: return KeyValueFailure(.conflict(currentVersion: 0), error.message)
        case PX_ERR_NOT_FOUND.status: return KeyValueFailure(.notFound, error.message)
        case PX_ERR_UNSUPPORTED.status: return KeyValueFailure(.unsupported, error.message)
        case PX_ERR_UNAVAILABLE.status, PX_ERR_TIMEOUT.status: return KeyValueFailure(.unavailable, error.message)
        default: return KeyValueFailure(.other, error.message)
        }
    }

    static func version(_ expected: ExpectedVersion) -> KVVersion {
        switch expected {
        case .any: return .any
        case .absent: return .absent
        case .exactly(let version): return .exactly(version)
        }
    }

    func get(_ key: String, completion: @escaping @Sendable (Result<KeyValueRecord?, KeyValueFailure>) -> Void) {
        do {
            try host.kvGet(key) { result in
                completion(
                    result.map { $0.map { KeyValueRecord(key: $0.key, value: $0.value, version: $0.version) } }
                        .mapError(Self.failure))
            }
        } catch {
            completion(.failure(Self.failure(error)))
        }
    }

    func put(
        _ key: String, _ value: [UInt8], expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<UInt64, KeyValueFailure>) -> Void
    ) {
        do {
            try host.kvPut(key, value, expectedVersion: Self.version(expected)) { result in
                completion(result.map { $0.version }.mapError(Self.failure))
            }
        } catch {
            completion(.failure(Self.failure(error)))
        }
    }

    func delete(
        _ key: String, expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<Void, KeyValueFailure>) -> Void
    ) {
        do {
            try host.kvDelete(key, expectedVersion: Self.version(expected)) { result in
                completion(result.map { _ in () }.mapError(Self.failure))
            }
        } catch {
            completion(.failure(Self.failure(error)))
        }
    }

    func list(prefix: String, completion: @escaping @Sendable (Result<[KeyValueRecord], KeyValueFailure>) -> Void) {
        do {
            try host.kvList(prefix: prefix) { result in
                completion(
                    result.map { list in
                        list.entries.map { KeyValueRecord(key: $0.key, value: $0.value, version: $0.version) }
                    }.mapError(Self.failure))
            }
        } catch {
            completion(.failure(Self.failure(error)))
        }
    }
}

/// Where this instance keeps its metadata (the `metadata` setting), decided at create:
///
/// - `file`: `<data>/metadata`.
/// - `registry`: the registry's metadata store; refused when the node offers none (no registry plugin, one
///   without a metadata store, a kernel older than 1.4).
/// - `auto`: the registry's store when offered, else the file. A data directory whose `metadata` file already
///   holds metadata keeps using it (its streams would vanish otherwise).
///
/// Once the registry's store is chosen, `<data>/metadata-location` records it, and a later start that would
/// use the file (`file`, or `auto` on a node without a registry) is refused rather than showing empty streams.
enum MetadataLocation {
    static func open(_ setting: Settings.Metadata, host: PlexusPluginSDK.Host, dataDirectory: String) throws
        -> any MetadataStore
    {
        let filePath = dataDirectory + "/metadata"
        let markerPath = dataDirectory + "/metadata-location"
        let recordedRegistry =
            (try? String(contentsOfFile: markerPath, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
            == "registry"
        func file() throws -> any MetadataStore {
            guard !recordedRegistry else {
                throw PluginError(
                    PX_ERR_FAILED_PRECONDITION,
                    "ledger-storage: the ledgers of this data directory are described in the registry's metadata "
                        + "store (\(markerPath) says so), but metadata '\(setting.rawValue)' would use the file "
                        + "\(filePath)\(setting == .auto ? " (this node offers no registry metadata store)" : ""); "
                        + "start a registry plugin, or set metadata to 'registry'")
            }
            do {
                return try FileMetadataStore(path: filePath)
            } catch {
                throw error.pluginError
            }
        }
        if setting == .file { return try file() }
        if setting == .auto && !recordedRegistry && Files.exists(filePath) {
            host.log(
                .info, "ledger-storage: metadata 'auto' keeps \(filePath), which holds the metadata of earlier starts")
            return try file()
        }
        if let missing = try registryMissing(host) {
            guard setting == .registry else { return try file() }
            throw PluginError(
                PX_ERR_UNSUPPORTED,
                "ledger-storage: metadata 'registry' needs the registry's metadata store: \(missing); start a "
                    + "registry plugin with one (standalone-registry, etcd-registry) or set metadata to 'file' or "
                    + "'auto'")
        }
        if !recordedRegistry {
            if Files.exists(filePath) {
                throw PluginError(
                    PX_ERR_FAILED_PRECONDITION,
                    "ledger-storage: metadata 'registry', but \(filePath) holds the metadata of this data directory's "
                        + "streams from a start with metadata 'file' (they would vanish); set metadata to 'file' or "
                        + "'auto', or remove the data directory to start empty")
            }
            do {
                try Files.replace(markerPath, with: Array("registry\n".utf8), directory: dataDirectory, sync: true)
            } catch {
                throw PluginError(PX_ERR_IO, "ledger-storage: cannot write \(markerPath): \(error)")
            }
        }
        host.log(.info, "ledger-storage: metadata in the registry's metadata store")
        return KeyValueMetadataStore(backend: HostKeyValue(host: host))
    }

    /// Why the node offers no registry metadata store, `nil` when it does: asks it for a key (up to 10 s).
    /// - Throws: when the store exists but cannot be read (it is not silently replaced by the file).
    static func registryMissing(_ host: PlexusPluginSDK.Host) throws -> String? {
        guard host.hasMetadataStore else { return "the kernel has no metadata store calls (ABI 1.4)" }
        let done = DispatchSemaphore(value: 0)
        let answer = Mutex<Result<KVEntry?, PluginError>?>(nil)
        do {
            try host.kvGet(MetadataKeys.ledgerPrefix + "/next-ledger-id") { result in
                answer.withLock { $0 = result }
                done.signal()
            }
        } catch let error as PluginError where error.status == PX_ERR_UNSUPPORTED.status {
            return error.message
        }
        guard done.wait(timeout: .now() + 10) == .success, let result = answer.withLock({ $0 }) else {
            throw PluginError(
                PX_ERR_TIMEOUT, "ledger-storage: the registry's metadata store did not answer within 10 s")
        }
        switch result {
        case .success: return nil
        case .failure(let error) where error.status == PX_ERR_UNSUPPORTED.status: return error.message
        case .failure(let error):
            throw PluginError(
                status: error.status, "ledger-storage: cannot read the registry's metadata store: \(error.message)")
        }
    }
}
