import Foundation
import PlexusClient
import PlexusCore
import PlexusKernel
import Synchronization
import Testing

/// The admin endpoint's dashboard (`GET /`) in a real headless Chromium: against a real node, and against a
/// fake admin endpoint that serves contract-shaped topics and groups with moving counters.
@Suite("Dashboard", .serialized)
struct DashboardTests {
    /// Where the screenshot of the real node's dashboard goes (printed by the test).
    static let screenshot = Repository.root.appendingPathComponent(".build/dashboard.png")

    @Test("GET / serves the page: HTML, revalidated, with a CSP that runs only the page's own script")
    func servesThePage() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(), data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let page = try await HTTPTest.request(port: node.port, "GET", "/")
        #expect(page.status == 200)
        #expect(page.header("Content-Type") == "text/html; charset=utf-8")
        #expect(page.header("Cache-Control") == "no-cache")
        let csp = try #require(page.header("Content-Security-Policy"))
        #expect(csp.contains("script-src 'sha256-") && csp.contains("connect-src 'self'") && !csp.contains("unsafe"))
        #expect(page.text.contains("<table id=\"plugins\""))
        #expect(
            !page.text.contains("http://") && !page.text.contains("https://"), "the page loads nothing from elsewhere")
        let api = try await HTTPTest.request(port: node.port, "GET", "/v1/plugins")
        #expect(api.header("Cache-Control") == "no-store")
    }

    @Test("in Chromium: the plugins with their states; a topic's rate and offset move while events flow")
    func realNode() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 1000), data: try directory.subdirectory("data"),
            in: directory.url)
        defer { node.kill() }
        let url = "http://127.0.0.1:\(node.port)/"
        let plugins = try await node.list()
        try #require(plugins.count >= 5)

        let first = try await Chromium.dumpDOM(url, in: directory.url)
        for plugin in plugins {
            let row = try #require(
                Chromium.attributes(in: first, of: "data-plugin=\"\(plugin.name)\" data-state="),
                "the dashboard does not list plugin \(plugin.name)")
            #expect(row["data-state"] == plugin.state.rawValue, "\(plugin.name)")
        }
        #expect(first.contains(">tcp-protocol</td>"))
        // An active plugin offers stop and restart.
        #expect(first.contains("data-action=\"stop\" data-plugin=\"tcp-protocol\""))

        let port = try await node.tcpPort()
        let client = try await PlexusClient.connect(ClientConfiguration(port: port, name: "dash", reconnect: false))
        let topic = "dash-orders"
        _ = try await client.publish(topic: topic, CloudEvent(id: "seed", source: "/dash", type: "order"))

        let topics = try await HTTPTest.request(port: node.port, "GET", "/v1/topics")
        if topics.status == 404 {
            // The topic endpoints are not on this node: the page must say so (and nothing else is asserted).
            let dom = try await Chromium.dumpDOM(url, in: directory.url)
            #expect(dom.contains(#"id="topics-note" class="note">topics: not available on this node"#))
        } else {
            try #require(topics.status == 200, "GET /v1/topics: \(topics)")
            let before = try await Chromium.dumpDOM(url, in: directory.url)
            let a = try #require(
                Chromium.attributes(in: before, of: "data-topic=\"\(topic)\""), "topic \(topic) is not listed")
            // Events flow for the rest of the test.
            let flowing = Atomic<Bool>(true)
            let publisher = Task {
                var n = 0
                while flowing.load(ordering: .relaxed) && n < 20_000 {
                    let batch = (0..<10).map { CloudEvent(id: "e-\(n)-\($0)", source: "/dash", type: "order") }
                    _ = try await client.publish(topic: topic, batch)
                    n += 1
                    try await Task.sleep(for: .milliseconds(20))
                }
            }
            defer { flowing.store(false, ordering: .relaxed) }
            try await Task.sleep(for: .seconds(3))
            let during = try await Chromium.dumpDOM(url, in: directory.url)
            let b = try #require(Chromium.attributes(in: during, of: "data-topic=\"\(topic)\""))
            let rateA = try #require(Double(a["data-rate"] ?? ""), "rate: \(a)")
            let rateB = try #require(Double(b["data-rate"] ?? ""), "rate: \(b)")
            let offsetA = try #require(Int(a["data-next-offset"] ?? ""), "offset: \(a)")
            let offsetB = try #require(Int(b["data-next-offset"] ?? ""), "offset: \(b)")
            #expect(rateB > rateA, "the topic's rate did not move while events flowed: \(rateA) then \(rateB)")
            #expect(rateB > 0)
            #expect(offsetB > offsetA, "the topic's next offset did not move: \(offsetA) then \(offsetB)")
            flowing.store(false, ordering: .relaxed)
            _ = try await publisher.value
        }
        try await Chromium.screenshot(url, to: Self.screenshot, in: directory.url)
        print("dashboard screenshot: \(Self.screenshot.path)")
        await client.close()
    }

    @Test("in Chromium against contract-shaped JSON: topics, rates, groups, cluster; names escaped")
    func fakeAdminEndpoint() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let hostile = #"<img src=x onerror="document.title='pwned'">"#
        let sink = try await TestSink.start { request, count in
            let json = [("Content-Type", "application/json")]
            func answer(_ text: String) -> TestSink.Answer { .init(status: 200, headers: json, body: Array(text.utf8)) }
            switch request.path {
            case "/":
                return .init(
                    status: 200, headers: [("Content-Type", Dashboard.contentType)], body: Array(Dashboard.page.utf8))
            case "/v1/ready": return answer(#"{"status":"ready","node":"fake","reasons":[]}"#)
            case "/v1/health": return answer(#"{"status":"up","node":"fake"}"#)
            case "/v1/plugins":
                return answer(
                    #"[{"name":"raft-log","version":"1.2.0","kinds":["storage"],"state":"active","health":"healthy","#
                        + #""manifest":"m","operations":[{"name":"status","signature":"text (instance)","description":""}],"#
                        + #""history":[{"state":"active","at":1}]},"#
                        + #"{"name":"tcp-protocol","version":"1.0.0","kinds":["protocol"],"state":"failed","#
                        + #""lastError":"port taken","errorCode":"hook-failed","manifest":"m","operations":[],"history":[]}]"#
                )
            case "/v1/topics":
                // Counters that grow with every poll.
                let next = 100 + 50 * count
                let topic = { (name: String, rate: Double) in
                    #"{"name":\#(ConfigValue.quote(name)),"storage":"raft-log","firstOffset":0,"nextOffset":\#(next),"#
                        + #""events":\#(next),"bytes":\#(next * 100),"publishedTotal":\#(next),"#
                        + #""publishRate":\#(rate),"deliveredRate":1.5,"#
                        + #""retention":{"maxEvents":1000,"maxBytes":null,"maxAgeMs":null},"leader":null,"groupCount":1}"#
                }
                return answer(#"{"topics":[\#(topic("orders", 10.0 + Double(count))),\#(topic(hostile, 0))]}"#)
            case "/v1/groups":
                return answer(
                    #"{"groups":[{"topic":"orders","group":"billing","members":2,"committed":\#(90 + 50 * count),"#
                        + #""lag":10,"inFlight":3,"redeliveries":5,"deadLettered":1}]}"#)
            case "/metrics":
                return .init(
                    status: 200, headers: [("Content-Type", "text/plain")],
                    body: Array("plexus_plugin_events_published_total{plugin=\"tcp-protocol\"} 42\n".utf8))
            case "/v1/plugins/raft-log/operations/status":
                let streams =
                    #"{"stream":"orders","role":"leader","leader":"fake","voters":["fake","b","c"],"learners":[],"#
                    + #""peers":[{"id":"b","lag":0,"active":true},{"id":"c","lag":7,"active":false}]}"#
                return answer(
                    #"{"result":\#(ConfigValue.quote(#"{"node":"fake","leaderChanges":1,"streams":[\#(streams)]}"#))}"#)
            default:
                return .init(status: 404, headers: json, body: Array(#"{"error":"no such endpoint"}"#.utf8))
            }
        }
        defer { sink.stop() }
        let first = try await Chromium.dumpDOM(sink.url + "/", in: directory.url)
        let second = try await Chromium.dumpDOM(sink.url + "/", in: directory.url)

        #expect(Chromium.attributes(in: first, of: "data-plugin=\"raft-log\" data-state=")?["data-state"] == "active")
        #expect(
            Chromium.attributes(in: first, of: "data-plugin=\"tcp-protocol\" data-state=")?["data-state"] == "failed")
        #expect(first.contains("[hook-failed] port taken"))
        #expect(first.contains("data-action=\"start\" data-plugin=\"tcp-protocol\""))
        let a = try #require(Chromium.attributes(in: first, of: "data-topic=\"orders\""), "orders is not listed")
        let b = try #require(Chromium.attributes(in: second, of: "data-topic=\"orders\""))
        let rateA = try #require(Double(a["data-rate"] ?? ""))
        let rateB = try #require(Double(b["data-rate"] ?? ""))
        #expect(rateA > 10 && rateB > rateA, "the rate shown does not follow the endpoint: \(rateA), \(rateB)")
        #expect(Int(b["data-next-offset"] ?? "") ?? 0 > Int(a["data-next-offset"] ?? "") ?? 0)
        // The hostile topic name is text, not markup.
        #expect(first.contains("&lt;img src=x onerror="))
        #expect(!first.contains("<img src=\"x\"") && !first.contains("<img src=x"))
        #expect(!first.contains("<title>pwned</title>"))
        #expect(Chromium.attributes(in: first, of: "data-group=\"orders/billing\"")?["data-lag"] == "10")
        #expect(first.contains("Consumer groups <small id=\"groups-count\">1 group(s)"))
        #expect(Chromium.attributes(in: first, of: "data-node=\"c\"") != nil, "the cluster's members are not shown")
        #expect(first.contains(">unreachable</td>"))
        #expect(Chromium.attributes(in: first, of: #"id="topics-note""#)?["hidden"] != nil)
        #expect(Chromium.attributes(in: first, of: #"id="groups-note""#)?["hidden"] != nil)
    }

    @Test("in Chromium: missing topic and group endpoints are said so, the plugins still shown")
    func missingEndpoints() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let sink = try await TestSink.start { request, _ in
            switch request.path {
            case "/":
                return .init(
                    status: 200, headers: [("Content-Type", Dashboard.contentType)], body: Array(Dashboard.page.utf8))
            case "/v1/plugins":
                return .init(
                    status: 200, headers: [("Content-Type", "application/json")],
                    body: Array(
                        (#"[{"name":"memory-storage","version":"1.0.0","kinds":["storage"],"state":"active","#
                            + #""manifest":"m","operations":[],"history":[]}]"#).utf8))
            default:
                return .init(status: 404, headers: [("Content-Type", "application/json")], body: Array("{}".utf8))
            }
        }
        defer { sink.stop() }
        let dom = try await Chromium.dumpDOM(sink.url + "/", in: directory.url)
        #expect(dom.contains(#"class="note">topics: not available on this node (GET /v1/topics answered 404)</p>"#))
        #expect(dom.contains(#"class="note">consumer groups: not available on this node"#))
        #expect(Chromium.attributes(in: dom, of: #"id="topics""#)?["hidden"] != nil)
        #expect(
            Chromium.attributes(in: dom, of: "data-plugin=\"memory-storage\" data-state=")?["data-state"] == "active")
    }
}
