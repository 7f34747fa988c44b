import PlexusABI
import Synchronization

/// A read's records laid out in C memory that a storage plugin lends to the kernel until the kernel releases
/// them (`px_record_batch`, ABI 1.1): how a record travels from the storage's memory to subscribers without
/// a copy.
///
/// The batch owns one allocation holding its `px_record`s, the array of pointers to them, and as many
/// `px_event` structs, `px_kv` extension pairs and bytes as the storage asks for; and it can retain the
/// storage's own immutable buffers (`Builder.retain`) that its events point into. It is filled once, by the
/// closure given to `init`, and never changes afterwards.
///
/// A `LendingStoragePlugin` hands one to its read completion. The SDK then lends it to the kernel as a
/// `px_record_batch` whose `storage_data` is a retain of the batch and whose `release` drops that retain:
/// the memory lives until both the kernel has released the batch and the plugin has let go of it. For a
/// 1.0-style `on_read` the SDK passes the same records to the read callback and lets go afterwards.
///
/// ```swift
/// let batch = LentRecordBatch(records: stored.count, nextOffset: next) { builder in
///     for record in stored {
///         builder.retain(record.segment)  // the immutable buffer its event lives in
///         builder.append(offset: record.offset, appendTime: record.time, event: record.event)
///     }
/// }
/// completion(.success(batch))
/// ```
///
/// - Important: Every pointer an event of the batch holds must stay valid and unchanged for the batch's
///   whole life: point only into the batch's own memory (`makeEvent`, `makeExtensions`, `makeBytes`) or into
///   buffers it retains that nothing writes or frees while they are retained.
public final class LentRecordBatch: @unchecked Sendable {
    // Safe: the batch is written only by `init` (its builder) and by `lend`, which writes the C batch struct
    // once, before the kernel can see it; afterwards every thread only reads it. The allocation is freed by
    // `deinit`, after the last reference (the plugin's and the kernel's retain) is gone.

    /// The number of records.
    public let count: Int
    /// Where the next read starts: the offset after the last record, or the read's start when there are none.
    public let nextOffset: UInt64
    private let memory: UnsafeMutableRawPointer
    private let header: UnsafeMutablePointer<px_record_batch>
    private let recordPointers: UnsafeMutablePointer<UnsafePointer<px_record>?>
    /// The storage's buffers the events point into.
    private let owners: [AnyObject]
    private let lent = Atomic<Bool>(false)

    /// Where each region of the one allocation starts, in bytes.
    fileprivate struct Layout {
        var records = 0
        var pointers = 0
        var events = 0
        var extensions = 0
        var bytes = 0
        var size = 0

        init(records: Int, events: Int, extensions: Int, bytes: Int) {
            func aligned(_ n: Int) -> Int { (n + 15) & ~15 }
            var end = aligned(MemoryLayout<px_record_batch>.stride)
            self.records = end
            end = aligned(end + records * MemoryLayout<px_record>.stride)
            pointers = end
            end = aligned(end + records * MemoryLayout<UnsafePointer<px_record>?>.stride)
            self.events = end
            end = aligned(end + events * MemoryLayout<px_event>.stride)
            self.extensions = end
            end = aligned(end + extensions * MemoryLayout<px_kv>.stride)
            self.bytes = end
            size = max(end + bytes, 16)
        }
    }

    /// Fills a batch: records appended in offset order, and the events, extensions and bytes they point at.
    ///
    /// - Important: Valid only inside the closure given to `LentRecordBatch.init`.
    public struct Builder {
        private let records: UnsafeMutablePointer<px_record>
        private let pointers: UnsafeMutablePointer<UnsafePointer<px_record>?>
        private let events: UnsafeMutablePointer<px_event>
        private let extensions: UnsafeMutablePointer<px_kv>
        private let bytes: UnsafeMutableRawPointer
        private let capacity: (records: Int, events: Int, extensions: Int, bytes: Int)
        private var used = (records: 0, events: 0, extensions: 0, bytes: 0)
        fileprivate var owners: [AnyObject] = []

        fileprivate init(memory: UnsafeMutableRawPointer, layout: Layout, capacity: (Int, Int, Int, Int)) {
            records = (memory + layout.records).bindMemory(to: px_record.self, capacity: capacity.0)
            pointers = (memory + layout.pointers).bindMemory(to: UnsafePointer<px_record>?.self, capacity: capacity.0)
            events = (memory + layout.events).bindMemory(to: px_event.self, capacity: capacity.1)
            extensions = (memory + layout.extensions).bindMemory(to: px_kv.self, capacity: capacity.2)
            bytes = memory + layout.bytes
            self.capacity = capacity
        }

        /// The number of records appended so far.
        public var count: Int { used.records }

        /// Appends a record whose event lives in this batch (`makeEvent`) or in a buffer it retains.
        /// - Precondition: fewer records than the batch was made for.
        public mutating func append(offset: UInt64, appendTime: UInt64, event: UnsafePointer<px_event>) {
            precondition(used.records < capacity.records, "LentRecordBatch: more records than its capacity")
            let record = records + used.records
            record.initialize(
                to: px_record(
                    struct_size: UInt32(MemoryLayout<px_record>.size), reserved: 0, offset: offset,
                    append_time_ns: appendTime, event: event))
            (pointers + used.records).initialize(to: UnsafePointer(record))
            used.records += 1
        }

