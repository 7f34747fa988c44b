import Dispatch
import NIOCore
import PlexusNIOServer
import PlexusPluginSDK
import PlexusWire
import Synchronization

/// The thread-safe half of one client connection: what kernel threads (deliveries, publish completions)
/// and the connection's event loop share.
///
/// Outbound frames are encoded straight into one buffer under a lock, from whichever thread produces
/// them, and the event loop writes the whole buffer at once: many deliveries and acknowledgements cost
/// one hop to the loop and one `write` system call.
final class Session: Sendable {
    let id: UInt64
    let channel: any Channel
    let host: Host
    /// The largest frame the client accepts (from its `HELLO`; the default until then).
    let clientMaxFrame = Atomic<Int>(Frame.defaultMaxFrameSize)
    /// Events published on this connection whose acknowledgement is still owed.
    let pendingEvents = Atomic<Int>(0)
    let readPaused = Atomic<Bool>(false)
    /// Monotonic nanoseconds when bytes were last written to the client.
    let lastSent = Atomic<Int64>(0)
    private let outbox: Mutex<Outbox>

    private struct Outbox {
        var buffer: ByteBuffer
        var flushScheduled = false
        var closed = false
        /// Deliveries sent on this connection and not yet settled by it: only these may be acked here.
        var inFlight: Set<UInt64> = []
        /// Deliveries of subscriptions whose `SUBSCRIBED` has not been queued yet, held back so that the
        /// client never sees a `DELIVER` for a subscription it does not know; by gate token.
        var gates: [UInt64: ByteBuffer] = [:]
    }

    init(id: UInt64, channel: any Channel, host: Host) {
        self.id = id
        self.channel = channel
        self.host = host
        outbox = Mutex(Outbox(buffer: channel.allocator.buffer(capacity: 4096)))
    }

    /// Monotonic nanoseconds.
    static func now() -> Int64 { Int64(DispatchTime.now().uptimeNanoseconds) }

    /// Queues one frame for the client; dropped once the session is closed.
    func send(_ frame: Frame) {
        enqueue { buffer in try FrameCodec.encode(frame, into: &buffer) }
    }

    /// Queues a non-fatal `ERROR` about the frame `id` of type `kind`.
    func refuse(_ id: UInt64, _ kind: Frame.Kind, _ status: WireStatus, _ message: String) {
        send(Frame(id: id, .error(ErrorBody(status: status, frameType: kind.rawValue, message: message))))
    }

    /// Queues bytes written by `encode`; an encoding that throws leaves the buffer as it was.
    /// - Returns: whether the session was still open.
    @discardableResult
    func enqueue(_ encode: (inout ByteBuffer) throws -> Void) -> Bool {
        let schedule = outbox.withLock { box -> Bool? in
            guard !box.closed else { return nil }
            let mark = box.buffer.writerIndex
            do {
                try encode(&box.buffer)
            } catch {
                box.buffer.moveWriterIndex(to: mark)
            }
            return Self.claimFlush(&box)
        }
        guard let schedule else { return false }
        if schedule { scheduleFlush() }
        return true
    }

    /// Marks a flush as due; `true` when the caller must schedule it (none was pending). Under the lock.
    private static func claimFlush(_ box: inout Outbox) -> Bool {
        defer { box.flushScheduled = true }
        return !box.flushScheduled
    }

    private func scheduleFlush() {
        channel.eventLoop.execute { self.flush() }
    }

    /// Writes everything queued; on the event loop.
    func flush() {
        let bytes = outbox.withLock { box -> ByteBuffer? in
            box.flushScheduled = false
            guard box.buffer.readableBytes > 0 else { return nil }
            let out = box.buffer
            box.buffer = channel.allocator.buffer(capacity: max(4096, min(out.readableBytes, 1 << 20)))
            return out
        }
        guard let bytes else { return }
        lastSent.store(Self.now(), ordering: .relaxed)
        channel.writeAndFlush(bytes, promise: nil)
    }

    /// What became of a delivery handed to `deliver`.
    enum DeliveryOutcome {
        case queued
        /// The session is closed: the kernel redelivers it once the subscription ends.
        case closed
        /// It cannot be sent to this client at all (the reason says why).
        case unsendable(String)
    }

