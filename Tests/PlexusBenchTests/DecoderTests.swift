import NIOCore
import NIOTestUtils
import Testing

@testable import PlexusBench

/// The wire decoders, fed whole, byte by byte and at every split point by SwiftNIO's verifier.
@Suite("Wire decoders")
struct DecoderTests {
    @Test("NATS frames: INFO, PING, PONG, +OK, -ERR, MSG with and without reply, HMSG")
    func natsFrames() throws {
        let delivery = NATSMessage(
            subject: "s.1", sid: 7, replyTo: "$JS.ACK.s.c.1.2.3.4.0", headers: nil, payload: Array("hello".utf8))
        let empty = NATSMessage(subject: "s", sid: 1, replyTo: nil, headers: nil, payload: [])
        let withCRLF = NATSMessage(subject: "s", sid: 2, replyTo: nil, headers: nil, payload: Array("a\r\nb".utf8))
        let status = NATSMessage(
            subject: "_INBOX.x.1", sid: 0, replyTo: nil, headers: Array("NATS/1.0 503\r\n\r\n".utf8), payload: [])
        try ByteToMessageDecoderVerifier.verifyDecoder(
            stringInputOutputPairs: [
                (
                    "INFO {\"server_id\":\"x\",\"max_payload\":1048576}\r\n",
                    [.info("{\"server_id\":\"x\",\"max_payload\":1048576}")]
                ),
                ("PING\r\n", [.ping]),
                ("PONG\r\n", [.pong]),
                ("+OK\r\n", [.ok]),
                ("-ERR 'Slow Consumer'\r\n", [.error("Slow Consumer")]),
                ("MSG s.1 7 $JS.ACK.s.c.1.2.3.4.0 5\r\nhello\r\n", [.message(delivery)]),
                ("MSG s 1 0\r\n\r\n", [.message(empty)]),
                ("MSG s 2 4\r\na\r\nb\r\n", [.message(withCRLF)]),
                ("HMSG _INBOX.x.1 0 16 16\r\nNATS/1.0 503\r\n\r\n\r\n", [.message(status)]),
            ],
            decoderFactory: { NATSFrameDecoder() })
        #expect(status.status == 503)
        #expect(delivery.status == nil)
    }

    @Test("A NATS frame that breaks the protocol is an error, not a guess")
    func natsViolation() {
        var decoder = NATSFrameDecoder()
        var buffer = ByteBuffer(string: "BOGUS 1 2\r\n")
        #expect(throws: BenchError.self) { try decoder.decode(buffer: &buffer) }
        var payloadWithoutCRLF = ByteBuffer(string: "MSG s 1 2\r\nabXY")
        #expect(throws: BenchError.self) { try decoder.decode(buffer: &payloadWithoutCRLF) }
    }

    @Test("RESP2 replies: simple, error, integer, bulk, null bulk, null array, nested XREADGROUP reply")
    func respReplies() throws {
        let entry = RESPValue.array([
            .bulkString(Array("1-0".utf8)), .array([.bulkString(Array("p".utf8)), .bulkString(Array("a\r\nb".utf8))]),
        ])
        let xreadgroup = RESPValue.array([.array([.bulkString(Array("t".utf8)), .array([entry, entry])])])
        let entryWire = "*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\np\r\n$4\r\na\r\nb\r\n"
        try ByteToMessageDecoderVerifier.verifyDecoder(
            stringInputOutputPairs: [
                ("+PONG\r\n", [.simpleString("PONG")]),
                (
                    "-BUSYGROUP Consumer Group name already exists\r\n",
                    [.error("BUSYGROUP Consumer Group name already exists")]
                ),
                (":42\r\n", [.integer(42)]),
                ("$5\r\nhello\r\n", [.bulkString(Array("hello".utf8))]),
                ("$0\r\n\r\n", [.bulkString([])]),
                ("$-1\r\n", [.bulkString(nil)]),
                ("*-1\r\n", [.array(nil)]),
                ("*0\r\n", [.array([])]),
                ("*1\r\n*2\r\n$1\r\nt\r\n*2\r\n" + entryWire + entryWire, [xreadgroup]),
            ],
            decoderFactory: { RESPDecoder() })
    }

    @Test("XREADGROUP replies hand each entry's payload over and return the ids to acknowledge")
    func xreadgroupDelivery() {
        let entry: (String, String) -> RESPValue = { id, payload in
            .array([
                .bulkString(Array(id.utf8)), .array([.bulkString(Array("p".utf8)), .bulkString(Array(payload.utf8))]),
            ])
        }
        let reply = RESPValue.array([
            .array([.bulkString(Array("t".utf8)), .array([entry("1-0", "a"), entry("1-1", "b")])])
        ])
        let received = ReceivedPayloads()
        let ids = RedisConsumer.deliver(reply) { received.append($0) }
        #expect(ids.map { String(decoding: $0, as: UTF8.self) } == ["1-0", "1-1"])
        #expect(received.all == [Array("a".utf8), Array("b".utf8)])
        #expect(RedisConsumer.deliver(.array(nil)) { _ in }.isEmpty)
    }

    @Test("A RESP reply of unknown type is an error")
    func respViolation() {
        var decoder = RESPDecoder()
        var buffer = ByteBuffer(string: "?what\r\n")
        #expect(throws: BenchError.self) { try decoder.decode(buffer: &buffer) }
    }
}
