import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Carries `Envelope`s between raft-log nodes over TCP (the frames of `PeerCodec`).
///
/// Each node dials its own connection to every peer and only writes to it; connections it accepts it only reads.
/// So a pair of nodes has two connections, and a node's messages to a peer always leave in the order it sent
/// them. Threads: one acceptor, one reader per accepted connection, one writer per peer.
///
/// - `send` never blocks: it encodes the envelope on the calling thread and queues it for the peer's writer,
///   which hands everything queued to one `sendmsg` (TCP_NODELAY: a lone small message leaves at once).
/// - While a peer is unreachable its writer redials with a backoff of 20 ms doubling to 500 ms; messages to it
///   are dropped meanwhile (Raft retries by itself). While a peer does not read, its queue grows up to
///   `maxQueuedBytes` and further messages are dropped. Every drop is counted in `dropped`.
/// - Bytes that are not the protocol (a stranger, a frame beyond `maxFrameBytes`, a half-written frame of a
///   dying peer) close that connection with one log line; the transport goes on.
///
/// - Important: `receive` is called on a connection's reader thread, in order for that connection and never
///   concurrently for it (different connections may call it concurrently). It may take a lock and do a little
///   work; it must return, since the connection is not read meanwhile and `stop()` waits for it. Call `stop()`
///   before dropping the transport: its threads keep it alive until then.
public final class PeerTransport: Sendable {
    /// This node's id, sent in the HELLO of its connections.
    public let node: NodeID
    /// The largest envelope frame sent or accepted (the bytes after its length field).
    public let maxFrameBytes: Int
    /// How many bytes of frames may wait for one peer's writer.
    public let maxQueuedBytes: Int

    private let listenAddress: HostPort
    private let shared: TransportShared
    private let boundPort = Atomic<Int>(0)
    private let oversizeLogged = Atomic<Bool>(false)
    private let state = Mutex(State())

    /// How many accepted connections are read at once; more are closed at once (a node has one per peer).
    static let maxInboundConnections = 256

    private enum Phase { case created, running, stopped }

    private struct State {
        var phase = Phase.created
        var peers: [NodeID: OutboundPeer] = [:]
        var listener: Int32 = -1
        var acceptor: NativeThread?
        /// Reader threads by connection number, and the numbers of those that ended (joined by the acceptor).
        var readers: [Int: NativeThread] = [:]
        var endedReaders: [Int] = []
        var nextReader = 0
    }

    /// Creates a transport; `start()` listens and `setPeers` dials.
    /// - Parameters:
    ///   - node: this node's id.
    ///   - listen: `host:port` to listen on for peers' connections; port 0 takes any free port (see `port`).
    ///   - maxFrameBytes: the largest envelope frame sent or accepted, counting the bytes after its length field;
    ///     at least 1024 and below 4 GiB. A larger message is dropped at `send`, and a peer announcing a larger
    ///     frame is disconnected.
    ///   - maxQueuedBytes: the most bytes of frames waiting for one peer (a frame larger than that is queued
    ///     alone).
    ///   - secret: the cluster secret every HELLO proves and every inbound HELLO must prove (`PeerSecret`); nil
    ///     leaves connections unauthenticated.
    ///   - log: one line per event worth an operator's attention (connections made and lost, refused input).
    ///   - receive: every envelope from a peer, see the type's threading rules.
    /// - Throws: `PeerTransportError` when `listen` is not `host:port` or a limit is out of range, or the system
    ///   refuses a pipe.
    public init(
        node: NodeID, listen: String, maxFrameBytes: Int, maxQueuedBytes: Int = 64 << 20, secret: PeerSecret? = nil,
        log: @escaping @Sendable (String) -> Void,
        receive: @escaping @Sendable (Envelope) -> Void
    ) throws {
        guard (1024...Int(UInt32.max) - 4).contains(maxFrameBytes) else {
            throw PeerTransportError(
                .invalidArgument, "maxFrameBytes is \(maxFrameBytes); it must be in 1024...\(Int(UInt32.max) - 4)")
        }
        guard maxQueuedBytes >= 0 else {
            throw PeerTransportError(.invalidArgument, "maxQueuedBytes is \(maxQueuedBytes); it cannot be negative")
        }
        self.node = node
        self.maxFrameBytes = maxFrameBytes
        self.maxQueuedBytes = maxQueuedBytes
        self.listenAddress = try HostPort(parsing: listen, role: "listen address")
        self.shared = try TransportShared(
            node: node, maxFrameBytes: maxFrameBytes, maxQueuedBytes: maxQueuedBytes, secret: secret, log: log,
            receive: receive)
    }

