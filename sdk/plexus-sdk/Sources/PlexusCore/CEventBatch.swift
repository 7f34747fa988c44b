import PlexusABI

/// A batch of events laid out as C `px_event`s, in memory the batch owns, to lend across the ABI.
///
/// The layout takes four allocations whatever the batch size, filled in one loop: a byte arena holding
/// every string and every data payload, one `px_kv` array holding every event's extensions, one
/// `px_event` array, and the array of `px_event` pointers that `publish` and `append` take.
///
/// Absent optional attributes are `{NULL, 0}`. A present string, even an empty one, points into the
/// arena, so present-but-empty stays distinguishable from absent. Empty data and an event without
/// extensions are `{NULL, 0}`.
///
/// - Important: Every pointer the batch hands out (`pointers`, `event(at:)`, and everything they reach)
///   is valid only while the batch is alive. Keep it alive across the C call that borrows them:
///   ```swift
///   let batch = CEventBatch(events)
///   withExtendedLifetime(batch) { api.publish(..., batch.pointers.baseAddress, batch.pointers.count, ...) }
///   ```
///   The batch is immutable after `init`; reading it from several threads at once is safe.
public final class CEventBatch: @unchecked Sendable {
    // Safe: immutable after init (its memory is written only there), so it may be read from any thread.
    /// The number of events in the batch.
    public let count: Int
    private let arena: UnsafeMutablePointer<UInt8>
    private let extensions: UnsafeMutablePointer<px_kv>
    private let events: UnsafeMutablePointer<px_event>
    private let eventPointers: UnsafeMutablePointer<UnsafePointer<px_event>?>

    /// Lays out `cloudEvents` as C events.
    public init(_ cloudEvents: [CloudEvent]) {
        var byteCount = 0
        var extensionCount = 0
        for event in cloudEvents {
            byteCount += event.id.utf8.count + event.source.utf8.count + event.specversion.utf8.count
            byteCount += event.type.utf8.count + event.data.count
            byteCount += (event.datacontenttype?.utf8.count ?? 0) + (event.dataschema?.utf8.count ?? 0)
            byteCount += (event.subject?.utf8.count ?? 0) + (event.time?.utf8.count ?? 0)
            for (key, value) in event.extensions { byteCount += key.utf8.count + value.utf8.count }
            extensionCount += event.extensions.count
        }

        count = cloudEvents.count
        // One spare byte, so that a present empty string always points at a byte inside the arena, never NULL.
        arena = .allocate(capacity: byteCount + 1)
        extensions = .allocate(capacity: max(extensionCount, 1))
        events = .allocate(capacity: max(count, 1))
        eventPointers = .allocate(capacity: max(count, 1))

        var arenaUsed = 0
        var extensionsUsed = 0
        let arena = self.arena

        /// Copies `s` into the arena and returns it as a `px_str`; `{NULL, 0}` for `nil`.
        func place(_ s: String?) -> px_str {
            guard let s else { return px_str(ptr: nil, len: 0) }
            let start = arena + arenaUsed
            let length = s.utf8.count
            let (_, written) = UnsafeMutableBufferPointer(start: start, count: length).initialize(from: s.utf8)
            precondition(written == length, "CEventBatch: UTF-8 view of a string changed length while copying")
            arenaUsed += length
            return px_str(ptr: UnsafeRawPointer(start).assumingMemoryBound(to: CChar.self), len: length)
        }

        for (index, event) in cloudEvents.enumerated() {
            var e = px_event()
            e.struct_size = UInt32(MemoryLayout<px_event>.size)
            e.id = place(event.id)
            e.source = place(event.source)
            e.specversion = place(event.specversion)
            e.type = place(event.type)
            e.datacontenttype = place(event.datacontenttype)
            e.dataschema = place(event.dataschema)
            e.subject = place(event.subject)
            e.time = place(event.time)
            if !event.extensions.isEmpty {
                let first = extensions + extensionsUsed
                for (offset, pair) in event.extensions.enumerated() {
                    (first + offset).initialize(to: px_kv(key: place(pair.key), value: place(pair.value)))
                }
                extensionsUsed += event.extensions.count
                e.extensions = UnsafePointer(first)
                e.extension_count = event.extensions.count
            }
            if !event.data.isEmpty {
                let start = arena + arenaUsed
                _ = UnsafeMutableBufferPointer(start: start, count: event.data.count).initialize(from: event.data)
                arenaUsed += event.data.count
                e.data = px_bytes(ptr: UnsafePointer(start), len: event.data.count)
            }
            (events + index).initialize(to: e)
            (eventPointers + index).initialize(to: UnsafePointer(events + index))
        }
        precondition(arenaUsed == byteCount && extensionsUsed == extensionCount, "CEventBatch: layout size mismatch")
    }

