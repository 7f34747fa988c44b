import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// The gRPC protocol plugin against a client this project did not write: Python `grpcio`, with stubs that
/// `grpcio-tools` generates from the project's `protos/` at test time (`Tests/Interop/grpc/grpc_interop.py`).
@Suite("gRPC interop", .serialized, .timeLimit(.minutes(3)))
struct GRPCInteropTests {
    /// A node on memory-storage whose gRPC plugin accepts messages up to 64 KiB.
    static func node(in directory: TestDirectory) async throws -> (node: NodeProcess, grpc: Int, tcp: Int) {
        let (node, grpc, tcp, _) = try await nodeWithHTTP(in: directory)
        return (node, grpc, tcp)
    }

    static func nodeWithHTTP(in directory: TestDirectory) async throws -> (
        node: NodeProcess, grpc: Int, tcp: Int, http: Int
    ) {
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 1000, grpcValues: ["maxMessageBytes": "65536"]),
            data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage"])
        return (node, try await node.grpcPort(), try await node.tcpPort(), try await node.httpPort())
    }

    /// Runs checks of the Python script against the node; returns its output.
    static func run(
        _ checks: [String], port: Int, in directory: TestDirectory, environment: [String: String] = [:]
    ) async throws -> CommandResult {
        let python = try await HTTPInteropTests.python(in: directory.url)
        let script = Repository.root.appendingPathComponent("Tests/Interop/grpc/grpc_interop.py")
        let stubs = try directory.subdirectory("stubs")
        let assignments = environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        return try await Command.run(
            URL(fileURLWithPath: "/usr/bin/env"),
            assignments + [python.path, script.path, String(port), stubs.path] + checks,
            in: directory.url, timeout: .seconds(90))
    }

    @Test("grpcio publishes (EventMesh publish, batch, one-way; Plexus unary and streamed) and reads back")
    func publish() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, tcp) = try await Self.node(in: directory)
        defer { node.kill() }
        let run = try await Self.run(["publish"], port: port, in: directory)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("ok publish"))
        // What grpcio published is in storage with its attributes: read it back over TCP.
        let stored = try await HTTPProtocolTests.readBack(tcp: tcp, topic: "grpc-interop-publish", count: 28)
        #expect(stored.count == 28, "\(stored.count) events stored")
        let one = stored.values.first { String(decoding: $0.event.data, as: UTF8.self) == "one" }?.event
        #expect(one?.subject == "grpc-interop-publish")
        #expect(one?.attribute("producergroup") == "interop-producers")
        #expect(one?.datacontenttype == "text/plain")
    }

    @Test("grpcio subscribes on a stream, acks, and gets a nacked event again")
    func subscribe() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, _) = try await Self.node(in: directory)
        defer { node.kill() }
        let run = try await Self.run(["subscribe"], port: port, in: directory)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("ok subscribe"))
    }

    @Test("a consumer killed mid-stream holding unacknowledged events: they reach the group's other member")
    func killedConsumer() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, _) = try await Self.node(in: directory)
        defer { node.kill() }
        let run = try await Self.run(["killed"], port: port, in: directory)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("ok killed"))
    }

    @Test("requestReply, heartbeat, and bad input get the right gRPC and EventMesh statuses")
    func requestReplyHeartbeatBadInput() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, _) = try await Self.node(in: directory)
        defer { node.kill() }
        let run = try await Self.run(["requestreply", "heartbeat", "badinput"], port: port, in: directory)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        for check in ["ok requestreply", "ok heartbeat", "ok badinput"] {
            #expect(run.stdout.contains(check), "\(check) missing:\n\(run.stdout)")
        }
        // The node is still healthy and no stream is left open.
        var calls = UInt64.max
        let deadline = ContinuousClock.now + .seconds(10)
        while calls != 0, ContinuousClock.now < deadline {
            calls = UInt64((try await node.call("grpc-protocol", "calls")).output) ?? .max
            if calls != 0 { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(calls == 0, "streaming calls left open after the clients ended")
    }

    @Test("the HTTP plugin takes application/cloudevents+protobuf (structured and batch) through the same message")
    func httpProtobuf() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, tcp, http) = try await Self.nodeWithHTTP(in: directory)
        defer { node.kill() }
        let run = try await Self.run(
            ["httpprotobuf"], port: port, in: directory, environment: ["PLEXUS_HTTP_PORT": String(http)])
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("ok httpprotobuf"))
        let stored = try await HTTPProtocolTests.readBack(tcp: tcp, topic: "http-protobuf", count: 3)
        let byID = Dictionary(stored.values.map { ($0.event.id, $0.event) }) { first, _ in first }
        #expect(Set(byID.keys) == ["http-pb-1", "http-pb-2", "http-pb-3"])
        #expect(byID["http-pb-1"]?.subject == "via-http")
        #expect(byID["http-pb-1"]?.attribute("count") == "3")
        #expect(byID["http-pb-1"]?.data == Array("proto body".utf8))
    }

    @Test("with topics.autoCreate off an unbound topic is NOT_FOUND on Publish, EventMesh publish and Subscribe")
    func unknownTopic() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let config = directory.url.appendingPathComponent("plexus.yaml")
        try """
        node: {id: grpc-test}
        topics:
          autoCreate: false
          bindings:
            - {topic: orders, storage: memory-storage}
        """.write(to: config, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 1000, grpcValues: ["maxMessageBytes": "65536"]),
            data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage", "--config", config.path])
        defer { node.kill() }
        let run = try await Self.run(["unknowntopic"], port: try await node.grpcPort(), in: directory)
        #expect(run.status == 0, "\(run.stdout)\n\(run.stderr)")
        #expect(run.stdout.contains("ok unknowntopic"))
    }

    /// A grpcio consumer that subscribes (8 credits) and never reads its stream: 16 MiB published past it
    /// leave the node's memory bounded (credits and HTTP/2 flow control keep the backlog in storage), the
    /// node goes on serving, and a consumer that reads gets everything.
    @Test("a subscribe stream that never reads leaves the node's memory bounded and the node serving")
    func streamThatNeverReads() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, tcp) = try await Self.node(in: directory)
        defer { node.kill() }
        let python = try await HTTPInteropTests.python(in: directory.url)
        let stubs = try directory.subdirectory("stubs")
        let stalled = Process()
        stalled.executableURL = python
        stalled.arguments = [
            Repository.root.appendingPathComponent("Tests/Interop/grpc/grpc_interop.py").path, String(port),
            stubs.path, "stall", "grpc-stall", "8",
        ]
        let output = Pipe()
        stalled.standardOutput = output
        try stalled.run()
        defer {
            // SIGKILL: grpcio's threads keep a SIGTERM from ending the script.
            kill(stalled.processIdentifier, SIGKILL)
            stalled.waitUntilExit()
        }
        let line = try await Task.detached { () -> String in
            var bytes: [UInt8] = []
            while let byte = try output.fileHandleForReading.read(upToCount: 1)?.first, byte != 0x0A {
                bytes.append(byte)
            }
            return String(decoding: bytes, as: UTF8.self)
        }.value
        try #require(line == "subscribed", "the stalled consumer did not subscribe: \(line)")
        let before = try ProtocolAbuseTests.anonymousRSS(node)
        let client = try await PlexusClient.connect(ClientConfiguration(port: tcp, name: "stall", reconnect: false))
        let data = [UInt8](repeating: 0x62, count: 4096)
        let (batches, perBatch) = (512, 8)
        for batch in 0..<batches {
            let events = (0..<perBatch).map {
                CloudEvent(id: "g\(batch)-\($0)", source: "/stall", type: "t", data: data)
            }
            _ = try await client.publish(topic: "grpc-stall", events)
        }
        let stored = batches * perBatch * data.count
        let after = try ProtocolAbuseTests.anonymousRSS(node)
        // The store holds the 16 MiB; deliveries queued for the stalled consumer must not add as much again.
        #expect(
            after - before < stored + stored / 2 + (32 << 20),
            "anonymous RSS grew \((after - before) >> 20) MiB for \(stored >> 20) MiB stored")
        #expect(stalled.isRunning, "the stalled consumer's stream was ended by the server")
        // The kernel hands the stalled member no more than its 8 credits; the rest wait in storage (lag).
        struct Group: Decodable {
            var inFlight: Int
            var lag: UInt64?
        }
        let described = try await node.cli(["group", "describe", "grpc-stall", "interop-stall", "--json"])
        let group = try JSONDecoder().decode(Group.self, from: Data(described.stdout.utf8))
        #expect(group.inFlight <= 8, "\(described.stdout)")
        #expect((group.lag ?? 0) >= UInt64(batches * perBatch - 8), "\(described.stdout)")
        let read = try await Self.run(["publish"], port: port, in: directory)
        #expect(read.status == 0 && read.stdout.contains("ok publish"), "\(read.stdout)\n\(read.stderr)")
        let back = try await HTTPProtocolTests.readBack(
            tcp: tcp, topic: "grpc-stall", count: batches * perBatch, timeout: .seconds(60))
        #expect(back.count == batches * perBatch)
    }
}
