import PlexusPluginSDK

/// How an event travels as an MQTT message: its payload is the event in the CloudEvents JSON format
/// (structured mode, `application/cloudevents+json`), which MQTT 3.1.1 carries as well as MQTT 5.
enum MessageEvent {
    /// The payload the sink publishes for `event`.
    static func payload(of event: CloudEvent) -> [UInt8] { Array(CloudEventJSON.encode(event).utf8) }

    /// The event a received payload carries: a valid structured CloudEvent as it is; any other payload (from
    /// a producer that does not speak CloudEvents) as the data of an event with id `fallbackID`, source
    /// `/mqtt/<topic>`, type `io.plexus.mqtt.message` and the MQTT topic as its subject.
    static func event(topic: String, payload: [UInt8], fallbackID: String) -> CloudEvent {
        if payload.first == UInt8(ascii: "{"), let event = try? CloudEventJSON.decode(payload),
            event.invalidReason == nil
        {
            return event
        }
        return CloudEvent(
            id: fallbackID, source: "/mqtt/\(topic)", type: "io.plexus.mqtt.message", subject: topic, data: payload)
    }

    /// A batch of events as one CloudEvents JSON batch document (the source's spool).
    static func batch(_ events: [CloudEvent]) -> [UInt8] {
        Array(("[" + events.map { CloudEventJSON.encode($0) }.joined(separator: ",") + "]").utf8)
    }
}
