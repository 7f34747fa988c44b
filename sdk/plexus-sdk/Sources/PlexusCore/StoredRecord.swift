import PlexusABI

/// An event as a stream stores it: the offset the storage assigned, when it was stored, and the event.
///
/// The owned Swift counterpart of `px_record`; `CRecordBatch` lays a list of them out as C records.
public struct StoredRecord: Sendable, Equatable {
    public var offset: UInt64
    /// Unix time in nanoseconds when the event was stored; 0 when unknown.
    public var appendTimeNanoseconds: UInt64
    public var event: CloudEvent

    public init(offset: UInt64, appendTimeNanoseconds: UInt64 = 0, event: CloudEvent) {
        self.offset = offset
        self.appendTimeNanoseconds = appendTimeNanoseconds
        self.event = event
    }

    /// Copies a borrowed C record; `nil` when it carries no event or is too small to hold one.
    ///
    /// Only the first `struct_size` bytes are read; see `CloudEvent.init(copying:)` for the event itself.
    public init?(copying record: UnsafePointer<px_record>) {
        let size = Int(UnsafeRawPointer(record).load(as: UInt32.self))
        guard size >= MemoryLayout<px_record>.size, let event = record.pointee.event else { return nil }
        self.init(
            offset: record.pointee.offset, appendTimeNanoseconds: record.pointee.append_time_ns,
            event: CloudEvent(copying: event))
    }
}
