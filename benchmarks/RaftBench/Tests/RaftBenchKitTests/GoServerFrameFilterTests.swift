import NIOCore
import NIOEmbedded
import Testing

@testable import RaftBenchKit

/// The frame filter on an embedded channel: the inbound byte stream, split at every byte boundary (and in one
/// piece, and byte by byte), comes out unchanged minus the server's PINGs (answered with ACKs carrying their
/// data) and the RST_STREAM(NO_ERROR)s of streams whose response had ended.
@Suite("Go server frame filter")
struct GoServerFrameFilterTests {
    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32 = 0, _ payload: [UInt8]) -> [UInt8] {
        let length = payload.count
        return [
            UInt8(length >> 16 & 0xFF), UInt8(length >> 8 & 0xFF), UInt8(length & 0xFF), type, flags,
            UInt8(stream >> 24 & 0xFF), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF),
        ] + payload
    }

    static let settings = frame(type: 0x4, [0, 3, 0, 0, 0, 100])
    static let ping1 = frame(type: 0x6, [1, 2, 3, 4, 5, 6, 7, 8])
    static let headers1 = frame(type: 0x1, flags: 0x4, stream: 1, [0x88])
    static let data1 = frame(type: 0x0, stream: 1, Array(repeating: 0x06, count: 300))
    /// Trailers: HEADERS with END_STREAM and END_HEADERS.
    static let trailers1 = frame(type: 0x1, flags: 0x5, stream: 1, [0x40, 0x01, 0x30])
    /// After the complete response of stream 1: dropped.
    static let reset1 = frame(type: 0x3, stream: 1, [0, 0, 0, 0])
    /// Stream 3 has not ended: its RST_STREAM(NO_ERROR) passes.
    static let reset3 = frame(type: 0x3, stream: 3, [0, 0, 0, 0])
    /// Stream 5 ended with a DATA frame with END_STREAM, then CANCEL: an error code passes.
    static let data5 = frame(type: 0x0, flags: 0x1, stream: 5, [1, 2, 3])
    static let cancel5 = frame(type: 0x3, stream: 5, [0, 0, 0, 8])
    static let pingAck = frame(type: 0x6, flags: 0x1, [9, 9, 9, 9, 9, 9, 9, 9])
    static let ping2 = frame(type: 0x6, [8, 7, 6, 5, 4, 3, 2, 1])
    /// A PING on a stream is a protocol error: the HTTP/2 handler must see it.
    static let badPing = frame(type: 0x6, stream: 3, [0, 0, 0, 0, 0, 0, 0, 0])
    static let goAway = frame(type: 0x7, [0, 0, 0, 5, 0, 0, 0, 0])

    static let stream =
        settings + ping1 + headers1 + data1 + trailers1 + reset1 + reset3 + data5 + cancel5 + pingAck + ping2
        + badPing + goAway
    static let expectedInbound =
        settings + headers1 + data1 + trailers1 + reset3 + data5 + cancel5 + pingAck + badPing + goAway
    static let expectedAcks =
        frame(type: 0x6, flags: 0x1, [1, 2, 3, 4, 5, 6, 7, 8]) + frame(type: 0x6, flags: 0x1, [8, 7, 6, 5, 4, 3, 2, 1])

    static func run(_ chunks: [ArraySlice<UInt8>]) throws -> (inbound: [UInt8], outbound: [UInt8]) {
        let filter = GoServerFrameFilter()
        let channel = EmbeddedChannel(handler: filter)
        for chunk in chunks { try channel.writeInbound(ByteBuffer(bytes: chunk)) }
        var inbound: [UInt8] = []
        while var buffer = try channel.readInbound(as: ByteBuffer.self) {
            inbound += buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        var outbound: [UInt8] = []
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) {
            outbound += buffer.readBytes(length: buffer.readableBytes) ?? []
        }
        #expect(filter.pingsAnswered == 2 && filter.resetsDropped == 1)
        _ = try channel.finish()
        return (inbound, outbound)
    }

    @Test("in one piece")
    func whole() throws {
        let (inbound, outbound) = try Self.run([Self.stream[...]])
        #expect(inbound == Self.expectedInbound)
        #expect(outbound == Self.expectedAcks)
    }

    @Test("split at every byte boundary, and byte by byte")
    func everySplit() throws {
        for cut in 0...Self.stream.count {
            let (inbound, outbound) = try Self.run([Self.stream[..<cut], Self.stream[cut...]])
            #expect(inbound == Self.expectedInbound, "cut at \(cut)")
            #expect(outbound == Self.expectedAcks, "cut at \(cut)")
        }
        let (inbound, outbound) = try Self.run(Self.stream.indices.map { Self.stream[$0...$0] })
        #expect(inbound == Self.expectedInbound)
        #expect(outbound == Self.expectedAcks)
    }
}
