/// One key of a versioned key-value store: its value and its per-key version (1 when created, +1 per put).
public struct KeyValueRecord: Sendable, Equatable {
    public var key: String
    public var value: [UInt8]
    public var version: UInt64

    public init(key: String, value: [UInt8], version: UInt64) {
        self.key = key
        self.value = value
        self.version = version
    }
}

/// Why a call of a `KeyValueBackend` failed.
public struct KeyValueFailure: Error, Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The version condition failed; the key's current version (0: absent).
        case conflict(currentVersion: UInt64)
        /// The key is absent (a delete without condition).
        case notFound
        /// The store refused the call outright (no registry, or one without a metadata store).
        case unsupported
        /// The store could not be reached; for a conditional write, whether it was applied is unknown.
        case unavailable
        /// Anything else.
        case other
    }

    public var kind: Kind
    public var message: String

    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
}

/// A versioned key-value store with compare-and-swap on per-key versions: the registry's metadata store
/// (ABI 1.4 `kv_*`) as the plugin reaches it, or a test's. Every completion is called exactly once, on any
/// thread (possibly before the method returns).
public protocol KeyValueBackend: Sendable {
    /// What the store is, for messages ("the registry's metadata store").
    var name: String { get }
    func get(_ key: String, completion: @escaping @Sendable (Result<KeyValueRecord?, KeyValueFailure>) -> Void)
    /// Writes under `expected`; completes with the key's new version.
    func put(
        _ key: String, _ value: [UInt8], expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<UInt64, KeyValueFailure>) -> Void)
    /// Deletes under `expected`; an absent key with `.any` fails with `.notFound`.
    func delete(
        _ key: String, expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<Void, KeyValueFailure>) -> Void
    )
    /// The keys under `prefix`.
    func list(prefix: String, completion: @escaping @Sendable (Result<[KeyValueRecord], KeyValueFailure>) -> Void)
}

/// The ledger metadata store over a `KeyValueBackend` (the registry's metadata store): the semantics of
/// `FileMetadataStore` on a store that several nodes may share.
///
/// Versions: `VersionedValue.version` is the backend's per-key version (1 when created, +1 per put), never a
/// store-wide revision. The standalone registry keeps such a version per key; the etcd registry passes etcd's
/// own `version` of the key (its modification count since creation) and makes a conditional write one `Txn`
/// comparing it, so `.exactly(v)` is a compare-and-swap on both, `.absent` is "version 0" (create-only) on
/// both. Like the file store, a deleted and re-created key starts again at version 1.
///
/// Errors: a failed condition is `.conflict` naming the key and its current version; a store that cannot be
/// reached is `.io`, and a conditional write that failed so is reported as of unknown outcome (etcd may have
/// applied it: read the key again before deciding); deleting an absent key with `.any` succeeds, as it does
/// in the file store.
public struct KeyValueMetadataStore: MetadataStore {
    public let backend: any KeyValueBackend

    public init(backend: any KeyValueBackend) { self.backend = backend }

    public func get(_ key: String, completion: @escaping @Sendable (Result<VersionedValue?, LedgerError>) -> Void) {
        let name = backend.name
        backend.get(key) { result in
            completion(
                result.map { $0.map { VersionedValue(value: $0.value, version: $0.version) } }
                    .mapError { Self.error($0, "read", key, name, conditional: false) })
        }
    }

    public func put(
        _ key: String, _ value: [UInt8], expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<UInt64, LedgerError>) -> Void
    ) {
        let name = backend.name
        backend.put(key, value, expected: expected) { result in
            completion(result.mapError { Self.error($0, "write", key, name, conditional: expected != .any) })
        }
    }

    public func delete(
        _ key: String, expected: ExpectedVersion, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        let name = backend.name
        backend.delete(key, expected: expected) { result in
            switch result {
            case .success: completion(.success(()))
            case .failure(let failure) where failure.kind == .notFound && expected == .any:
                completion(.success(()))
            case .failure(let failure) where failure.kind == .notFound:
                completion(
                    .failure(
                        Self.error(.init(.conflict(currentVersion: 0), ""), "delete", key, name, conditional: true)))
            case .failure(let failure):
                completion(.failure(Self.error(failure, "delete", key, name, conditional: expected != .any)))
            }
        }
    }

    public func list(
        prefix: String,
        completion: @escaping @Sendable (Result<[(key: String, value: VersionedValue)], LedgerError>) -> Void
    ) {
        let name = backend.name
        backend.list(prefix: prefix) { result in
            completion(
                result.map { records in
                    records.filter { $0.key.hasPrefix(prefix) }
                        .sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }
                        .map { (key: $0.key, value: VersionedValue(value: $0.value, version: $0.version)) }
                }.mapError { Self.error($0, "list", prefix + "*", name, conditional: false) })
        }
    }

    /// The ledger error a backend failure of `operation` on `key` becomes.
    static func error(
        _ failure: KeyValueFailure, _ operation: String, _ key: String, _ store: String, conditional: Bool
    ) -> LedgerError {
        let detail = failure.message.isEmpty ? "" : ": \(failure.message)"
        switch failure.kind {
        case .conflict(let current):
            let now = current == 0 ? "it is absent" : "its version is now \(current)"
            return LedgerError(.conflict, "metadata key '\(key)' changed: \(now) (\(store))")
        case .unavailable where conditional:
            return LedgerError(
                .io,
                "metadata: cannot \(operation) '\(key)' in \(store), the outcome is unknown (it may have been applied)"
                    + detail)
        case .notFound, .unsupported, .unavailable, .other:
            return LedgerError(.io, "metadata: cannot \(operation) '\(key)' in \(store)\(detail)")
        }
    }
}
