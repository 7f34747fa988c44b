import PlexusABI
import PlexusCore

/// Borrowed events copied once, laid out as C `px_event`s: how a storage that keeps events in memory stores
/// an appended batch, and lends its events later without laying them out again.
///
/// The copy is `CEventBatch(copying:)`'s, the same one the kernel makes: one `memcpy` per attribute and
/// payload, straight from the kernel's buffers, no Swift strings. The batch is immutable after `init`, so its
/// events can be lent (`LentRecordBatch.Builder.retain` it, then point records at `event(at:)`) and read from
/// any thread while something holds it.
///
/// Absent optional attributes stay `{NULL, 0}`; a present attribute, even empty, points into the batch.
/// Empty data and an event without extensions are `{NULL, 0}`.
public final class CopiedEventBatch: Sendable {
    private let events: CEventBatch

    /// The number of events.
    public var count: Int { events.count }

    /// Copies the events of `batch` in `range`.
    /// - Important: Call it while the batch is valid (during the append that lent it).
    public init(copying batch: EventBatchView, range: Range<Int>? = nil) {
        let range = range ?? batch.indices
        events = batch.withPointers { pointers in
            CEventBatch(copying: UnsafeBufferPointer(rebasing: pointers[range]))
        }
    }

    /// The event at `index`.
    /// - Important: Valid only while the batch is alive (keep it alive, or retain it in a lent batch).
    public func event(at index: Int) -> UnsafePointer<px_event> {
        precondition(index >= 0 && index < count, "CopiedEventBatch: index \(index) out of 0..<\(count)")
        return events.event(at: index)
    }
}
