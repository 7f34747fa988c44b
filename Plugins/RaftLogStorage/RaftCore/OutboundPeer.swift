import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An encoded frame in memory of its own, whose address `sendmsg` takes while the arrays holding it move.
///
/// `@unchecked Sendable`: the bytes are written once in `init`, before the frame is shared, and only read after.
final class OutboundFrame: @unchecked Sendable {
    let bytes: UnsafeMutableRawBufferPointer
    /// False for the HELLO, which the frame counters leave out.
    let isEnvelope: Bool

    /// Encodes `envelope`, whose frame takes `size` bytes (`PeerCodec.encodedSize(of:)`).
    init(_ envelope: Envelope, size: Int) {
        bytes = .allocate(byteCount: size, alignment: 8)
        isEnvelope = true
        _ = PeerCodec.encode(envelope, size: size, into: bytes)
    }

    init(hello: [UInt8]) {
        bytes = .allocate(byteCount: hello.count, alignment: 8)
        isEnvelope = false
        bytes.copyBytes(from: hello)
    }

    deinit { bytes.deallocate() }
}

/// This node's connection to one peer, and the thread that dials it and writes to it.
///
/// `send` only appends to a queue under a mutex; the writer thread takes everything queued at once and hands it
/// to one `sendmsg` (up to `maxIOVecs` frames per call). While the peer is not connected, frames are dropped; while
/// it does not read, the queue grows to `maxQueuedBytes` and further frames are dropped. A lost connection is
/// redialled after a backoff of 20 ms doubling to 500 ms (reset once a connection has lasted a second).
final class OutboundPeer: Sendable {
    static let initialBackoff: Duration = .milliseconds(20)
    static let maxBackoff: Duration = .milliseconds(500)
    /// How long one connection attempt may take before the next address or the next attempt.
    static let connectTimeoutMs = 1000
    static let maxIOVecs = 512

    let id: NodeID
    /// `host:port` as configured.
    let address: String
    private let target: HostPort
    private let shared: TransportShared
    private let wake: WakePipe
    private let state = Mutex(State())

    private struct State {
        var connected = false
        var closing = false
        var queue: [OutboundFrame] = []
        /// Bytes of the envelopes queued or taken by the writer and not yet fully written.
        var queuedBytes = 0
        /// The writer waits in `poll` with nothing to write: the next `enqueue` wakes it.
        var idle = false
        var thread: NativeThread?
    }

    init(id: NodeID, address: String, target: HostPort, shared: TransportShared) throws(PeerTransportError) {
        self.id = id
        self.address = address
        self.target = target
        self.shared = shared
        self.wake = try WakePipe()
    }

    var isConnected: Bool { state.withLock { $0.connected } }
    var queuedBytes: Int { state.withLock { $0.queuedBytes } }
    private var isClosing: Bool { state.withLock { $0.closing } }

    /// Starts the writer thread, unless `close()` came first.
    func start() {
        let failure = state.withLock { state -> PeerTransportError? in
            guard !state.closing, state.thread == nil else { return nil }
            do throws(PeerTransportError) {
                state.thread = try NativeThread(name: "raft-log peer \(id)") { [self] in run() }
                return nil
            } catch {
                return error
            }
        }
        if let failure { shared.log("raft-log: peer '\(id)' gets no messages: \(failure.message)") }
    }

    /// Queues a frame for the writer.
    /// - Returns: false when it was dropped: the peer is not connected or its queue is full.
    func enqueue(_ frame: OutboundFrame) -> Bool {
        let size = frame.bytes.count
        let (accepted, signal) = state.withLock { state -> (Bool, Bool) in
            guard state.connected, !state.closing,
                state.queuedBytes == 0 || state.queuedBytes + size <= shared.maxQueuedBytes
            else { return (false, false) }
            state.queue.append(frame)
            state.queuedBytes += size
            defer { state.idle = false }
            return (true, state.idle)
        }
        if signal { wake.signal() }
        return accepted
    }

    /// Makes the writer close the connection and end; `join()` waits for it.
    func close() {
        state.withLock { $0.closing = true }
        wake.signal()
    }

    func join() { state.withLock { $0.thread }?.join() }

    // MARK: The writer thread

    private func run() {
        var backoff = Self.initialBackoff
        var failing = false
        while !isClosing {
            switch Socket.dial(target, timeoutMs: Self.connectTimeoutMs, wake: wake, cancelled: { isClosing }) {
            case .cancelled:
                return
            case .failed(let reason):
                if !failing {
                    failing = true
                    shared.log(
                        "raft-log: cannot connect to peer '\(id)' at \(address): \(reason); retrying (every 500 ms "
                            + "at most), messages to it are dropped meanwhile")
                }
            case .connected(let fd):
                failing = false
                Socket.setNoDelay(fd)
                shared.log("raft-log: connected to peer '\(id)' at \(address)")
                let began = ContinuousClock.now
                let lost = serve(fd)
                Socket.closeDescriptor(fd)
                guard let lost else { return }
                shared.log("raft-log: lost the connection to peer '\(id)' at \(address): \(lost); reconnecting")
                if began.duration(to: .now) >= .seconds(1) { backoff = Self.initialBackoff }
            }
            pause(backoff)
            backoff = min(backoff * 2, Self.maxBackoff)
        }
    }