    /// Encodes one delivery for the client and records it as in flight here.
    func deliver(_ delivery: UnsafePointer<px_delivery>, gate: UInt64) -> DeliveryOutcome {
        guard let record = delivery.pointee.record, let event = record.pointee.event else {
            return .unsendable("a delivery without an event")
        }
        let maxFrame = clientMaxFrame.load(ordering: .relaxed)
        let (outcome, schedule) = outbox.withLock { box -> (DeliveryOutcome, Bool) in
            guard !box.closed else { return (.closed, false) }
            if var held = box.gates.removeValue(forKey: gate) {
                defer { box.gates[gate] = held }
                if let problem = Self.encode(delivery, record, event, maxFrame: maxFrame, into: &held) {
                    return (.unsendable(problem), false)
                }
                box.inFlight.insert(delivery.pointee.delivery_id)
                return (.queued, false)
            }
            if let problem = Self.encode(delivery, record, event, maxFrame: maxFrame, into: &box.buffer) {
                return (.unsendable(problem), false)
            }
            box.inFlight.insert(delivery.pointee.delivery_id)
            return (.queued, Self.claimFlush(&box))
        }
        if schedule { scheduleFlush() }
        return outcome
    }

    /// Writes one `DELIVER` frame; on failure writes nothing and returns why.
    private static func encode(
        _ delivery: UnsafePointer<px_delivery>, _ record: UnsafePointer<px_record>, _ event: UnsafePointer<px_event>,
        maxFrame: Int, into buffer: inout ByteBuffer
    ) -> String? {
        let start = buffer.writerIndex
        do {
            buffer.writeInteger(UInt32(0))
            buffer.writeInteger(Frame.Kind.deliver.rawValue)
            buffer.writeInteger(UInt8(0))
            buffer.writeInteger(UInt16(0))
            buffer.writeInteger(UInt64(0))
            buffer.writeInteger(delivery.pointee.subscription_id)
            buffer.writeInteger(delivery.pointee.delivery_id)
            buffer.writeInteger(delivery.pointee.attempt)
            buffer.writeInteger(record.pointee.offset)
            buffer.writeInteger(record.pointee.append_time_ns)
            try buffer.writeWireEvent(event)
            let total = buffer.writerIndex - start
            guard total <= maxFrame else {
                throw WireError(
                    .resourceExhausted, "the event needs a \(total)-byte frame, the client accepts \(maxFrame)",
                    fatal: false)
            }
            buffer.setInteger(UInt32(total - 4), at: start)
        } catch {
            buffer.moveWriterIndex(to: start)
            return "\(error)"
        }
        return nil
    }

    /// Holds back deliveries of a subscription about to be made, under `token`.
    func openGate(_ token: UInt64) {
        outbox.withLock { $0.gates[token] = channel.allocator.buffer(capacity: 0) }
    }

    /// Queues `subscribed`, then the deliveries held back under `token`, and stops holding them back.
    func passGate(_ token: UInt64, with subscribed: Frame) {
        let schedule = outbox.withLock { box -> Bool in
            var held = box.gates.removeValue(forKey: token) ?? channel.allocator.buffer(capacity: 0)
            guard !box.closed else { return false }
            try? FrameCodec.encode(subscribed, into: &box.buffer)
            box.buffer.writeBuffer(&held)
            return Self.claimFlush(&box)
        }
        if schedule { scheduleFlush() }
    }

    /// Forgets a gate whose subscription failed.
    func dropGate(_ token: UInt64) {
        outbox.withLock { _ = $0.gates.removeValue(forKey: token) }
    }

    /// Takes `ids` out of the in-flight set; returns those that were not in it.
    func settle(_ ids: [UInt64]) -> [UInt64] {
        outbox.withLock { box in ids.filter { box.inFlight.remove($0) == nil } }
    }

    /// Stops queueing; later frames and deliveries are dropped (the kernel redelivers deliveries).
    func close() {
        outbox.withLock { $0.closed = true }
    }

    private let closing = Atomic<Bool>(false)

    /// Writes what is queued, then closes the connection gracefully (`Linger`); only the first call acts.
    func flushThenClose() {
        guard !closing.exchange(true, ordering: .relaxed) else { return }
        let channel = self.channel
        channel.eventLoop.execute {
            let bytes = self.outbox.withLock { box -> ByteBuffer in
                defer { box.buffer.clear() }
                return box.buffer
            }
            channel.writeAndFlush(bytes).whenComplete { result in
                guard case .success = result else { return channel.close(promise: nil) }
                Linger.start(on: channel)
            }
        }
    }
}

extension WireStatus {
    /// The wire status of a plugin error: `px_status` codes keep their numbers.
    init(_ error: PluginError) {
        self.init(rawValue: UInt16(clamping: max(0, Int(error.status))))
    }
}
