import RaftCore
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What a transport hands to `receive` and `log`.
final class Recorder: Sendable {
    private let envelopes = Mutex<[Envelope]>([])
    private let lines = Mutex<[String]>([])
    /// While true, `receive` waits: the reader stops reading, as a peer stopped with SIGSTOP would.
    let holding = Atomic<Bool>(false)

    func receive(_ envelope: Envelope) {
        while holding.load(ordering: .relaxed) { usleep(1000) }
        envelopes.withLock { $0.append(envelope) }
    }

    func log(_ line: String) { lines.withLock { $0.append(line) } }

    var received: [Envelope] { envelopes.withLock { $0 } }
    var count: Int { envelopes.withLock { $0.count } }
    var logLines: [String] { lines.withLock { $0 } }
}

/// A transport on 127.0.0.1 with a recorder.
func makeTransport(
    _ node: NodeID, port: Int = 0, maxQueuedBytes: Int = 64 << 20
) throws -> (PeerTransport, Recorder) {
    let recorder = Recorder()
    let transport = try PeerTransport(
        node: node, listen: "127.0.0.1:\(port)", maxFrameBytes: 4 << 20, maxQueuedBytes: maxQueuedBytes,
        log: { recorder.log($0) }, receive: { recorder.receive($0) })
    try transport.start()
    return (transport, recorder)
}

/// Polls `condition` until it holds or `limit` passes.
func eventually(within limit: Duration = .seconds(5), _ condition: () -> Bool) async -> Bool {
    let deadline = ContinuousClock.now + limit
    while ContinuousClock.now < deadline {
        if condition() { return true }
        try? await Task.sleep(for: .milliseconds(2))
    }
    return condition()
}

/// A message whose `index` numbers it.
func numbered(_ index: Int, from: NodeID, to: NodeID, body: Int = 0) -> Envelope {
    let message: RaftMessage =
        body > 0
        ? .append(
            AppendRequest(
                term: 3, prevIndex: UInt64(index), prevTerm: 1, commit: 0,
                entries: [Samples.entry(UInt64(index) + 1, body: Array(repeating: UInt8(index & 0xFF), count: body))]))
        : .appendReply(AppendReply(term: 1, success: true, index: UInt64(index)))
    return Envelope(from: from, to: to, stream: "orders", message: message)
}

func number(of envelope: Envelope) -> Int {
    switch envelope.message {
    case .append(let request): Int(request.prevIndex)
    case .appendReply(let reply): Int(reply.index)
    default: -1
    }
}

/// A plain TCP client, for bytes no transport would send.
final class RawClient {
    let fd: Int32

    init(port: Int) throws {
        #if os(Linux)
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
            fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let status = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        try #require(status == 0, "connect to 127.0.0.1:\(port): errno \(errno)")
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { return }
            sent += count
        }
    }

    /// Whether the other end closes the connection within `milliseconds` (reads and discards anything else).
    func closedByPeer(within milliseconds: Int32) -> Bool {
        var scratch = [UInt8](repeating: 0, count: 4096)
        while true {
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            guard poll(&descriptor, 1, milliseconds) > 0 else { return false }
            let count = recv(fd, &scratch, scratch.count, 0)
            if count <= 0 { return true }
        }
    }
}

/// The transport over real sockets on 127.0.0.1; serialized because each test counts on timing.
@Suite(.serialized) struct PeerTransportTests {
    /// Starts a connected pair a ⇄ b.
    func connectedPair() async throws -> (PeerTransport, Recorder, PeerTransport, Recorder) {
        let (a, aInbox) = try makeTransport("a")
        let (b, bInbox) = try makeTransport("b")
        a.setPeers(["a": "127.0.0.1:\(a.port)", "b": "127.0.0.1:\(b.port)"])
        b.setPeers(["a": "127.0.0.1:\(a.port)", "b": "127.0.0.1:\(b.port)"])
        #expect(await eventually { a.isConnected(to: "b") && b.isConnected(to: "a") })
        return (a, aInbox, b, bInbox)
    }

