import Testing

@testable import RaftBenchKit

/// The hand-written protobuf of the etcd messages against bytes worked out from the wire-format spec
/// (https://protobuf.dev/programming-guides/encoding/), and malformed input.
@Suite("etcd protobuf messages")
struct ProtobufTests {
    @Test("varints: one byte up to 127, little-endian groups of 7 bits, 10 bytes for the top bit")
    func varints() {
        func encoded(_ value: UInt64) -> [UInt8] {
            var writer = ProtobufWriter()
            writer.varint(value)
            return writer.bytes
        }
        #expect(encoded(0) == [0x00])
        #expect(encoded(1) == [0x01])
        #expect(encoded(127) == [0x7F])
        #expect(encoded(128) == [0x80, 0x01])
        #expect(encoded(300) == [0xAC, 0x02])
        #expect(encoded(1024) == [0x80, 0x08])
        #expect(encoded(UInt64.max) == [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01])
    }

    @Test("PutRequest{key = 1, value = 2}: key 0x0A, length, bytes; value 0x12, length, bytes")
    func putRequest() {
        #expect(
            EtcdPutRequest(key: Array("k".utf8), value: Array("v".utf8)).protobufBytes == [
                0x0A, 0x01, 0x6B, 0x12, 0x01, 0x76,
            ])
        let value = [UInt8](repeating: 0xAB, count: 1024)
        let bytes = EtcdPutRequest(key: Array("bench/c1/7".utf8), value: value).protobufBytes
        #expect(Array(bytes.prefix(12)) == [0x0A, 0x0A] + Array("bench/c1/7".utf8))
        #expect(Array(bytes[12..<15]) == [0x12, 0x80, 0x08])
        #expect(Array(bytes[15...]) == value)
        // proto3 leaves empty fields out.
        #expect(EtcdPutRequest(key: Array("k".utf8), value: []).protobufBytes == [0x0A, 0x01, 0x6B])
        #expect(EtcdRangeRequest(key: Array("k".utf8)).protobufBytes == [0x0A, 0x01, 0x6B])
        #expect(EtcdStatusRequest().protobufBytes == [])
    }

    /// ResponseHeader{cluster_id: 1, member_id: 2, revision: 300, raft_term: 4}.
    static let header: [UInt8] = [0x08, 0x01, 0x10, 0x02, 0x18, 0xAC, 0x02, 0x20, 0x04]

    @Test("PutResponse: the header is read; prev_kv and unknown fields of every wire type are skipped")
    func putResponse() throws {
        let bytes: [UInt8] =
            [0x0A, UInt8(Self.header.count)] + Self.header
            + [0x12, 0x02, 0x0A, 0x00]  // prev_kv = KeyValue{key: ""}
            + [0x78, 0x05]  // field 15, varint
            + [0x79] + [UInt8](repeating: 0, count: 8)  // field 15, fixed64
            + [0x7D, 1, 2, 3, 4]  // field 15, fixed32
        let response = try EtcdPutResponse(decoding: bytes)
        #expect(response.header == EtcdResponseHeader(clusterID: 1, memberID: 2, revision: 300, raftTerm: 4))
    }

    @Test("int64 fields: negative values are ten-byte two's complement varints")
    func negativeRevision() throws {
        let header: [UInt8] = [0x18, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01]
        let response = try EtcdPutResponse(decoding: [0x0A, UInt8(header.count)] + header)
        #expect(response.header.revision == -1)
    }

    @Test("StatusResponse: version, leader, indexes; the member leads when leader == header.member_id")
    func statusResponse() throws {
        let bytes: [UInt8] =
            [0x0A, UInt8(Self.header.count)] + Self.header + [0x12, 0x06] + Array("3.4.23".utf8)
            + [0x18, 0x80, 0x20]  // dbSize 4096
            + [0x20, 0x02, 0x28, 0x08, 0x30, 0x02, 0x38, 0x08]
        let status = try EtcdStatusResponse(decoding: bytes)
        #expect(status.version == "3.4.23")
        #expect(status.leader == 2 && status.raftIndex == 8 && status.raftTerm == 2 && status.raftAppliedIndex == 8)
        #expect(status.isLeader)
        var follower = status
        follower.leader = 3
        #expect(!follower.isLeader)
    }

    @Test("RangeResponse: repeated kvs in order, count")
    func rangeResponse() throws {
        let kv: [UInt8] = [0x0A, 0x01, 0x6B, 0x10, 0x05, 0x18, 0x06, 0x20, 0x01, 0x2A, 0x02, 0x68, 0x69]
        let bytes: [UInt8] =
            [0x0A, UInt8(Self.header.count)] + Self.header + [0x12, UInt8(kv.count)] + kv + [0x12, UInt8(kv.count)]
            + kv + [0x20, 0x02]
        let response = try EtcdRangeResponse(decoding: bytes)
        #expect(response.count == 2 && response.kvs.count == 2)
        #expect(response.kvs[0].key == Array("k".utf8) && response.kvs[0].value == Array("hi".utf8))
        #expect(response.kvs[0].createRevision == 5 && response.kvs[0].modRevision == 6 && response.kvs[0].version == 1)
    }

    @Test(
        "malformed messages are refused, with the byte",
        arguments: [
            ([0x0A, 0x05, 0x08], "declares 5 bytes"),
            ([0x08], "truncated"),
            ([0x08, 0x80], "truncated"),
            ([0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02], "too long"),
            ([0x00, 0x01], "field number 0"),
            ([0x0B], "wire type 3"),
            ([0x09, 0x01], "fixed64"),
        ] as [([UInt8], String)])
    func malformed(bytes: [UInt8], message: String) {
        #expect {
            _ = try EtcdPutResponse(decoding: bytes)
        } throws: { error in
            "\(error)".contains(message)
        }
    }

    @Test("a message cut at any byte either decodes a prefix or fails; it never reads past its end")
    func everyPrefix() {
        let full = EtcdPutRequest(key: Array("key".utf8), value: [UInt8](repeating: 7, count: 200)).protobufBytes
        for cut in 0...full.count {
            let prefix = Array(full[0..<cut])
            _ = try? EtcdRangeResponse(decoding: prefix)
        }
    }
}
