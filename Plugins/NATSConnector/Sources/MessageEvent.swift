import PlexusPluginSDK

/// How an event travels as a NATS message: its payload is the event in the CloudEvents JSON format
/// (structured mode, `application/cloudevents+json`), which needs no NATS headers.
enum MessageEvent {
    /// The payload the sink publishes for `event`.
    static func payload(of event: CloudEvent) -> [UInt8] { Array(CloudEventJSON.encode(event).utf8) }

    /// The event a received payload carries: a valid structured CloudEvent as it is; any other payload (from
    /// a producer that does not speak CloudEvents) as the data of an event with id `fallbackID`, source
    /// `/nats/<subject>`, type `io.plexus.nats.message` and the NATS subject as its subject.
    static func event(subject topic: String, payload: [UInt8], fallbackID: String) -> CloudEvent {
        if payload.first == UInt8(ascii: "{"), let event = try? CloudEventJSON.decode(payload),
            event.invalidReason == nil
        {
            return event
        }
        return CloudEvent(
            id: fallbackID, source: "/nats/\(topic)", type: "io.plexus.nats.message", subject: topic, data: payload)
    }
}
