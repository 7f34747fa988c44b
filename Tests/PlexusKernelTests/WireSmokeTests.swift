import NIOCore
import PlexusCore
import PlexusWire
import Testing

@Suite struct WireSmokeTests {
    @Test func cEventsOverPublishFrame() throws {
        let event = CloudEvent(
            id: "abc", source: "/s", type: "t", datacontenttype: "text/plain", data: Array("hello".utf8))
        var events = ByteBuffer()
        try events.writeWireEvent(event)
        var out = ByteBuffer()
        try FrameCodec.encodePublish(id: 3, topic: "demo", noAck: false, count: 1, events: &events, into: &out)
        let decoded = try #require(try FrameDecoder().next(from: &out))
        guard case .frame(let frame) = decoded, case .publish(let publish) = frame.body else {
            Issue.record("not a publish: \(decoded)")
            return
        }
        #expect(publish.events.cloudEvents == [event])
        let copies = publish.events.withCEvents { pointers, count in
            (0..<count).map { CloudEvent(copying: pointers[$0]!) }
        }
        #expect(copies == [event])
    }
}