    @Test func tenThousandMessagesEachWayArriveInOrder() async throws {
        let (a, aInbox, b, bInbox) = try await connectedPair()
        defer {
            a.stop()
            b.stop()
        }
        let total = 10_000
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for i in 0..<total { a.send(numbered(i, from: "a", to: "b", body: i % 3 == 0 ? 1024 : 0)) }
            }
            group.addTask { for i in 0..<total { b.send(numbered(i, from: "b", to: "a", body: i % 5 == 0 ? 100 : 0)) } }
        }
        #expect(await eventually(within: .seconds(10)) { aInbox.count == total && bInbox.count == total })

        #expect(bInbox.received.map(number(of:)) == Array(0..<total))
        #expect(aInbox.received.map(number(of:)) == Array(0..<total))
        #expect(bInbox.received.allSatisfy { $0.from == "a" && $0.to == "b" && $0.stream == "orders" })
        #expect(bInbox.received[3] == numbered(3, from: "a", to: "b", body: 1024))
        #expect(a.framesSent == total && b.framesSent == total)
        #expect(a.framesReceived == total && b.framesReceived == total)
        #expect(a.dropped == 0 && b.dropped == 0)
        #expect(a.bytesSent == b.bytesReceived && b.bytesSent == a.bytesReceived)
        #expect(a.bytesSent > total * 1024 / 3)
        #expect(a.queuedBytes(to: "b") == 0)
    }

    /// Redialling backs off to 500 ms at most (README, "Transport"), so messages flow again within about a
    /// second; the test allows 5 s, for a loaded machine (how fast is not a unit test's to assert).
    @Test func aRestartedPeerOnTheSamePortGetsMessagesAgain() async throws {
        let (a, aInbox, b, bInbox) = try await connectedPair()
        defer { a.stop() }
        a.send(numbered(1, from: "a", to: "b"))
        #expect(await eventually { bInbox.count == 1 })
        let port = b.port
        b.stop()
        #expect(await eventually { !a.isConnected(to: "b") })

        let (restarted, restartedInbox) = try makeTransport("b", port: port)
        defer { restarted.stop() }
        restarted.setPeers(["a": "127.0.0.1:\(a.port)"])
        let began = ContinuousClock.now
        var sent = 2
        let flowing = await eventually(within: .seconds(5)) {
            a.send(numbered(sent, from: "a", to: "b"))
            sent += 1
            return restartedInbox.count > 0
        }
        #expect(flowing, "no message reached the restarted peer within \(began.duration(to: .now))")
        let replied = await eventually(within: .seconds(5)) {
            restarted.send(numbered(0, from: "b", to: "a"))
            return aInbox.count > 0
        }
        #expect(replied)
        let numbers = restartedInbox.received.map(number(of:))
        #expect(numbers == numbers.sorted() && Set(numbers).count == numbers.count)
        #expect(aInbox.logLines.contains { $0.contains("lost the connection to peer 'b'") })
    }

    @Test func sendingToPeersThatDoNotAnswerNeitherBlocksNorQueues() async throws {
        let (closed, _) = try makeTransport("closed")
        let deadPort = closed.port
        closed.stop()
        let (a, recorder) = try makeTransport("a")
        defer { a.stop() }
        a.setPeers(["dead": "127.0.0.1:\(deadPort)", "bad": "no-port"])

        let began = ContinuousClock.now
        for i in 0..<20_000 { a.send(numbered(i, from: "a", to: "ghost", body: 64)) }
        for i in 0..<20_000 { a.send(numbered(i, from: "a", to: "dead", body: 64)) }
        for i in 0..<100 { a.send(numbered(i, from: "a", to: "bad")) }
        let elapsed = began.duration(to: .now)
        #expect(elapsed < .seconds(2), "40,100 sends took \(elapsed)")
        #expect(a.dropped == 40_100)
        #expect(a.framesSent == 0)
        #expect(!a.isConnected(to: "dead") && !a.isConnected(to: "ghost"))
        #expect(a.queuedBytes(to: "dead") == 0)
        #expect(await eventually { recorder.logLines.contains { $0.contains("cannot connect to peer 'dead'") } })
        #expect(recorder.logLines.contains { $0.contains("'no-port'") })
    }

    @Test func aPeerThatStopsReadingCostsBoundedMemoryAndNeverBlocksSend() async throws {
        let limit = 1 << 20
        let (a, _) = try makeTransport("a", maxQueuedBytes: limit)
        let (b, bInbox) = try makeTransport("b")
        defer {
            bInbox.holding.store(false, ordering: .relaxed)
            a.stop()
            b.stop()
        }
        a.setPeers(["b": "127.0.0.1:\(b.port)"])
        #expect(await eventually { a.isConnected(to: "b") })
        bInbox.holding.store(true, ordering: .relaxed)

        let total = 30_000
        let began = ContinuousClock.now
        var largestQueue = 0
        for i in 0..<total {
            a.send(numbered(i, from: "a", to: "b", body: 1024))
            if i % 100 == 0 { largestQueue = max(largestQueue, a.queuedBytes(to: "b")) }
        }
        let elapsed = began.duration(to: .now)
        #expect(elapsed < .seconds(15), "\(total) sends to a stalled peer took \(elapsed)")
        #expect(a.dropped > 0)
        #expect(largestQueue <= limit)
        #expect(a.queuedBytes(to: "b") <= limit)
        #expect(a.isConnected(to: "b"))

        bInbox.holding.store(false, ordering: .relaxed)
        let delivered = total - a.dropped
        #expect(await eventually(within: .seconds(10)) { bInbox.count == delivered })
        let numbers = bInbox.received.map(number(of:))
        #expect(zip(numbers, numbers.dropFirst()).allSatisfy { $0 < $1 }, "messages arrive in order, none twice")
        #expect(a.framesSent == delivered)
    }

    @Test func stopIsPromptAndIdempotent() async throws {
        let (a, _, b, _) = try await connectedPair()
        defer { b.stop() }
        let (closed, _) = try makeTransport("closed")
        let deadPort = closed.port
        closed.stop()
        a.setPeers(["b": "127.0.0.1:\(b.port)", "dead": "127.0.0.1:\(deadPort)", "far": "192.0.2.1:7000"])
        for i in 0..<1000 { a.send(numbered(i, from: "a", to: "b", body: 1024)) }
        try await Task.sleep(for: .milliseconds(50))

        let began = ContinuousClock.now
        a.stop()
        let elapsed = began.duration(to: .now)
        #expect(elapsed < .milliseconds(500), "stop took \(elapsed)")
        a.stop()
        let dropped = a.dropped
        a.send(numbered(0, from: "a", to: "b"))
        #expect(a.dropped == dropped + 1)
        #expect(!a.isConnected(to: "b"))
        #expect(await eventually { !b.isConnected(to: "a") })

        let unstarted = try PeerTransport(
            node: "x", listen: "127.0.0.1:0", maxFrameBytes: 4096, log: { _ in }, receive: { _ in })
        unstarted.stop()
        #expect(throws: PeerTransportError.self) { try unstarted.start() }
    }

    @Test func aTakenAddressIsAClearError() throws {
        let (a, _) = try makeTransport("a")
        defer { a.stop() }
        let second = try PeerTransport(
            node: "b", listen: "127.0.0.1:\(a.port)", maxFrameBytes: 4096, log: { _ in }, receive: { _ in })
        let error = #expect(throws: PeerTransportError.self) { try second.start() }
        #expect(error?.code == .addressInUse)
        #expect(error?.description.contains("127.0.0.1:\(a.port)") == true)
        #expect(throws: PeerTransportError.self) {
            _ = try PeerTransport(node: "c", listen: "127.0.0.1", maxFrameBytes: 4096, log: { _ in }, receive: { _ in })
        }
        #expect(throws: PeerTransportError.self) {
            _ = try PeerTransport(node: "c", listen: ":0", maxFrameBytes: 10, log: { _ in }, receive: { _ in })
        }
    }

    @Test func garbageFromAStrangerClosesItsConnectionWithOneLogLine() async throws {
        let (a, aInbox, b, _) = try await connectedPair()
        defer {
            a.stop()
            b.stop()
        }
        let stranger = try RawClient(port: a.port)
        stranger.write(Array("GET / HTTP/1.1\r\nHost: example\r\n\r\n".utf8))
        #expect(stranger.closedByPeer(within: 2000))
        let refusals = aInbox.logLines.filter { $0.contains("closing the node-to-node connection") }
        #expect(refusals.count == 1)
        #expect(refusals.first?.contains("HELLO") == true)

        let oversize = try RawClient(port: a.port)
        oversize.write(PeerCodec.encodeHello(node: "z") + Bytes.u32(.max))
        #expect(oversize.closedByPeer(within: 2000))

        b.send(numbered(7, from: "b", to: "a"))
        #expect(await eventually { aInbox.count == 1 })
        #expect(a.framesReceived == 1)
    }

    /// The defect: an append whose entries skip an index reached the state machine's `precondition` and killed
    /// the node. Now the connection that carried it closes, with a log line naming what was wrong, and nothing
    /// reaches `receive`.
    @Test func anAppendNoLeaderSendsClosesItsConnectionBeforeTheStateMachine() async throws {
        let (a, aInbox, b, _) = try await connectedPair()
        defer {
            a.stop()
            b.stop()
        }
        let entries = [Samples.entry(10, body: [1]), Samples.entry(12, body: [2])]
        let bad = Envelope(
            from: "b", to: "a", stream: "s",
            message: .append(AppendRequest(term: 3, prevIndex: 9, prevTerm: 3, commit: 0, entries: entries)))
        let forger = try RawClient(port: a.port)
        forger.write(PeerCodec.encodeHello(node: "b") + PeerCodec.encode(bad))
        #expect(forger.closedByPeer(within: 2000))
        #expect(aInbox.count == 0)
        #expect(aInbox.logLines.contains { $0.contains("entries follow prevIndex") })
        b.send(numbered(1, from: "b", to: "a"))
        #expect(await eventually { aInbox.count == 1 })
    }

    @Test func aHalfWrittenFrameFromADyingPeerIsDroppedAndLogged() async throws {
        let (a, aInbox) = try makeTransport("a")
        defer { a.stop() }
        do {
            let dying = try RawClient(port: a.port)
            let frame = PeerCodec.encode(numbered(1, from: "z", to: "a", body: 4096))
            dying.write(PeerCodec.encodeHello(node: "z") + PeerCodec.encode(numbered(0, from: "z", to: "a")))
            dying.write(Array(frame.prefix(frame.count / 2)))
        }
        #expect(await eventually { aInbox.logLines.contains { $0.contains("closed inside a frame") } })
        #expect(aInbox.received.map(number(of:)) == [0])

        let misrouted = try RawClient(port: a.port)
        misrouted.write(PeerCodec.encodeHello(node: "z") + PeerCodec.encode(numbered(2, from: "z", to: "c")))
        #expect(misrouted.closedByPeer(within: 2000))
        #expect(aInbox.logLines.contains { $0.contains("for node 'c'") })
        #expect(a.framesReceived == 1)
    }

    @Test func anOversizeMessageIsDroppedAtSend() async throws {
        let (a, aInbox, b, bInbox) = try await connectedPair()
        defer {
            a.stop()
            b.stop()
        }
        a.send(numbered(0, from: "a", to: "b", body: 5 << 20))
        a.send(numbered(1, from: "a", to: "b"))
        #expect(await eventually { bInbox.count == 1 })
        #expect(bInbox.received.map(number(of:)) == [1])
        #expect(a.dropped == 1)
        #expect(aInbox.logLines.contains { $0.contains("exceeds maxFrameBytes") })
    }

    @Test func removedPeersAreDisconnectedAndNewOnesDialled() async throws {
        let (a, _, b, bInbox) = try await connectedPair()
        let (c, cInbox) = try makeTransport("c")
        defer {
            a.stop()
            b.stop()
            c.stop()
        }
        a.setPeers(["c": "127.0.0.1:\(c.port)"])
        #expect(!a.isConnected(to: "b"))
        #expect(await eventually { a.isConnected(to: "c") })
        a.send(numbered(1, from: "a", to: "b"))
        a.send(numbered(2, from: "a", to: "c"))
        #expect(await eventually { cInbox.count == 1 })
        #expect(bInbox.count == 0)
        #expect(a.dropped == 1)
    }
}
