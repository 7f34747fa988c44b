import Foundation
import PlexusCore
import PlexusProtos
import SwiftProtobuf
import Testing

@Suite("CloudEvents protobuf format ↔ Plexus events")
struct CloudEventConversionTests {
    static func message() -> CECloudEvent {
        var message = CECloudEvent()
        message.id = "e-1"
        message.source = "/sensors/7"
        message.specVersion = "1.0"
        message.type = "com.example.reading"
        return message
    }

    @Test("every attribute type becomes its canonical string; known attributes land in their fields")
    func attributeTypes() throws {
        var message = Self.message()
        var flag = CECloudEvent.CloudEventAttributeValue()
        flag.ceBoolean = true
        var count = CECloudEvent.CloudEventAttributeValue()
        count.ceInteger = -42
        var blob = CECloudEvent.CloudEventAttributeValue()
        blob.ceBytes = Data([0xDE, 0xAD])
        var stamp = CECloudEvent.CloudEventAttributeValue()
        stamp.ceTimestamp = Google_Protobuf_Timestamp(seconds: 1_764_930_000, nanos: 500_000_000)
        var schema = CECloudEvent.CloudEventAttributeValue()
        schema.ceUriRef = "https://example.com/schemas/reading"
        message.attributes = [
            "flag": flag, "count": count, "blob": blob, "time": stamp, "dataschema": schema,
            "subject": .string("room-1"),
        ]
        message.textData = "21.5"
        let event = try message.plexusEvent()
        #expect(event.attribute("flag") == "true")
        #expect(event.attribute("count") == "-42")
        #expect(event.attribute("blob") == "3q0=")
        #expect(event.time == "2025-12-05T10:20:00.5Z")
        #expect(event.dataschema == "https://example.com/schemas/reading")
        #expect(event.subject == "room-1")
        #expect(event.data == Array("21.5".utf8))
        #expect(event.extensions.map(\.key) == ["blob", "count", "flag"])
    }

    @Test("an event comes back with its attributes, time as a timestamp, textual data as text_data")
    func roundTrip() throws {
        let event = CloudEvent(
            id: "e-2", source: "/s", type: "t", datacontenttype: "application/json", subject: "x",
            time: "2026-11-25T10:00:01.5Z", extensions: [("traceid", "abc")], data: Array(#"{"a":1}"#.utf8))
        let message = CECloudEvent(event)
        #expect(message.textData == #"{"a":1}"#)
        #expect(message.attributes["time"]?.ceTimestamp.seconds == 1_795_600_801)
        #expect(message.attributes["traceid"]?.ceString == "abc")
        let back = try message.plexusEvent()
        #expect(back.datacontenttype == "application/json")
        #expect(back.subject == "x")
        #expect(back.data == event.data)
        #expect(back.attribute("traceid") == "abc")
        // Binary data stays binary.
        let binary = CECloudEvent(CloudEvent(id: "b", source: "/s", type: "t", data: [0xFF, 0x00]))
        #expect(binary.binaryData == Data([0xFF, 0x00]))
    }

    @Test("proto_data keeps the Any's value, with a protobuf content type and its type URL as dataschema")
    func protoData() throws {
        var message = Self.message()
        var any = Google_Protobuf_Any()
        any.typeURL = "type.googleapis.com/example.Reading"
        any.value = Data([1, 2, 3])
        message.protoData = any
        let event = try message.plexusEvent()
        #expect(event.data == [1, 2, 3])
        #expect(event.datacontenttype == "application/protobuf")
        #expect(event.dataschema == "https://type.googleapis.com/example.Reading")
    }

    @Test("missing required attributes, bad extension names and required names in attributes are refused")
    func refusals() throws {
        var noID = Self.message()
        noID.id = ""
        #expect(throws: CloudEventConversionError.self) { try noID.plexusEvent() }
        do {
            _ = try noID.plexusEvent()
        } catch let error as CloudEventConversionError {
            #expect(error.attribute == "id")
        }
        var badName = Self.message()
        badName.attributes["Not_Valid"] = .string("x")
        #expect(throws: CloudEventConversionError.self) { try badName.plexusEvent() }
        var shadow = Self.message()
        shadow.attributes["type"] = .string("other")
        #expect(throws: CloudEventConversionError.self) { try shadow.plexusEvent() }
        // Credentials a protocol drops never reach the event.
        var creds = Self.message()
        creds.attributes["passwd"] = .string("secret")
        #expect(try creds.plexusEvent(dropping: ["passwd"]).attribute("passwd") == nil)
    }

    @Test("EventMesh's CloudEvent and the CloudEvents format have the same wire form")
    func eventMeshWireIdentity() throws {
        var message = Self.message()
        message.attributes["subject"] = .string("orders")
        message.binaryData = Data([9, 8, 7])
        let mesh = try EMCloudEvent(message)
        #expect(mesh.attributeString("subject") == "orders")
        #expect(try mesh.serializedBytes() as [UInt8] == (try message.serializedBytes() as [UInt8]))
        #expect(try mesh.cloudEventsFormat == message)
    }
}
