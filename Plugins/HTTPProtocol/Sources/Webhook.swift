import Foundation
import NIOCore
import NIOHTTP1
import PlexusPluginSDK

/// Delivers one subscription's events to its sink and settles each delivery from the answer, with the
/// Knative retry table: 2xx acknowledges (a 2xx carrying an event is a reply, published to the reply topic);
/// 404, 408, 409, 429, 5xx and no answer at all are retried after the backoff (longer if the sink's
/// `Retry-After` says so); any other status dead-letters the event at once.
final class Webhook: Sendable {
    let host: Host
    let client: WebhookClient
    let spec: SubscriptionSpec
    let sink: SinkURL
    let structured: Bool
    let replyTopic: String?
    /// Attempts after the first, as the subscription asked (0 included, which the kernel cannot express).
    let retry: UInt32
    let timeout: TimeAmount
    let maxRetryAfterMs: UInt64

    init(
        host: Host, client: WebhookClient, spec: SubscriptionSpec, sink: SinkURL, replyTopic: String?,
        defaultTimeoutMs: Int, maxRetryAfterMs: Int
    ) {
        self.host = host
        self.client = client
        self.spec = spec
        self.sink = sink
        self.structured = spec.mode == "structured"
        self.replyTopic = replyTopic
        self.retry = spec.retry
        self.timeout = .milliseconds(Int64(spec.timeoutMs ?? UInt64(defaultTimeoutMs)))
        self.maxRetryAfterMs = UInt64(maxRetryAfterMs)
    }

    /// The kernel's per-attempt timeout: longer than anything this webhook waits (the HTTP timeout, then a
    /// `Retry-After`), so that the webhook always settles first and the kernel's timeout is only a safety net.
    var kernelTimeoutMs: UInt64 { UInt64(timeout.nanoseconds / 1_000_000) + maxRetryAfterMs + 10_000 }

    /// Sends one delivery; on a kernel thread, without blocking.
    func deliver(_ delivery: UnsafePointer<px_delivery>) {
        let id = delivery.pointee.delivery_id
        let attempt = delivery.pointee.attempt
        guard let record = delivery.pointee.record, let cEvent = record.pointee.event else {
            host.nack(deliveryID: id, deadLetter: true, reason: "a delivery without an event")
            return
        }
        let event = CloudEvent(copying: cEvent)
        client.execute(request(for: event), timeout: timeout) { [self] result in
            settle(id, attempt: attempt, result)
        }
    }

    /// The POST for one event: binary mode (`ce-` headers, the data as the body) unless structured.
    func request(for event: CloudEvent) -> WebhookRequest {
        if structured {
            return WebhookRequest(
                url: sink, headers: [("Content-Type", CloudEventHTTP.structuredType)],
                body: Array(CloudEventJSON.encode(event).utf8))
        }
        return WebhookRequest(
            url: sink, headers: CloudEventHTTP.binaryHeaders(event).map { ($0.name, $0.value) }, body: event.data)
    }

    private func settle(_ id: UInt64, attempt: UInt32, _ result: Result<WebhookResponse, WebhookFailure>) {
        switch result {
        case .success(let response) where (200..<300).contains(response.status):
            host.count("webhook_delivered")
            reply(to: id, response)
        case .success(let response) where Self.retryable(response.status):
            fail(
                id, attempt: attempt, retryable: true, retryAfterMs: Self.retryAfterMs(response.headers),
                reason: "the sink \(sink) answered \(response.status)")
        case .success(let response):
            fail(
                id, attempt: attempt, retryable: false, retryAfterMs: nil,
                reason: "the sink \(sink) answered \(response.status), which is not retried")
        case .failure(let failure):
            fail(id, attempt: attempt, retryable: true, retryAfterMs: nil, reason: "the sink \(sink): \(failure)")
        }
    }

    /// Knative's table: 404, 408, 409, 429 and 5xx are worth another attempt; other statuses are not.
    static func retryable(_ status: Int) -> Bool {
        [404, 408, 409, 429].contains(status) || (500..<600).contains(status)
    }

