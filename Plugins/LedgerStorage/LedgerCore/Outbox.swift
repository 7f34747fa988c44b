import NIOCore
import Synchronization

/// Coalesces the frames written to one channel from any thread: they are queued under a lock, and one task on
/// the channel's event loop writes everything queued and flushes once. A journal group commit that completes
/// a hundred adds sends their responses with one `writev`, and a writer's burst of adds leaves in one flush.
final class Outbox: Sendable {
    let channel: any Channel
    private let queued = Mutex<(frames: [ByteBuffer], scheduled: Bool)>(([], false))

    init(channel: any Channel) { self.channel = channel }

    /// Queues `frame`; it is written at the next flush task (scheduled if none is).
    func send(_ frame: ByteBuffer) {
        let schedule = queued.withLock { q in
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
