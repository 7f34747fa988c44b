import Glibc
import NIOHTTP1
import PlexusPluginSDK

// A libFuzzer target for the HTTP plugin's request path (Plugins/HTTPProtocol): the headers and body of a
// request, turned into events by the plugin's `Ingress` (binary, structured and batch mode) exactly as
// `POST /topics/{topic}` does once NIOHTTP1 has parsed the request. An input is `name: value` header lines,
// an empty line, then the body; its first byte adds a `Content-Type` (none, structured, batch, or a plain
// one for binary mode) before the input's own headers, so that every mode is reached. Header values NIOHTTP1
// would refuse (not names: those are tokens) are included: `Ingress` must not depend on the parser for its safety. (NIOHTTP1's parser,
// llhttp, is fuzzed upstream.)
//
// The target traps when `Ingress` crashes, accepts an event the HTTP binding refuses, refuses with another
// status than 400 or 415 or without an RFC 7807 body, or when an accepted event does not come back equal
// through the same path in each mode (structured, batch, and binary unless its type reads as structured).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    var (headers, body) = splitHeaders(Array(UnsafeBufferPointer(start: data + 1, count: size - 1)))
    let types = [nil, CloudEventHTTP.structuredType, CloudEventHTTP.batchType, "text/plain"]
    if let type = types[Int(data[0] % 4)] { headers.replaceOrAdd(name: "Content-Type", value: type) }
    check(headers: headers, body: body)
    return 0
}

/// Reads `name: value` lines up to an empty line, then the body.
func splitHeaders(_ bytes: [UInt8]) -> (HTTPHeaders, [UInt8]) {
    var headers = HTTPHeaders()
    var position = 0
    while position < bytes.count {
        let end = bytes[position...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
        let line = bytes[position..<end]
        position = end + 1
        if line.isEmpty { break }
        guard let colon = line.firstIndex(of: UInt8(ascii: ":")) else { continue }
        // A name is an RFC 9110 token, as the parser delivers it (and HTTPHeaders requires ASCII).
        let tchar = Set("!#$%&'*+-.^_`|~".utf8)
        guard colon > line.startIndex,
            line[..<colon].allSatisfy({ $0 < 0x80 && (isalnum(Int32($0)) != 0 || tchar.contains($0)) })
        else { continue }
        let name = String(decoding: line[..<colon], as: UTF8.self)
        var value = line[(colon + 1)...]
        while value.first == UInt8(ascii: " ") { value.removeFirst() }
        headers.add(name: name, value: String(decoding: value, as: UTF8.self))
    }
    return (headers, position < bytes.count ? Array(bytes[position...]) : [])
}

/// Runs one request through `Ingress` and checks what it answers.
func check(headers: HTTPHeaders, body: [UInt8]) {
    switch Ingress.events(headers: headers, body: body) {
    case .failure(let response):
        checkProblem(response)
    case .success(let events):
        let mode = CloudEventHTTP.mode(contentType: headers.first(name: "content-type"))
        switch mode {
        case .binary, .structured:
            guard events.count == 1 else { finding("\(mode) mode gave \(events.count) events") }
        case .batch: break
        case .unsupportedFormat: finding("an unsupported format was accepted: \(events)")
        }
        for event in events {
            if let problem = CloudEventHTTP.problem(event) { finding("accepted \(event) with \(problem)") }
            checkModes(event)
        }
        var batch = HTTPHeaders()
        batch.add(name: "Content-Type", value: CloudEventHTTP.batchType)
        let encoded = "[" + events.map { CloudEventJSON.encode($0) }.joined(separator: ",") + "]"
        expect(events, from: batch, Array(encoded.utf8), "the batch")
    }
}

/// Checks that one accepted event comes back equal in structured mode and in binary mode.
func checkModes(_ event: CloudEvent) {
    var structured = HTTPHeaders()
    structured.add(name: "Content-Type", value: CloudEventHTTP.structuredType + "; charset=utf-8")
    expect([event], from: structured, Array(CloudEventJSON.encode(event).utf8), "structured mode")
    guard CloudEventHTTP.mode(contentType: event.datacontenttype) == .binary else { return }
    let headers = HTTPHeaders(CloudEventHTTP.binaryHeaders(event).map { ($0.name, $0.value) })
    expect([event], from: headers, event.data, "binary mode")
}

func expect(_ events: [CloudEvent], from headers: HTTPHeaders, _ body: [UInt8], _ mode: String) {
    switch Ingress.events(headers: headers, body: body) {
    case .success(let again):
        // Binary mode carries data as the body; the JSON modes embed it, bytes and all.
        guard again == events else { finding("\(events) in \(mode) comes back as \(again)") }
    case .failure(let response):
        finding("\(events) in \(mode) is refused: \(String(decoding: response.body, as: UTF8.self))")
    }
}

/// A refusal is 400 or 415 with an RFC 7807 body that names its status.
func checkProblem(_ response: Response) {
    guard response.status == .badRequest || response.status == .unsupportedMediaType else {
        finding("refused with \(response.status)")
    }
    guard response.headers.contains(where: { $0 == ("Content-Type", "application/problem+json") }) else {
        finding("a problem without its Content-Type: \(response.headers)")
    }
    let text = String(decoding: response.body, as: UTF8.self)
    guard text.hasPrefix(#"{"type":"about:blank","#), text.hasSuffix("}"),
        text.contains(#","status":\#(response.status.code),"#)
    else { finding("a problem body that is not one: \(text)") }
    do {
        // Its text is valid JSON: as an extension value it makes a document the decoder reads.
        _ = try CloudEventJSON.decode(
            Array(#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":\#(text)}"#.utf8))
    } catch {
        finding("a problem body that is not JSON: \(text): \(error)")
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    let event =
        #"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data":{"a":1}}"#
    let binaryHeaders = [
        "ce-specversion: 1.0", "ce-id: 1", "ce-source: %2Fs", "ce-type: t", "ce-time: 2026-01-02T03:04:05Z",
        "ce-traceid: abc", "Content-Type: text/plain",
    ]
    writeSeeds([
        ("binary", [0] + Array((binaryHeaders.joined(separator: "\n") + "\n\nhello").utf8)),
        ("structured", [1] + Array("\n\(event)".utf8)),
        ("batch", [2] + Array("\n[\(event),\(event)]".utf8)),
        (
            "structured-header",
            [0] + Array("Content-Type: application/cloudevents+json; charset=utf-8\n\n\(event)".utf8)
        ),
    ])
    return 0
}
