import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// The HTTP protocol plugin in a real node: ingress in every mode read back over TCP, bad input, webhook
/// delivery with the Knative retry table against a sink in the test, durable subscriptions across a kill,
/// and pull streams.
@Suite("HTTP protocol", .serialized, .timeLimit(.minutes(3)))
struct HTTPProtocolTests {
    /// A node with the shipped manifests (HTTP and TCP on free ports), memory storage for every topic unless
    /// `extraArguments` say otherwise; its HTTP and TCP ports.
    static func node(
        in directory: TestDirectory, httpValues: [String: String] = [:], data: URL? = nil,
        extraArguments: [String] = ["--default-storage", "memory-storage"]
    ) async throws -> (node: NodeProcess, http: Int, tcp: Int) {
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 1000, httpValues: httpValues),
            data: try data ?? directory.subdirectory("data"), in: directory.url, extraArguments: extraArguments)
        return (node, try await node.httpPort(), try await node.tcpPort())
    }

    /// Reads `count` events of `topic` from the start over TCP, by offset.
    static func readBack(tcp port: Int, topic: String, count: Int, timeout: Duration = .seconds(10)) async throws
        -> [UInt64: ReceivedEvent]
    {
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: port, name: "http-test", reconnect: false))
        let got = Mutex<[UInt64: ReceivedEvent]>([:])
        let subscription = try await client.subscribe(topic: topic, options: SubscribeOptions(start: .earliest)) {
            received in
            got.withLock { $0[received.offset] = received }
            received.ack()
        }
        let deadline = ContinuousClock.now + timeout
        while got.withLock({ $0.count }) < count, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        await subscription.cancel()
        await client.close()
        return got.withLock { $0 }
    }

    static func binaryHeaders(_ event: CloudEvent) -> [(String, String)] {
        CloudEventHTTP.binaryHeaders(event).map { ($0.name, $0.value) }
    }

    @Test("binary, structured and batch publishes are accepted once stored, and read back unchanged")
    func ingressModes() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, tcp) = try await Self.node(in: directory)
        defer { node.kill() }

        // Binary mode, written by hand: percent-encoded values, a non-ASCII subject, extensions.
        let binary = try await HTTPTest.request(
            port: port, "POST", "/topics/modes",
            headers: [
                ("ce-specversion", "1.0"), ("CE-ID", "b1"), ("ce-source", "/http%2520test"),
                ("ce-type", "com.example.bin"),
                ("ce-subject", "s%C3%BCbject"), ("ce-time", "2026-11-25T10:00:00.5Z"),
                ("ce-traceparent", "00-abc-def-01"),
                ("ce-myext", "a%22b%25c%C3%A9"), ("Content-Type", "application/octet-stream"),
            ], body: (0..<256).map { UInt8($0) })
        #expect(binary.status == 202, "\(binary)")
        #expect(binary.header("Plexus-Offset") == "0")
        let expectedBinary = CloudEvent(
            id: "b1", source: "/http%20test", type: "com.example.bin", datacontenttype: "application/octet-stream",
            subject: "sübject", time: "2026-11-25T10:00:00.5Z",
            extensions: [("traceparent", "00-abc-def-01"), ("myext", "a\"b%cé")],
            data: (0..<256).map { UInt8($0) })

        // Structured: JSON data kept byte for byte, and data_base64.
        let jsonData = #"{"z": 1,  "a": [true, null, "é"]}"#
        let structured = try await HTTPTest.request(
            port: port, "POST", "/topics/modes",
            headers: [("Content-Type", "application/cloudevents+json; charset=utf-8")],
            body: Array(
                #"{"specversion":"1.0","id":"s1","source":"/s","type":"t","datacontenttype":"application/json","data": \#(jsonData)}"#
                    .utf8))
        #expect(structured.status == 202, "\(structured)")
        let base64 = try await HTTPTest.request(
            port: port, "POST", "/topics/modes", headers: [("Content-Type", "application/cloudevents+json")],
            body: Array(#"{"specversion":"1.0","id":"s2","source":"/s","type":"t","data_base64":"AAEC/w=="}"#.utf8))
        #expect(base64.status == 202, "\(base64)")

        // A batch of three gets dense offsets after them.
        let batchEvents = (0..<3).map {
            CloudEvent(
                id: "batch-\($0)", source: "/batch", type: "t", datacontenttype: "text/plain",
                extensions: [("partitionkey", "k")], data: Array("line \($0)\nnext".utf8))
        }
        let batch = try await HTTPTest.request(
            port: port, "POST", "/topics/modes", headers: [("Content-Type", "application/cloudevents-batch+json")],
            body: Array(("[" + batchEvents.map { CloudEventJSON.encode($0) }.joined(separator: ",") + "]").utf8))
        #expect(batch.status == 202, "\(batch)")
        #expect(batch.header("Plexus-Offset") == "3")

        // Binary without Content-Type or body: datacontenttype stays absent, data empty.
        let bare = try await HTTPTest.request(
            port: port, "POST", "/topics/modes",
            headers: [("ce-specversion", "1.0"), ("ce-id", "bare"), ("ce-source", "/s"), ("ce-type", "t")])
        #expect(bare.status == 202, "\(bare)")

        let stored = try await Self.readBack(tcp: tcp, topic: "modes", count: 7)
        #expect(stored.count == 7)
        #expect(stored[0]?.event == expectedBinary)
        #expect(stored[1]?.event.data == Array(jsonData.utf8), "JSON data byte for byte")
        #expect(stored[1]?.event.datacontenttype == "application/json")
        #expect(stored[2]?.event.data == [0, 1, 2, 255])
        for (i, event) in batchEvents.enumerated() { #expect(stored[3 + UInt64(i)]?.event == event) }
        #expect(stored[6]?.event == CloudEvent(id: "bare", source: "/s", type: "t"))
    }

    @Test("bad input gets the right status and a problem naming the attribute; slow and idle clients are closed")
    func badInput() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, _) = try await Self.node(
            in: directory,
            httpValues: [
                // A request must be whole within 1.5 s of its first byte: long enough that an ordinary
                // request on a loaded two-core machine is never cut (600 ms was, under a CI build), short
                // enough for the slowloris below.
                "requestTimeoutMs": "1500", "idleTimeoutMs": "1500", "maxBodyBytes": "4096", "maxHeaderBytes": "4096",
            ])
        defer { node.kill() }
        let valid = [("ce-specversion", "1.0"), ("ce-id", "1"), ("ce-source", "/s"), ("ce-type", "t")]
        func post(_ headers: [(String, String)], _ body: String = "") async throws -> TestResponse {
            try await HTTPTest.request(port: port, "POST", "/topics/bad", headers: headers, body: Array(body.utf8))
        }
        func expectProblem(
            _ response: TestResponse, _ status: Int, attribute: String? = nil,
            sourceLocation: SourceLocation = #_sourceLocation
        ) {
            #expect(response.status == status, "\(response)", sourceLocation: sourceLocation)
            #expect(response.header("Content-Type") == "application/problem+json", sourceLocation: sourceLocation)
            #expect(response.json?["status"] as? Int == status, "\(response)", sourceLocation: sourceLocation)
            if let attribute {
                #expect(
                    response.json?["attribute"] as? String == attribute, "\(response)", sourceLocation: sourceLocation)
            }
        }
        let structured = [("Content-Type", "application/cloudevents+json")]
        expectProblem(try await post(structured, #"{"specversion":"1.0","id":"1","#), 400)
        expectProblem(
            try await post(structured, #"{"specversion":"1.0","id":"1","source":"/s"}"#), 400, attribute: "type")
        expectProblem(
            try await post(structured, #"{"specversion":"0.3","id":"1","source":"/s","type":"t"}"#), 400,
            attribute: "specversion")
        expectProblem(try await post(Array(valid.dropLast())), 400, attribute: "type")
        expectProblem(try await post(valid + [("ce-time", "2026-02-30T00:00:00Z")]), 400, attribute: "time")
        expectProblem(try await post(valid + [("ce-subject", "a%0D%0Aevil: 1")]), 400, attribute: "subject")
        expectProblem(try await post(valid + [("ce-Bad_Name", "x")]), 400, attribute: "bad_name")
        expectProblem(
            try await post([("Content-Type", "application/cloudevents-batch+json")], #"[{"specversion":"1.0"}]"#), 400)
        expectProblem(try await post([("Content-Type", "text/plain")], "hello"), 415)
        expectProblem(try await post([("Content-Type", "application/cloudevents+xml")], "<x/>"), 415)
        expectProblem(try await HTTPTest.request(port: port, "GET", "/topics/bad"), 405)
        expectProblem(try await HTTPTest.request(port: port, "PUT", "/topics/bad"), 405)
        expectProblem(try await HTTPTest.request(port: port, "GET", "/nowhere"), 404)
        expectProblem(try await post(valid, String(repeating: "x", count: 5000)), 413)

        // Raw bytes: header injection, a chunked body over the limit, huge headers.
        func raw(_ text: String) async throws -> (TestResponse?, closed: Bool) {
            let connection = try await RawHTTP.connect(port: port, sending: text)
            let response = try await connection.response(timeout: .seconds(5))
            return (response, try await connection.closedByServer(within: .seconds(3)))
        }
        let start = "POST /topics/bad HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-source: /s\r\nce-type: t\r\n"
        for injected in ["ce-id: 1\rce-evil: 1\r\n", "ce-id: 1\nce-evil: 1\r\n", "ce-id: 1\r\n x\r\n"] {
            let (response, closed) = try await raw(start + injected + "Content-Length: 0\r\n\r\n")
            #expect(response?.status == 400, "\(injected.debugDescription): \(String(describing: response))")
            #expect(closed)
        }
        let (chunked, _) = try await raw(
            start + "ce-id: 1\r\nTransfer-Encoding: chunked\r\n\r\n" + "1000\r\n" + String(repeating: "y", count: 4096)
                + "\r\n" + "10\r\n" + String(repeating: "y", count: 16) + "\r\n0\r\n\r\n")
        #expect(chunked?.status == 413, "\(String(describing: chunked))")
        let (huge, hugeClosed) = try await raw(start + "ce-big: " + String(repeating: "h", count: 8192) + "\r\n\r\n")
        #expect(huge?.status == 431, "\(String(describing: huge))")
        #expect(hugeClosed)

        // A slowloris trickling its headers gets 408 and is closed; so does a body that stops short.
        let began = ContinuousClock.now
        let slow = try await RawHTTP.connect(port: port, sending: "POST /topics/bad HTTP/1.1\r\n")
        var closed = false
        for byte in Array("ce-id: 1\r\nce-source: /s\r\n".utf8) where !closed {
            try? await slow.send(bytes: [byte])
            try await Task.sleep(for: .milliseconds(100))
            closed = try await slow.closedByServer(within: .milliseconds(1))
        }
        #expect(try await slow.closedByServer(within: .seconds(5)))
        #expect(ContinuousClock.now - began < .seconds(5))
        #expect(try await slow.response(timeout: .milliseconds(100))?.status == 408, "\(slow.received)")
        let short = try await RawHTTP.connect(
            port: port, sending: start + "ce-id: 1\r\nContent-Length: 100\r\n\r\n0123456789")
        #expect(try await short.response(timeout: .seconds(3))?.status == 408, "\(short.received)")

        // An idle connection is closed without a word; a keep-alive connection serves request after request.
        let idle = try await RawHTTP.connect(port: port)
        #expect(try await idle.closedByServer(within: .seconds(4)))
        #expect(idle.received.isEmpty)
        // The three requests go in one write (pipelined), so a stall of the loaded test process between them
        // cannot outlast the 1.5 s idle timeout and close the connection under the test.
        let keepAlive = try await RawHTTP.connect(
            port: port,
            sending: (0..<3).map {
                "POST /topics/ok HTTP/1.1\r\nHost: x\r\nce-specversion: 1.0\r\nce-id: k\($0)\r\nce-source: /s\r\n"
                    + "ce-type: t\r\nContent-Length: 2\r\n\r\nhi"
            }.joined())
        for i in 0..<3 {
            let response = try await keepAlive.response()
            #expect(
                response?.status == 202 && response?.header("Plexus-Offset") == "\(i)",
                "\(String(describing: response))")
        }
        await keepAlive.close()

        #expect(node.process.isRunning)
        let health = try await HTTPTest.request(port: port, "GET", "/health")
        #expect(health.status == 200 && health.json?["status"] as? String == "ok")
        #expect(try await HTTPTest.request(port: port, "GET", "/ready").status == 200)
    }

    @Test("an unbound topic is 404 with autoCreate off; over maxPendingEvents a publish is 429 with Retry-After")
    func unknownTopicAndOverload() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let config = directory.url.appendingPathComponent("plexus.yaml")
        try """
        node: {id: http-test}
        topics:
          autoCreate: false
          bindings:
            - {topic: orders, storage: memory-storage}
        """.write(to: config, atomically: true, encoding: .utf8)
        let (node, port, _) = try await Self.node(
            in: directory, httpValues: ["maxPendingEvents": "2", "overloadRetryAfterSeconds": "3"],
            extraArguments: ["--config", config.path])
        defer { node.kill() }
        let event = CloudEvent(id: "1", source: "/s", type: "t")
        let unknown = try await HTTPTest.request(
            port: port, "POST", "/topics/nowhere", headers: Self.binaryHeaders(event))
        #expect(unknown.status == 404, "\(unknown)")
        #expect(unknown.text.contains("nowhere"))
        let three =
            "["
            + (0..<3).map { CloudEventJSON.encode(CloudEvent(id: "\($0)", source: "/s", type: "t")) }
            .joined(separator: ",") + "]"
        let overloaded = try await HTTPTest.request(
            port: port, "POST", "/topics/orders", headers: [("Content-Type", "application/cloudevents-batch+json")],
            body: Array(three.utf8))
        #expect(overloaded.status == 429, "\(overloaded)")
        #expect(overloaded.header("Retry-After") == "3")
        let accepted = try await HTTPTest.request(
            port: port, "POST", "/topics/orders", headers: Self.binaryHeaders(event))
        #expect(accepted.status == 202, "\(accepted)")
    }

    @Test("webhooks: binary and structured deliveries arrive unchanged; the Knative retry table; Retry-After; replies")
    func webhooks() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, tcp) = try await Self.node(in: directory)
        defer { node.kill() }
        let replyEvent = CloudEvent(
            id: "reply-1", source: "/sink", type: "com.example.reply", datacontenttype: "text/plain",
            data: Array("pong".utf8))
        let sink = try await TestSink.start { request, before in
            let path = request.path
            if path.hasPrefix("/code/") {
                // The status in the path the first time, then success.
                return before == 0 ? TestSink.Answer(status: Int(path.dropFirst(6)) ?? 500) : TestSink.Answer()
            }
            switch path {
            case "/flaky": return TestSink.Answer(status: before < 2 ? 503 : 202)
            case "/down": return TestSink.Answer(status: 503)
            case "/slow": return TestSink.Answer(delay: .milliseconds(700))
            case "/refuse": return TestSink.Answer(status: 400)
            case "/busy":
                return before == 0 ? TestSink.Answer(status: 429, headers: [("Retry-After", "1")]) : TestSink.Answer()
            case "/reply":
                return TestSink.Answer(status: 200, headers: Self.binaryHeaders(replyEvent), body: replyEvent.data)
            default: return TestSink.Answer()
            }
        }
        defer { sink.stop() }

        func subscribe(_ topic: String, _ path: String, _ extra: String = "") async throws -> String {
            let response = try await HTTPTest.post(
                port: port, "/subscriptions",
                json: #"{"topic":"\#(topic)","sink":"\#(sink.url)\#(path)","start":"earliest"\#(extra)}"#)
            #expect(response.status == 201, "\(response)")
            return response.json?["id"] as? String ?? ""
        }
        let fast = #","delivery":{"retry":1,"backoffDelay":"PT0.05S","deadLetterTopic":"dead"}"#
        _ = try await subscribe("plain", "/ok")
        _ = try await subscribe("plain", "/structured", #","mode":"structured""#)
        _ = try await subscribe("flaky", "/flaky", #","delivery":{"retry":3,"backoffDelay":"PT0.05S"}"#)
        _ = try await subscribe("busy", "/busy", #","delivery":{"retry":2,"backoffDelay":"PT0.05S"}"#)
        _ = try await subscribe("ping", "/reply", #","replyTopic":"replies""#)
        _ = try await subscribe("plain", "/filtered", #","filters":{"type":"com.example.other"}"#)
        _ = try await subscribe("once", "/down", #","delivery":{"retry":0,"deadLetterTopic":"dead-once"}"#)
        _ = try await subscribe(
            "slow", "/slow",
            #","delivery":{"retry":1,"timeout":"PT0.1S","backoffDelay":"PT0.05S","deadLetterTopic":"dead-slow"}"#)
        _ = try await subscribe(
            "refused", "/refuse", #","group":"refusers","delivery":{"deadLetterSink":"\#(sink.url)/dls"}"#)
        let retried = [404, 408, 409, 429, 500, 503]
        let refused = [400, 401, 403, 410, 422]
        for code in retried + refused { _ = try await subscribe("code-\(code)", "/code/\(code)", fast) }

        let event = CloudEvent(
            id: "w1", source: "/webhook%20test", type: "com.example.w", datacontenttype: "application/json",
            subject: "ümlaut \"quoted\"", time: "2026-11-25T10:00:00Z", extensions: [("traceparent", "00-1-2-01")],
            data: Array(#"{"hello": "world"}"#.utf8))
        for topic in ["plain", "flaky", "busy", "ping", "once", "refused", "slow"]
            + (retried + refused).map({ "code-\($0)" })
        {
            let response = try await HTTPTest.request(
                port: port, "POST", "/topics/\(topic)", headers: Self.binaryHeaders(event), body: event.data)
            #expect(response.status == 202, "\(topic): \(response)")
        }

        // Binary mode: every attribute in a ce- header, the data as the body, unchanged.
        let plain = try #require(try await sink.wait(for: "/ok", count: 1).first)
        let decoded = try CloudEventHTTP.decodeBinary(headers: plain.headers, body: plain.body)
        #expect(decoded == event, "\(plain.headers)")
        let structuredRequest = try #require(try await sink.wait(for: "/structured", count: 1).first)
        #expect(structuredRequest.header("Content-Type") == CloudEventHTTP.structuredType)
        #expect(try CloudEventJSON.decode(structuredRequest.body) == event)

        // 503 twice, then accepted: three attempts, no dead letter.
        let flaky = try await sink.wait(for: "/flaky", count: 3)
        #expect(flaky.count == 3)
        // 429 with Retry-After: 1 holds the next attempt back a second, though the backoff is 50 ms.
        let busy = try await sink.wait(for: "/busy", count: 2)
        #expect(busy.count == 2)
        if busy.count == 2 { #expect(busy[1].at - busy[0].at >= .milliseconds(950), "\(busy[1].at - busy[0].at)") }
        // The retry table: retried statuses get a second attempt; the others are dead-lettered at once.
        for code in retried {
            #expect(try await sink.wait(for: "/code/\(code)", count: 2).count == 2, "\(code) is retried")
        }
        let dead = try await Self.readBack(tcp: tcp, topic: "dead", count: refused.count)
        #expect(dead.count == refused.count)
        let reasons = dead.values.compactMap { $0.event.attribute("deadletterreason") }
        for code in refused {
            #expect(sink.requests("/code/\(code)").count == 1, "\(code) is not retried")
            #expect(reasons.contains { $0.contains("answered \(code)") }, "\(code) dead-lettered: \(reasons)")
        }
        for value in dead.values { #expect(value.event.id == "w1" && value.event.data == event.data) }
        // retry 0: one attempt, then the dead-letter topic.
        #expect(try await Self.readBack(tcp: tcp, topic: "dead-once", count: 1).count == 1)
        #expect(sink.requests("/down").count == 1, "retry 0 means no second attempt")
        // A sink slower than the subscription's timeout: the attempt counts as failed, and is retried.
        let slow = try await Self.readBack(tcp: tcp, topic: "dead-slow", count: 1)
        #expect(slow.first?.value.event.attribute("deadletterreason")?.contains("timeout") == true, "\(slow)")
        #expect(sink.requests("/slow").count == 2, "one attempt and one retry")
        // A dead-letter sink gets the refused event with the dead-letter extensions, pushed like any other.
        let dls = try #require(try await sink.wait(for: "/dls", count: 1).first)
        let deadLettered = try CloudEventHTTP.decodeBinary(headers: dls.headers, body: dls.body)
        #expect(deadLettered.id == "w1" && deadLettered.data == event.data)
        #expect(deadLettered.attribute("deadlettergroup") == "refusers")
        #expect(deadLettered.attribute("deadletterreason")?.contains("answered 400") == true)
        // A filter that matches nothing delivers nothing.
        #expect(sink.requests("/filtered").isEmpty)
        // A 200 carrying an event is a reply, published to the reply topic.
        let replies = try await Self.readBack(tcp: tcp, topic: "replies", count: 1)
        #expect(replies[0]?.event == replyEvent)
        #expect(try await HTTPTest.request(port: port, "GET", "/subscriptions").text.contains("replies"))
    }

    @Test("webhooks: keep-alive connections are reused and in-flight deliveries stay within maxInFlight")
    func webhookPooling() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, _) = try await Self.node(in: directory)
        defer { node.kill() }
        let sink = try await TestSink.start { _, _ in TestSink.Answer(delay: .milliseconds(50)) }
        defer { sink.stop() }
        let created = try await HTTPTest.post(
            port: port, "/subscriptions", json: #"{"topic":"pool","sink":"\#(sink.url)/in","maxInFlight":4}"#)
        #expect(created.status == 201, "\(created)")
        let events = (0..<40).map { CloudEvent(id: "p\($0)", source: "/s", type: "t") }
        let batch = try await HTTPTest.request(
            port: port, "POST", "/topics/pool", headers: [("Content-Type", "application/cloudevents-batch+json")],
            body: Array(("[" + events.map { CloudEventJSON.encode($0) }.joined(separator: ",") + "]").utf8))
        #expect(batch.status == 202)
        let got = try await sink.wait(for: "/in", count: 40)
        #expect(Set(got.map { $0.header("ce-id") ?? "" }) == Set(events.map(\.id)))
        #expect(sink.maxInFlight.load(ordering: .relaxed) <= 4, "at most maxInFlight requests at once")
        #expect(sink.connections.load(ordering: .relaxed) <= 4, "connections are kept alive and reused")
    }

    @Test("subscriptions are validated, survive a kill -9 of the node, and deletion is durable too")
    func durableSubscriptions() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let data = try directory.subdirectory("data")
        let sink = try await TestSink.start()
        defer { sink.stop() }
        var (node, port, _) = try await Self.node(in: directory, data: data)
        defer { node.kill() }

        for (body, field) in [
            (#"{"topic":"t"}"#, "sink"), (#"{"sink":"\#(sink.url)"}"#, "topic"),
            (#"{"topic":"t","sink":"ftp://x"}"#, "sink"),
            (#"{"topic":"t","sink":"\#(sink.url)","colour":"red"}"#, "colour"),
            (#"{"topic":"t","sink":"\#(sink.url)","delivery":{"backoffDelay":"soon"}}"#, "delivery.backoffDelay"),
            (#"{"topic":"t","sink":"\#(sink.url)","delivery":{"retry":"three"}}"#, "delivery.retry"),
            (#"{"topic":"t","sink":"\#(sink.url)","mode":"telepathy"}"#, "mode"), ("[1]", "body"),
        ] {
            let response = try await HTTPTest.post(port: port, "/subscriptions", json: body)
            #expect(response.status == 400, "\(body): \(response)")
            #expect(response.json?["attribute"] as? String == field, "\(body): \(response)")
        }

        let created = try await HTTPTest.post(
            port: port, "/subscriptions",
            json:
                #"{"topic":"kept","group":"keepers","sink":"\#(sink.url)/kept","delivery":{"retry":5,"backoffDelay":"PT0.5S"}}"#
        )
        #expect(created.status == 201, "\(created)")
        let id = try #require(created.json?["id"] as? String)
        #expect(created.header("Location") == "/subscriptions/\(id)")
        let described = try await HTTPTest.request(port: port, "GET", "/subscriptions/\(id)")
        #expect(described.json?["group"] as? String == "keepers")
        #expect((described.json?["delivery"] as? [String: Any])?["backoffDelay"] as? String == "PT0.5S")

        node.kill()
        (node, port, _) = try await Self.node(in: directory, data: data)
        let listed = try await HTTPTest.request(port: port, "GET", "/subscriptions")
        let all = try #require(try JSONSerialization.jsonObject(with: Data(listed.body)) as? [[String: Any]])
        #expect(all.map { $0["id"] as? String } == [id], "restored after kill -9")
        let event = CloudEvent(id: "after-restart", source: "/s", type: "t")
        #expect(
            try await HTTPTest.request(port: port, "POST", "/topics/kept", headers: Self.binaryHeaders(event)).status
                == 202)
        #expect(try await sink.wait(for: "/kept", count: 1).first?.header("ce-id") == "after-restart")

        #expect(try await HTTPTest.request(port: port, "DELETE", "/subscriptions/\(id)").status == 204)
        #expect(try await HTTPTest.request(port: port, "GET", "/subscriptions/\(id)").status == 404)
        #expect(try await HTTPTest.request(port: port, "DELETE", "/subscriptions/\(id)").status == 404)
        node.kill()
        (node, port, _) = try await Self.node(in: directory, data: data)
        #expect(try await HTTPTest.request(port: port, "GET", "/subscriptions").text == "[]")
        let files = try FileManager.default.contentsOfDirectory(
            atPath: data.appendingPathComponent("plugins/http-protocol").path)
        #expect(files.contains("subscriptions.json") && !files.contains { $0.hasSuffix(".tmp") }, "\(files)")
    }

    @Test(
        "pull: server-sent events with delivery ids; acks settle, nacks redeliver, a closed stream hands its events on")
    func pull() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, port, _) = try await Self.node(in: directory)
        defer { node.kill() }
        let events = (0..<3).map {
            CloudEvent(
                id: "pull-\($0)", source: "/s", type: "t", datacontenttype: "application/json",
                data: Array("{\n  \"n\": \($0)\n}".utf8))
        }
        for event in events {
            let response = try await HTTPTest.request(
                port: port, "POST", "/topics/pulled", headers: Self.binaryHeaders(event), body: event.data)
            #expect(response.status == 202)
        }
        /// Opens a stream and returns it with the events it shows (delivery id, event) as they arrive.
        func open(group: String) async throws -> RawHTTP {
            let stream = try await RawHTTP.connect(
                port: port,
                sending:
                    "GET /topics/pulled/events?group=\(group)&start=earliest&credits=10 HTTP/1.1\r\nHost: x\r\n\r\n")
            return stream
        }
        func shown(_ stream: RawHTTP, count: Int) async throws -> [(UInt64, CloudEvent)] {
            let deadline = ContinuousClock.now + .seconds(10)
            while ContinuousClock.now < deadline {
                let parsed = Self.serverSentEvents(stream.received)
                if parsed.count >= count { return parsed }
                try await Task.sleep(for: .milliseconds(20))
            }
            return Self.serverSentEvents(stream.received)
        }
        let first = try await open(group: "pullers")
        let firstShown = try await shown(first, count: 3)
        #expect(first.received.hasPrefix("HTTP/1.1 200 OK"), "\(first.received)")
        #expect(first.received.contains("text/event-stream"))
        #expect(Set(firstShown.map(\.1.id)) == Set(events.map(\.id)))
        for (_, event) in firstShown { #expect(events.contains(event), "unchanged, line breaks in JSON data included") }
        guard firstShown.count == 3 else { return }

        // Ack one by the batch URL (plus an unknown id), nack one by its own URL: it comes back.
        let acks = try await HTTPTest.post(
            port: port, "/topics/pulled/acks", json: #"{"ack":[\#(firstShown[0].0), 12345]}"#)
        #expect(acks.json?["settled"] as? Int == 1 && (acks.json?["unknown"] as? [Int]) == [12345], "\(acks)")
        let nack = try await HTTPTest.request(port: port, "POST", "/topics/pulled/deliveries/\(firstShown[1].0)/nack")
        #expect(nack.status == 204, "\(nack)")
        let again = try await HTTPTest.request(port: port, "POST", "/topics/pulled/deliveries/\(firstShown[0].0)/ack")
        #expect(again.status == 404, "a settled delivery cannot be settled twice")
        let redelivered = try await shown(first, count: 4)
        #expect(redelivered.count == 4 && redelivered.last?.1.id == firstShown[1].1.id, "\(redelivered.map(\.1.id))")

        // The stream closes with one delivery unacknowledged: another member of the group gets it.
        let second = try await open(group: "pullers")
        await first.close()
        let handedOn = try await shown(second, count: 2)
        #expect(Set(handedOn.map(\.1.id)) == [firstShown[1].1.id, firstShown[2].1.id], "\(handedOn.map(\.1.id))")
        await second.close()
    }

    /// The events of a server-sent-event stream (after the response head): `id:` and the joined `data:` lines.
    static func serverSentEvents(_ text: String) -> [(UInt64, CloudEvent)] {
        guard let start = text.range(of: "\r\n\r\n") else { return [] }
        var out: [(UInt64, CloudEvent)] = []
        var id: UInt64?
        var data: [String] = []
        // The body is chunked: drop the chunk-size lines (hex digits alone on a line).
        // Split on bytes: "\r\n" is one Character, so splitting the String on "\n" would miss it.
        let lines = Array(text[start.upperBound...].utf8).split(separator: 10, omittingEmptySubsequences: false).map {
            String(decoding: $0.last == 13 ? $0.dropLast() : $0, as: UTF8.self)
        }
        for line in lines {
            if line.hasPrefix("id: ") {
                id = UInt64(line.dropFirst(4))
            } else if line.hasPrefix("data: ") {
                data.append(String(line.dropFirst(6)))
            } else if line.isEmpty, let current = id, !data.isEmpty {
                if let event = try? CloudEventJSON.decode(Array(data.joined(separator: "\n").utf8)) {
                    out.append((current, event))
                }
                id = nil
                data = []
            }
        }
        return out
    }
}