    /// `Retry-After` in milliseconds from now: delta-seconds or an HTTP-date; `nil` when absent or unreadable.
    static func retryAfterMs(_ headers: HTTPHeaders, now: Date = Date()) -> UInt64? {
        guard let value = headers.first(name: "retry-after")?.trimmingCharacters(in: .whitespaces) else {
            return nil
        }
        if let seconds = UInt64(value) {
            return seconds.multipliedReportingOverflow(by: 1000).overflow ? .max : seconds * 1000
        }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        guard let date = formatter.date(from: value) else { return nil }
        return UInt64(max(0, date.timeIntervalSince(now) * 1000))
    }

    private func fail(_ id: UInt64, attempt: UInt32, retryable: Bool, retryAfterMs: UInt64?, reason: String) {
        host.count("webhook_failed")
        guard retryable, attempt <= retry else {
            host.count("webhook_dead_lettered")
            let why = retryable ? "\(reason) (attempt \(attempt), the last)" : reason
            host.nack(deliveryID: id, deadLetter: true, reason: why)
            return
        }
        // The kernel waits its backoff after the nack; a longer Retry-After adds the difference first.
        let backoff = spec.backoffMs(afterAttempt: attempt)
        let extra = min(retryAfterMs ?? 0, maxRetryAfterMs).subtractingReportingOverflow(backoff)
        guard !extra.overflow, extra.partialValue > 0 else {
            host.nack(deliveryID: id, reason: reason)
            return
        }
        let host = self.host
        client.group.next().scheduleTask(in: .milliseconds(Int64(extra.partialValue))) {
            host.nack(deliveryID: id, reason: reason)
        }
    }

    /// Acknowledges a delivery the sink took; a reply event is published to the reply topic first.
    private func reply(to id: UInt64, _ response: WebhookResponse) {
        guard let reply = Self.replyEvent(response) else {
            host.ack(deliveryID: id)
            return
        }
        guard let replyTopic else {
            host.count("replies_dropped")
            host.ack(deliveryID: id)
            return
        }
        switch reply {
        case .failure(let problem):
            host.count("replies_invalid")
            host.log(.warning, "subscription \(spec.id): the sink's reply is not a valid event: \(problem)")
            host.ack(deliveryID: id)
        case .success(let event):
            let host = self.host
            do {
                try host.publish(topic: replyTopic, [event]) { result in
                    switch result {
                    case .success:
                        host.count("replies_published")
                        host.ack(deliveryID: id)
                    case .failure(let error):
                        host.nack(deliveryID: id, reason: "cannot publish the reply to '\(replyTopic)': \(error)")
                    }
                }
            } catch {
                host.nack(deliveryID: id, reason: "cannot publish the reply to '\(replyTopic)': \(error)")
            }
        }
    }

    /// The event a 2xx response carries (binary or structured), `nil` when it carries none.
    static func replyEvent(_ response: WebhookResponse) -> Result<CloudEvent, ReplyProblem>? {
        let headers = response.headers
        let contentType = headers.first(name: "content-type")
        let event: CloudEvent
        do throws(CloudEventJSON.DecodingError) {
            switch CloudEventHTTP.mode(contentType: contentType) {
            case .structured:
                event = try CloudEventJSON.decode(response.body)
            case .binary:
                guard headers.contains(name: "ce-specversion") else { return nil }
                event = try CloudEventHTTP.decodeBinary(
                    headers: headers.map { ($0.name, $0.value) }, body: response.body)
            case .batch, .unsupportedFormat:
                return .failure(ReplyProblem(message: "a reply is one event; got \(contentType ?? "")"))
            }
        } catch {
            return .failure(ReplyProblem(message: error.description))
        }
        if response.truncated { return .failure(ReplyProblem(message: "the reply is over the size limit")) }
        if let (_, message) = CloudEventHTTP.problem(event) { return .failure(ReplyProblem(message: message)) }
        return .success(event)
    }

    struct ReplyProblem: Error, CustomStringConvertible {
        var message: String
        var description: String { message }
    }
}
