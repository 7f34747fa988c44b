import RaftCore
import Testing

/// The cluster secret: a HELLO proves it (HMAC-SHA256 over node id, timestamp and nonce), and a member that has
/// one closes every connection whose HELLO does not prove the same secret, before any message is handed on.
@Suite("Peer authentication")
struct PeerSecretTests {
    static let secret = "correct horse battery staple"

    func securedTransport(_ node: NodeID, secret: String?) throws -> (PeerTransport, Recorder) {
        let recorder = Recorder()
        let transport = try PeerTransport(
            node: node, listen: "127.0.0.1:0", maxFrameBytes: 4 << 20, secret: try secret.map { try PeerSecret($0) },
            log: { recorder.log($0) }, receive: { recorder.receive($0) })
        try transport.start()
        return (transport, recorder)
    }

    @Test func aProvenHelloRoundTripsAndIsAcceptedOnce() throws {
        let secret = try PeerSecret(Self.secret)
        let frame = PeerCodec.encodeHello(node: "node-a", secret: secret)
        let (node, proof) = try PeerCodec.decodeProvenHello(frame: frame)
        #expect(node == "node-a")
        let sent = try #require(proof)
        #expect(secret.check(sent) == nil)
        #expect(secret.check(sent)?.contains("accepted before") == true, "a replayed HELLO is refused")

        var decoder = FrameDecoder(maxFrameBytes: 1 << 20)
        decoder.append(PeerCodec.encodeHello(node: "node-a", secret: secret))
        guard case .provenHello(let streamed, let streamedProof)? = try decoder.next() else {
            Issue.record("the decoder did not return a proven HELLO")
            return
        }
        #expect(streamed == "node-a")
        #expect(secret.check(streamedProof) == nil)
    }

    @Test func aWrongSecretAMissingProofATamperedNodeOrAStaleClockIsRefused() throws {
        let secret = try PeerSecret(Self.secret)
        let other = try PeerSecret("another secret of enough bytes")
        let (_, forged) = try PeerCodec.decodeProvenHello(frame: PeerCodec.encodeHello(node: "a", secret: other))
        #expect(secret.check(forged)?.contains("does not match") == true)
        #expect(secret.check(nil)?.contains("no proof") == true)

        var frame = PeerCodec.encodeHello(node: "a", secret: secret)
        // The node id's byte sits at 4 (length) + 1 (type) + 4 (magic) + 2 (version) + 4 (string length).
        frame[15] = UInt8(ascii: "b")
        let (node, tampered) = try PeerCodec.decodeProvenHello(frame: frame)
        #expect(node == "b")
        #expect(secret.check(tampered)?.contains("does not match") == true)

        let (_, fresh) = try PeerCodec.decodeProvenHello(frame: PeerCodec.encodeHello(node: "a", secret: secret))
        let later = PeerSecret.nowMs() + PeerSecret.clockWindowMs + 5_000
        #expect(secret.check(fresh, now: later)?.contains("clock") == true)
        #expect(throws: PeerTransportError.self) { try PeerSecret("short") }
    }

    @Test func membersSharingTheSecretTalkAndOthersAreClosedBeforeAnyMessage() async throws {
        let (a, aInbox) = try securedTransport("a", secret: Self.secret)
        let (b, _) = try securedTransport("b", secret: Self.secret)
        let (intruder, _) = try securedTransport("b", secret: "not the cluster's secret")
        let (plain, _) = try securedTransport("b", secret: nil)
        defer {
            for transport in [a, b, intruder, plain] { transport.stop() }
        }
        // Each outsider dials and sends until `a` has closed one of its connections (a connection that `a`
        // closes at once may never be seen as connected by a poll, so none is awaited).
        for (sender, refusal) in [(intruder, "does not match this node's cluster secret"), (plain, "carries no proof")]
        {
            sender.setPeers(["a": "127.0.0.1:\(a.port)", "b": "127.0.0.1:0"])
            let refused = await eventually(within: .seconds(10)) {
                sender.send(numbered(99, from: "b", to: "a"))
                return aInbox.logLines.contains { $0.contains(refusal) }
            }
            #expect(refused, "no connection of the outsider was refused with '\(refusal)'")
            sender.stop()
        }
        #expect(aInbox.count == 0, "an outsider's message reached the state machine")

        b.setPeers(["a": "127.0.0.1:\(a.port)", "b": "127.0.0.1:\(b.port)"])
        #expect(await eventually { b.isConnected(to: "a") })
        b.send(numbered(1, from: "b", to: "a"))
        #expect(await eventually { aInbox.count == 1 })
        #expect(aInbox.received.map(number(of:)) == [1], "only the member with the secret got a message through")
    }
}
