import Foundation
import StorageIO
import Synchronization

/// A value of the metadata store with its version (1 when created, +1 per put).
public struct VersionedValue: Sendable, Equatable {
    public var value: [UInt8]
    public var version: UInt64

    public init(value: [UInt8], version: UInt64) {
        self.value = value
        self.version = version
    }
}

/// The condition of a metadata write.
public enum ExpectedVersion: Sendable, Equatable {
    /// Unconditional.
    case any
    /// Only if the key is absent (create).
    case absent
    /// Only if the key's current version is this one (compare-and-swap).
    case exactly(UInt64)
}

/// Where ledger-storage keeps the metadata of ledgers and streams and the consumer offsets: the registry's
/// metadata store (ABI 1.4 kv functions) when the node offers one, a local fsynced file otherwise. Keys and
/// semantics are those of the registry's store: versions per key, compare-and-swap on them.
///
/// - Important: Every method may be called from any thread; each completion is called exactly once, on any
///   thread (possibly before the method returns). A failed condition completes with `.conflict`.
public protocol MetadataStore: Sendable {
    func get(_ key: String, completion: @escaping @Sendable (Result<VersionedValue?, LedgerError>) -> Void)
    /// Writes `value`; completes with the key's new version once the write is durable.
    func put(
        _ key: String, _ value: [UInt8], expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<UInt64, LedgerError>) -> Void)
    /// Deletes `key`; deleting an absent key succeeds when `expected` is `.any`.
    func delete(
        _ key: String, expected: ExpectedVersion, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void)
    /// Every key under `prefix`, in byte order.
    func list(
        prefix: String,
        completion: @escaping @Sendable (Result<[(key: String, value: VersionedValue)], LedgerError>) -> Void)
}

extension MetadataStore {
    /// Waits for a completion-style call; for callers that may block (opening a stream, tests).
    public func wait<T: Sendable>(
        _ call: (@escaping @Sendable (Result<T, LedgerError>) -> Void) -> Void
    ) throws(LedgerError) -> T {
        try waitFor(call)
    }
}

/// Calls `call` and blocks until its completion runs; returns or throws what it carried.
public func waitFor<T: Sendable>(
    _ call: (@escaping @Sendable (Result<T, LedgerError>) -> Void) -> Void
) throws(LedgerError) -> T {
    let done = DispatchSemaphore(value: 0)
    let box = Mutex<Result<T, LedgerError>?>(nil)
    call { result in
        box.withLock { $0 = result }
        done.signal()
    }
    done.wait()
    return try box.withLock { $0! }.get()
}

/// The metadata store of a node without a registry store: every key in one file, rewritten atomically and
/// fsynced (temporary file, `fdatasync`, rename, directory `fsync`) on each change before it completes.
///
/// ```
/// u32 magic "LMET"  u32 key count  per key: u32 length + key, u64 version, u32 length + value
/// u32 CRC-32C of everything before it
/// ```
public final class FileMetadataStore: MetadataStore {
    static let magic: UInt32 = 0x4C4D_4554

    public let path: String
    private let directory: String
    private let entries: Mutex<[String: VersionedValue]>

    /// Opens the store in `path`, creating it when absent.
    /// - Throws: `.corrupt` naming the file and byte when it is damaged; `.io`.
    public init(path: String) throws(LedgerError) {
        self.path = path
        directory = String(path[..<(path.lastIndex(of: "/") ?? path.startIndex)])
        guard Files.exists(path) else {
            entries = Mutex([:])
            return
        }
        let bytes: [UInt8]
        do {
            let file = try OpenFile(path: path)
            bytes = try file.read(count: try file.size, at: 0)
        } catch {
            throw LedgerError(.io, "metadata: \(error)")
        }
        guard bytes.count >= 12,
            CRC32C.checksum(Array(bytes[..<(bytes.count - 4)]))
                == UInt32(littleEndianBytes: bytes[(bytes.count - 4)...])
        else { throw LedgerError(.corrupt, "metadata \(path) byte \(max(0, bytes.count - 4)): the CRC is wrong") }
        var reader = ByteReader(Array(bytes[..<(bytes.count - 4)]))
        var loaded: [String: VersionedValue] = [:]
        do {
            guard try reader.u32() == Self.magic else {
                throw LedgerError(.corrupt, "metadata \(path) byte 0: not a ledger-storage metadata file")
            }
            for _ in 0..<(try reader.u32()) {
                let key = try reader.text()
                let version = try reader.u64()
                loaded[key] = VersionedValue(value: try reader.blob(), version: version)
            }
        } catch let error as LedgerError {
            throw error
        } catch {
            throw LedgerError(.corrupt, "metadata \(path) byte \(reader.position): ends early")
        }
        entries = Mutex(loaded)
    }

    public func get(_ key: String, completion: @escaping @Sendable (Result<VersionedValue?, LedgerError>) -> Void) {
        completion(.success(entries.withLock { $0[key] }))
    }

    public func put(
        _ key: String, _ value: [UInt8], expected: ExpectedVersion,
        completion: @escaping @Sendable (Result<UInt64, LedgerError>) -> Void
    ) {
        completion(
            change(key, expected: expected) { current in
                VersionedValue(value: value, version: (current?.version ?? 0) + 1)
            }.map { $0?.version ?? 0 })
    }

    public func delete(
        _ key: String, expected: ExpectedVersion, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        completion(change(key, expected: expected) { _ in nil }.map { _ in () })
    }

    public func list(
        prefix: String,
        completion: @escaping @Sendable (Result<[(key: String, value: VersionedValue)], LedgerError>) -> Void
    ) {
        let found = entries.withLock { entries in
            entries.filter { $0.key.hasPrefix(prefix) }.map { (key: $0.key, value: $0.value) }
        }
        completion(.success(found.sorted { Array($0.key.utf8).lexicographicallyPrecedes(Array($1.key.utf8)) }))
    }

    /// Applies one change under the lock, writing the file before the change is visible.
    private func change(
        _ key: String, expected: ExpectedVersion, _ next: (VersionedValue?) -> VersionedValue?
    ) -> Result<VersionedValue?, LedgerError> {
        entries.withLock { entries in
            let current = entries[key]
            switch expected {
            case .any: break
            case .absent where current != nil, .exactly(_) where current == nil:
                return .failure(conflict(key, current))
            case .exactly(let version) where current!.version != version:
                return .failure(conflict(key, current))
            default: break
            }
            var updated = entries
            updated[key] = next(current)
            do {
                try Files.replace(path, with: Self.encode(updated), directory: directory, sync: true)
            } catch {
                return .failure(LedgerError(.io, "metadata: cannot write \(path): \(error)"))
            }
            entries = updated
            return .success(updated[key])
        }
    }

    private func conflict(_ key: String, _ current: VersionedValue?) -> LedgerError {
        LedgerError(.conflict, "metadata key '\(key)' changed: its version is now \(current?.version ?? 0)")
    }

    static func encode(_ entries: [String: VersionedValue]) -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + entries.count * 64)
        writer.u32(magic)
        writer.u32(UInt32(entries.count))
        for (key, value) in entries.sorted(by: { $0.key < $1.key }) {
            writer.text(key)
            writer.u64(value.version)
            writer.blob(value.value)
        }
        writer.u32(CRC32C.checksum(writer.bytes))
        return writer.bytes
    }
}