    // MARK: Counters

    /// Envelope frames fully written to peers' sockets.
    public var framesSent: Int { shared.framesSent.load(ordering: .relaxed) }
    /// Envelope frames received and handed to `receive`.
    public var framesReceived: Int { shared.framesReceived.load(ordering: .relaxed) }
    /// Bytes written to peers' sockets, HELLOs included.
    public var bytesSent: Int { shared.bytesSent.load(ordering: .relaxed) }
    /// Bytes read from accepted connections.
    public var bytesReceived: Int { shared.bytesReceived.load(ordering: .relaxed) }
    /// Envelopes given to `send` that did not reach a socket: to an unknown or unconnected peer, beyond the
    /// queue's bound or `maxFrameBytes`, or queued when their connection was lost.
    public var dropped: Int { shared.dropped.load(ordering: .relaxed) }

    /// The port bound by `start()` (the system's choice when `listen` named port 0); 0 before.
    public var port: Int { boundPort.load(ordering: .relaxed) }

    // MARK: Lifecycle

    /// Binds and listens on the `listen` address and starts accepting peers' connections.
    /// - Throws: `PeerTransportError`: `.addressInUse` when another node or program listens there,
    ///   `.invalidState` when the transport was started or stopped before.
    public func start() throws {
        try state.withLock { (state) throws(PeerTransportError) in
            guard state.phase == .created else {
                throw PeerTransportError(
                    .invalidState, "start() of node '\(node)': the transport was \(state.phase) already")
            }
            let (listener, port) = try Socket.makeListener(on: listenAddress)
            do throws(PeerTransportError) {
                state.acceptor = try NativeThread(name: "raft-log accept") { [self] in acceptLoop(listener) }
            } catch {
                Socket.closeDescriptor(listener)
                throw error
            }
            state.listener = listener
            state.phase = .running
            boundPort.store(port, ordering: .relaxed)
        }
    }

    /// Sets the peers to dial: `host:port` by node id (an entry for this node is ignored). Connections to peers
    /// no longer listed, or listed at another address, close (what was queued for them is dropped); new peers
    /// are dialled. Connections peers made to this node are not affected.
    ///
    /// An address that is not `host:port` is logged and its peer left out (messages to it count as dropped).
    /// Returns once the writers of removed peers have ended (at once, unless one is in a name lookup).
    public func setPeers(_ addresses: [NodeID: String]) {
        var removed: [OutboundPeer] = []
        var added: [OutboundPeer] = []
        var problems: [String] = []
        state.withLock { state in
            guard state.phase != .stopped else { return }
            for (id, peer) in state.peers where addresses[id] != peer.address {
                removed.append(peer)
                state.peers[id] = nil
            }
            for (id, address) in addresses.sorted(by: { $0.key < $1.key }) where id != node && state.peers[id] == nil {
                do throws(PeerTransportError) {
                    let target = try HostPort(parsing: address, role: "address of peer '\(id)'")
                    let peer = try OutboundPeer(id: id, address: address, target: target, shared: shared)
                    state.peers[id] = peer
                    added.append(peer)
                } catch {
                    problems.append("raft-log: \(error.message); messages to '\(id)' are dropped")
                }
            }
        }
        problems.forEach(shared.log)
        for peer in removed { peer.close() }
        for peer in added { peer.start() }
        for peer in removed { peer.join() }
    }

    /// Queues `envelope` for the peer `envelope.to`; never blocks. It is dropped (and counted in `dropped`) when
    /// that peer is unknown or not connected, its queue is full, or its frame exceeds `maxFrameBytes`.
    public func send(_ envelope: Envelope) {
        guard let peer = state.withLock({ $0.peers[envelope.to] }), peer.isConnected else {
            shared.dropped.add(1, ordering: .relaxed)
            return
        }
        let size = PeerCodec.encodedSize(of: envelope)
        guard size - 4 <= maxFrameBytes else {
            shared.dropped.add(1, ordering: .relaxed)
            if !oversizeLogged.exchange(true, ordering: .relaxed) {
                shared.log(
                    "raft-log: a \(PeerCodec.frameType(of: envelope.message)) message to '\(envelope.to)' of "
                        + "\(size - 4) bytes exceeds maxFrameBytes (\(maxFrameBytes)) and is dropped (logged once)")
            }
            return
        }
        if !peer.enqueue(OutboundFrame(envelope, size: size)) { shared.dropped.add(1, ordering: .relaxed) }
    }

