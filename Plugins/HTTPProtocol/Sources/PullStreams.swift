import Foundation
import NIOCore
import NIOHTTP1
import PlexusPluginSDK
import Synchronization

/// Pull consumers: `GET /topics/{topic}/events` streams deliveries as server-sent events, and
/// `POST /topics/{topic}/acks` (or a delivery's own URL) settles them. A delivery can be settled only while
/// its stream is open; when a stream ends, what it left unacknowledged goes to the group's other members.
final class PullStreams: Sendable {
    let host: Host
    private let state = Mutex<State>(State())

    private struct State {
        var streams: [UInt64: PullStream] = [:]
        /// Deliveries sent on an open stream and not yet settled: delivery id → stream id.
        var inFlight: [UInt64: UInt64] = [:]
        var nextID: UInt64 = 1
    }

    init(host: Host) { self.host = host }

    enum Opened {
        case success(PullStream)
        case failure(Response)
    }

    /// Subscribes a new stream for `topic` with the query's `group`, `credits` and `start`.
    func open(topic: String, query: [String: String], channel: any Channel, settings: HTTPProtocol.Settings)
        -> Opened
    {
        let id = state.withLock { s -> UInt64 in
            defer { s.nextID += 1 }
            return s.nextID
        }
        var options = SubscriptionOptions()
        options.group = query["group"].flatMap { $0.isEmpty ? nil : $0 } ?? "http-pull-\(id)"
        if let text = query["credits"] {
            guard let credits = UInt32(text), credits >= 1 else {
                return .failure(.problem(.badRequest, "credits must be a positive integer", attribute: "credits"))
            }
            options.maxInFlight = credits
        } else {
            options.maxInFlight = UInt32(clamping: settings.pullCredits)
        }
        switch query["start"] {
        case nil, "latest": options.start = .latest
        case "earliest": options.start = .earliest
        case let other?:
            guard let offset = UInt64(other) else {
                return .failure(
                    .problem(.badRequest, "start is latest, earliest or an offset; got '\(other)'", attribute: "start"))
            }
            options.start = .offset(offset)
        }
        let stream = PullStream(
            id: id, topic: topic, group: options.group, channel: channel, streams: self,
            heartbeat: .milliseconds(Int64(settings.pullHeartbeatMs)))
        state.withLock { $0.streams[id] = stream }
        do {
            let subscription = try host.subscribe(topic: topic, options: options) { [weak stream] delivery in
                guard let stream, stream.deliver(delivery) else { return }
            }
            stream.attach(subscription)
            host.count("pull_streams_opened")
            return .success(stream)
        } catch {
            _ = state.withLock { $0.streams.removeValue(forKey: id) }
            let failure = error as? PluginError ?? PluginError(PX_ERR_INTERNAL, "\(error)")
            return .failure(.problem(for: failure, overloadRetryAfter: 1))
        }
    }

    /// Records a delivery as sent on `stream`; `false` once the stream is gone.
    func sent(_ delivery: UInt64, on stream: UInt64) -> Bool {
        state.withLock { s in
            guard s.streams[stream] != nil else { return false }
            s.inFlight[delivery] = stream
            return true
        }
    }

    /// Forgets a stream and its unsettled deliveries (the kernel redelivers them once it unsubscribes).
    func forget(_ stream: UInt64) {
        state.withLock { s in
            s.streams.removeValue(forKey: stream)
            s.inFlight = s.inFlight.filter { $0.value != stream }
        }
    }

    /// Ends every stream (the plugin is stopping).
    func endAll() {
        for stream in state.withLock({ Array($0.streams.values) }) { stream.end(wait: true) }
    }

    /// Takes the deliveries that are in flight on a stream of `topic` out of the table; returns them and the
    /// unknown rest.
    private func claim(_ ids: [UInt64], topic: String) -> (known: [UInt64], unknown: [UInt64]) {
        state.withLock { s in
            var known: [UInt64] = []
            var unknown: [UInt64] = []
            for id in ids {
                if let stream = s.inFlight[id], s.streams[stream]?.topic == topic {
                    s.inFlight.removeValue(forKey: id)
                    known.append(id)
                } else {
                    unknown.append(id)
                }
            }
            return (known, unknown)
        }
    }

    private struct Settlement: Decodable {
        var ack: [UInt64]?
        var nack: [UInt64]?
        var deadLetter: [UInt64]?
        var reason: String?
    }

    /// `POST /topics/{topic}/acks` with `{"ack": [ids], "nack": [ids], "deadLetter": [ids], "reason": "…"}`:
    /// acknowledges, redelivers after the backoff, or dead-letters now. Answers how many were settled and
    /// which ids were not in flight on a stream of the topic.
    func settle(topic: String, body: [UInt8]) -> Response {
        let request: Settlement
        do {
            request = try JSONDecoder().decode(Settlement.self, from: Data(body))
        } catch {
            return .problem(
                .badRequest, "the body must be {\"ack\": [ids], \"nack\": [ids], \"deadLetter\": [ids]}: \(error)")
        }
        let reason = request.reason ?? "nacked by the pull consumer"
        var unknown: [UInt64] = []
        var settled = 0
        for (ids, action) in [(request.ack, 0), (request.nack, 1), (request.deadLetter, 2)] {
            let (known, missing) = claim(ids ?? [], topic: topic)
            unknown += missing
            for id in known {
                let status =
                    action == 0
                    ? host.ack(deliveryID: id) : host.nack(deliveryID: id, deadLetter: action == 2, reason: reason)
                if status == PX_OK.status { settled += 1 } else { unknown.append(id) }
            }
        }
        return .json(.ok, "{\"settled\":\(settled),\"unknown\":[\(unknown.map(String.init).joined(separator: ","))]}")
    }