        /// A new `px_event` in the batch's memory, all absent but `struct_size`, for the caller to fill.
        /// - Precondition: fewer events than the batch was made for.
        public mutating func makeEvent() -> UnsafeMutablePointer<px_event> {
            precondition(used.events < capacity.events, "LentRecordBatch: more events than its capacity")
            let event = events + used.events
            var empty = px_event()
            empty.struct_size = UInt32(MemoryLayout<px_event>.size)
            event.initialize(to: empty)
            used.events += 1
            return event
        }

        /// `count` new extension pairs in the batch's memory, all `{NULL, 0}`, for the caller to fill.
        /// - Precondition: the batch was made for that many more.
        public mutating func makeExtensions(_ count: Int) -> UnsafeMutableBufferPointer<px_kv> {
            precondition(count >= 0 && used.extensions + count <= capacity.extensions, "LentRecordBatch: extensions")
            let start = extensions + used.extensions
            start.initialize(repeating: px_kv(), count: count)
            used.extensions += count
            return UnsafeMutableBufferPointer(start: start, count: count)
        }

        /// `count` new bytes in the batch's memory, for the caller to fill before `init` returns.
        /// - Precondition: the batch was made for that many more.
        public mutating func makeBytes(_ count: Int) -> UnsafeMutableRawBufferPointer {
            precondition(count >= 0 && used.bytes + count <= capacity.bytes, "LentRecordBatch: bytes")
            defer { used.bytes += count }
            return UnsafeMutableRawBufferPointer(start: bytes + used.bytes, count: count)
        }

        /// Keeps `owner` (an immutable buffer of the storage that events point into) alive as long as the
        /// batch.
        public mutating func retain(_ owner: AnyObject) {
            if let last = owners.last, last === owner { return }
            owners.append(owner)
        }
    }

    /// Makes a batch for up to `records` records, with room for `events` events, `extensions` extension pairs
    /// and `bytes` bytes of its own, and fills it with `fill`.
    /// - Parameters:
    ///   - nextOffset: where the next read starts; `fill` may change it (`builder` has no say on it).
    ///   - fill: appends the records in offset order; the batch is immutable once it returns.
    /// - Throws: what `fill` throws (the memory is then returned).
    public init(
        records: Int, events: Int = 0, extensions: Int = 0, bytes: Int = 0, nextOffset: UInt64,
        _ fill: (inout Builder) throws -> Void
    ) rethrows {
        let capacity = (max(records, 0), max(events, 0), max(extensions, 0), max(bytes, 0))
        let layout = Layout(records: capacity.0, events: capacity.1, extensions: capacity.2, bytes: capacity.3)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: layout.size, alignment: 16)
        var builder = Builder(memory: memory, layout: layout, capacity: capacity)
        do {
            try fill(&builder)
        } catch {
            memory.deallocate()
            throw error
        }
        let header = memory.bindMemory(to: px_record_batch.self, capacity: 1)
        header.initialize(to: px_record_batch())
        self.memory = memory
        self.header = header
        recordPointers = (memory + layout.pointers).assumingMemoryBound(to: UnsafePointer<px_record>?.self)
        count = builder.count
        self.nextOffset = nextOffset
        owners = builder.owners
    }

    deinit {
        // Every struct in the allocation is trivial: only the memory is returned. Then `owners` go.
        memory.deallocate()
    }

    /// The records as the `const px_record *const *` array the ABI takes, in offset order.
    /// - Important: Valid only while the batch is alive.
    public var records: UnsafeBufferPointer<UnsafePointer<px_record>?> {
        UnsafeBufferPointer(start: recordPointers, count: count)
    }

    /// The record at `index`: its offset, append time, and a view of its event.
    /// - Important: The event view is valid only while the batch is alive.
    public subscript(index: Int) -> (offset: UInt64, appendTime: UInt64, event: EventView) {
        precondition(index >= 0 && index < count, "LentRecordBatch: index \(index) out of 0..<\(count)")
        let record = recordPointers[index]!.pointee
        return (record.offset, record.append_time_ns, EventView(record.event!))
    }

    /// Owned copies of the records.
    public func copy() -> [StoredRecord] { records.compactMap { StoredRecord(copying: $0!) } }

    /// Lends the batch to the kernel: the `px_record_batch` to hand to `px_read_batch_done_fn`, holding a
    /// retain of the batch that the kernel's `release` call drops. Called once per batch.
    func lend() -> UnsafeMutablePointer<px_record_batch> {
        precondition(!lent.exchange(true, ordering: .relaxed), "LentRecordBatch: lent twice")
        header.pointee = px_record_batch(
            struct_size: UInt32(MemoryLayout<px_record_batch>.size), reserved: 0,
            records: UnsafePointer(recordPointers), count: count, next_offset: nextOffset,
            release: LentRecordBatch.release, storage_data: Unmanaged.passRetained(self).toOpaque())
        return header
    }

    /// `px_record_batch.release`: drops the kernel's retain. The memory goes once the plugin's references
    /// are gone too.
    private static let release: @convention(c) (UnsafeMutablePointer<px_record_batch>?) -> Void = { batch in
        guard let batch, let owner = batch.pointee.storage_data else { return }
        // Cleared first: a second release of a batch the plugin still holds finds nothing to drop.
        batch.pointee.storage_data = nil
        Unmanaged<LentRecordBatch>.fromOpaque(owner).release()
    }
}