    /// Whether the connection this node dialled to `peer` is established (messages to it are being sent).
    public func isConnected(to peer: NodeID) -> Bool {
        state.withLock { $0.peers[peer] }?.isConnected ?? false
    }

    /// The bytes of frames queued for `peer` and not yet written to its socket.
    public func queuedBytes(to peer: NodeID) -> Int {
        state.withLock { $0.peers[peer] }?.queuedBytes ?? 0
    }

    /// Closes the listener and every connection and waits for the transport's threads to end. Messages queued
    /// are dropped. Idempotent; `send` after it drops.
    /// - Important: waits for `receive` callbacks in progress to return.
    public func stop() {
        let taken = state.withLock { state -> (peers: [OutboundPeer], acceptor: NativeThread?, listener: Int32)? in
            guard state.phase != .stopped else { return nil }
            state.phase = .stopped
            defer {
                state.peers = [:]
                state.acceptor = nil
                state.listener = -1
            }
            return (Array(state.peers.values), state.acceptor, state.listener)
        }
        guard let taken else { return }
        shared.stopping.store(true, ordering: .relaxed)
        shared.stopPipe.signal()
        for peer in taken.peers { peer.close() }
        taken.acceptor?.join()
        if taken.listener >= 0 { Socket.closeDescriptor(taken.listener) }
        for peer in taken.peers { peer.join() }
        let readers = state.withLock { state in
            defer {
                state.readers = [:]
                state.endedReaders = []
            }
            return Array(state.readers.values)
        }
        for reader in readers { reader.join() }
    }

    // MARK: Accepting

    private func acceptLoop(_ listener: Int32) {
        while !shared.stopping.load(ordering: .relaxed) {
            var fds = [
                pollfd(fd: listener, events: Int16(POLLIN), revents: 0),
                pollfd(fd: shared.stopPipe.readFD, events: Int16(POLLIN), revents: 0),
            ]
            guard poll(&fds, 2, -1) >= 0 || errno == EINTR else {
                shared.log("raft-log: the node-to-node listener stops accepting: poll: \(Socket.errorText())")
                return
            }
            if fds[1].revents != 0 { return }
            joinEndedReaders()
            while true {
                let fd = Socket.acceptConnection(listener)
                guard fd >= 0 else {
                    if errno == EINTR || errno == ECONNABORTED { continue }
                    if errno != EAGAIN && errno != EWOULDBLOCK {
                        // Out of descriptors, say: the connection stays pending; wait before trying again.
                        shared.log("raft-log: cannot accept a node-to-node connection: \(Socket.errorText())")
                        var stop = pollfd(fd: shared.stopPipe.readFD, events: Int16(POLLIN), revents: 0)
                        _ = poll(&stop, 1, 100)
                    }
                    break
                }
                startReader(fd)
            }
        }
    }

    private func startReader(_ fd: Int32) {
        let problem = state.withLock { state -> String? in
            guard state.phase == .running else { return "" }
            guard state.readers.count < Self.maxInboundConnections else {
                return "raft-log: refusing a node-to-node connection from \(Socket.remoteName(fd)): already "
                    + "\(Self.maxInboundConnections) open"
            }
            let number = state.nextReader
            state.nextReader += 1
            do throws(PeerTransportError) {
                state.readers[number] = try NativeThread(name: "raft-log read") { [self, shared] in
                    InboundConnection.serve(fd, shared: shared)
                    self.state.withLock { $0.endedReaders.append(number) }
                }
                return nil
            } catch {
                return "raft-log: refusing a node-to-node connection: \(error.message)"
            }
        }
        if let problem {
            Socket.closeDescriptor(fd)
            if !problem.isEmpty { shared.log(problem) }
        }
    }

    /// Joins the reader threads whose connections ended.
    private func joinEndedReaders() {
        let ended = state.withLock { state in
            var threads: [NativeThread] = []
            for number in state.endedReaders {
                if let thread = state.readers.removeValue(forKey: number) { threads.append(thread) }
            }
            state.endedReaders = []
            return threads
        }
        for reader in ended { reader.join() }
    }
}
