import NIOCore
import Synchronization

/// Runs once with `nil` when an operation succeeded, or with the error that ended it.
public typealias BenchCompletion = @Sendable ((any Error)?) -> Void

/// What a connection has queued from any thread and not yet handed to its channel.
struct OutboundState<Pending: Sendable>: Sendable {
    /// The encoded frames, in order.
    var buffer: ByteBuffer
    /// Completions to run once `buffer` is written to the socket.
    var written: [BenchCompletion] = []
    /// Protocol state that must change under the same lock as `buffer`, so that it stays in wire order
    /// (a FIFO of replies for Redis, of PING waiters for NATS).
    var pending: Pending
    /// Whether a flush is already scheduled on the event loop.
    var scheduled = false
    /// Why the connection is closed, once it is.
    var closed: BenchError?
}

/// Frames queued from any thread for one connection, written with one `writeAndFlush` per event-loop turn.
///
/// Producers call ``enqueue(written:_:)`` from their own threads; the first call after a flush schedules the
/// next one on the channel's event loop, so a burst of sends becomes one write. Protocol state that must stay
/// in wire order lives in `Pending`, changed under the same lock as the bytes.
///
/// - Important: Any thread. `beforeFlush` runs on the event loop, under the lock; it must not block.
final class OutboundQueue<Pending: Sendable>: Sendable {
    private let channel: any Channel
    private let state: Mutex<OutboundState<Pending>>
    /// The protocol state of a fresh connection, put back on close so that nothing is completed twice.
    private let emptyPending: Pending
    private let beforeFlush: @Sendable (inout OutboundState<Pending>) -> Void

    /// - Parameters:
    ///   - channel: The connection's channel.
    ///   - pending: The initial protocol state.
    ///   - beforeFlush: Runs on the event loop, under the lock, before the queued bytes are written; may append
    ///     frames (NATS appends one PING for the publishes that wait for the server).
    init(
        channel: any Channel, pending: Pending,
        beforeFlush: @escaping @Sendable (inout OutboundState<Pending>) -> Void = { _ in }
    ) {
        self.channel = channel
        self.state = Mutex(OutboundState(buffer: channel.allocator.buffer(capacity: 4096), pending: pending))
        self.emptyPending = pending
        self.beforeFlush = beforeFlush
    }

    /// Queues frames and schedules a flush.
    ///
    /// - Parameters:
    ///   - written: Runs once the bytes queued here are written to the socket, or with the error that stopped them.
    ///   - encode: Appends the frames to the buffer and updates the protocol state; runs under the lock.
    /// - Returns: The error the connection closed with, in which case nothing was queued and `written` was not kept.
    @discardableResult
    func enqueue(
        written: BenchCompletion? = nil, _ encode: (inout ByteBuffer, inout Pending) -> Void
    ) -> BenchError? {
        let (closed, schedule) = state.withLock { state -> (BenchError?, Bool) in
            if let closed = state.closed { return (closed, false) }
            encode(&state.buffer, &state.pending)
            if let written { state.written.append(written) }
            if state.scheduled { return (nil, false) }
            state.scheduled = true
            return (nil, true)
        }
        if schedule { channel.eventLoop.execute { self.flush() } }
        return closed
    }

    /// Reads or changes the protocol state under the lock (the channel handler pops replies with it).
    func withPending<Result: Sendable>(_ body: (inout Pending) -> Result) -> Result {
        state.withLock { body(&$0.pending) }
    }

    /// Marks the connection closed and hands back what was still queued, for the owner to fail; the protocol
    /// state starts over empty, so a reply that still arrives finds nothing to complete.
    ///
    /// - Returns: The write completions and the protocol state, or `nil` when it was already closed.
    func close(_ error: BenchError) -> (written: [BenchCompletion], pending: Pending)? {
        state.withLock { state -> (written: [BenchCompletion], pending: Pending)? in
            guard state.closed == nil else { return nil }
            state.closed = error
            let written = state.written
            let pending = state.pending
            state.written = []
            state.pending = emptyPending
            return (written, pending)
        }
    }

    /// The error the connection closed with, if it did.
    var closedError: BenchError? { state.withLock { $0.closed } }

    /// Writes what is queued; runs on the event loop.
    private func flush() {
        let (bytes, written) = state.withLock { state -> (ByteBuffer?, [BenchCompletion]) in
            state.scheduled = false
            guard state.closed == nil else { return (nil, []) }
            beforeFlush(&state)
            let bytes = state.buffer
            state.buffer = channel.allocator.buffer(capacity: max(4096, bytes.readableBytes))
            let written = state.written
            state.written = []
            return (bytes, written)
        }
        guard let bytes, bytes.readableBytes > 0 else { return }
        let future = channel.writeAndFlush(bytes)
        if !written.isEmpty {
            future.whenComplete { result in
                var error: (any Error)? = nil
                if case .failure(let failure) = result { error = failure }
                for completion in written { completion(error) }
            }
        }
    }
}
