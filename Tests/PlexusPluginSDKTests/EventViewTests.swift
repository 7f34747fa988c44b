import PlexusABI
import PlexusCore
import Testing

@testable import PlexusPluginSDK

/// `EventView`, `EventBatchView` and `CopiedEventBatch`: borrowed events read in place, copied once.
@Suite("Borrowed event views")
struct EventViewTests {
    static let full = CloudEvent(
        id: "id-1", source: "/orders", type: "order.created", datacontenttype: "application/json",
        dataschema: nil, subject: "", time: "2026-01-02T03:04:05Z",
        extensions: [(key: "partitionkey", value: "k1"), (key: "traceparent", value: "00-ab")],
        data: Array("{\"n\":1}".utf8))
    static let bare = CloudEvent(id: "id-2", source: "/s", type: "t")

    @Test("a view reads every attribute in place: its bytes are the lender's, not a copy")
    func readsInPlace() {
        let batch = CEventBatch([Self.full])
        withExtendedLifetime(batch) {
            let event = batch.event(at: 0)
            let view = EventView(event)
            #expect(view.id.bytes.baseAddress == UnsafeRawPointer(event.pointee.id.ptr))
            #expect(view.data.baseAddress == UnsafeRawPointer(event.pointee.data.ptr))
            #expect(view.id == "id-1" && view.source == "/orders" && view.specversion == "1.0")
            #expect(view.type.string == "order.created")
            #expect(view.datacontenttype.map { $0 == "application/json" } == true)
            #expect(view.dataschema == nil, "absent stays absent")
            #expect(view.subject?.isEmpty == true, "present and empty stays present")
            #expect(view.time?.string == "2026-01-02T03:04:05Z")
            #expect(view.extensions.map { $0.key.string } == ["partitionkey", "traceparent"])
            #expect(view.extensions.value(of: "traceparent").map { $0 == "00-ab" } == true)
            #expect(view.extensions.value(of: "missing") == nil)
            #expect(Array(view.data) == Array("{\"n\":1}".utf8))
            #expect(view.copy() == Self.full)
            let expected =
                "id-1/orders1.0order.createdapplication/json2026-01-02T03:04:05Zpartitionkeyk1traceparent00-ab".utf8
                .count + 7
            #expect(view.byteCount == expected)
        }
    }

    @Test("a smaller, older px_event reads the fields its struct_size covers and nothing past it")
    func olderEvent() throws {
        let batch = CEventBatch([Self.full])
        try withExtendedLifetime(batch) {
            var event = batch.event(at: 0).pointee
            let typeEnd = try #require(MemoryLayout<px_event>.offset(of: \.type)) + MemoryLayout<px_str>.size
            event.struct_size = UInt32(typeEnd)
            withUnsafePointer(to: &event) { pointer in
                let view = EventView(pointer)
                #expect(view.type == "order.created")
                #expect(view.datacontenttype == nil && view.subject == nil && view.time == nil)
                #expect(view.extensions.isEmpty && view.data.isEmpty)
            }
        }
    }

    @Test("a batch view is the lender's array, in order; withBorrowed lends owned events")
    func batchView() {
        EventBatchView.withBorrowed([Self.full, Self.bare]) { events in
            #expect(events.count == 2)
            #expect(events.map { $0.id.string } == ["id-1", "id-2"])
            #expect(events[1].extensions.isEmpty && events[1].data.isEmpty && events[1].subject == nil)
            #expect(events.copy() == [Self.full, Self.bare])
        }
        #expect(EventBatchView(nil, count: 0).isEmpty)
    }

    @Test("a copied batch holds its own bytes in C layout, equal to the borrowed events")
    func copiedBatch() {
        let copied = EventBatchView.withBorrowed([Self.full, Self.bare]) { events in
            let copied = CopiedEventBatch(copying: events)
            #expect(EventView(copied.event(at: 0)).id.bytes.baseAddress != events[0].id.bytes.baseAddress)
            return copied
        }
        // The lender's memory is gone: the copy stands alone.
        #expect(copied.count == 2)
        #expect(CloudEvent(copying: copied.event(at: 0)) == Self.full)
        #expect(CloudEvent(copying: copied.event(at: 1)) == Self.bare)
        #expect(copied.event(at: 0).pointee.subject.ptr != nil, "present and empty stays present")
        #expect(copied.event(at: 0).pointee.dataschema.ptr == nil)
    }
}