    /// Waits `duration`, or less when the peer is closed.
    private func pause(_ duration: Duration) {
        let deadline = ContinuousClock.now + duration
        while !isClosing {
            let left = ContinuousClock.now.duration(to: deadline)
            guard left > .zero else { return }
            var fd = pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0)
            if poll(&fd, 1, Int32(Socket.milliseconds(left))) > 0 { wake.drain() }
        }
    }

    private enum WriteOutcome {
        case drained
        case wouldBlock
        case failed(String)
    }

    /// Writes to one connection until it is lost (returns why) or the peer is closed (returns nil).
    private func serve(_ fd: Int32) -> String? {
        var pending: [OutboundFrame] = [OutboundFrame(hello: shared.hello)]
        var head = 0
        var headOffset = 0
        var incoming: [OutboundFrame] = []
        let iovecs = UnsafeMutableBufferPointer<iovec>.allocate(capacity: Self.maxIOVecs)
        defer { iovecs.deallocate() }
        state.withLock { $0.connected = true }
        defer { disconnect(unwritten: pending[head...]) }

        while true {
            let closing = state.withLock { state -> Bool in
                guard !state.closing else { return true }
                swap(&state.queue, &incoming)
                state.idle = incoming.isEmpty && head == pending.count
                return false
            }
            if closing { return nil }
            pending.append(contentsOf: incoming)
            incoming.removeAll(keepingCapacity: true)

            var events = Int16(POLLIN)
            if head < pending.count {
                let outcome = write(fd, pending, &head, &headOffset, iovecs)
                // Let go of the frames written (and their memory) before taking more.
                if head == pending.count {
                    pending.removeAll(keepingCapacity: true)
                    head = 0
                } else if head * 2 >= pending.count {
                    pending.removeFirst(head)
                    head = 0
                }
                switch outcome {
                case .failed(let reason): return reason
                case .drained: continue
                case .wouldBlock: events |= Int16(POLLOUT)
                }
            }

            var fds = [
                pollfd(fd: fd, events: events, revents: 0), pollfd(fd: wake.readFD, events: Int16(POLLIN), revents: 0),
            ]
            guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { return "poll: \(Socket.errorText())" }
            if fds[1].revents != 0 { wake.drain() }
            if fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0, let lost = readPeer(fd) { return lost }
            state.withLock { $0.idle = false }
        }
    }

    /// Reads what the peer sent on this connection: nothing is expected, so any bytes are discarded; the end of
    /// the stream or an error means the connection is lost.
    private func readPeer(_ fd: Int32) -> String? {
        var scratch = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        let count = withUnsafeMutableBytes(of: &scratch) { recv(fd, $0.baseAddress, $0.count, 0) }
        if count > 0 { return nil }
        if count == 0 { return "the peer closed it" }
        if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return nil }
        return Socket.errorText()
    }

    /// Hands `pending[head...]` to `sendmsg` until it is all written or the socket is full, advancing
    /// `head`/`headOffset` past what was written and counting it.
    private func write(
        _ fd: Int32, _ pending: [OutboundFrame], _ head: inout Int, _ headOffset: inout Int,
        _ iovecs: UnsafeMutableBufferPointer<iovec>
    ) -> WriteOutcome {
        while head < pending.count {
            var count = 0
            var index = head
            while index < pending.count && count < iovecs.count {
                let bytes = pending[index].bytes
                let skip = index == head ? headOffset : 0
                iovecs[count] = iovec(iov_base: bytes.baseAddress.map { $0 + skip }, iov_len: bytes.count - skip)
                count += 1
                index += 1
            }
            var message = msghdr()
            message.msg_iov = iovecs.baseAddress
            message.msg_iovlen = numericCast(count)
            let written = sendmsg(fd, &message, Socket.noSignal)
            guard written >= 0 else {
                if errno == EINTR { continue }
                if errno == EAGAIN || errno == EWOULDBLOCK { return .wouldBlock }
                return .failed(Socket.errorText())
            }
            var left = written
            var frames = 0
            var completedBytes = 0
            while left > 0 {
                let frame = pending[head]
                let rest = frame.bytes.count - headOffset
                guard left >= rest else {
                    headOffset += left
                    break
                }
                left -= rest
                headOffset = 0
                head += 1
                if frame.isEnvelope {
                    frames += 1
                    completedBytes += frame.bytes.count
                }
            }
            shared.bytesSent.add(written, ordering: .relaxed)
            shared.framesSent.add(frames, ordering: .relaxed)
            if completedBytes > 0 { state.withLock { $0.queuedBytes -= completedBytes } }
        }
        return .drained
    }

    /// Marks the peer disconnected and drops what was queued for it and not fully written.
    private func disconnect(unwritten: ArraySlice<OutboundFrame>) {
        let queued = state.withLock { state -> [OutboundFrame] in
            state.connected = false
            state.idle = false
            state.queuedBytes = 0
            defer { state.queue = [] }
            return state.queue
        }
        let lost = queued.count + unwritten.lazy.filter(\.isEnvelope).count
        shared.dropped.add(lost, ordering: .relaxed)
    }
}
