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

/// How the abuse suite speaks one protocol plugin: the bytes of its requests and how to recognise its
/// answers. One driver per protocol; the scenarios in `ProtocolAbuseTests` are written once against this.
/// A gRPC driver (HTTP/2 frames) fits the same shape.
protocol AbuseDriver: Sendable {
    /// The plugin's name, as `plexus plugin call` knows it.
    var plugin: String { get }
    /// Config values for the plugin: short timeouts and small limits, so that the suite runs in seconds.
    var values: [String: String] { get }
    /// How long the plugin lets a request trickle in before it gives up on the connection, per `values`.
    var requestTimeout: Duration { get }
    /// The largest request the plugin accepts, per `values`.
    var maxRequestBytes: Int { get }
    /// What opens a session on a fresh connection (TCP: `HELLO`); empty when nothing does.
    func opening() throws -> [UInt8]
    /// Whether `received` holds the answer to `opening` (trivially true when there is none).
    func opened(_ received: [UInt8]) -> Bool
    /// One complete publish of one event to `topic`.
    func publish(topic: String, id: String, dataBytes: Int) throws -> [UInt8]
    /// How many publishes `received` holds successful answers to.
    func accepted(_ received: [UInt8]) -> Int
    /// Whether `received` holds the refusal a request over `maxRequestBytes` must get.
    func refusedAsTooLarge(_ received: [UInt8]) -> Bool
    /// The start of a request that never completes, for a client to trickle in (after `opening`).
    func trickle() -> [UInt8]
    /// Whether `received` holds the answer a trickling client must get when it is timed out.
    func refusedAsTooSlow(_ received: [UInt8]) -> Bool
    /// Opens a subscription on `topic` from its earliest event (after `opening`).
    func subscribe(topic: String) throws -> [UInt8]
    /// The plugin's `maxConnections`, per `values`.
    var maxConnections: Int { get }
    /// Whether `received` holds the refusal a connection over `maxConnections` must get.
    func refusedAsOverLimit(_ received: [UInt8]) -> Bool
}

extension AbuseDriver {
    func port(_ node: NodeProcess) async throws -> Int {
        plugin == "tcp-protocol" ? try await node.tcpPort() : try await node.httpPort()
    }

    /// The plugin's open connections.
    func connections(_ node: NodeProcess) async throws -> Int {
        let result = try await node.call(plugin, "connections")
        return try #require(Int(result.output), "\(plugin) connections: \(result.stdout) \(result.stderr)")
    }
}

/// The TCP protocol (docs/protocols/tcp.md).
struct TCPAbuseDriver: AbuseDriver {
    let plugin = "tcp-protocol"
    var values: [String: String] {
        ["heartbeatMs": "700", "handshakeTimeoutMs": "2000", "maxFrameSize": "65536", "maxConnections": "400"]
    }
    var maxConnections: Int { 400 }

    func refusedAsOverLimit(_ received: [UInt8]) -> Bool { fatalError(in: received) == .resourceExhausted }
    /// No complete frame for three heartbeat intervals.
    var requestTimeout: Duration { .milliseconds(2100) }
    var maxRequestBytes: Int { 65536 }

    func opening() throws -> [UInt8] { try PlainSocket.hello() }

    func opened(_ received: [UInt8]) -> Bool {
        PlainSocket.frames(in: received).contains { if case .welcome = $0.body { true } else { false } }
    }

    func publish(topic: String, id: String, dataBytes: Int) throws -> [UInt8] {
        let event = CloudEvent(id: id, source: "/abuse", type: "t", data: [UInt8](repeating: 0x61, count: dataBytes))
        var buffer = ByteBuffer()
        try FrameCodec.encode(
            Frame(id: 2, .publish(Publish(topic: topic, events: try WireEvents([event])))), into: &buffer)
        return Array(buffer.readableBytesView)
    }

    func accepted(_ received: [UInt8]) -> Int {
        PlainSocket.frames(in: received).filter {
            if case .publishAck(let ack) = $0.body { ack.status == .ok } else { false }
        }.count
    }

    func refusedAsTooLarge(_ received: [UInt8]) -> Bool { fatalError(in: received) == .frameTooLarge }

    func trickle() -> [UInt8] { [0, 0, 0, 200, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0, 5, 0x61, 0x62] }

