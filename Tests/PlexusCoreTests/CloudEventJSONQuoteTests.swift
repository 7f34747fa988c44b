import PlexusCore
import Testing

/// `CloudEventJSON.quote` works on UTF-8 bytes: the same literal as escaping scalar by scalar.
@Suite struct CloudEventJSONQuoteTests {
    @Test func escapesQuotesBackslashesAndControlCharactersAndKeepsMultiByteCharacters() {
        #expect(CloudEventJSON.quote("") == #""""#)
        #expect(CloudEventJSON.quote("plain") == #""plain""#)
        #expect(CloudEventJSON.quote("a\"b\\c") == #""a\"b\\c""#)
        #expect(CloudEventJSON.quote("\n\r\t") == #""\n\r\t""#)
        #expect(CloudEventJSON.quote("\u{0}\u{1}\u{1f}\u{7f}") == "\"\\u0000\\u0001\\u001f\u{7f}\"")
        #expect(CloudEventJSON.quote("é🚀漢\u{1b}x") == "\"é🚀漢\\u001bx\"")
        // A long string with an escape at its end (the path the sinks take for base64 data).
        let long = String(repeating: "A", count: 1368) + "\""
        #expect(CloudEventJSON.quote(long) == "\"" + String(repeating: "A", count: 1368) + "\\\"\"")
    }
}
