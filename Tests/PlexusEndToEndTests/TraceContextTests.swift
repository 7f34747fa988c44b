import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import PlexusClient
import PlexusCore
import PlexusGRPCServices
import Synchronization
import Testing

/// The CloudEvents Distributed Tracing extension from producer to consumer across protocols: an event's
/// `traceparent` and `tracestate` reach the consumer unchanged, whichever protocol each side speaks (docs/
/// operations.md, "Tracing"). HTTP binary mode carries them as `ce-traceparent`/`ce-tracestate` (the extension's
/// attributes); gRPC as entries of the CloudEvent message's `attributes`; TCP as extensions of the frame.
@Suite("Trace context across protocols", .serialized, .timeLimit(.minutes(3)))
struct TraceContextTests {
    static let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    static let tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"

    static func traced(_ id: String) -> CloudEvent {
        CloudEvent(
            id: id, source: "/trace-test", type: "com.example.traced",
            extensions: [("traceparent", traceparent), ("tracestate", tracestate)], data: Array(id.utf8))
    }

    /// A Plexus-service client on its own connection; `body` runs while its connections do.
    static func withGRPC<R: Sendable>(
        port: Int, _ body: @Sendable (PXPlexus.Client<HTTP2ClientTransport.Posix>) async throws -> R
    ) async throws -> R {
        let client = GRPCClient(
            transport: try .http2NIOPosix(
                target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)
        )
        let connections = Task { try? await client.runConnections() }
        defer {
            client.beginGracefulShutdown()
            connections.cancel()
        }
        return try await body(PXPlexus.Client(wrapping: client))
    }

    /// What a gRPC subscriber got, shared with the call's task.
    final class Received: Sendable {
        let events = Mutex<[CECloudEvent]>([])
    }

    /// Subscribes over gRPC from the earliest offset, acknowledges, and returns the first `count` events.
    static func consumeGRPC(port: Int, topic: String, count: Int) async throws -> [CECloudEvent] {
        try await withGRPC(port: port) { plexus in
            let got = Received()
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    let (acks, ackContinuation) = AsyncStream<UInt64>.makeStream()
                    try await plexus.subscribe(
                        requestProducer: { writer in
                            var subscription = PXSubscription()
                            subscription.topic = topic
                            subscription.group = "trace-grpc"
                            subscription.start = .earliest
                            var first = PXSubscribeRequest()
                            first.subscription = subscription
                            try await writer.write(first)
                            for await id in acks {
                                var ack = PXSubscribeRequest()
                                ack.ack = PXAck.with { $0.deliveryIds = [id] }
                                try await writer.write(ack)
                            }
                        },
                        onResponse: { response in
                            for try await message in response.messages {
                                guard case .delivery(let delivery) = message.kind else { continue }
                                ackContinuation.yield(delivery.deliveryID)
                                let total = got.events.withLock {
                                    $0.append(delivery.event)
                                    return $0.count
                                }
                                if total >= count {
                                    ackContinuation.finish()
                                    return
                                }
                            }
                        })
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(15))
                    throw SetupError(description: "no \(count) deliveries over gRPC within 15 s")
                }
                try await group.next()
                group.cancelAll()
            }
            return got.events.withLock { $0 }
        }
    }

    @Test("TCP to HTTP: published over TCP, the webhook gets ce-traceparent and ce-tracestate unchanged")
    func tcpToHTTP() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, grpc, tcp, http) = try await GRPCInteropTests.nodeWithHTTP(in: directory)
        _ = grpc
        defer { node.kill() }
        let sink = try await TestSink.start()
        defer { sink.stop() }
        let created = try await HTTPTest.post(
            port: http, "/subscriptions", json: #"{"topic":"traced-tcp","sink":"\#(sink.url)/in"}"#)
        #expect(created.status == 201, "\(created)")
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: tcp, name: "trace-test", reconnect: false))
        _ = try await client.publish(topic: "traced-tcp", Self.traced("from-tcp"))
        await client.close()
        let delivered = try #require(try await sink.wait(for: "/in", count: 1).first)
        #expect(delivered.header("ce-id") == "from-tcp")
        #expect(delivered.header("ce-traceparent") == Self.traceparent)
        #expect(delivered.header("ce-tracestate").flatMap(CloudEventHTTP.percentDecode) == Self.tracestate)
    }

    @Test("HTTP to gRPC: a binary-mode POST's ce-traceparent reaches a gRPC subscriber as the same attribute")
    func httpToGRPC() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, grpc, _, http) = try await GRPCInteropTests.nodeWithHTTP(in: directory)
        defer { node.kill() }
        let posted = try await HTTPTest.request(
            port: http, "POST", "/topics/traced-http",
            headers: CloudEventHTTP.binaryHeaders(Self.traced("from-http")).map { ($0.name, $0.value) },
            body: Array("from-http".utf8))
        #expect(posted.status == 202, "\(posted)")
        let got = try await Self.consumeGRPC(port: grpc, topic: "traced-http", count: 1)
        let event = try #require(got.first)
        #expect(event.id == "from-http")
        #expect(event.attributeString("traceparent") == Self.traceparent)
        #expect(event.attributeString("tracestate") == Self.tracestate)
    }

    @Test("gRPC to TCP: a Publish with traceparent in attributes reads back over TCP with the same trace id")
    func grpcToTCP() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, grpc, tcp, _) = try await GRPCInteropTests.nodeWithHTTP(in: directory)
        defer { node.kill() }
        let ack = try await Self.withGRPC(port: grpc) { plexus in
            var request = PXPublishRequest()
            request.topic = "traced-grpc"
            request.sequence = 1
            request.events = [CECloudEvent(Self.traced("from-grpc"))]
            return try await plexus.publish(request)
        }
        #expect(ack.code == 0, "\(ack.message)")
        let stored = try await HTTPProtocolTests.readBack(tcp: tcp, topic: "traced-grpc", count: 1)
        let event = try #require(stored.values.first?.event)
        #expect(event.id == "from-grpc")
        #expect(event.attribute("traceparent") == Self.traceparent)
        #expect(TraceParent(event.attribute("traceparent") ?? "")?.traceID == "0af7651916cd43dd8448eb211c80319c")
        #expect(event.attribute("tracestate") == Self.tracestate)
    }
}
