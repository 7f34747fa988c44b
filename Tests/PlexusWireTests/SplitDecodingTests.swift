import NIOCore
import NIOTestUtils
import PlexusWire
import Testing

/// The decoder must yield the same frames however TCP splits the bytes.
@Suite("FrameDecoder with input split at every byte boundary")
struct SplitDecodingTests {
    /// Decodes every whole frame in `buffer`.
    static func drain(_ buffer: inout ByteBuffer, _ decoder: FrameDecoder = FrameDecoder()) throws -> [InboundFrame] {
        var out: [InboundFrame] = []
        while let inbound = try decoder.next(from: &buffer) { out.append(inbound) }
        return out
    }

    @Test("NIO's ByteToMessageDecoderVerifier: one frame per write, drip-fed, all at once")
    func nioVerifier() throws {
        var pairs = FrameSamples.frames.map { (FrameSamples.encode($0.frame), [InboundFrame.frame($0.frame)]) }
        // A frame the decoder cannot read, but whose extent it knows, comes out as `.invalid`.
        let unknown = FrameSamples.raw(type: 0x7E, id: 3, body: [1, 2, 3])
        var unknownCopy = unknown
        let unknownResult = try #require(try FrameDecoder().next(from: &unknownCopy))
        pairs.append((unknown, [unknownResult]))
        // Several frames in one write.
        let several = FrameSamples.frames.prefix(5).map(\.frame)
        pairs.append((FrameSamples.encode(several), several.map(InboundFrame.frame)))
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: pairs) { FrameDecoder() }
    }

    @Test("every frame split in two at every byte boundary", arguments: FrameSamples.frames.map(\.name))
    func everySplitPoint(name: String) throws {
        let frame = try #require(FrameSamples.frames.first { $0.name == name }?.frame)
        let bytes = FrameSamples.encode(frame).bytes
        let decoder = FrameDecoder()
        for split in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<split])
            if split < bytes.count {
                #expect(try decoder.next(from: &buffer) == nil, "a prefix of \(split) bytes gave a frame")
                #expect(buffer.readableBytes == split, "a prefix of \(split) bytes was consumed")
            }
            buffer.writeBytes(bytes[split...])
            #expect(try Self.drain(&buffer, decoder) == [.frame(frame)], "split at \(split)")
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("every frame fed byte by byte, after the previous one, gives each frame when its last byte arrives")
    func byteByByte() throws {
        let frames = FrameSamples.frames.map(\.frame)
        let bytes = FrameSamples.encode(frames).bytes
        let decoder = FrameDecoder()
        var buffer = ByteBuffer()
        var out: [InboundFrame] = []
        var frameEnds: [Int] = []
        for (index, byte) in bytes.enumerated() {
            buffer.writeInteger(byte)
            let before = out.count
            out += try Self.drain(&buffer, decoder)
            if out.count > before { frameEnds.append(index + 1) }
        }
        #expect(out == frames.map(InboundFrame.frame))
        // Each frame came out at the byte that completed it: the running sum of the frame sizes.
        var end = 0
        let expectedEnds = frames.map { frame -> Int in
            end += FrameSamples.encode(frame).readableBytes
            return end
        }
        #expect(frameEnds == expectedEnds)
        #expect(buffer.readableBytes == 0)
    }

    @Test("all frames back to back, split in two at every byte boundary")
    func backToBackSplit() throws {
        // A handful of types, small enough that every split point stays fast.
        let frames = [
            "HELLO defaults", "PUBLISH one event", "ACK one", "HEARTBEAT reply", "DELIVER minimal event, extremes",
            "SUBSCRIBE every option", "ERROR fatal", "GOODBYE empty",
        ].compactMap { name in FrameSamples.frames.first { $0.name == name }?.frame }
        #expect(frames.count == 8)
        let expected = frames.map(InboundFrame.frame)
        let bytes = FrameSamples.encode(frames).bytes
        let decoder = FrameDecoder()
        for split in 0...bytes.count {
            var buffer = ByteBuffer(bytes: bytes[..<split])
            var out = try Self.drain(&buffer, decoder)
            #expect(expected.starts(with: out), "split at \(split)")
            buffer.writeBytes(bytes[split...])
            out += try Self.drain(&buffer, decoder)
            #expect(out == expected, "split at \(split)")
            #expect(buffer.readableBytes == 0)
        }
    }

    @Test("three chunks: every pair of split points over a small stream")
    func threeChunks() throws {
        let frames = [
            Frame(id: 5, .heartbeat(reply: false)), Frame(.ack(deliveries: [1, 2])),
            Frame(id: 1, .goodbye(reason: "é")),
        ]
        let expected = frames.map(InboundFrame.frame)
        let bytes = FrameSamples.encode(frames).bytes
        let decoder = FrameDecoder()
        for first in 0...bytes.count {
            for second in first...bytes.count {
                var buffer = ByteBuffer(bytes: bytes[..<first])
                var out = try Self.drain(&buffer, decoder)
                buffer.writeBytes(bytes[first..<second])
                out += try Self.drain(&buffer, decoder)
                buffer.writeBytes(bytes[second...])
                out += try Self.drain(&buffer, decoder)
                #expect(out == expected, "splits at \(first) and \(second)")
            }
        }
    }
}
