import PlexusCore
import Testing

/// The CloudEvents JSON format decoder and the HTTP binding's header mapping, without a node.
@Suite("CloudEvents JSON format and HTTP binding")
struct CloudEventHTTPTests {
    static let samples: [CloudEvent] = [
        CloudEvent(id: "1", source: "/s", type: "t"),
        CloudEvent(
            id: "json", source: "urn:test:ü", type: "com.example.json", datacontenttype: "application/json",
            dataschema: "https://example.com/schema", subject: "", time: "2026-11-25T10:00:00.5Z",
            extensions: [("traceparent", "00-abc-def-01"), ("empty", "")],
            data: Array(#"{"b": [1, 2.5e3, "x\"y"], "a": {"nested": null}}"#.utf8)),
        CloudEvent(
            id: "text", source: "/s", type: "t", datacontenttype: "text/plain; charset=utf-8",
            data: Array("line one\nline \"two\" \u{1F600}".utf8)),
        CloudEvent(
            id: "bytes", source: "/s", type: "t", datacontenttype: "application/octet-stream",
            data: (0..<256).map { UInt8($0) }),
        CloudEvent(
            id: "string-json", source: "/s", type: "t", datacontenttype: "application/json", data: Array(#""hi""#.utf8)),
        CloudEvent(
            id: "not-json", source: "/s", type: "t", datacontenttype: "application/json", data: Array("not json".utf8)),
        // Found by the `http` fuzz target: JSON data with white space around it, and the JSON literal null.
        CloudEvent(
            id: "json-spaced", source: "/s", type: "t", datacontenttype: "application/x+json",
            data: Array("-5.5e+3\t\t".utf8)),
        CloudEvent(
            id: "json-newline", source: "/s", type: "t", datacontenttype: "application/json",
            data: Array("{\"a\": 1}\n".utf8)),
        CloudEvent(
            id: "json-null", source: "/s", type: "t", datacontenttype: "application/json", data: Array("null".utf8)),
        CloudEvent(id: "untyped-object", source: "/s", type: "t", data: Array(#"{"a": 1}"#.utf8)),
        CloudEvent(id: "untyped-quoted", source: "/s", type: "t", data: Array(#""hi""#.utf8)),
    ]

    @Test("what CloudEventJSON.encode writes decodes to the same event", arguments: samples)
    func roundTrip(_ event: CloudEvent) throws {
        let text = CloudEventJSON.encode(event)
        #expect(try CloudEventJSON.decode(Array(text.utf8)) == event, "\(text)")
    }

    @Test("a batch of every sample round-trips in order")
    func batchRoundTrip() throws {
        let text = "[" + Self.samples.map { CloudEventJSON.encode($0) }.joined(separator: " ,\n") + "]"
        #expect(try CloudEventJSON.decodeBatch(Array(text.utf8)) == Self.samples)
        #expect(try CloudEventJSON.decodeBatch(Array(" [ ] ".utf8)).isEmpty)
    }

    @Test("JSON data is kept byte for byte, whitespace and key order included")
    func dataBytes() throws {
        let document =
            #"{"specversion":"1.0","id":"1","source":"/s","type":"t","data" :  {"z": 1,   "a":[true, false]} }"#
        let event = try CloudEventJSON.decode(Array(document.utf8))
        #expect(event.data == Array(#"{"z": 1,   "a":[true, false]}"#.utf8))
        #expect(event.datacontenttype == nil, "an absent datacontenttype stays absent")
    }

    @Test("data_base64 is decoded; data as a string with a non-JSON type is its text")
    func dataForms() throws {
        let b64 = try CloudEventJSON.decode(
            Array(#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AAEC/w=="}"#.utf8))
        #expect(b64.data == [0, 1, 2, 255])
        let text = try CloudEventJSON.decode(
            Array(
                #"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"text/plain","data":"a\u00e9\ud83d\ude00\n"}"#
                    .utf8))
        #expect(text.data == Array("aé😀\n".utf8))
        let extensions = try CloudEventJSON.decode(
            Array(#"{"specversion":"1.0","id":"1","source":"/s","type":"t","count":42,"flag":true,"gone":null}"#.utf8))
        #expect(extensions.extensions.map(\.key) == ["count", "flag"])
        #expect(extensions.extensions.map(\.value) == ["42", "true"])
    }

    @Test(
        "malformed documents name the attribute at fault",
        arguments: [
            (#"{"specversion":"1.0","source":"/s","type":"t"}"#, "id"),
            (#"{"specversion":"1.0","id":7,"source":"/s","type":"t"}"#, "id"),
            (#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":1,"data_base64":"AA=="}"#, "data_base64"),
            (#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"!!"}"#, "data_base64"),
            (#"{"specversion":"1.0","id":"1","id":"2","source":"/s","type":"t"}"#, "id"),
            (#"{"specversion":"1.0","id":"1","source":"/s","type":"t","ext":{"a":1}}"#, "ext"),
            (#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":{"a":}}"#, "data"),
        ])
    func malformed(_ document: String, _ attribute: String) {
        #expect(throws: CloudEventJSON.DecodingError.self) { try CloudEventJSON.decode(Array(document.utf8)) }
        do {
            _ = try CloudEventJSON.decode(Array(document.utf8))
        } catch {
            #expect(error.attribute == attribute, "\(error)")
        }
    }

    @Test("bad JSON is refused without an attribute; trailing bytes and unclosed strings too")
    func badJSON() {
        for document in ["", "[]", "{", #"{"id":"1"} x"#, #"{"id":"1}"#, #"{"id":"\x"}"#, "{\"id\":\"\u{1}\"}"] {
            #expect(throws: CloudEventJSON.DecodingError.self, "\(document)") {
                try CloudEventJSON.decode(Array(document.utf8))
            }
        }
        #expect(throws: CloudEventJSON.DecodingError.self) { try CloudEventJSON.decode([0x22, 0xFF, 0x22]) }
        let deep = String(repeating: "[", count: 600) + String(repeating: "]", count: 600)
        #expect(throws: CloudEventJSON.DecodingError.self) {
            try CloudEventJSON.decode(
                Array(#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data":\#(deep)}"#.utf8))
        }
    }

    @Test("a bad event in a batch is reported with its index")
    func batchIndex() {
        let batch =
            #"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","source":"/s","type":"t"}]"#
        do {
            _ = try CloudEventJSON.decodeBatch(Array(batch.utf8))
            Issue.record("the batch decoded")
        } catch {
            #expect(error.index == 1 && error.attribute == "id", "\(error)")
        }
    }

    @Test("binary mode: the headers written read back to the same event", arguments: samples)
    func binaryRoundTrip(_ event: CloudEvent) throws {
        let headers = CloudEventHTTP.binaryHeaders(event)
        for (_, value) in headers {
            #expect(value.utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }, "header values are printable ASCII: \(value)")
        }
        #expect(try CloudEventHTTP.decodeBinary(headers: headers, body: event.data) == event)
    }

    @Test("binary mode: header names are case-insensitive; repeats, ce-datacontenttype and bad encodings are refused")
    func binaryHeaders() throws {
        let base = [("CE-ID", "1"), ("Ce-Source", "%2Fs"), ("ce-specversion", "1.0"), ("ce-type", "t")]
        let event = try CloudEventHTTP.decodeBinary(headers: base + [("ce-MyExt", "a%20b")], body: [])
        #expect(
            event.source == "/s" && event.extensions.first?.key == "myext" && event.extensions.first?.value == "a b")
        for (extra, attribute) in [
            ([("ce-id", "2")], "id"), ([("ce-datacontenttype", "x")], "datacontenttype"),
            ([("ce-subject", "%E2%28")], "subject"),
            ([("ce-subject", "%2")], "subject"),
        ] {
            do {
                _ = try CloudEventHTTP.decodeBinary(headers: base + extra, body: [])
                Issue.record("\(extra) was accepted")
            } catch {
                #expect(error.attribute == attribute, "\(error)")
            }
        }
    }

    @Test("percent-encoding covers space, quote, percent, controls and non-ASCII; decoding inverts it")
    func percent() {
        #expect(CloudEventHTTP.percentEncode("a b\"c%d\r\né") == "a%20b%22c%25d%0D%0A%C3%A9")
        #expect(CloudEventHTTP.percentDecode("a%20b%22c%25d%0D%0A%C3%A9") == "a b\"c%d\r\né")
        #expect(CloudEventHTTP.percentEncode("/plain-value_1.0:x") == "/plain-value_1.0:x")
    }

    @Test("an HTTP intermediary refuses bad times and control characters, naming the attribute")
    func problems() {
        #expect(CloudEventHTTP.problem(CloudEvent(id: "1", source: "/s", type: "t")) == nil)
        let cases: [(CloudEvent, String)] = [
            (CloudEvent(id: "", source: "/s", type: "t"), "id"),
            (CloudEvent(id: "1", source: "/s", specversion: "0.3", type: "t"), "specversion"),
            (CloudEvent(id: "1", source: "/s", type: "t", time: "2026-13-01T00:00:00Z"), "time"),
            (CloudEvent(id: "1\r\nx: y", source: "/s", type: "t"), "id"),
            (CloudEvent(id: "1", source: "/s", type: "t", extensions: [("Bad", "x")]), "Bad"),
            (CloudEvent(id: "1", source: "/s", type: "t", extensions: [("ok", "a\u{7F}")]), "ok"),
        ]
        for (event, attribute) in cases { #expect(CloudEventHTTP.problem(event)?.attribute == attribute, "\(event)") }
    }

    @Test("RFC 3339 timestamps")
    func timestamps() {
        for good in [
            "2026-11-25T10:00:00Z", "2026-11-25t10:00:00.123456789z", "2024-02-29T23:59:60+05:30",
            "2026-01-01T00:00:00-00:00",
        ] {
            #expect(CloudEventHTTP.isTimestamp(good), "\(good)")
        }
        for bad in [
            "", "2026-11-25", "2026-11-25 10:00:00Z", "2023-02-29T00:00:00Z", "2026-11-25T24:00:00Z",
            "2026-11-25T10:00:00",
            "2026-11-25T10:00:00.Z", "2026-11-25T10:00:00+5:30", "yesterday",
        ] {
            #expect(!CloudEventHTTP.isTimestamp(bad), "\(bad)")
        }
    }

    @Test("binding modes come from Content-Type, parameters and case aside")
    func modes() {
        #expect(CloudEventHTTP.mode(contentType: nil) == .binary)
        #expect(CloudEventHTTP.mode(contentType: "Application/CloudEvents+JSON; charset=utf-8") == .structured)
        #expect(CloudEventHTTP.mode(contentType: "application/cloudevents-batch+json") == .batch)
        #expect(
            CloudEventHTTP.mode(contentType: "application/cloudevents+xml")
                == .unsupportedFormat("application/cloudevents+xml"))
        #expect(CloudEventHTTP.mode(contentType: "application/json") == .binary)
    }

    @Test("ISO-8601 durations")
    func durations() {
        #expect(ISO8601Duration.nanoseconds("PT0.5S") == 500_000_000)
        #expect(ISO8601Duration.nanoseconds("PT2M") == 120_000_000_000)
        #expect(ISO8601Duration.nanoseconds("P1DT1H") == 90_000_000_000_000)
        for bad in ["", "P", "PT", "5S", "P1M", "PT-1S", "PTxS"] {
            #expect(ISO8601Duration.nanoseconds(bad) == nil, "\(bad)")
        }
        #expect(ISO8601Duration.format(milliseconds: 500) == "PT0.5S")
        #expect(ISO8601Duration.format(milliseconds: 60_000) == "PT60S")
        #expect(ISO8601Duration.format(milliseconds: 1_250) == "PT1.25S")
    }
}