    /// Copies borrowed C events into memory the batch owns, byte for byte: one copy of each event's bytes,
    /// no Swift strings on the way. Absent stays absent; present-but-empty stays present.
    ///
    /// - Important: Every pointer in `borrowed` must be a valid event (`EventCheck.invalidReason` is `nil`);
    ///   the events need to live only for this call.
    public init(copying borrowed: UnsafeBufferPointer<UnsafePointer<px_event>?>) {
        var byteCount = 0
        var extensionCount = 0
        for pointer in borrowed {
            guard let e = pointer?.pointee else { continue }
            byteCount += EventCheck.byteCount(e)
            extensionCount += e.extension_count
        }
        count = borrowed.count
        arena = .allocate(capacity: byteCount + 1)
        extensions = .allocate(capacity: max(extensionCount, 1))
        events = .allocate(capacity: max(count, 1))
        eventPointers = .allocate(capacity: max(count, 1))

        var arenaUsed = 0
        var extensionsUsed = 0
        let arena = self.arena
        func place(_ s: px_str) -> px_str {
            guard let ptr = s.ptr else { return px_str(ptr: nil, len: 0) }
            let start = arena + arenaUsed
            if s.len > 0 { UnsafeMutableRawPointer(start).copyMemory(from: ptr, byteCount: s.len) }
            arenaUsed += s.len
            return px_str(ptr: UnsafeRawPointer(start).assumingMemoryBound(to: CChar.self), len: s.len)
        }
        for (index, pointer) in borrowed.enumerated() {
            var e = px_event()
            e.struct_size = UInt32(MemoryLayout<px_event>.size)
            if let source = pointer?.pointee {
                e.id = place(source.id)
                e.source = place(source.source)
                e.specversion = place(source.specversion)
                e.type = place(source.type)
                e.datacontenttype = place(source.datacontenttype)
                e.dataschema = place(source.dataschema)
                e.subject = place(source.subject)
                e.time = place(source.time)
                if source.extension_count > 0, let pairs = source.extensions {
                    let first = extensions + extensionsUsed
                    for offset in 0..<source.extension_count {
                        (first + offset).initialize(
                            to: px_kv(key: place(pairs[offset].key), value: place(pairs[offset].value)))
                    }
                    extensionsUsed += source.extension_count
                    e.extensions = UnsafePointer(first)
                    e.extension_count = source.extension_count
                }
                if source.data.len > 0, let data = source.data.ptr {
                    let start = arena + arenaUsed
                    start.update(from: data, count: source.data.len)
                    arenaUsed += source.data.len
                    e.data = px_bytes(ptr: UnsafePointer(start), len: source.data.len)
                }
            }
            (events + index).initialize(to: e)
            (eventPointers + index).initialize(to: UnsafePointer(events + index))
        }
    }

    deinit {
        // Every element type here is trivial: deinitializing is a no-op, only the memory is returned.
        arena.deallocate()
        extensions.deallocate()
        events.deallocate()
        eventPointers.deallocate()
    }

    /// The events as the `const px_event *const *` array the ABI takes, in the order given to `init`.
    ///
    /// - Important: Valid only while the batch is alive; see the type's documentation.
    public var pointers: UnsafeBufferPointer<UnsafePointer<px_event>?> {
        UnsafeBufferPointer(start: eventPointers, count: count)
    }

    /// The event at `index`.
    ///
    /// - Important: Valid only while the batch is alive; see the type's documentation.
    public func event(at index: Int) -> UnsafePointer<px_event> {
        precondition(index >= 0 && index < count, "CEventBatch: index \(index) out of 0..<\(count)")
        return UnsafePointer(events + index)
    }
}