    func refusedAsTooSlow(_ received: [UInt8]) -> Bool { fatalError(in: received) == .idleTimeout }

    func subscribe(topic: String) throws -> [UInt8] {
        var buffer = ByteBuffer()
        try FrameCodec.encode(Frame(id: 3, .subscribe(Subscribe(topic: topic, start: .earliest))), into: &buffer)
        return Array(buffer.readableBytesView)
    }

    private func fatalError(in received: [UInt8]) -> WireStatus? {
        for frame in PlainSocket.frames(in: received) {
            if case .error(let error) = frame.body, error.fatal { return error.status }
        }
        return nil
    }
}

/// The HTTP protocol (docs/protocols/http.md).
struct HTTPAbuseDriver: AbuseDriver {
    let plugin = "http-protocol"
    var values: [String: String] {
        [
            "requestTimeoutMs": "2000", "idleTimeoutMs": "2000", "maxBodyBytes": "65536", "pullCredits": "20",
            "maxConnections": "400",
        ]
    }
    var maxConnections: Int { 400 }

    func refusedAsOverLimit(_ received: [UInt8]) -> Bool { statuses(received).contains(503) }
    var requestTimeout: Duration { .milliseconds(2000) }
    var maxRequestBytes: Int { 65536 }

    func opening() throws -> [UInt8] { [] }

    func opened(_ received: [UInt8]) -> Bool { true }

    func publish(topic: String, id: String, dataBytes: Int) throws -> [UInt8] {
        let head =
            "POST /topics/\(topic) HTTP/1.1\r\nHost: 127.0.0.1\r\nce-specversion: 1.0\r\nce-id: \(id)\r\n"
            + "ce-source: /abuse\r\nce-type: t\r\nContent-Type: application/octet-stream\r\n"
            + "Content-Length: \(dataBytes)\r\n\r\n"
        return Array(head.utf8) + [UInt8](repeating: 0x61, count: dataBytes)
    }

    func accepted(_ received: [UInt8]) -> Int { statuses(received).filter { $0 == 202 }.count }

    func refusedAsTooLarge(_ received: [UInt8]) -> Bool { statuses(received).contains(413) }

    func trickle() -> [UInt8] { Array("POST /topics/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nce-id: 1\r\n".utf8) }

    func refusedAsTooSlow(_ received: [UInt8]) -> Bool { statuses(received).contains(408) }

    func subscribe(topic: String) throws -> [UInt8] {
        Array("GET /topics/\(topic)/events?start=earliest HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    }

    /// The status of every complete response in `received`.
    private func statuses(_ received: [UInt8]) -> [Int] {
        var bytes = received
        var out: [Int] = []
        while let response = RawHTTP.parse(&bytes, closed: false) { out.append(response.status) }
        return out
    }
}

/// The protocols the suite runs against.
enum AbuseProtocol: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case tcp, http

    var driver: any AbuseDriver {
        switch self {
        case .tcp: TCPAbuseDriver()
        case .http: HTTPAbuseDriver()
        }
    }

    var testDescription: String { rawValue }
}

/// The protocol abuse suite (issue 19, item 5): one body, run against every protocol plugin through its
/// driver. Each scenario checks the right answer, the node still serving a fresh client, and where it
/// matters the node's memory (anonymous RSS from /proc).
@Suite("Protocol abuse", .serialized, .timeLimit(.minutes(3)))
struct ProtocolAbuseTests {
    @Test(
        "split at every byte, oversize, slowloris, half-close, a connection flood, a consumer that never reads",
        arguments: AbuseProtocol.allCases)
    func abuse(_ protocolUnderTest: AbuseProtocol) async throws {
        let driver = protocolUnderTest.driver
        let directory = try TestDirectory()
        defer { directory.remove() }
        let tcpValues = TCPAbuseDriver().values
        let httpValues = HTTPAbuseDriver().values
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 60000, tcpValues: tcpValues, httpValues: httpValues),
            data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage"])
        defer { node.kill() }
        let port = try await driver.port(node)
        let name = protocolUnderTest.rawValue

        try await splitAtEveryByte(driver, port: port, name)
        try await oversize(driver, port: port, name)
        try await slowloris(driver, port: port, name)
        try await halfClose(driver, port: port, name)
        try await flood(driver, node: node, port: port, name)
        try await neverReads(driver, node: node, port: port, name)
        #expect(node.process.isRunning, "\(name): the node is up at the end")
    }

