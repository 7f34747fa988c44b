import PlexusCore

// A libFuzzer target for the CloudEvents JSON decoder (sdk/plexus-sdk/Sources/PlexusCore/CloudEventJSONDecoder.swift), which
// reads structured- and batch-mode bodies from any HTTP client. Each input is decoded as one event and as a
// batch. The decoder must never crash, and every event it accepts must survive the round trips the rest of
// Plexus puts it through: JSON (`CloudEventJSON.encode`), binary-mode headers for an event the HTTP binding
// accepts, and a C `px_event`. An input that is one event must also be a batch of that one event.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    do {
        let event = try CloudEventJSON.decode(bytes)
        checkRoundTrips(event)
        // The same object as the only member of a batch.
        do {
            let batch = try CloudEventJSON.decodeBatch(Array("[".utf8) + bytes + Array("]".utf8))
            guard batch == [event] else { finding("the event as a batch decodes as \(batch), alone as \(event)") }
        } catch {
            finding("an event that decodes alone fails as a batch of one: \(error)")
        }
    } catch {
        guard error.index == nil else { finding("a single event's error has a batch index: \(error)") }
        guard !error.message.isEmpty else { finding("an error without a message") }
    }
    do {
        let events = try CloudEventJSON.decodeBatch(bytes)
        for event in events { checkRoundTrips(event) }
        let encoded = "[" + events.map { CloudEventJSON.encode($0) }.joined(separator: ",") + "]"
        do {
            let again = try CloudEventJSON.decodeBatch(Array(encoded.utf8))
            guard again.count == events.count, again == events else {
                finding("a batch re-encoded as \(encoded) decodes as \(again)")
            }
        } catch {
            finding("a decoded batch re-encoded as \(encoded) does not decode: \(error)")
        }
    } catch {
        if let index = error.index, index < 0 { finding("a batch error with index \(index)") }
        guard !error.message.isEmpty else { finding("an error without a message") }
    }
    return 0
}

/// Checks that a decoded event comes back equal from JSON, from binary-mode headers (when the HTTP binding
/// accepts the event, and its type does not make it read as structured mode), and from a C event.
func checkRoundTrips(_ event: CloudEvent) {
    let json = CloudEventJSON.encode(event)
    do {
        let again = try CloudEventJSON.decode(Array(json.utf8))
        guard again == event else { finding("\(event) re-encoded as \(json) decodes as \(again)") }
    } catch {
        finding("\(event) re-encoded as \(json) does not decode: \(error)")
    }
    let copy = event.withCEvent { CloudEvent(copying: $0) }
    guard copy == event else { finding("\(event) comes back from px_event as \(copy)") }
    // The same rules (the first reason each names may differ: they check in another order).
    guard (event.withCEvent({ EventCheck.invalidReason($0) }) == nil) == (event.invalidReason == nil) else {
        finding("EventCheck and CloudEvent disagree on \(event)")
    }
    guard CloudEventHTTP.problem(event) == nil, CloudEventHTTP.mode(contentType: event.datacontenttype) == .binary
    else { return }
    let headers = CloudEventHTTP.binaryHeaders(event)
    do {
        let again = try CloudEventHTTP.decodeBinary(headers: headers, body: event.data)
        guard again == event else { finding("\(event) as binary-mode headers \(headers) decodes as \(again)") }
    } catch {
        finding("\(event) as binary-mode headers \(headers) does not decode: \(error)")
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    let full = CloudEvent(
        id: "a-1", source: "/orders", type: "com.example.created", datacontenttype: "application/json",
        dataschema: "https://example.com/schema", subject: "order/1", time: "2026-01-02T03:04:05.678Z",
        extensions: [("traceparent", "00-1-2-01"), ("priority", "7")], data: Array(#"{"n":[1,2.5e3,true,null]}"#.utf8))
    let text = CloudEvent(
        id: "t", source: "s", type: "x", datacontenttype: "text/plain; charset=utf-8", data: Array("é\n\"".utf8))
    let binary = CloudEvent(id: "b", source: "s", type: "x", datacontenttype: "image/png", data: [0, 1, 0xFF])
    let events = [full, text, binary, CloudEvent(id: "m", source: "s", type: "x")]
    var seeds = events.enumerated().map { ("event-\($0.offset)", Array(CloudEventJSON.encode($0.element).utf8)) }
    seeds.append(("batch", Array(("[" + events.map { CloudEventJSON.encode($0) }.joined(separator: ",") + "]").utf8)))
    seeds.append(
        (
            "escapes",
            Array(
                #"{"specversion":"1.0","id":"\u00e9\ud83d\ude00","source":"\/s","type":"t","ext":12,"b":false,"data":"\t"}"#
                    .utf8)
        ))
    writeSeeds(seeds)
    return 0
}
