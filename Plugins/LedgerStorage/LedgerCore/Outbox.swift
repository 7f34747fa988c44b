import NIOCore
import Synchronization

/// Coalesces the frames written to one channel from any thread: they are queued under a lock, and one task on
/// the channel's event loop writes everything queued and flushes once. A journal group commit that completes
/// a hundred adds sends their responses with one `writev`, and a writer's burst of adds leaves in one flush.
final class Outbox: Sendable {
    let channel: any Channel
    private let queued = Mutex<(frames: [ByteBuffer], scheduled: Bool, closed: Bool)>(([], false, false))

    init(channel: any Channel) {
        self.channel = channel
        // Once the channel is closed nothing more is scheduled on its event loop (which may be shut down next).
        channel.closeFuture.whenComplete { _ in self.queued.withLock { $0.closed = true } }
    }

    /// Queues `frame`; it is written at the next flush task (scheduled if none is). Dropped once the channel
    /// is closed.
    func send(_ frame: ByteBuffer) {
        let schedule = queued.withLock { q in
            guard !q.closed else { return false }
            q.frames.append(frame)
            defer { q.scheduled = true }
            return !q.scheduled
        }
        if schedule { channel.eventLoop.execute { self.flush() } }
    }

    private func flush() {
        let frames = queued.withLock { q in
            q.scheduled = false
            defer { q.frames.removeAll(keepingCapacity: true) }
            return q.frames
        }
        guard !frames.isEmpty else { return }
        for frame in frames { channel.write(frame, promise: nil) }
        channel.flush()
    }
}
