import Foundation
import Testing

@testable import RaftBenchKit

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// Whether an `etcd` binary is on PATH.
func etcdInstalled() -> Bool {
    (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").contains {
        FileManager.default.isExecutableFile(atPath: "\($0)/etcd")
    }
}

/// The hand-encoded messages against a real etcd: a three-member cluster on loopback elects a leader that the
/// Status call finds, a put through the gRPC KV API reads back the same through Range, and through etcd's
/// JSON gateway (its own protobuf decoding, not ours).
@Suite("etcd over gRPC", .serialized)
struct EtcdIntegrationTests {
    @Test(
        "three members: leader by Status; put, then read back by Range and by the JSON gateway",
        .enabled(if: etcdInstalled(), "etcd is not installed; scripts/bench-raft-deps installs it"))
    func roundTrip() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("raftbench-etcd-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let cluster = try await EtcdCluster.start(directory: directory)
        defer { cluster.stop() }
        let (leader, status) = try await cluster.leader()
        #expect(status.version.hasPrefix("3."))
        #expect(status.isLeader)

        let client = try EtcdClient(host: Loopback.host, port: leader.clientPort)
        let key = Array("bench/test/1".utf8)
        let value = benchPayload(size: 1024)
        let first = try await client.put(key: key, value: value)
        let second = try await client.put(key: Array("bench/test/2".utf8), value: [1, 2, 3])
        #expect(first.header.revision > 1 && second.header.revision == first.header.revision + 1)
        #expect(first.header.memberID == status.header.memberID)
        let range = try await client.range(key: key)
        // etcd sends a PING after nearly every put, and with many puts in flight ends some streams with
        // RST_STREAM(NO_ERROR); without GoServerFrameFilter swift-nio-http2 dropped the connection about every
        // 200 puts, and again after about 200 resets ("Stream unexpectedly closed").
        var failures: [String] = []
        for i in 0..<600 {
            do { _ = try await client.put(key: Array("bench/test/p\(i)".utf8), value: value) } catch {
                failures.append("put \(i): \(error)")
            }
        }
        #expect(failures.isEmpty, "\(failures.count) sequential puts failed, e.g. \(failures.first ?? "")")
        let loaded = await ClosedLoop(concurrency: 128, warmup: .zero, duration: .seconds(3)).run(
            EtcdWriteTarget(client: client, prefix: "bench/test/c/", payload: value))
        #expect(loaded.errors == 0, "\(loaded.errorSamples)")
        await client.close()
        #expect(range.kvs.count == 1)
        #expect(range.kvs.first?.key == key && range.kvs.first?.value == value)
        #expect(range.kvs.first?.modRevision == first.header.revision)

        // The same key through the gateway: POST /v3/kv/range with base64 JSON.
        let follower = try #require(cluster.members.first { $0.name != leader.name })
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(follower.clientPort)/v3/kv/range")!)
        request.httpMethod = "POST"
        request.httpBody = Data(#"{"key":"\#(Data(key).base64EncodedString())"}"#.utf8)
        let (body, _) = try await URLSession.shared.data(for: request)
        struct Gateway: Decodable {
            struct KV: Decodable { var value: String }
            var kvs: [KV]
        }
        let read = try JSONDecoder().decode(Gateway.self, from: body)
        #expect(read.kvs.first.flatMap { Data(base64Encoded: $0.value) } == Data(value))
    }
}
