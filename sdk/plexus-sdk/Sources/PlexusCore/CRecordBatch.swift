import PlexusABI

/// Stored records laid out as C `px_record`s, in memory the batch owns, to lend across the ABI (the records
/// a read completion hands over).
///
/// The events live in one `CEventBatch`; each `px_record` points at its event there, and `pointers` is the
/// `const px_record *const *` array that `px_read_done_fn` takes.
///
/// - Important: Every pointer the batch hands out is valid only while the batch is alive; keep it alive
///   across the C call that borrows them, with `withExtendedLifetime`. The batch is immutable after `init`.
public final class CRecordBatch: @unchecked Sendable {
    // Safe: immutable after init (its memory is written only there), so it may be read from any thread.
    /// The number of records in the batch.
    public let count: Int
    private let events: CEventBatch
    private let records: UnsafeMutablePointer<px_record>
    private let recordPointers: UnsafeMutablePointer<UnsafePointer<px_record>?>

    /// Lays out `storedRecords` as C records, in the order given.
    public init(_ storedRecords: [StoredRecord]) {
        count = storedRecords.count
        events = CEventBatch(storedRecords.map(\.event))
        records = .allocate(capacity: max(count, 1))
        recordPointers = .allocate(capacity: max(count, 1))
        for (index, stored) in storedRecords.enumerated() {
            (records + index).initialize(
                to: px_record(
                    struct_size: UInt32(MemoryLayout<px_record>.size), reserved: 0, offset: stored.offset,
                    append_time_ns: stored.appendTimeNanoseconds, event: events.event(at: index)))
            (recordPointers + index).initialize(to: UnsafePointer(records + index))
        }
    }

    /// Copies borrowed C records (a read completion's) into memory the batch owns: one copy of each event's
    /// bytes (`CEventBatch(copying:)`); offsets and append times kept.
    public init(copying borrowed: UnsafeBufferPointer<UnsafePointer<px_record>?>) {
        count = borrowed.count
        let eventPointers = UnsafeMutableBufferPointer<UnsafePointer<px_event>?>.allocate(capacity: max(count, 1))
        defer { eventPointers.deallocate() }
        for (index, record) in borrowed.enumerated() { eventPointers[index] = record?.pointee.event }
        events = CEventBatch(copying: UnsafeBufferPointer(rebasing: eventPointers[0..<count]))
        records = .allocate(capacity: max(count, 1))
        recordPointers = .allocate(capacity: max(count, 1))
        for (index, record) in borrowed.enumerated() {
            (records + index).initialize(
                to: px_record(
                    struct_size: UInt32(MemoryLayout<px_record>.size), reserved: 0, offset: record?.pointee.offset ?? 0,
                    append_time_ns: record?.pointee.append_time_ns ?? 0, event: events.event(at: index)))
            (recordPointers + index).initialize(to: UnsafePointer(records + index))
        }
    }

    deinit {
        // px_record and pointers are trivial: only the memory is returned.
        records.deallocate()
        recordPointers.deallocate()
    }

    /// The records as the `const px_record *const *` array the ABI takes; `baseAddress` is never NULL.
    ///
    /// - Important: Valid only while the batch is alive.
    public var pointers: UnsafeBufferPointer<UnsafePointer<px_record>?> {
        UnsafeBufferPointer(start: recordPointers, count: count)
    }
}
