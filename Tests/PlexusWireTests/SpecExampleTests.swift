import NIOCore
import PlexusWire
import Testing

/// The bytes docs/protocols/tcp.md gives as examples, so the page and the code cannot drift apart.
@Suite("docs/protocols/tcp.md examples")
struct SpecExampleTests {
    /// "Example bytes of `HEARTBEAT` id 5 without reply".
    static let heartbeat: [UInt8] = [
        0x00, 0x00, 0x00, 0x0c, 0x30, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x05,
    ]

    @Test("HEARTBEAT id 5 without reply decodes as stated")
    func heartbeatDecodes() throws {
        var buffer = ByteBuffer(bytes: Self.heartbeat)
        #expect(try FrameDecoder().next(from: &buffer) == .frame(Frame(id: 5, .heartbeat(reply: false))))
        #expect(buffer.readableBytes == 0)
    }

    @Test("HEARTBEAT id 5 without reply encodes to exactly the stated bytes")
    func heartbeatEncodes() throws {
        var buffer = ByteBuffer()
        try FrameCodec.encode(Frame(id: 5, .heartbeat(reply: false)), into: &buffer)
        #expect(buffer.bytes == Self.heartbeat)
    }

    @Test("the HELLO of the example session: magic \"PLXS\", version 1, then the strings and numbers")
    func sessionHello() throws {
        var buffer = ByteBuffer()
        let hello = Hello(client: "cli", token: "", heartbeatMs: 10_000, maxFrameSize: 1_048_576)
        try FrameCodec.encode(Frame(id: 1, .hello(hello)), into: &buffer)
        let body: [UInt8] =
            Array("PLXS".utf8) + [0x00, 0x01, 0x00, 0x00] + [0x00, 0x03] + Array("cli".utf8) + [0x00, 0x00]
            + [0x00, 0x00, 0x27, 0x10] + [0x00, 0x10, 0x00, 0x00]
        let header: [UInt8] =
            [0x00, 0x00, 0x00, UInt8(12 + body.count), 0x01, 0x00, 0x00, 0x00] + [0, 0, 0, 0, 0, 0, 0, 1]
        #expect(buffer.bytes == header + body)
    }

    @Test("the status codes have the numbers the table gives")
    func statusCodes() {
        let table: [(WireStatus, UInt16)] = [
            (.ok, 0), (.invalidArgument, 1), (.notFound, 2), (.unsupported, 4), (.timeout, 6), (.unavailable, 7),
            (.resourceExhausted, 8), (.permissionDenied, 14), (.internalError, 15), (.malformedFrame, 64),
            (.unknownFrameType, 65), (.protocolViolation, 66), (.unauthenticated, 67), (.frameTooLarge, 68),
            (.idleTimeout, 69), (.unsupportedVersion, 70),
        ]
        for (status, code) in table { #expect(status.rawValue == code, "\(status)") }
    }

    @Test("the frame types have the numbers the table gives")
    func frameTypes() {
        let table: [(Frame.Kind, UInt8)] = [
            (.hello, 0x01), (.welcome, 0x02), (.publish, 0x10), (.publishAck, 0x11), (.subscribe, 0x20),
            (.subscribed, 0x21), (.unsubscribe, 0x22), (.unsubscribed, 0x23), (.deliver, 0x24), (.ack, 0x25),
            (.nack, 0x26), (.heartbeat, 0x30), (.goodbye, 0x31), (.error, 0x3F),
        ]
        #expect(table.count == Frame.Kind.allCases.count)
        for (kind, code) in table { #expect(kind.rawValue == code, "\(kind)") }
    }
}