    /// `POST /topics/{topic}/deliveries/{id}/ack` or `…/nack[?deadLetter]`: 204, or 404 when the delivery
    /// is not in flight on a stream of the topic.
    func settle(topic: String, delivery: UInt64, ack: Bool, deadLetter: Bool, reason: String) -> Response {
        guard !claim([delivery], topic: topic).known.isEmpty else {
            return .problem(
                .notFound, "delivery \(delivery) is not in flight on a stream of topic \(TopicName.quoted(topic))")
        }
        let status =
            ack
            ? host.ack(deliveryID: delivery)
            : host.nack(
                deliveryID: delivery, deadLetter: deadLetter,
                reason: reason.isEmpty ? "nacked by the pull consumer" : reason)
        guard status == PX_OK.status else {
            return .problem(.notFound, "delivery \(delivery) was already settled (timed out or redelivered)")
        }
        return Response(status: .noContent)
    }
}

/// One open server-sent-events stream: a subscription whose deliveries are written to one connection.
///
/// Deliveries arrive on kernel threads and are encoded under a lock into one buffer; the event loop writes
/// everything queued at once.
final class PullStream: Sendable {
    let id: UInt64
    let topic: String
    let group: String
    let channel: any Channel
    /// Strong: the table holds the stream only while it is open, and `end` takes it out.
    private let streams: PullStreams
    private let heartbeat: TimeAmount
    private let outbox: Mutex<Outbox>

    private struct Outbox {
        var buffer: ByteBuffer
        var flushScheduled = false
        var ended = false
        var subscription: Subscription?
        var ticker: RepeatedTask?
    }

    init(
        id: UInt64, topic: String, group: String, channel: any Channel, streams: PullStreams, heartbeat: TimeAmount
    ) {
        self.id = id
        self.topic = topic
        self.group = group
        self.channel = channel
        self.streams = streams
        self.heartbeat = heartbeat
        outbox = Mutex(Outbox(buffer: channel.allocator.buffer(capacity: 4096)))
    }

    func attach(_ subscription: Subscription) {
        let late = outbox.withLock { box -> Bool in
            guard !box.ended else { return true }
            box.subscription = subscription
            return false
        }
        if late { end(subscription) }
    }

    /// Starts the heartbeat comments that keep idle proxies from closing the stream; on the event loop,
    /// after the response head is written.
    func start() {
        let ticker = channel.eventLoop.scheduleRepeatedTask(initialDelay: heartbeat, delay: heartbeat) { [self] _ in
            enqueue { $0.writeString(": keep-alive\n\n") }
        }
        let cancel = outbox.withLock { box -> Bool in
            guard !box.ended else { return true }
            box.ticker = ticker
            return false
        }
        if cancel { ticker.cancel() }
    }

    /// Queues one delivery as an event: `id:` the delivery id, `data:` the event in structured JSON.
    /// - Returns: `false` once the stream has ended (the kernel redelivers the event after unsubscribing).
    func deliver(_ delivery: UnsafePointer<px_delivery>) -> Bool {
        guard let event = delivery.pointee.record?.pointee.event else { return false }
        let deliveryID = delivery.pointee.delivery_id
        guard streams.sent(deliveryID, on: id) else { return false }
        let json = CloudEventJSON.encode(CloudEvent(copying: event))
        return enqueue { buffer in
            buffer.writeString("id: \(deliveryID)\n")
            // SSE lines cannot hold line breaks; JSON has them only as whitespace, so split there.
            for line in json.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r" }) {
                buffer.writeString("data: ")
                buffer.writeSubstring(line)
                buffer.writeString("\n")
            }
            buffer.writeString("\n")
        }
    }

    @discardableResult
    private func enqueue(_ write: (inout ByteBuffer) -> Void) -> Bool {
        let schedule = outbox.withLock { box -> Bool? in
            guard !box.ended else { return nil }
            write(&box.buffer)
            defer { box.flushScheduled = true }
            return !box.flushScheduled
        }
        guard let schedule else { return false }
        if schedule { channel.eventLoop.execute { self.flush() } }
        return true
    }

    private func flush() {
        let bytes = outbox.withLock { box -> ByteBuffer? in
            box.flushScheduled = false
            guard !box.ended, box.buffer.readableBytes > 0 else { return nil }
            let out = box.buffer
            box.buffer = channel.allocator.buffer(capacity: 4096)
            return out
        }
        if let bytes { channel.writeAndFlush(HTTPServerResponsePart.body(.byteBuffer(bytes)), promise: nil) }
    }

    /// Ends the stream: no more writes, the subscription ends (off the caller's thread unless `wait`), and its
    /// unacknowledged deliveries go to the group's other members.
    func end(wait: Bool = false) {
        let (subscription, ticker) = outbox.withLock { box -> (Subscription?, RepeatedTask?) in
            box.ended = true
            defer {
                box.subscription = nil
                box.ticker = nil
            }
            return (box.subscription, box.ticker)
        }
        ticker?.cancel()
        streams.forget(id)
        guard let subscription else { return }
        if wait {
            streams.host.unsubscribe(subscription)
        } else {
            end(subscription)
        }
    }

    private func end(_ subscription: Subscription) {
        let host = streams.host
        // The kernel's unsubscribe waits for running deliveries: never on the event loop.
        DispatchQueue.global().async { host.unsubscribe(subscription) }
    }
}