    /// A publish that arrives one byte per segment is still read whole and accepted; and so are two
    /// publishes in one segment.
    func splitAtEveryByte(_ driver: any AbuseDriver, port: Int, _ name: String) async throws {
        let socket = try PlainSocket(port: port)
        // One segment per byte (the socket has TCP_NODELAY), 200 µs apart: a few hundred milliseconds at most
        // even on a loaded machine, well inside the plugin's request timeout.
        for byte in try driver.opening() + driver.publish(topic: "split", id: "s1", dataBytes: 16) {
            try socket.send([byte])
            usleep(200)
        }
        let (bytes, end) = socket.read(until: { driver.accepted($0) == 1 })
        #expect(end == nil, "\(name) split at every byte: \(String(describing: end)), \(bytes.count) bytes")
        try socket.send(
            try driver.publish(topic: "split", id: "s2", dataBytes: 16)
                + driver.publish(topic: "split", id: "s3", dataBytes: 16))
        let (more, moreEnd) = socket.read(until: { driver.accepted(bytes + $0) == 3 })
        #expect(moreEnd == nil, "\(name) two in one segment: \(String(describing: moreEnd)), \(more.count) bytes")
    }

    /// A request over the limit gets its error, and the error arrives: no reset destroys it.
    func oversize(_ driver: any AbuseDriver, port: Int, _ name: String) async throws {
        let socket = try PlainSocket(port: port)
        try socket.send(try driver.opening())
        let request = try driver.publish(topic: "big", id: "big", dataBytes: driver.maxRequestBytes + 4096)
        try? socket.send(request)
        try await Task.sleep(for: .milliseconds(200))
        let (bytes, end) = socket.readToEnd()
        #expect(driver.refusedAsTooLarge(bytes), "\(name) oversize: no refusal in \(bytes.count) bytes (\(end))")
        #expect(end == .endOfStream, "\(name) oversize: the connection ended with \(end)")
    }

    /// A request trickled a byte every 100 ms is cut off about when the plugin's timeout says, with its
    /// error; the connection does not live on.
    func slowloris(_ driver: any AbuseDriver, port: Int, _ name: String) async throws {
        let socket = try PlainSocket(port: port)
        try socket.send(try driver.opening())
        let started = ContinuousClock.now
        var closed = false
        var received: [UInt8] = []
        for byte in driver.trickle() + [UInt8](repeating: 0x61, count: 100) where !closed {
            if (try? socket.send([byte])) == nil { break }
            let (bytes, end) = socket.read(until: { _ in false }, timeout: .milliseconds(100))
            received += bytes
            closed = end != .timeout
        }
        if !closed { received += socket.readToEnd(timeout: .seconds(2)).bytes }
        let elapsed = ContinuousClock.now - started
        #expect(driver.refusedAsTooSlow(received), "\(name) slowloris: no timeout answer in \(received.count) bytes")
        #expect(elapsed < driver.requestTimeout + .seconds(3), "\(name) slowloris lived \(elapsed)")
    }

    /// A client that shuts its write side after a request still gets the answer.
    func halfClose(_ driver: any AbuseDriver, port: Int, _ name: String) async throws {
        let socket = try PlainSocket(port: port)
        let opening = try driver.opening()
        if !opening.isEmpty {
            try socket.send(opening)
            _ = socket.read(until: { driver.opened($0) })
        }
        try socket.send(try driver.publish(topic: "half", id: "h1", dataBytes: 16))
        socket.shutdownWrite()
        let (bytes, end) = socket.readToEnd()
        #expect(driver.accepted(bytes) == 1, "\(name) half-close: no answer in \(bytes.count) bytes (\(end))")
        #expect(end == .endOfStream, "\(name) half-close: then the server closes (\(end))")
    }

