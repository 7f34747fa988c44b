import PlexusABI

/// Borrowed events copied once into one allocation, laid out as C `px_event`s: how a storage that keeps
/// events in memory stores an appended batch, and lends its events later without laying them out again.
///
/// The allocation holds the `px_event` structs, every extension pair, and every attribute and data byte; the
/// copy is one `memcpy` per attribute and payload, straight from the kernel's buffers. The batch is immutable
/// after `init`, so its events can be lent (`LentRecordBatch.Builder.retain` it, then point records at
/// `event(at:)`) and read from any thread while something holds it.
///
/// Absent optional attributes stay `{NULL, 0}`; a present attribute, even empty, points into the batch.
/// Empty data and an event without extensions are `{NULL, 0}`.
public final class CopiedEventBatch: @unchecked Sendable {
    // Safe: written only by `init`; immutable afterwards, freed by `deinit`.

    /// The number of events.
    public let count: Int
    private let memory: UnsafeMutableRawPointer
    private let events: UnsafeMutablePointer<px_event>

    /// Copies the events of `batch` in `range`.
    /// - Important: Call it while the batch is valid (during the append that lent it).
    public init(copying batch: EventBatchView, range: Range<Int>? = nil) {
        let range = range ?? batch.indices
        var byteCount = 0
        var extensionCount = 0
        for index in range {
            let event = batch[index]
            byteCount += event.byteCount
            extensionCount += event.extensions.count
        }
        count = range.count
        let eventBytes = count * MemoryLayout<px_event>.stride
        let pairBytes = extensionCount * MemoryLayout<px_kv>.stride
        // One spare byte, so that a present empty string always points at a byte of the batch, never NULL.
        memory = .allocate(byteCount: eventBytes + pairBytes + byteCount + 1, alignment: 16)
        events = memory.bindMemory(to: px_event.self, capacity: count)
        let pairs = (memory + eventBytes).bindMemory(to: px_kv.self, capacity: extensionCount)
        var arena = memory + eventBytes + pairBytes
        var pairsUsed = 0

        /// Copies `text` into the arena; `{NULL, 0}` when absent.
        func place(_ text: EventView.Text?) -> px_str {
            guard let text else { return px_str(ptr: nil, len: 0) }
            let start = arena
            if text.count > 0 { start.copyMemory(from: text.bytes.baseAddress!, byteCount: text.count) }
            arena += text.count
            return px_str(ptr: start.assumingMemoryBound(to: CChar.self), len: text.count)
        }

        for (slot, index) in range.enumerated() {
            let view = batch[index]
            var e = px_event()
            e.struct_size = UInt32(MemoryLayout<px_event>.size)
            e.id = place(view.id)
            e.source = place(view.source)
            e.specversion = place(view.specversion)
            e.type = place(view.type)
            e.datacontenttype = place(view.datacontenttype)
            e.dataschema = place(view.dataschema)
            e.subject = place(view.subject)
            e.time = place(view.time)
            let extensions = view.extensions
            if !extensions.isEmpty {
                let first = pairs + pairsUsed
                for (offset, pair) in extensions.enumerated() {
                    (first + offset).initialize(to: px_kv(key: place(pair.key), value: place(pair.value)))
                }
                pairsUsed += extensions.count
                e.extensions = UnsafePointer(first)
                e.extension_count = extensions.count
            }
            let data = view.data
            if !data.isEmpty {
                arena.copyMemory(from: data.baseAddress!, byteCount: data.count)
                e.data = px_bytes(ptr: UnsafePointer(arena.assumingMemoryBound(to: UInt8.self)), len: data.count)
                arena += data.count
            }
            (events + slot).initialize(to: e)
        }
    }

    deinit {
        // Every struct here is trivial: only the memory is returned.
        memory.deallocate()
    }

    /// The event at `index`.
    /// - Important: Valid only while the batch is alive (keep it alive, or retain it in a lent batch).
    public func event(at index: Int) -> UnsafePointer<px_event> {
        precondition(index >= 0 && index < count, "CopiedEventBatch: index \(index) out of 0..<\(count)")
        return UnsafePointer(events + index)
    }
}
