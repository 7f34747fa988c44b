import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusPluginSDK

/// `LentRecordBatch`: what a storage lends the kernel stays put until the kernel's one release.
@Suite("Lent record batches")
struct LentRecordBatchTests {
    /// How many owners were freed.
    final class Counter: Sendable {
        let value = Atomic<Int>(0)
    }

    /// A buffer of the storage that lent events point into; counts its deinit.
    final class Owner: Sendable {
        let batch: CopiedEventBatch
        let freed: Counter

        init(_ events: [CloudEvent], freed: Counter) {
            batch = EventBatchView.withBorrowed(events) { CopiedEventBatch(copying: $0) }
            self.freed = freed
        }

        deinit { freed.value.add(1, ordering: .relaxed) }
    }

    static func events(_ count: Int) -> [CloudEvent] {
        (0..<count).map { CloudEvent(id: "e\($0)", source: "/s", type: "t", data: [UInt8(truncatingIfNeeded: $0)]) }
    }

    @Test("records, events and bytes stay at their addresses until release; release frees them, once")
    func lentUntilRelease() throws {
        let freed = Counter()
        var lent: UnsafeMutablePointer<px_record_batch>?
        var addresses: [UnsafePointer<px_record>?] = []
        var eventAddresses: [UnsafePointer<px_event>] = []
        do {
            let owner = Owner(Self.events(3), freed: freed)
            let batch = LentRecordBatch(records: 3, nextOffset: 13) { builder in
                builder.retain(owner)
                for index in 0..<3 {
                    builder.append(offset: 10 + UInt64(index), appendTime: 99, event: owner.batch.event(at: index))
                }
            }
            lent = batch.lend()
            addresses = Array(batch.records)
            eventAddresses = (0..<3).map { owner.batch.event(at: $0) }
        }
        // The plugin let go of the batch and of its buffer: the kernel's retain keeps both.
        #expect(freed.value.load(ordering: .relaxed) == 0, "a lent batch keeps the buffers it points into")
        let batch = try #require(lent)
        #expect(batch.pointee.struct_size == UInt32(MemoryLayout<px_record_batch>.size))
        #expect(batch.pointee.count == 3 && batch.pointee.next_offset == 13)
        let records = try #require(batch.pointee.records)
        for index in 0..<3 {
            let record = try #require(records[index])
            #expect(record == addresses[index], "the record array is the one lent")
            #expect(record.pointee.offset == 10 + UInt64(index) && record.pointee.append_time_ns == 99)
            #expect(record.pointee.event == eventAddresses[index], "events are lent where the storage keeps them")
            #expect(CloudEvent(copying: record.pointee.event!).id == "e\(index)")
        }
        let release = try #require(batch.pointee.release)
        release(batch)
        #expect(freed.value.load(ordering: .relaxed) == 1, "release lets the last retain go, freeing the buffer once")
    }

    @Test("a batch the plugin still holds survives the kernel's release; its own memory lays events out")
    func ownMemory() throws {
        let batch = LentRecordBatch(records: 2, events: 2, extensions: 1, bytes: 8, nextOffset: 2) { builder in
            for index in 0..<2 {
                let bytes = builder.makeBytes(4)
                bytes.copyBytes(from: Array("ev-\(index)".utf8))
                let event = builder.makeEvent()
                event.pointee.id = px_str(ptr: bytes.baseAddress!.assumingMemoryBound(to: CChar.self), len: 4)
                if index == 1 {
                    let pairs = builder.makeExtensions(1)
                    pairs[0] = px_kv(key: event.pointee.id, value: event.pointee.id)
                    event.pointee.extensions = UnsafePointer(pairs.baseAddress)
                    event.pointee.extension_count = 1
                }
                builder.append(offset: UInt64(index), appendTime: 0, event: event)
            }
        }
        let lent = batch.lend()
        lent.pointee.release?(lent)
        // Still the plugin's: readable.
        #expect(batch.count == 2 && batch.nextOffset == 2)
        #expect(batch[0].event.id == "ev-0" && batch[1].event.id == "ev-1")
        #expect(batch[1].event.extensions.first.map { $0.key == "ev-1" && $0.value == "ev-1" } == true)
        #expect(batch.copy().map(\.offset) == [0, 1])
    }

    @Test("a batch whose fill throws returns its memory and rethrows")
    func fillThrows() {
        struct Refused: Error {}
        #expect(throws: Refused.self) {
            _ = try LentRecordBatch(records: 1, nextOffset: 0) { _ in throw Refused() }
        }
    }
}
