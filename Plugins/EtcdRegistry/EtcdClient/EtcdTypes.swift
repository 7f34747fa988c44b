/// One key of etcd's store as of some revision (`mvccpb.KeyValue`).
public struct EtcdKeyValue: Sendable, Equatable {
    public var key: [UInt8]
    public var value: [UInt8]
    /// The revision of the key's creation.
    public var createRevision: Int64
    /// The revision of its last change (of the delete, in a delete event).
    public var modRevision: Int64
    /// 1 when created, +1 per put; 0 in a delete event.
    public var version: Int64
    /// The lease the key is attached to, 0 for none.
    public var lease: Int64

    public init(
        key: [UInt8], value: [UInt8], createRevision: Int64 = 0, modRevision: Int64 = 0, version: Int64 = 0,
        lease: Int64 = 0
    ) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.version = version
        self.lease = lease
    }

    /// The key as text (lossy for keys that are not UTF-8).
    public var keyString: String { String(decoding: key, as: UTF8.self) }
}

/// A change seen by a watch, in revision order.
public enum EtcdEvent: Sendable, Equatable {
    /// The key after the put.
    case put(EtcdKeyValue)
    /// The key deleted: its key, empty value, version 0, `modRevision` the delete's revision.
    case delete(EtcdKeyValue)

    public var keyValue: EtcdKeyValue {
        switch self {
        case .put(let kv), .delete(let kv): return kv
        }
    }

    /// The revision of the change.
    public var revision: Int64 { keyValue.modRevision }

    public var isPut: Bool {
        if case .put = self { return true }
        return false
    }
}

/// What a conditional write did.
public enum EtcdWriteResult: Sendable, Equatable {
    /// Done: the key's new version (0 after a delete) and the change's revision.
    case written(version: Int64, revision: Int64)
    /// The version condition failed: the key's current version (0: absent) and the store's revision.
    case conflict(currentVersion: Int64, revision: Int64)
    /// An unconditional delete of a key that does not exist (store revision).
    case absent(revision: Int64)
}

/// The condition of a write on the key's version.
public enum EtcdVersionCondition: Sendable, Equatable {
    /// Unconditional.
    case any
    /// Only when the key's current version is this (0: the key is absent).
    case exactly(Int64)
}

/// The prefix range end for `prefix`: the key after every key that starts with it (etcd's `GetPrefixRangeEnd`).
public func etcdPrefixEnd(_ prefix: [UInt8]) -> [UInt8] {
    var end = prefix
    while let last = end.last {
        if last < 0xFF {
            end[end.count - 1] = last + 1
            return end
        }
        end.removeLast()
    }
    return [0]  // every key
}
