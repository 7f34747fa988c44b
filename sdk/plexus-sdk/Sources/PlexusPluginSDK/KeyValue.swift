import PlexusABI

// The registry's metadata store as Swift values (ABI 1.4): keys with versions, changed under store-wide
// revisions that start at 1 and grow by one per change (put or delete), like etcd's.

/// One key of the metadata store (`px_kv_entry`), owned by Swift.
public struct KVEntry: Sendable, Equatable, Hashable {
    /// UTF-8, 1 to 1024 bytes.
    public var key: String
    /// Up to 1 MiB.
    public var value: [UInt8]
    /// 1 when the key was created, one more per put; 0 in a delete notification.
    public var version: UInt64
    /// The store revision that created the key.
    public var createRevision: UInt64
    /// The store revision of the key's last change (the delete's, in a delete notification).
    public var modRevision: UInt64

    public init(key: String, value: [UInt8], version: UInt64, createRevision: UInt64, modRevision: UInt64) {
        self.key = key
        self.value = value
        self.version = version
        self.createRevision = createRevision
        self.modRevision = modRevision
    }

    /// Copies a borrowed C entry; fields past its `struct_size` read as zero.
    public init(copying c: UnsafePointer<px_kv_entry>) {
        let size = Int(UnsafeRawPointer(c).load(as: UInt32.self))
        var raw = px_kv_entry()
        withUnsafeMutableBytes(of: &raw) { target in
            target.copyMemory(
                from: UnsafeRawBufferPointer(
                    start: UnsafeRawPointer(c), count: min(size, MemoryLayout<px_kv_entry>.size)))
        }
        key = raw.key.string
        if let bytes = raw.value.ptr, raw.value.len > 0 {
            value = Array(UnsafeBufferPointer(start: bytes, count: raw.value.len))
        } else {
            value = []
        }
        version = raw.version
        createRevision = raw.create_revision
        modRevision = raw.mod_revision
    }

    /// Calls `body` with the entry laid out as a C `px_kv_entry` borrowing this value's storage.
    public func withC<R>(_ body: (UnsafePointer<px_kv_entry>) throws -> R) rethrows -> R {
        var keyBytes = Array(key.utf8)
        if keyBytes.isEmpty { keyBytes = [0] }
        let keyCount = key.utf8.count
        return try keyBytes.withUnsafeBufferPointer { keyBuffer in
            try value.withUnsafeBufferPointer { valueBuffer in
                var raw = px_kv_entry()
                raw.struct_size = UInt32(MemoryLayout<px_kv_entry>.size)
                raw.key = px_str(
                    ptr: keyCount == 0
                        ? nil : UnsafeRawPointer(keyBuffer.baseAddress!).assumingMemoryBound(to: CChar.self),
                    len: keyCount)
                raw.value = px_bytes(
                    ptr: valueBuffer.count == 0 ? nil : valueBuffer.baseAddress, len: valueBuffer.count)
                raw.version = version
                raw.create_revision = createRevision
                raw.mod_revision = modRevision
                return try withUnsafePointer(to: &raw) { try body($0) }
            }
        }
    }
}

/// A change under a watched prefix (`px_kv_watch_fn`).
public enum KVChange: Sendable, Equatable, Hashable {
    /// The key after the put.
    case put(KVEntry)
    /// The key was deleted: the entry has the key, an empty value, version 0 and the delete's revision as its
    /// `modRevision`.
    case delete(KVEntry)

    public var entry: KVEntry {
        switch self {
        case .put(let entry), .delete(let entry): return entry
        }
    }

    /// The change's store revision.
    public var revision: UInt64 { entry.modRevision }

    /// `PX_WATCH_PUT` or `PX_WATCH_DELETE`.
    public var kind: UInt32 {
        switch self {
        case .put: return PX_WATCH_PUT.rawValue
        case .delete: return PX_WATCH_DELETE.rawValue
        }
    }

    /// A change from the C callback's kind and entry; `nil` for an unknown kind.
    public init?(kind: UInt32, copying entry: UnsafePointer<px_kv_entry>) {
        switch kind {
        case PX_WATCH_PUT.rawValue: self = .put(KVEntry(copying: entry))
        case PX_WATCH_DELETE.rawValue: self = .delete(KVEntry(copying: entry))
        default: return nil
        }
    }
}

/// The version condition of a put or delete.
public enum KVVersion: Sendable, Equatable, Hashable {
    /// Unconditional (`PX_KV_ANY_VERSION`).
    case any
    /// Only if the key is absent (create), version 0 in C.
    case absent
    /// Only if the key's current version is this one (compare-and-swap).
    case exactly(UInt64)

