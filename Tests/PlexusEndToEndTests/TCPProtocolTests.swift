import Foundation
import NIOCore
import PlexusBench
import PlexusClient
import PlexusCore
import PlexusWire
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The TCP protocol plugin in a real node, driven by the `plexus` CLI, by `PlexusClient` and by a raw
/// socket that misbehaves.
@Suite("TCP protocol", .serialized)
struct TCPProtocolTests {
    /// A node with the shipped manifests (the TCP protocol on a free port) and its TCP port.
    static func node(in directory: TestDirectory, tcpValues: [String: String] = [:]) async throws -> (NodeProcess, Int)
    {
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 1000, tcpValues: tcpValues),
            data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage"])
        return (node, try await node.tcpPort())
    }

    static func client(_ port: Int) async throws -> PlexusClient {
        try await PlexusClient.connect(ClientConfiguration(port: port, name: "test", reconnect: false))
    }

    @Test("two terminals: `plexus sub demo` prints what `plexus pub demo --data hello` publishes")
    func pubSubCommands() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port) = try await Self.node(in: directory)
        defer { node.kill() }
        let server = "127.0.0.1:\(port)"
        let out = directory.url.appendingPathComponent("sub.out")
        let err = directory.url.appendingPathComponent("sub.err")
        let sub = try Command.launch(
            try Repository.plexus(), ["sub", "demo", "--count", "1", "--server", server], in: directory.url,
            stdout: out, stderr: err)
        defer { if sub.isRunning { sub.terminate() } }
        let deadline = ContinuousClock.now + .seconds(10)
        while !((try? String(contentsOf: err, encoding: .utf8)) ?? "").contains("subscribed to demo") {
            try #require(ContinuousClock.now < deadline && sub.isRunning, "plexus sub did not subscribe")
            try await Task.sleep(for: .milliseconds(20))
        }
        let pub = try await Command.run(
            try Repository.plexus(), ["pub", "demo", "--data", "hello", "--server", server], in: directory.url)
        #expect(pub.status == 0, "\(pub.stderr)")
        #expect(pub.output == "demo@0")
        while sub.isRunning {
            try #require(ContinuousClock.now < deadline, "plexus sub did not exit after one event")
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(sub.terminationStatus == 0)
        let line = try String(contentsOf: out, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        let json = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(json["data"] as? String == "hello")
        #expect(json["topic"] as? String == "demo")
        #expect(json["offset"] as? Int == 0)
        #expect(json["specversion"] as? String == "1.0")
        #expect(json["type"] as? String == "plexus.cli")
    }

    @Test("pipelined and batched publishes get dense offsets and arrive unchanged, with every attribute")
    func pipelinedPublishes() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port) = try await Self.node(in: directory)
        defer { node.kill() }
        let client = try await Self.client(port)

        let singles = (0..<1000).map { i in
            CloudEvent(
                id: "single-\(i)", source: "/test", type: "t", extensions: [("partitionkey", "k\(i % 7)")],
                data: Array("payload \(i)".utf8))
        }
        // Fired without waiting: all in flight at once, answered by id.
        let assigned = try await withThrowingTaskGroup(of: (String, UInt64).self) { group in
            for event in singles {
                group.addTask { (event.id, try await client.publish(topic: "orders", event)) }
            }
            var offsets: [String: UInt64] = [:]
            for try await (id, offset) in group { offsets[id] = offset }
            return offsets
        }
        let full = (0..<10).map { i in
            CloudEvent(
                id: "full-\(i)", source: "urn:test:ü", type: "com.example.full", datacontenttype: "application/json",
                dataschema: "https://example.com/schema", subject: "full", time: "2026-11-25T10:00:00.5Z",
                extensions: [("traceparent", "00-abc-def-01"), ("empty", "")],
                data: (0..<256).map { UInt8(($0 + i) % 256) })
        }
        let first = try await client.publish(topic: "orders", full)
        #expect(first == 1000, "the batch follows the singles densely")
        #expect(Set(assigned.values) == Set(0..<1000), "each single got its own offset, densely")

        let stream = try await client.subscribe(topic: "orders", options: SubscribeOptions(start: .earliest))
        var received: [UInt64: CloudEvent] = [:]
        var stamped = 0
        let now = UInt64(Date().timeIntervalSince1970 * 1e9)
        for await delivery in stream {
            received[delivery.offset] = delivery.event
            // The storage's append time travels with the delivery: within the last minute, not in the future.
            if delivery.appendTimeNs > now - 60_000_000_000, delivery.appendTimeNs <= now + 1_000_000_000 {
                stamped += 1
            }
            delivery.ack()
            if received.count == 1010 { break }
        }
        #expect(received.count == 1010)
        #expect(stamped == 1010, "every delivery carries the time the storage stored its event")
        for event in singles { #expect(received[assigned[event.id] ?? .max] == event) }
        for (i, event) in full.enumerated() { #expect(received[1000 + UInt64(i)] == event, "event \(i) unchanged") }
        await client.close()
    }

    @Test("a client that vanishes has its unacknowledged events redelivered to the rest of its group")
    func vanishedClient() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port) = try await Self.node(in: directory)
        defer { node.kill() }
        let (raw, _) = try await RawConnection.open(port: port)
        try await raw.send(Frame(id: 2, .subscribe(Subscribe(topic: "jobs", group: "workers", credits: 100))))
        let subscribed = try #require(try await raw.nextFrame())
        guard case .subscribed = subscribed.body else {
            Issue.record("expected SUBSCRIBED, got \(subscribed)")
            return
        }
        let client = try await Self.client(port)
        let events = (0..<5).map { CloudEvent(id: "job-\($0)", source: "/test", type: "job") }
        _ = try await client.publish(topic: "jobs", events)
        var delivered: [String] = []
        while delivered.count < 5, let frame = try await raw.nextFrame() {
            if case .deliver(let deliver) = frame.body { delivered.append(deliver.event.cloudEvent(at: 0).id) }
        }
        #expect(delivered.sorted() == events.map(\.id), "the raw member got all five, and acknowledged none")

        let redelivered = Mutex<[ReceivedEvent]>([])
        let other = try await client.subscribe(topic: "jobs", options: SubscribeOptions(group: "workers")) { received in
            redelivered.withLock { $0.append(received) }
            received.ack()
        }
        await raw.vanish()
        let deadline = ContinuousClock.now + .seconds(15)
        while redelivered.withLock({ $0.count }) < 5, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        let got = redelivered.withLock { $0 }
        #expect(got.map(\.event.id).sorted() == events.map(\.id), "every unacknowledged event reached the other member")
        #expect(got.allSatisfy { $0.attempt >= 2 }, "as redeliveries: \(got.map(\.attempt))")
        await other.cancel()
        await client.close()
    }

    @Test("credits bound the deliveries in flight; acknowledgements return them")
    func credits() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port) = try await Self.node(in: directory)
        defer { node.kill() }
        let (raw, _) = try await RawConnection.open(port: port)
        try await raw.send(Frame(id: 2, .subscribe(Subscribe(topic: "slow", start: .earliest, credits: 3))))
        guard case .subscribed? = try await raw.nextFrame()?.body else {
            Issue.record("expected SUBSCRIBED")
            return
        }
        let client = try await Self.client(port)
        _ = try await client.publish(topic: "slow", (0..<10).map { CloudEvent(id: "e\($0)", source: "/t", type: "t") })

        func collect(for duration: Duration) async throws -> [Deliver] {
            var got: [Deliver] = []
            while let frame = try await raw.nextFrame(timeout: duration) {
                if case .deliver(let d) = frame.body { got.append(d) }
            }
            return got
        }
        let window = try await collect(for: .milliseconds(700))
        #expect(window.count == 3, "only the window of 3 arrives before any ack")
        try await raw.send(Frame(.ack(deliveries: window.map(\.delivery))))
        let next = try await collect(for: .milliseconds(700))
        #expect(next.count == 3, "three acks return three credits")
        #expect(Set(next.map(\.offset)).isDisjoint(with: window.map(\.offset)))
        // An ack for a delivery this connection never had is refused without closing anything.
        try await raw.send(Frame(.ack(deliveries: [999_999])))
        let refusal = try #require(try await raw.nextFrame())
        guard case .error(let error) = refusal.body else {
            Issue.record("expected ERROR, got \(refusal)")
            return
        }
        #expect(error.status == .notFound && !error.fatal && refusal.id == 999_999)
        await client.close()
    }

    @Test("a connection cannot acknowledge another connection's delivery")
    func foreignAck() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port) = try await Self.node(in: directory)
        defer { node.kill() }
        let (owner, _) = try await RawConnection.open(port: port)
        try await owner.send(Frame(id: 2, .subscribe(Subscribe(topic: "own", start: .earliest, credits: 1))))
        guard case .subscribed? = try await owner.nextFrame()?.body else {
            Issue.record("expected SUBSCRIBED")
            return
        }
        let client = try await Self.client(port)
        _ = try await client.publish(topic: "own", (0..<2).map { CloudEvent(id: "o\($0)", source: "/t", type: "t") })
        guard case .deliver(let first)? = try await owner.nextFrame()?.body else {
            Issue.record("expected the first DELIVER")
            return
        }
        let (stranger, _) = try await RawConnection.open(port: port)
        try await stranger.send(Frame(.ack(deliveries: [first.delivery])))
        guard case .error(let refusal)? = try await stranger.nextFrame()?.body else {
            Issue.record("expected ERROR for a foreign ack")
            return
        }
        #expect(refusal.status == .notFound)
        // Had the foreign ack settled it, the credit would be free and the second event would arrive now.
        #expect(try await owner.nextFrame(timeout: .milliseconds(700)) == nil, "the delivery is still in flight")
        try await owner.send(Frame(.ack(deliveries: [first.delivery])))
        guard case .deliver(let second)? = try await owner.nextFrame()?.body else {
            Issue.record("expected the second DELIVER after the owner's ack")
            return
        }
        #expect(second.offset == first.offset + 1)
        await client.close()
    }

    @Test("bad input gets the right error frame; untrustworthy streams and idle clients are closed; the node lives on")
    func badInput() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port) = try await Self.node(
            in: directory, tcpValues: ["handshakeTimeoutMs": "300", "heartbeatMs": "200", "maxFrameSize": "65536"])
        defer { node.kill() }

        func fatalError(_ connection: RawConnection) async throws -> ErrorBody? {
            while let frame = try await connection.nextFrame() {
                if case .error(let error) = frame.body, error.fatal { return error }
            }
            return nil
        }

        // A frame before HELLO.
        let early = try await RawConnection.connect(port: port)
        try await early.send(Frame(id: 9, .heartbeat(reply: false)))
        #expect(try await fatalError(early)?.status == .protocolViolation)
        #expect(try await early.closedByServer(within: .seconds(2)))

        // A wrong magic.
        let stranger = try await RawConnection.connect(port: port)
        try await stranger.send(
            bytes: [0, 0, 0, 0x16, 0x01, 0, 0, 0] + [UInt8](repeating: 0, count: 8) + Array("HTTP/1.1 200".utf8))
        #expect(try await fatalError(stranger)?.status == .unsupportedVersion)

        // A length beyond the maximum frame size, after a good handshake.
        let (huge, _) = try await RawConnection.open(port: port)
        try await huge.send(bytes: [0x7F, 0xFF, 0xFF, 0xFF, 0x10])
        #expect(try await fatalError(huge)?.status == .frameTooLarge)
        #expect(try await huge.closedByServer(within: .seconds(2)))

        // An unknown frame type is refused and the connection stays usable.
        let (curious, _) = try await RawConnection.open(port: port)
        try await curious.send(bytes: [0, 0, 0, 12, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4])
        let unknown = try #require(try await curious.nextFrame())
        guard case .error(let unknownError) = unknown.body else {
            Issue.record("expected ERROR, got \(unknown)")
            return
        }
        #expect(unknownError.status == .unknownFrameType && !unknownError.fatal && unknown.id == 4)
        // An invalid event is refused with the attribute named.
        let bad = try WireEvents([CloudEvent(id: "x", source: "/t", specversion: "0.3", type: "t")])
        try await curious.send(Frame(id: 5, .publish(Publish(topic: "t", events: bad))))
        let answer = try #require(try await curious.nextFrame())
        guard case .publishAck(let ack) = answer.body else {
            Issue.record("expected PUBLISH_ACK, got \(answer)")
            return
        }
        #expect(answer.id == 5 && ack.status == .invalidArgument && ack.message.contains("specversion"), "\(ack)")
        // Garbage after a valid frame: the frame is answered, then the garbage closes the stream.
        var bytes = ByteBuffer()
        try FrameCodec.encode(Frame(id: 6, .heartbeat(reply: false)), into: &bytes)
        try await curious.send(bytes: Array(bytes.readableBytesView) + [0xFF, 0xFF, 0xFF, 0xFF])
        let reply = try #require(try await curious.next())
        #expect(reply == .frame(Frame(id: 6, .heartbeat(reply: true))))
        #expect(try await fatalError(curious)?.status == .frameTooLarge)

        // Slowloris before the handshake: a byte at a time never makes a frame.
        let slow = try await RawConnection.connect(port: port)
        let started = ContinuousClock.now
        for byte: UInt8 in [0, 0, 0, 40, 1] {
            // On a loaded machine the 300 ms handshake timeout may close it before the last byte: that is the
            // behaviour under test too.
            guard (try? await slow.send(bytes: [byte])) != nil else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(try await slow.closedByServer(within: .seconds(3)), "handshake timeout")
        #expect(ContinuousClock.now - started < .seconds(3))

        // Slowloris after the handshake: closed for want of a complete frame, within three heartbeats.
        let (trickle, welcome) = try await RawConnection.open(port: port, heartbeatMs: 200)
        #expect(welcome.heartbeatMs == 200)
        var closed = false
        for _ in 0..<40 where !closed {
            try? await trickle.send(bytes: [0])
            try await Task.sleep(for: .milliseconds(50))
            closed = try await trickle.closedByServer(within: .milliseconds(1))
        }
        #expect(closed, "a trickle of bytes is not a frame")

        // The node still serves.
        let client = try await Self.client(port)
        let offset = try await client.publish(topic: "after", CloudEvent(id: "1", source: "/t", type: "t"))
        #expect(offset == 0)
        await client.close()
        #expect(node.process.isRunning)
    }
}

