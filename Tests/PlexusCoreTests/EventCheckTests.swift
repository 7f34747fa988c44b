import PlexusABI
import PlexusCore
import Testing

/// The kernel's in-place checks of a borrowed `px_event`, and the one-copy layout of borrowed events.
@Suite("Events checked and copied where they lie")
struct EventCheckTests {
    static let valid = CloudEvent(
        id: "1", source: "/s", type: "t", datacontenttype: "text/plain", subject: "", time: nil,
        extensions: [("partitionkey", "k1"), ("empty", "")], data: Array("héllo".utf8))

    /// Runs `body` on `event` laid out in C, after `mutate` changed the C struct.
    func withMutated<R>(_ event: CloudEvent, _ mutate: (inout px_event) -> Void, _ body: (UnsafePointer<px_event>) -> R)
        -> R
    {
        event.withCEvent { pointer in
            var copy = pointer.pointee
            mutate(&copy)
            return withUnsafePointer(to: &copy) { body($0) }
        }
    }

    @Test("a valid event passes, and the same rules as CloudEvent.invalidReason refuse the rest")
    func rules() {
        var valid = Self.valid
        valid.subject = "s"
        #expect(valid.withCEvent { EventCheck.invalidReason($0) } == nil)
        // A present optional attribute must not be empty (`valid` keeps one for the layout tests below).
        #expect(Self.valid.withCEvent { EventCheck.invalidReason($0) }?.contains("'subject'") == true)
        let cases: [(CloudEvent, String)] = [
            (CloudEvent(id: "", source: "/s", type: "t"), "'id' is required"),
            (CloudEvent(id: "1", source: "", type: "t"), "'source' is required"),
            (CloudEvent(id: "1", source: "/s", type: ""), "'type' is required"),
            (CloudEvent(id: "1", source: "/s", specversion: "0.3", type: "t"), "'specversion' must be \"1.0\""),
            (CloudEvent(id: "1", source: "/s", type: "t", extensions: [("Upper", "x")]), "extension name 'Upper'"),
            (
                CloudEvent(id: "1", source: "/s", type: "t", extensions: [("abcdefghijklmnopqrstu", "x")]),
                "1 to 20 lowercase"
            ),
        ]
        for (event, phrase) in cases {
            let reason = event.withCEvent { EventCheck.invalidReason($0) }
            #expect(reason?.contains(phrase) == true, "\(String(describing: reason)) lacks \(phrase)")
            #expect(event.invalidReason != nil, "CloudEvent.invalidReason agrees")
        }
    }

    @Test(
        "what a borrowing reader would trip on is refused: a length without a pointer, bad UTF-8, a count without an array"
    )
    func unsafeShapes() {
        let noPointer = withMutated(Self.valid, { $0.subject = px_str(ptr: nil, len: 4) }) {
            EventCheck.invalidReason($0)
        }
        #expect(noPointer?.contains("'subject' has length 4 but no text") == true)
        let noData = withMutated(Self.valid, { $0.data = px_bytes(ptr: nil, len: 9) }) { EventCheck.invalidReason($0) }
        #expect(noData?.contains("data has length 9") == true)
        let noExtensions = withMutated(Self.valid, { $0.extensions = nil }) { EventCheck.invalidReason($0) }
        #expect(noExtensions?.contains("extension_count 2") == true)
        let bad: [UInt8] = [0x41, 0xC3, 0x28]
        let badUTF8 = bad.withUnsafeBufferPointer { bytes in
            withMutated(
                Self.valid,
                {
                    $0.type = px_str(
                        ptr: UnsafeRawPointer(bytes.baseAddress)?.assumingMemoryBound(to: CChar.self), len: 3)
                }
            ) {
                EventCheck.invalidReason($0)
            }
        }
        #expect(badUTF8?.contains("'type' is not valid UTF-8") == true)
    }

    @Test("attributes and extensions are read in place; absent is nil, present-but-empty is empty")
    func attributes() {
        Self.valid.withCEvent { event in
            func text(_ name: String) -> String? {
                EventCheck.attribute(event, AttributeKey(name)).map { String(decoding: $0, as: UTF8.self) }
            }
            #expect(text("id") == "1")
            #expect(text("datacontenttype") == "text/plain")
            #expect(text("subject") == "")
            #expect(text("time") == nil)
            #expect(text("partitionkey") == "k1")
            #expect(text("empty") == "")
            #expect(text("missing") == nil)
        }
    }

    @Test("borrowed events copied once keep every attribute, absent and empty alike, and their data")
    func copyingLayout() {
        let events = [Self.valid, CloudEvent(id: "2", source: "/t", type: "u"), Self.valid]
        let original = CEventBatch(events)
        let copy = withExtendedLifetime(original) { CEventBatch(copying: original.pointers) }
        let back = (0..<copy.count).map { CloudEvent(copying: copy.event(at: $0)) }
        #expect(back == events)
        #expect(back[0].subject == "" && back[0].time == nil)
        #expect(copy.event(at: 0).pointee.subject.ptr != nil)
    }
}
