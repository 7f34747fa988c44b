import PlexusABI
import PlexusCore
import Testing

@Suite("CloudEvent C layout")
struct CloudEventLayoutTests {
    static let full = CloudEvent(
        id: "e-1", source: "/s", type: "t.created", datacontenttype: "application/json", dataschema: nil,
        subject: "", time: "2026-11-25T12:00:00Z", extensions: [("partitionkey", "k1"), ("traceparent", "00-ab")],
        data: Array("{\"a\":1}".utf8))

    @Test("a batch round-trips every attribute, extension and data byte")
    func roundTrip() {
        let events = (0..<3000).map { i in
            var e = Self.full
            e.id = "e-\(i)"
            e.data = Array(repeating: UInt8(i & 0xFF), count: i % 7)
            return e
        }
        let batch = CEventBatch(events)
        withExtendedLifetime(batch) {
            #expect(batch.pointers.count == events.count)
            for (i, pointer) in batch.pointers.enumerated() {
                guard let pointer else {
                    Issue.record("event \(i) has no pointer")
                    return
                }
                #expect(CloudEvent(copying: pointer) == events[i])
            }
        }
    }

    @Test("a present but empty attribute stays present; an absent one stays absent")
    func presentEmptyVersusAbsent() {
        let batch = CEventBatch([Self.full])
        withExtendedLifetime(batch) {
            guard let pointer = batch.pointers.first, let event = pointer else {
                Issue.record("no event")
                return
            }
            #expect(event.pointee.subject.ptr != nil && event.pointee.subject.len == 0)
            #expect(event.pointee.dataschema.ptr == nil)
            let copy = CloudEvent(copying: event)
            #expect(copy.subject == "")
            #expect(copy.dataschema == nil)
        }
    }

    @Test("fields past a smaller struct_size are read as absent")
    func smallerStructSize() {
        let batch = CEventBatch([Self.full])
        withExtendedLifetime(batch) {
            guard let pointer = batch.pointers.first, let event = pointer else {
                Issue.record("no event")
                return
            }
            var truncated = event.pointee
            truncated.struct_size = UInt32(MemoryLayout<px_event>.offset(of: \px_event.datacontenttype) ?? 0)
            let copy = withUnsafePointer(to: &truncated) { CloudEvent(copying: $0) }
            #expect(copy.id == "e-1" && copy.type == "t.created")
            #expect(copy.datacontenttype == nil && copy.time == nil && copy.extensions.isEmpty && copy.data.isEmpty)
        }
    }
}
