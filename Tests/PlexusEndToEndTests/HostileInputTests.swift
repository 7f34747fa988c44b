import Foundation
import NIOCore
import PlexusClient
import PlexusCore
import PlexusWire
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// What a hostile client found (issue 19), each in a real node: a request answered before the bytes after
/// it are ignored, the fatal `ERROR` frame delivered after junk, `DELIVER` from a client fatal, topic names
/// and CloudEvents attributes checked on every ingress, and heartbeat ids unique across restarts.
@Suite("Hostile input", .serialized, .timeLimit(.minutes(3)))
struct HostileInputTests {
    static func node(in directory: TestDirectory, intervalMs: Int = 1000) async throws -> (
        node: NodeProcess, http: Int, tcp: Int
    ) {
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: intervalMs),
            data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage"])
        return (node, try await node.httpPort(), try await node.tcpPort())
    }

    static func binaryRequest(
        _ topic: String, id: String, version: String = "HTTP/1.1", connection: String? = nil, extra: String = ""
    ) -> String {
        var text = "POST /topics/\(topic) \(version)\r\nHost: 127.0.0.1\r\n"
        if let connection { text += "Connection: \(connection)\r\n" }
        text += "ce-specversion: 1.0\r\nce-id: \(id)\r\nce-source: /hostile\r\nce-type: t\r\n\(extra)"
        return text + "Content-Length: 2\r\n\r\nhi"
    }

    @Test("a request that closes the connection is answered once, whatever bytes follow it; pipelined ones in order")
    func connectionClose() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, http, tcp) = try await Self.node(in: directory)
        defer { node.kill() }

        // HTTP/1.1 with Connection: close, then another request and junk in the same packet.
        let closing = try await RawHTTP.connect(
            port: http,
            sending:
                Self.binaryRequest("closing", id: "c1", connection: "close") + Self.binaryRequest("closing", id: "c2")
                + "junk\r\n\r\n")
        let first = try #require(try await closing.response(), "no answer to the Connection: close request")
        #expect(first.status == 202, "\(first)")
        #expect(first.header("Connection")?.lowercased() == "close")
        #expect(try await closing.closedByServer(within: .seconds(3)))
        #expect(try await closing.response(timeout: .milliseconds(200)) == nil, "bytes after close are ignored")

        // HTTP/1.0 without keep-alive, the same.
        let old = try await RawHTTP.connect(
            port: http,
            sending:
                Self.binaryRequest("closing", id: "c3", version: "HTTP/1.0") + "GET /health HTTP/1.0\r\n\r\n")
        let second = try #require(try await old.response(), "no answer to the HTTP/1.0 request")
        #expect(second.status == 202, "\(second)")
        #expect(try await old.closedByServer(within: .seconds(3)))

        // Stored once each: c1 and c3, never c2.
        let stored = try await HTTPProtocolTests.readBack(tcp: tcp, topic: "closing", count: 3, timeout: .seconds(2))
        #expect(stored.values.map(\.event.id).sorted() == ["c1", "c3"], "\(stored.values.map(\.event.id))")

        // Keep-alive requests pipelined in one write are each answered, in order.
        let pipelined = try await RawHTTP.connect(
            port: http,
            sending:
                Self.binaryRequest("piped", id: "p1") + "GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
                + Self.binaryRequest("piped", id: "p2") + Self.binaryRequest("piped", id: "p3", connection: "close"))
        var answers: [TestResponse] = []
        while answers.count < 4, let response = try await pipelined.response() { answers.append(response) }
        #expect(answers.map(\.status) == [202, 200, 202, 202], "\(answers)")
        #expect(answers.compactMap { $0.header("Plexus-Offset") } == ["0", "1", "2"], "\(answers)")
        #expect(try await pipelined.closedByServer(within: .seconds(3)))
        #expect(node.process.isRunning)
    }

    @Test("after kilobytes of junk the fatal ERROR frame reaches the client, then an orderly end of stream")
    func junkGetsItsError() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, _, tcp) = try await Self.node(in: directory)
        defer { node.kill() }

        for size in [4096, 65536, 1 << 20] {
            let socket = try PlainSocket(port: tcp)
            let junk = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
            try socket.send(try PlainSocket.hello() + junk)
            // Let the server act on the junk before reading: a reset would now destroy what it wrote.
            try await Task.sleep(for: .milliseconds(300))
            let (bytes, end) = socket.readToEnd()
            let frames = PlainSocket.frames(in: bytes)
            #expect(end == .endOfStream, "\(size) bytes of junk: the connection ended with \(end)")
            guard case .welcome? = frames.first?.body, case .error(let error)? = frames.last?.body else {
                Issue.record("\(size) bytes of junk: expected WELCOME then ERROR, got \(frames)")
                continue
            }
            #expect(error.fatal && error.status == .frameTooLarge, "\(error)")
        }

        // Junk before HELLO: the same.
        let early = try PlainSocket(port: tcp)
        try early.send((0..<16384).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) })
        try await Task.sleep(for: .milliseconds(300))
        let (bytes, end) = early.readToEnd()
        #expect(end == .endOfStream, "junk before HELLO: \(end)")
        if case .error(let error)? = PlainSocket.frames(in: bytes).last?.body {
            #expect(error.fatal)
        } else {
            Issue.record("junk before HELLO: no ERROR frame in \(bytes.count) bytes")
        }
        #expect(node.process.isRunning)
    }

    @Test("DELIVER (or any server-only frame) from a client is fatal, even with a body that does not parse")
    func deliverFromClient() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, _, tcp) = try await Self.node(in: directory)
        defer { node.kill() }

        // DELIVER (0x24) and PUBLISH_ACK (0x11) with an empty body: malformed, and from the wrong side.
        for type: UInt8 in [0x24, 0x11] {
            let (raw, _) = try await RawConnection.open(port: tcp)
            try await raw.send(bytes: [0, 0, 0, 12, type, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7])
            let frame = try #require(try await raw.nextFrame(), "no answer to frame type \(type)")
            guard case .error(let error) = frame.body else {
                Issue.record("expected ERROR, got \(frame)")
                continue
            }
            #expect(error.fatal && error.status == .protocolViolation && error.frameType == type, "\(error)")
            #expect(try await raw.closedByServer(within: .seconds(3)))
        }
        #expect(node.process.isRunning)
    }

    static let badTopics = ["a\u{0}b", "../escape", "a/../b", "line\nbreak", "esc\u{1B}[31m", "/lead", "back\\slash"]

    @Test("topic names break one rule, refused on TCP and HTTP with the rule named; valid ones pass")
    func topicNames() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, http, tcp) = try await Self.node(in: directory)
        defer { node.kill() }

        let (raw, _) = try await RawConnection.open(port: tcp)
        let events = try WireEvents([CloudEvent(id: "1", source: "/t", type: "t")])
        for (index, topic) in Self.badTopics.enumerated() {
            try await raw.send(Frame(id: UInt64(10 + index), .publish(Publish(topic: topic, events: events))))
            let answer = try #require(try await raw.nextFrame())
            guard case .publishAck(let ack) = answer.body else {
                Issue.record("expected PUBLISH_ACK for \(topic.debugDescription), got \(answer)")
                continue
            }
            #expect(ack.status == .invalidArgument, "\(topic.debugDescription): \(ack)")
            #expect(ack.message.contains("not a valid topic name"), "\(ack.message)")
            #expect(!ack.message.unicodeScalars.contains { TopicName.isControl($0) }, "shown escaped: \(ack.message)")

            try await raw.send(Frame(id: UInt64(100 + index), .subscribe(Subscribe(topic: topic))))
            let refusal = try #require(try await raw.nextFrame())
            guard case .error(let error) = refusal.body else {
                Issue.record("expected ERROR for SUBSCRIBE \(topic.debugDescription), got \(refusal)")
                continue
            }
            #expect(!error.fatal && error.status == .invalidArgument && error.message.contains("topic name"))

            // As a dead-letter topic: refused when subscribing, not retried forever later.
            try await raw.send(
                Frame(id: UInt64(200 + index), .subscribe(Subscribe(topic: "fine", deadLetterTopic: topic))))
            let deadLetter = try #require(try await raw.nextFrame())
            guard case .error(let dlq) = deadLetter.body else {
                Issue.record("expected ERROR for dead-letter topic \(topic.debugDescription), got \(deadLetter)")
                continue
            }
            #expect(dlq.status == .invalidArgument && dlq.message.contains("dead_letter_topic"), "\(dlq)")
        }

        for path in ["..", "..%2Fescape", "a%00b", "a%0Ab", "a%1B%5B31m", "a%5Cb"] {
            let response = try await HTTPTest.request(
                port: http, "POST", "/topics/\(path)",
                headers: [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t")],
                body: Array("x".utf8))
            #expect(response.status == 400, "\(path): \(response)")
            #expect(response.header("Content-Type") == "application/problem+json")
            let detail = response.json?["detail"] as? String ?? ""
            #expect(detail.contains("not a valid topic name") && detail.contains("segments"), "\(detail)")
            let stream = try await HTTPTest.request(port: http, "GET", "/topics/\(path)/events")
            #expect(stream.status == 400, "pull stream on \(path): \(stream)")
        }
        // Unicode and '/' inside a name stay valid.
        let client = try await PlexusClient.connect(ClientConfiguration(port: tcp, name: "t", reconnect: false))
        #expect(try await client.publish(topic: "tópico/ü", CloudEvent(id: "1", source: "/t", type: "t")) == 0)
        await client.close()
        #expect(node.process.isRunning)
    }

    @Test("CloudEvents attribute constraints on every ingress: HTTP binary, structured, batch; TCP; a plugin's publish")
    func attributeConstraints() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        // The heartbeat source publishes through host.publish with a source that is not a URI-reference.
        let manifests = try directory.shippedManifests(intervalMs: 100)
        let heartbeat = manifests.appendingPathComponent("heartbeat-source.yaml")
        let text = try String(contentsOf: heartbeat, encoding: .utf8)
            .replacingOccurrences(
                of: "    interval_ms: 100\n", with: "    interval_ms: 100\n    source: \"/not a uri\"\n")
        try text.write(to: heartbeat, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage"])
        defer { node.kill() }
        let http = try await node.httpPort()
        let tcp = try await node.tcpPort()

        let valid = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t")]
        func binary(_ extra: [(String, String)]) async throws -> TestResponse {
            try await HTTPTest.request(port: http, "POST", "/topics/attrs", headers: valid + extra, body: [1])
        }
        func expect(_ response: TestResponse, attribute: String, index: Int? = nil, _ comment: String) {
            #expect(response.status == 400, "\(comment): \(response)")
            #expect(response.json?["attribute"] as? String == attribute, "\(comment): \(response)")
            if let index { #expect(response.json?["index"] as? Int == index, "\(comment): \(response)") }
        }
        expect(try await binary([("ce-dataschema", "not-a-uri")]), attribute: "dataschema", "relative dataschema")
        expect(try await binary([("ce-dataschema", "")]), attribute: "dataschema", "empty dataschema")
        expect(try await binary([("ce-subject", "")]), attribute: "subject", "empty subject")
        expect(try await binary([("Content-Type", "nonsense")]), attribute: "datacontenttype", "bad media type")
        expect(try await binary([("ce-time", "")]), attribute: "time", "empty time")
        let badSource = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/a%20b"), ("ce-type", "t")]
        expect(
            try await HTTPTest.request(port: http, "POST", "/topics/attrs", headers: badSource, body: [1]),
            attribute: "source", "source with a space")
        #expect(try await binary([("ce-dataschema", "https://example.com/s.json")]).status == 202)
        #expect(try await binary([("Content-Type", "text/plain; charset=\"utf-8\"")]).status == 202)

        let structured = try await HTTPTest.request(
            port: http, "POST", "/topics/attrs", headers: [("Content-Type", "application/cloudevents+json")],
            body: Array(#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"json"}"#.utf8))
        expect(structured, attribute: "datacontenttype", "structured")
        let batch = try await HTTPTest.request(
            port: http, "POST", "/topics/attrs", headers: [("Content-Type", "application/cloudevents-batch+json")],
            body: Array(
                #"[{"specversion":"1.0","id":"1","source":"/s","type":"t"},{"specversion":"1.0","id":"2","source":"/s","type":"t","dataschema":"x y"}]"#
                    .utf8))
        expect(batch, attribute: "dataschema", index: 1, "batch")

        // TCP frames, past the reference client's own checks.
        let (raw, _) = try await RawConnection.open(port: tcp)
        let cases: [(CloudEvent, String)] = [
            (CloudEvent(id: "1", source: "/s", type: "t", dataschema: "not-a-uri"), "dataschema"),
            (CloudEvent(id: "1", source: "/s", type: "t", subject: ""), "subject"),
            (CloudEvent(id: "1", source: "/s", type: "t", datacontenttype: "text"), "datacontenttype"),
            (CloudEvent(id: "1", source: "/s", type: "t", time: "yesterday"), "time"),
            (CloudEvent(id: "1", source: "a b", type: "t"), "source"),
            (CloudEvent(id: "1", source: "/s", type: "t", extensions: [("ext", "a\u{7}")]), "ext"),
        ]
        for (index, (event, attribute)) in cases.enumerated() {
            try await raw.send(
                Frame(id: UInt64(index + 1), .publish(Publish(topic: "attrs", events: try WireEvents([event])))))
            let answer = try #require(try await raw.nextFrame())
            guard case .publishAck(let ack) = answer.body else {
                Issue.record("expected PUBLISH_ACK, got \(answer)")
                continue
            }
            #expect(ack.status == .invalidArgument && ack.message.contains("'\(attribute)'"), "\(attribute): \(ack)")
        }

        // A plugin's host.publish: the heartbeat source's events are refused by the kernel and it says so.
        let deadline = ContinuousClock.now + .seconds(10)
        var logged = false
        while !logged, ContinuousClock.now < deadline {
            let out = (try? String(contentsOf: node.stdoutFile, encoding: .utf8)) ?? ""
            logged = (out + node.stderr).contains("must be a URI-reference")
            if !logged { try await Task.sleep(for: .milliseconds(100)) }
        }
        #expect(logged, "the heartbeat source's refused publish names the rule")
        #expect(node.process.isRunning)
    }

    @Test("heartbeat event ids are not reused when the node restarts")
    func heartbeatIDsAcrossRestarts() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        var runs: [Set<String>] = []
        for run in 0..<2 {
            let (node, _, tcp) = try await Self.node(in: directory, intervalMs: 50)
            let client = try await PlexusClient.connect(
                ClientConfiguration(port: tcp, name: "ids-\(run)", reconnect: false))
            let ids = Mutex<Set<String>>([])
            let subscription = try await client.subscribe(
                topic: "heartbeat", options: SubscribeOptions(start: .earliest)
            ) { received in
                ids.withLock { _ = $0.insert(received.event.id) }
                received.ack()
            }
            let deadline = ContinuousClock.now + .seconds(10)
            while ids.withLock({ $0.count }) < 3, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(20))
            }
            await subscription.cancel()
            await client.close()
            node.kill()
            runs.append(ids.withLock { $0 })
            try #require(runs[run].count >= 3, "run \(run) saw \(runs[run])")
        }
        #expect(runs[0].isDisjoint(with: runs[1]), "ids reused: \(runs[0].intersection(runs[1]))")
    }
}