    /// The `expected_version` passed across the ABI.
    public var raw: UInt64 {
        switch self {
        case .any: return UInt64.max
        case .absent: return 0
        case .exactly(let version): return version
        }
    }

    /// The condition an `expected_version` from across the ABI stands for.
    public init(raw: UInt64) {
        switch raw {
        case UInt64.max: self = .any
        case 0: self = .absent
        default: self = .exactly(raw)
        }
    }

    /// Whether a key whose current version is `current` (0: absent) meets the condition.
    public func admits(current: UInt64) -> Bool {
        switch self {
        case .any: return true
        case .absent: return current == 0
        case .exactly(let version): return current == version
        }
    }
}

/// A completed put or delete: the key's new version (0 after a delete) and the change's revision.
public struct KVWrite: Sendable, Equatable, Hashable {
    public var version: UInt64
    public var revision: UInt64

    public init(version: UInt64, revision: UInt64) {
        self.version = version
        self.revision = revision
    }
}

/// A listing: the entries under a prefix in byte order of their keys, as of `revision`.
public struct KVList: Sendable, Equatable, Hashable {
    public var entries: [KVEntry]
    public var revision: UInt64

    public init(entries: [KVEntry], revision: UInt64) {
        self.entries = entries
        self.revision = revision
    }
}

/// A read as a registry answers it: the entry (`nil` when absent) and the store's revision the read saw.
public struct KVRead: Sendable, Equatable, Hashable {
    public var entry: KVEntry?
    public var revision: UInt64

    public init(entry: KVEntry?, revision: UInt64) {
        self.entry = entry
        self.revision = revision
    }
}

/// Why a put or delete was refused with `PX_ERR_FAILED_PRECONDITION`: the key's current version (0: absent)
/// and the store's current revision. Carried by `PluginError.conflict`.
public struct KVConflict: Sendable, Equatable, Hashable {
    public var key: String
    public var currentVersion: UInt64
    public var revision: UInt64

    public init(key: String, currentVersion: UInt64, revision: UInt64) {
        self.key = key
        self.currentVersion = currentVersion
        self.revision = revision
    }
}

extension PluginError {
    /// A refused version condition: `PX_ERR_FAILED_PRECONDITION`, a text naming the key and its current
    /// version, and the conflict for callers.
    public static func kvConflict(key: String, currentVersion: UInt64, revision: UInt64) -> PluginError {
        let now = currentVersion == 0 ? "it is absent" : "its current version is \(currentVersion)"
        var error = PluginError(
            PX_ERR_FAILED_PRECONDITION, "key '\(key)': the version condition failed; \(now) (revision \(revision))")
        error.conflict = KVConflict(key: key, currentVersion: currentVersion, revision: revision)
        return error
    }
}

/// Entries laid out as C `px_kv_entry`s for one call (a listing's completion).
/// - Important: The pointers are valid only inside `withC`'s body.
func withCEntries<R>(
    _ entries: [KVEntry], _ body: (UnsafePointer<UnsafePointer<px_kv_entry>?>?, Int) -> R
) -> R {
    var raws: [px_kv_entry] = []
    raws.reserveCapacity(entries.count)
    // One buffer for every key and value: the C entries point into it.
    var bytes: [UInt8] = []
    var spans: [(key: Range<Int>, value: Range<Int>)] = []
    for entry in entries {
        let keyStart = bytes.count
        bytes.append(contentsOf: entry.key.utf8)
        let valueStart = bytes.count
        bytes.append(contentsOf: entry.value)
        spans.append((keyStart..<valueStart, valueStart..<bytes.count))
    }
    return bytes.withUnsafeBufferPointer { buffer in
        for (index, entry) in entries.enumerated() {
            var raw = px_kv_entry()
            raw.struct_size = UInt32(MemoryLayout<px_kv_entry>.size)
            let (key, value) = spans[index]
            let base = buffer.baseAddress
            raw.key = px_str(
                ptr: key.isEmpty ? nil : UnsafeRawPointer(base! + key.lowerBound).assumingMemoryBound(to: CChar.self),
                len: key.count)
            raw.value = px_bytes(ptr: value.isEmpty ? nil : base! + value.lowerBound, len: value.count)
            raw.version = entry.version
            raw.create_revision = entry.createRevision
            raw.mod_revision = entry.modRevision
            raws.append(raw)
        }
        return raws.withUnsafeBufferPointer { rawBuffer in
            var pointers: [UnsafePointer<px_kv_entry>?] = []
            pointers.reserveCapacity(entries.count)
            for index in 0..<rawBuffer.count { pointers.append(rawBuffer.baseAddress! + index) }
            return pointers.withUnsafeBufferPointer { body($0.baseAddress, entries.count) }
        }
    }
}
