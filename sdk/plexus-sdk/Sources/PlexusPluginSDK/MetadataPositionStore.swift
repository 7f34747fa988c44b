import Synchronization

/// A position in the registry's metadata store (ABI 1.4) under `connectors/<instance name>/position`, shared
/// by every node of a cluster with a clustered registry. Each save is a compare-and-swap on the version this
/// instance last read or wrote, so a second instance writing the same position is noticed, not overwritten.
public final class MetadataPositionStore: PositionStore {
    public let host: Host
    public let key: String
    /// The key's version as last seen: nil unknown, 0 absent.
    private let version = Mutex<UInt64?>(nil)
    let timeout: Duration

    public init(host: Host, instanceName: String, timeout: Duration = .seconds(10)) {
        self.host = host
        self.key = "connectors/\(instanceName)/position"
        self.timeout = timeout
    }

    public var location: String { "metadata store key \(key)" }

    public func load() throws -> [UInt8]? {
        let entry = try Self.wait(timeout, "get \(key)") { done in try host.kvGet(key, completion: done) }
        version.withLock { $0 = entry?.version ?? 0 }
        return entry?.value
    }

    public func save(_ position: [UInt8]) throws {
        let expected: KVVersion =
            switch version.withLock({ $0 }) {
            case nil: .any
            case 0?: .absent
            case let v?: .exactly(v)
            }
        do {
            let write = try Self.wait(timeout, "put \(key)") { done in
                try host.kvPut(key, position, expectedVersion: expected, completion: done)
            }
            version.withLock { $0 = write.version }
        } catch let error as PluginError where error.status == PX_ERR_FAILED_PRECONDITION.status {
            // A put whose completion was lost may have been applied: that is ours, not another writer's.
            let current = try Self.wait(timeout, "get \(key)") { done in try host.kvGet(key, completion: done) }
            guard let current, current.value == position else {
                version.withLock { $0 = nil }
                throw PluginError(
                    PX_ERR_FAILED_PRECONDITION,
                    "\(key) was changed by another writer (version \(current?.version ?? 0)): is a second "
                        + "instance of this connector running?")
            }
            version.withLock { $0 = current.version }
        }
    }

    /// Runs an asynchronous call and waits for its completion, at most `timeout`.
    static func wait<T: Sendable>(
        _ timeout: Duration, _ what: String,
        _ call: (@escaping @Sendable (Result<T, PluginError>) -> Void) throws -> Void
    ) throws -> T {
        let outcome = ConnectorOutcome<Result<T, PluginError>>()
        try call { outcome.complete($0) }
        guard let result = outcome.wait(timeout: timeout) else {
            throw PluginError(PX_ERR_TIMEOUT, "metadata store: \(what) did not complete within \(timeout)")
        }
        return try result.get()
    }
}

/// The position store `PositionStores.open` gives a source: the registry's metadata store when the node
/// has one, else a file in the instance's data directory. Decided at the first `load`, on the connector's
/// thread (asking the registry may wait for the kernel). A position saved in the file while the node had no
/// metadata store is picked up when the metadata store has none yet.
public final class AutomaticPositionStore: PositionStore {
    let metadata: MetadataPositionStore?
    let file: FilePositionStore
    private let useMetadata = Mutex<Bool?>(nil)

    init(metadata: MetadataPositionStore?, file: FilePositionStore) {
        self.metadata = metadata
        self.file = file
    }

    public var location: String {
        useMetadata.withLock { $0 } == true ? (metadata?.location ?? file.location) : file.location
    }

    public func load() throws -> [UInt8]? {
        if let metadata {
            do {
                let value = try metadata.load()
                useMetadata.withLock { $0 = true }
                return try value ?? file.load()
            } catch let error as PluginError where error.status == PX_ERR_UNSUPPORTED.status {
                // No registry, or one without a metadata store: the file it is.
            }
        }
        useMetadata.withLock { $0 = false }
        return try file.load()
    }

    public func save(_ position: [UInt8]) throws {
        if useMetadata.withLock({ $0 }) == true, let metadata {
            try metadata.save(position)
        } else {
            try file.save(position)
        }
    }
}
