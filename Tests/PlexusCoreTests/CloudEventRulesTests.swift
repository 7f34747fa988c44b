import PlexusABI
import PlexusCore
import Testing

/// The CloudEvents attribute constraints and the topic name rule, each applied the same way by the owned
/// event, the borrowed event (the kernel's check) and the HTTP binding.
@Suite("CloudEvents attribute rules and topic names")
struct CloudEventRulesTests {
    static func base(
        source: String = "/s", datacontenttype: String? = nil, dataschema: String? = nil, subject: String? = nil,
        time: String? = nil, extensions: [(key: String, value: String)] = []
    ) -> CloudEvent {
        CloudEvent(
            id: "1", source: source, type: "t", datacontenttype: datacontenttype, dataschema: dataschema,
            subject: subject, time: time, extensions: extensions)
    }

    static let accepted: [CloudEvent] = [
        base(),
        base(source: "https://example.com/a?b=c#d"), base(source: "urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
        base(source: "urn:test:ü"), base(source: "relative/path;x=1"), base(source: "/a%20b"),
        base(dataschema: "https://example.com/schema.json"), base(dataschema: "urn:x"),
        base(datacontenttype: "application/json"), base(datacontenttype: "text/plain; charset=utf-8"),
        base(datacontenttype: "multipart/form-data; boundary=\"a b;c\""),
        base(datacontenttype: "application/vnd.example+json;v=2"),
        base(subject: "räksmörgås/🦀/1"), base(time: "2026-11-25T10:00:00.5Z"),
        base(extensions: [("empty", ""), ("traceparent", "00-ab")]),
    ]

    /// Events that break one rule, and the attribute at fault.
    static let refused: [(CloudEvent, String)] = [
        (base(source: "/a b"), "source"), (base(source: "1x:y"), "source"), (base(source: "a_b:c"), "source"),
        (base(source: "/a%2"), "source"), (base(source: "/a<b>"), "source"), (base(source: "a#b#c"), "source"),
        (base(dataschema: "schema.json"), "dataschema"), (base(dataschema: "/abs/path"), "dataschema"),
        (base(dataschema: ""), "dataschema"), (base(dataschema: "https://example.com/a b"), "dataschema"),
        (base(datacontenttype: ""), "datacontenttype"), (base(datacontenttype: "json"), "datacontenttype"),
        (base(datacontenttype: "text/"), "datacontenttype"), (base(datacontenttype: "a/b; c"), "datacontenttype"),
        (base(datacontenttype: "a/b; c=\"open"), "datacontenttype"),
        (base(datacontenttype: "a b/c"), "datacontenttype"),
        (base(subject: ""), "subject"), (base(subject: "a\u{0}b"), "subject"), (base(subject: "a\u{85}b"), "subject"),
        (base(time: ""), "time"), (base(time: "2026-11-25"), "time"),
        (base(extensions: [("ext", "bell\u{7}")]), "ext"),
    ]

    @Test("valid attribute values pass every checker")
    func accepts() {
        for event in Self.accepted {
            #expect(event.invalidReason == nil, "\(event)")
            #expect(event.withCEvent { EventCheck.invalidReason($0) } == nil, "\(event)")
            #expect(CloudEventHTTP.problem(event) == nil, "\(event)")
        }
    }

    @Test("each broken constraint is refused by every checker, naming the attribute")
    func refuses() {
        for (event, attribute) in Self.refused {
            let owned = event.invalidReason
            let borrowed = event.withCEvent { EventCheck.invalidReason($0) }
            #expect(owned?.contains("'\(attribute)'") == true, "\(event): \(String(describing: owned))")
            #expect(borrowed == owned, "the kernel's check agrees for \(event)")
            #expect(CloudEventHTTP.problem(event)?.attribute == attribute, "\(event)")
        }
    }

    @Test("the constraints apply through the HTTP binding's decoders too")
    func decoders() throws {
        let binary = try CloudEventHTTP.decodeBinary(
            headers: [
                ("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t"),
                ("ce-dataschema", "not-a-uri"),
            ], body: [])
        #expect(CloudEventHTTP.problem(binary)?.attribute == "dataschema")
        let structured = try CloudEventJSON.decode(
            Array(#"{"specversion":"1.0","id":"1","source":"/s","type":"t","subject":""}"#.utf8))
        #expect(CloudEventHTTP.problem(structured)?.attribute == "subject")
    }

    @Test("topic names: one rule, named in the refusal; control characters shown escaped")
    func topicNames() {
        for good in ["orders", "a/b/c", "トピック/ü", "dead.letters-1_x", String(repeating: "x", count: 255), "a..b"] {
            #expect(TopicName.problem(good) == nil, "\(good)")
        }
        let bad = [
            "", "a\u{0}b", "../x", "a/../b", "a/./b", ".", "..", "/a", "a/", "a//b", "a\nb", "a\u{1B}[2J",
            "a\u{9F}", "a\\b", String(repeating: "x", count: 256),
        ]
        for name in bad {
            let problem = TopicName.problem(name)
            #expect(
                problem?.contains(TopicName.rule) == true, "\(name.debugDescription): \(String(describing: problem))")
            #expect(problem?.unicodeScalars.contains { TopicName.isControl($0) } == false, "escaped")
        }
        #expect(TopicName.quoted("a\n\u{1B}'\\b") == #"'a\n\u{1B}\'\\b'"#)
    }
}
