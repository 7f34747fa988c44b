import PlexusABI

/// One registered instance of a service (`px_service_instance`), owned by Swift.
public struct ServiceInstance: Sendable, Equatable, Hashable {
    public var service: String
    public var instanceID: String
    /// `host:port` or a URL.
    public var address: String
    public var metadata: [String: String]
    /// How long the instance lives unless registered again; 0: until deregistered.
    public var ttlMilliseconds: UInt64

    public init(
        service: String, instanceID: String, address: String, metadata: [String: String] = [:],
        ttlMilliseconds: UInt64 = 0
    ) {
        self.service = service
        self.instanceID = instanceID
        self.address = address
        self.metadata = metadata
        self.ttlMilliseconds = ttlMilliseconds
    }

    /// Copies a borrowed C instance. Metadata keys that repeat keep their last value.
    /// - Throws: `PluginError` with `PX_ERR_INVALID_ARGUMENT` when its `struct_size` is smaller than ABI 1.0's.
    public init(copying c: UnsafePointer<px_service_instance>) throws {
        let size = Int(UnsafeRawPointer(c).load(as: UInt32.self))
        guard size >= MemoryLayout<px_service_instance>.size else {
            throw PluginError.invalidArgument(
                "the service instance has struct_size \(size); ABI 1.0 instances are "
                    + "\(MemoryLayout<px_service_instance>.size) bytes")
        }
        let value = c.pointee
        var metadata: [String: String] = [:]
        if let pairs = value.metadata, value.metadata_count > 0 {
            for i in 0..<value.metadata_count { metadata[pairs[i].key.string] = pairs[i].value.string }
        }
        self.init(
            service: value.service.string, instanceID: value.instance_id.string, address: value.address.string,
            metadata: metadata, ttlMilliseconds: value.ttl_ms)
    }
}

/// Service instances laid out as C `px_service_instance`s in memory the batch owns, to lend across the ABI
/// (a lookup's completion, a watch event). Metadata is sorted by key.
///
/// - Important: Every pointer the batch hands out is valid only while the batch is alive; keep it alive with
///   `withExtendedLifetime` across the C call that borrows them. Immutable after `init`.
final class CServiceInstances {
    let count: Int
    private let arena: UnsafeMutablePointer<UInt8>
    private let pairs: UnsafeMutablePointer<px_kv>
    private let instances: UnsafeMutablePointer<px_service_instance>
    private let instancePointers: UnsafeMutablePointer<UnsafePointer<px_service_instance>?>

    init(_ values: [ServiceInstance]) {
        let sortedMetadata = values.map { $0.metadata.sorted { $0.key < $1.key } }
        var byteCount = 0
        for value in values {
            byteCount += value.service.utf8.count + value.instanceID.utf8.count + value.address.utf8.count
            for (key, text) in value.metadata { byteCount += key.utf8.count + text.utf8.count }
        }
        let pairCount = sortedMetadata.reduce(0) { $0 + $1.count }
        count = values.count
        // One spare byte: an empty string still points inside the arena (present, not absent).
        arena = .allocate(capacity: byteCount + 1)
        pairs = .allocate(capacity: max(pairCount, 1))
        instances = .allocate(capacity: max(count, 1))
        instancePointers = .allocate(capacity: max(count, 1))

        var used = 0
        var pairsUsed = 0
        let arena = self.arena
        func place(_ s: String) -> px_str {
            let start = arena + used
            let (_, written) = UnsafeMutableBufferPointer(start: start, count: s.utf8.count).initialize(from: s.utf8)
            used += written
            return px_str(ptr: UnsafeRawPointer(start).assumingMemoryBound(to: CChar.self), len: written)
        }
        for (index, value) in values.enumerated() {
            var c = px_service_instance()
            c.struct_size = UInt32(MemoryLayout<px_service_instance>.size)
            c.service = place(value.service)
            c.instance_id = place(value.instanceID)
            c.address = place(value.address)
            c.ttl_ms = value.ttlMilliseconds
            let metadata = sortedMetadata[index]
            if !metadata.isEmpty {
                let first = pairs + pairsUsed
                for (offset, pair) in metadata.enumerated() {
                    (first + offset).initialize(to: px_kv(key: place(pair.key), value: place(pair.value)))
                }
                pairsUsed += metadata.count
                c.metadata = UnsafePointer(first)
                c.metadata_count = metadata.count
            }
            (instances + index).initialize(to: c)
            (instancePointers + index).initialize(to: UnsafePointer(instances + index))
        }
    }

    deinit {
        arena.deallocate()
        pairs.deallocate()
        instances.deallocate()
        instancePointers.deallocate()
    }

    /// The `const px_service_instance *const *` array; `baseAddress` is never NULL.
    var pointers: UnsafeBufferPointer<UnsafePointer<px_service_instance>?> {
        UnsafeBufferPointer(start: instancePointers, count: count)
    }

    func instance(at index: Int) -> UnsafePointer<px_service_instance> { UnsafePointer(instances + index) }
}
