import Foundation
import PlexusBench
import PlexusConformance
import PlexusCore
import Synchronization
import Testing

#if canImport(FoundationNetworking)
    import FoundationNetworking
#endif

/// The Knative-style source: CloudEvents POSTed to its endpoint land in its topic.
@Suite("Knative source", .serialized)
struct KnativeSourceTests {
    static let manifest = "Plugins/KnativeSource/knative-source.yaml"
    static let library = "libKnativeSource.so"

    @Test("binary and structured events from one sender land in the topic intact and in order, across a restart")
    func eventsLandInOrder() throws {
        let port = try LoopbackPorts.free(1)[0]
        let node = try ConnectorNode(
            manifest: Self.manifest, library: Self.library,
            values: ["port": String(port), "topic": "incoming", "path": "/events"])
        defer { node.shutDown() }
        let collector = try node.collect("incoming")
        let sender = EventSender(url: "http://127.0.0.1:\(port)/events")

        let first = testEvents("a", 0..<100)
        for (n, event) in first.enumerated() {
            #expect(try sender.post(event, structured: n % 2 == 1) == 202)
        }
        #expect(collector.wait(for: 100) == first)

        // Not CloudEvents: 415 without ce- headers, 400 for a missing required attribute, 405 for GET.
        #expect(
            try sender.send(method: "POST", headers: [("Content-Type", "text/plain")], body: Array("hi".utf8)) == 415)
        #expect(
            try sender.send(
                method: "POST", headers: [("ce-id", "x"), ("ce-source", "/s"), ("ce-specversion", "1.0")], body: [])
                == 400)
        #expect(
            try sender.send(
                method: "POST", headers: [("Content-Type", "application/cloudevents+json")], body: Array("{".utf8))
                == 400)
        #expect(try sender.send(method: "GET", headers: [], body: []) == 405)

        try node.restartConnector()
        let second = testEvents("b", 0..<50)
        for (n, event) in second.enumerated() {
            // The new instance may take a moment to listen: a sender retries what was not accepted.
            #expect(try sender.postUntilAccepted(event, structured: n % 2 == 0))
        }
        collector.wait(for: 150)
        Thread.sleep(forTimeInterval: 0.3)
        #expect(collector.all == first + second, "nothing rejected is published, nothing accepted is lost")

        // The node refuses (its storage stopped): 503 with Retry-After (last: memory storage
        // loses its events when stopped).
        _ = try node.kernel.stopPlugin("memory-storage")
        let refused = try sender.exchange(
            method: "POST", headers: CloudEventHTTP.binaryHeaders(first[0]).map { ($0.name, $0.value) },
            body: first[0].data)
        #expect(refused.status == 503 && refused.retryAfter == "1", "\(refused)")
    }

    @Test("the connector conformance kit passes against the source, fed by a sender that retries until 202")
    func conformance() throws {
        let port = try LoopbackPorts.free(1)[0]
        let scratch = try Repository.temporaryDirectory("plexus-knative-conformance")
        defer { try? FileManager.default.removeItem(at: scratch) }
        let sender = EventSender(url: "http://127.0.0.1:\(port)/")
        let done = Atomic<Bool>(false)
        // The external system: one sender posting numbered events, each again until it is answered 202.
        let feeder = Thread {
            var n = 0
            while !done.load(ordering: .relaxed) {
                let event = testEvents("kit", n..<(n + 1))[0]
                if (try? sender.post(event, structured: n % 2 == 0, timeout: 2)) == 202 {
                    n += 1
                } else {
                    Thread.sleep(forTimeInterval: 0.02)
                }
            }
        }
        feeder.start()
        defer { done.store(true, ordering: .relaxed) }
        let report = try ConnectorConformance.run(
            library: Self.library, manifest: Self.manifest,
            config: #"{"topic": "orders", "port": \#(port)}"#, scratch: scratch)
        #expect(report.failed == 0, "\n\(report.text)")
        let sinkRules = Conformance.rules(for: .connector).map(\.name).filter { $0.hasPrefix("connector.sink.") }
        #expect(report.notApplicableRules == sinkRules, "\n\(report.text)")
    }
}

/// One HTTP sender (URLSession, one request at a time).
final class EventSender: Sendable {
    let url: String
    let session: URLSession

    init(url: String) {
        self.url = url
        session = URLSession(configuration: .ephemeral)
    }

    /// POSTs `event` in structured or binary mode; the status.
    func post(_ event: CloudEvent, structured: Bool, timeout: Double = 10) throws -> Int {
        if structured {
            return try send(
                method: "POST", headers: [("Content-Type", CloudEventHTTP.structuredType)],
                body: Array(CloudEventJSON.encode(event).utf8), timeout: timeout)
        }
        return try send(
            method: "POST", headers: CloudEventHTTP.binaryHeaders(event).map { ($0.name, $0.value) }, body: event.data,
            timeout: timeout)
    }

    /// POSTs until answered 202 (at most 10 s); whether it was.
    func postUntilAccepted(_ event: CloudEvent, structured: Bool) throws -> Bool {
        Wait.until(seconds: 10) { (try? self.post(event, structured: structured, timeout: 2)) == 202 }
    }

    func send(method: String, headers: [(String, String)], body: [UInt8], timeout: Double = 10) throws -> Int {
        try exchange(method: method, headers: headers, body: body, timeout: timeout).status
    }

    /// Sends one request; its status and `Retry-After`.
    func exchange(method: String, headers: [(String, String)], body: [UInt8], timeout: Double = 10) throws -> (
        status: Int, retryAfter: String?
    ) {
        guard let target = URL(string: url) else { throw HarnessError(description: "not a URL: \(url)") }
        var request = URLRequest(url: target, timeoutInterval: timeout)
        request.httpMethod = method
        for (name, value) in headers { request.addValue(value, forHTTPHeaderField: name) }
        if method != "GET" { request.httpBody = Data(body) }
        let status = Mutex<Result<(status: Int, retryAfter: String?), any Error>?>(nil)
        let finished = DispatchSemaphore(value: 0)
        session.dataTask(with: request) { _, response, error in
            status.withLock {
                let http = response as? HTTPURLResponse
                $0 =
                    error.map { .failure($0) }
                    ?? .success((http?.statusCode ?? 0, http?.value(forHTTPHeaderField: "Retry-After")))
            }
            finished.signal()
        }.resume()
        finished.wait()
        guard let outcome = status.withLock({ $0 }) else { throw HarnessError(description: "no answer") }
        return try outcome.get()
    }
}