@Suite("TCP client reconnection", .serialized)
struct TCPReconnectionTests {
    /// A port that was free a moment ago, outside the ephemeral range, so that no client's connection takes it
    /// before the node binds it (``LoopbackPorts``).
    static func freePort() throws -> Int { try LoopbackPorts.one() }

    @Test("a client reconnects with backoff after the node dies and subscribes again")
    func reconnects() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let port = try Self.freePort()
        let manifests = try directory.shippedManifests(intervalMs: 1000, tcpValues: ["port": "\(port)"])
        func start(_ name: String) async throws -> NodeProcess {
            let run = try directory.subdirectory(name)
            return try await NodeProcess.start(
                manifests: manifests, data: try directory.subdirectory("\(name)-data"), in: run,
                extraArguments: ["--default-storage", "memory-storage"])
        }
        let first = try await start("first")
        let client = try await PlexusClient.connect(
            ClientConfiguration(
                port: port, name: "reconnecting", reconnectDelay: .milliseconds(50),
                reconnectMaxDelay: .milliseconds(400)))
        let received = Mutex<[String]>([])
        _ = try await client.subscribe(topic: "r", options: SubscribeOptions(group: "g")) { delivery in
            received.withLock { $0.append(delivery.event.id) }
            delivery.ack()
        }
        _ = try await client.publish(topic: "r", CloudEvent(id: "before", source: "/t", type: "t"))
        let delivered = ContinuousClock.now + .seconds(10)
        while !received.withLock({ $0.contains("before") }), ContinuousClock.now < delivered {
            try await Task.sleep(for: .milliseconds(10))
        }

        first.kill()
        var failure: PlexusClientError?
        do {
            _ = try await client.publish(topic: "r", CloudEvent(id: "during", source: "/t", type: "t"))
        } catch let error as PlexusClientError {
            failure = error
        }
        #expect(
            failure?.code == .notConnected || failure?.code == .connectionLost,
            "a publish without a node fails at once: \(String(describing: failure))")

        let second = try await start("second")
        defer { second.kill() }
        let deadline = ContinuousClock.now + .seconds(20)
        var published = false
        while !published, ContinuousClock.now < deadline {
            do {
                _ = try await client.publish(topic: "r", CloudEvent(id: "after", source: "/t", type: "t"))
                published = true
            } catch {
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        #expect(published, "the client reconnected to the restarted node")
        while !received.withLock({ $0.contains("after") }), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(received.withLock { $0 } == ["before", "after"], "the subscription was made again on the new node")
        await client.close()
    }
}
