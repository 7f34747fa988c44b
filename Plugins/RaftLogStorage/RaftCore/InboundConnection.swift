import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What every thread of one transport shares: its settings, callbacks and counters.
final class TransportShared: Sendable {
    let node: NodeID
    let maxFrameBytes: Int
    let maxQueuedBytes: Int
    let log: @Sendable (String) -> Void
    let receive: @Sendable (Envelope) -> Void
    /// The cluster secret: sent as a proof in every outbound HELLO and required of every inbound one; nil:
    /// connections are not authenticated.
    let secret: PeerSecret?

    /// This node's HELLO frame, made anew for each outbound connection (a proof is good for one connection).
    var hello: [UInt8] { PeerCodec.encodeHello(node: node, secret: secret) }

    let framesSent = Atomic<Int>(0)
    let framesReceived = Atomic<Int>(0)
    let bytesSent = Atomic<Int>(0)
    let bytesReceived = Atomic<Int>(0)
    let dropped = Atomic<Int>(0)

    /// Set by `stop()`; `stopPipe` is signalled then and never drained, so it wakes every `poll` that watches it.
    let stopping = Atomic<Bool>(false)
    let stopPipe: WakePipe

    init(
        node: NodeID, maxFrameBytes: Int, maxQueuedBytes: Int, secret: PeerSecret?,
        log: @escaping @Sendable (String) -> Void, receive: @escaping @Sendable (Envelope) -> Void
    ) throws(PeerTransportError) {
        self.node = node
        self.maxFrameBytes = maxFrameBytes
        self.maxQueuedBytes = maxQueuedBytes
        self.log = log
        self.receive = receive
        self.secret = secret
        self.stopPipe = try WakePipe()
    }
}

/// The reading side of one accepted connection: a HELLO, then envelopes handed to `receive` in order.
enum InboundConnection {
    /// Reads `fd` until the peer closes it, sends something that is not the protocol, or the transport stops;
    /// then closes it. Bad input is logged once, naming the remote address and what was wrong.
    static func serve(_ fd: Int32, shared: TransportShared) {
        defer { Socket.closeDescriptor(fd) }
        let remote = Socket.remoteName(fd)
        var decoder = FrameDecoder(maxFrameBytes: shared.maxFrameBytes)
        var peer: NodeID?
        func refuse(_ reason: String) {
            let who = peer.map { "node '\($0)' at \(remote)" } ?? remote
            shared.log("raft-log: closing the node-to-node connection from \(who): \(reason)")
        }

        while !shared.stopping.load(ordering: .relaxed) {
            let count = decoder.read(from: fd)
            if count > 0 {
                shared.bytesReceived.add(count, ordering: .relaxed)
                do throws(PeerCodecError) {
                    while let frame = try decoder.next() {
                        switch frame {
                        case .hello(let node):
                            peer = node
                            if let secret = shared.secret, let refusal = secret.check(nil) { return refuse(refusal) }
                        case .provenHello(let node, let proof):
                            peer = node
                            if let refusal = shared.secret?.check(proof) { return refuse(refusal) }
                        case .envelope(let envelope):
                            guard envelope.from == peer else {
                                return refuse("it carries a message from '\(envelope.from)'")
                            }
                            guard envelope.to == shared.node else {
                                return refuse(
                                    "it carries a message for node '\(envelope.to)', but this is node "
                                        + "'\(shared.node)' (do the peers addresses name the right nodes?)")
                            }
                            shared.framesReceived.add(1, ordering: .relaxed)
                            shared.receive(envelope)
                        }
                    }
                } catch {
                    return refuse(error.message)
                }
            } else if count == 0 {
                do throws(PeerCodecError) { try decoder.finish() } catch { refuse(error.message) }
                return
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                var fds = [
                    pollfd(fd: fd, events: Int16(POLLIN), revents: 0),
                    pollfd(fd: shared.stopPipe.readFD, events: Int16(POLLIN), revents: 0),
                ]
                _ = poll(&fds, 2, -1)
            } else if errno != EINTR {
                return refuse(Socket.errorText())
            }
        }
    }
}