    /// 500 connections at once that say nothing, over a bound of 400: the node stays up, the ones over the
    /// bound are refused with the right error, its memory stays bounded, it closes the silent ones within
    /// its timeouts, and then answers a fresh client.
    func flood(_ driver: any AbuseDriver, node: NodeProcess, port: Int, _ name: String) async throws {
        let before = try Self.anonymousRSS(node)
        var flood: [PlainSocket] = []
        for _ in 0..<500 { flood.append(try PlainSocket(port: port)) }
        var refused = 0
        for socket in flood.suffix(50) {
            let (bytes, _) = socket.read(until: { driver.refusedAsOverLimit($0) }, timeout: .seconds(3))
            if driver.refusedAsOverLimit(bytes) { refused += 1 }
        }
        // All 50 are over the bound unless silent connections of the flood's start were closed by their timeout
        // while it was still being opened (a loaded machine): then later ones fit under it, rightly. Either
        // way the node never holds more than the bound.
        // (On a machine loaded enough, the node accepts so slowly that none of the 50 is over the bound then.)
        let openNow = try await driver.connections(node)
        #expect(
            refused == 50 || openNow <= driver.maxConnections,
            "\(name) flood: \(refused) of the last 50 refused while \(openNow) connections are open (bound \(driver.maxConnections))"
        )
        let during = try Self.anonymousRSS(node)
        #expect(during - before < 64 << 20, "\(name) flood: anonymous RSS grew \((during - before) >> 20) MiB")
        #expect(node.process.isRunning, "\(name) flood: the node is up")
        // The silent ones are closed by the handshake or idle timeout.
        let deadline = ContinuousClock.now + driver.requestTimeout + .seconds(8)
        var open = try await driver.connections(node)
        while open > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(250))
            open = try await driver.connections(node)
        }
        #expect(open == 0, "\(name) flood: \(open) silent connections still open")
        let fresh = try PlainSocket(port: port)
        try fresh.send(try driver.opening() + driver.publish(topic: "flood", id: "f1", dataBytes: 16))
        let (bytes, end) = fresh.read(until: { driver.accepted($0) == 1 }, timeout: .seconds(10))
        #expect(end == nil, "\(name) flood: a fresh client got \(bytes.count) bytes (\(String(describing: end)))")
        withExtendedLifetime(flood) {}
    }

    /// A consumer that subscribes and never reads: 16 MiB published past it leave the node's memory
    /// bounded (flow control keeps the backlog in storage), and a consumer that reads gets everything.
    func neverReads(_ driver: any AbuseDriver, node: NodeProcess, port: Int, _ name: String) async throws {
        let stalled = try PlainSocket(port: port)
        try stalled.send(try driver.opening() + driver.subscribe(topic: "stall"))
        try await Task.sleep(for: .milliseconds(300))
        let before = try Self.anonymousRSS(node)
        let tcp = try await node.tcpPort()
        let client = try await PlexusClient.connect(ClientConfiguration(port: tcp, name: "abuse", reconnect: false))
        let data = [UInt8](repeating: 0x62, count: 4096)
        // Frames stay under the suite's 64 KiB maximum.
        let batches = 512
        let perBatch = 8
        for batch in 0..<batches {
            let events = (0..<perBatch).map {
                CloudEvent(id: "n\(batch)-\($0)", source: "/abuse", type: "t", data: data)
            }
            _ = try await client.publish(topic: "stall", events)
        }
        let stored = batches * perBatch * data.count
        let after = try Self.anonymousRSS(node)
        // The store holds the 16 MiB; deliveries queued for the stalled consumer must not add as much again.
        #expect(
            after - before < stored + stored / 2 + (32 << 20),
            "\(name) never reads: anonymous RSS grew \((after - before) >> 20) MiB for \(stored >> 20) MiB stored")
        let reader = try await client.subscribe(topic: "stall", options: SubscribeOptions(start: .earliest))
        var got = 0
        for await delivery in reader {
            delivery.ack()
            got += 1
            if got == batches * perBatch { break }
        }
        #expect(got == batches * perBatch, "\(name) never reads: another consumer got \(got)")
        await client.close()
        withExtendedLifetime(stalled) {}
    }

    /// The node's anonymous resident memory (`RssAnon` in /proc/PID/status), in bytes.
    static func anonymousRSS(_ node: NodeProcess) throws -> Int {
        let status = try String(contentsOfFile: "/proc/\(node.process.processIdentifier)/status", encoding: .utf8)
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("RssAnon:") }),
            let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
        else { throw SetupError(description: "no RssAnon in /proc/\(node.process.processIdentifier)/status") }
        return kib * 1024
    }
}
