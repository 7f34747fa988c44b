import Foundation
import PlexusPluginSDK

/// A push subscription as created with `POST /subscriptions`, listed, and stored: where events go and how
/// they are delivered (Knative's DeliverySpec, plus ordering, flow control and replies).
struct SubscriptionSpec: Codable, Sendable, Equatable {
    struct Delivery: Codable, Sendable, Equatable {
        /// Attempts after the first.
        var retry: Int?
        /// `exponential` (delay × 2^(n−1)) or `linear` (delay × n).
        var backoffPolicy: String?
        /// ISO-8601 duration, e.g. `PT0.5S`.
        var backoffDelay: String?
        /// ISO-8601 duration: the longest wait between attempts.
        var backoffMax: String?
        /// ISO-8601 duration: how long one attempt may take.
        var timeout: String?
        /// A topic for events that exhaust their attempts or that the sink refuses.
        var deadLetterTopic: String?
        /// A URL those events are pushed to (from the dead-letter topic, with the dead-letter extensions).
        var deadLetterSink: String?
    }

    var id: String
    var topic: String
    var group: String
    var sink: String
    /// `binary` (the default) or `structured`.
    var mode: String
    var filters: [String: String]
    var delivery: Delivery
    var ordered: Bool
    /// Deliveries in flight to the sink at once.
    var maxInFlight: Int
    /// Where an event a sink answers with (a 2xx carrying an event) is published; none: replies are dropped.
    var replyTopic: String?
    /// `latest` or `earliest`: where a new group starts.
    var start: String
    var created: String

    /// The keys a request may have, at the top and in `delivery`.
    static let keys: Set<String> = [
        "topic", "group", "sink", "mode", "filters", "delivery", "ordered", "maxInFlight", "replyTopic", "start",
    ]
    static let deliveryKeys: Set<String> = [
        "retry", "backoffPolicy", "backoffDelay", "backoffMax", "timeout", "deadLetterTopic", "deadLetterSink",
    ]

    /// The request as sent (every key optional but `topic` and `sink`).
    private struct Request: Decodable {
        var topic: String?
        var group: String?
        var sink: String?
        var mode: String?
        var filters: [String: String]?
        var delivery: Delivery?
        var ordered: Bool?
        var maxInFlight: Int?
        var replyTopic: String?
        var start: String?
    }

    /// A problem with a request, naming the field.
    struct Invalid: Error {
        var field: String
        var message: String
    }

    /// Reads and checks a `POST /subscriptions` body, filling in defaults.
    /// - Throws: `Invalid` naming the first field that is missing, unknown or wrong.
    static func parse(_ body: [UInt8], id: String, created: String) throws -> SubscriptionSpec {
        let object: [String: Any]
        do {
            guard let decoded = try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any] else {
                throw Invalid(field: "body", message: "the body must be a JSON object")
            }
            object = decoded
        } catch let invalid as Invalid {
            throw invalid
        } catch {
            throw Invalid(field: "body", message: "the body is not JSON: \(error.localizedDescription)")
        }
        if let unknown = object.keys.sorted().first(where: { !keys.contains($0) }) {
            throw Invalid(field: unknown, message: "unknown field '\(unknown)'; fields: \(keys.sorted())")
        }
        if let delivery = object["delivery"] as? [String: Any],
            let unknown = delivery.keys.sorted().first(where: { !deliveryKeys.contains($0) })
        {
            throw Invalid(
                field: "delivery.\(unknown)",
                message: "unknown field 'delivery.\(unknown)'; fields: \(deliveryKeys.sorted())")
        }
        let request: Request
        do {
            request = try JSONDecoder().decode(Request.self, from: Data(body))
        } catch DecodingError.typeMismatch(let type, let context), DecodingError.valueNotFound(let type, let context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw Invalid(field: field, message: "field '\(field)' must be \(Self.describe(type))")
        } catch {
            throw Invalid(field: "body", message: "the body does not decode: \(error)")
        }
        guard let topic = request.topic, !topic.isEmpty else {
            throw Invalid(field: "topic", message: "field 'topic' is required")
        }
        guard let sink = request.sink else { throw Invalid(field: "sink", message: "field 'sink' is required") }
        guard SinkURL(sink) != nil else {
            throw Invalid(field: "sink", message: "field 'sink' must be an http:// URL, found '\(sink)'")
        }
        let mode = request.mode ?? "binary"
        guard ["binary", "structured"].contains(mode) else {
            throw Invalid(field: "mode", message: "field 'mode' is binary or structured, found '\(mode)'")
        }
        let start = request.start ?? "latest"
        guard ["latest", "earliest"].contains(start) else {
            throw Invalid(field: "start", message: "field 'start' is latest or earliest, found '\(start)'")
        }
        let maxInFlight = request.maxInFlight ?? 100
        guard (1...10_000).contains(maxInFlight) else {
            throw Invalid(field: "maxInFlight", message: "field 'maxInFlight' must be 1 to 10000")
        }
        guard (request.filters?.count ?? 0) <= 64 else {
            throw Invalid(field: "filters", message: "a subscription has at most 64 filters")
        }
        var delivery = request.delivery ?? Delivery()
        if let retry = delivery.retry, !(0...1000).contains(retry) {
            throw Invalid(field: "delivery.retry", message: "field 'delivery.retry' must be 0 to 1000")
        }
        if let policy = delivery.backoffPolicy, !["linear", "exponential"].contains(policy) {
            throw Invalid(
                field: "delivery.backoffPolicy",
                message: "field 'delivery.backoffPolicy' is linear or exponential, found '\(policy)'")
        }
        for (name, value) in [
            ("backoffDelay", delivery.backoffDelay), ("backoffMax", delivery.backoffMax), ("timeout", delivery.timeout),
        ] {
            guard let value else { continue }
            guard let ns = ISO8601Duration.nanoseconds(value), ns >= 1_000_000 || name != "timeout" else {
                throw Invalid(
                    field: "delivery.\(name)",
                    message: "field 'delivery.\(name)' must be an ISO-8601 duration such as PT0.5S, found '\(value)'")
            }
        }
        if let dls = delivery.deadLetterSink, SinkURL(dls) == nil {
            throw Invalid(
                field: "delivery.deadLetterSink",
                message: "field 'delivery.deadLetterSink' must be an http:// URL, found '\(dls)'")
        }
        if delivery.deadLetterTopic?.isEmpty == true {
            throw Invalid(field: "delivery.deadLetterTopic", message: "field 'delivery.deadLetterTopic' is empty")
        }
        if request.replyTopic?.isEmpty == true {
            throw Invalid(field: "replyTopic", message: "field 'replyTopic' is empty")
        }
        // Spell the kernel's defaults out, so that what is listed is what runs.
        delivery.retry = delivery.retry ?? 3
        delivery.backoffPolicy = delivery.backoffPolicy ?? "exponential"
        delivery.backoffDelay = delivery.backoffDelay ?? "PT0.2S"
        delivery.backoffMax = delivery.backoffMax ?? "PT60S"
        let group = request.group.flatMap { $0.isEmpty ? nil : $0 } ?? "http-\(id)"
        return SubscriptionSpec(
            id: id, topic: topic, group: group, sink: sink, mode: mode, filters: request.filters ?? [:],
            delivery: delivery, ordered: request.ordered ?? false, maxInFlight: maxInFlight,
            replyTopic: request.replyTopic, start: start, created: created)
    }

    private static func describe(_ type: Any.Type) -> String {
        switch type {
        case is String.Type: return "a string"
        case is Int.Type: return "an integer"
        case is Bool.Type: return "true or false"
        default: return "\(type)"
        }
    }

    /// The subscription as JSON, every default spelled out.
    var json: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return (try? encoder.encode(self)).map { String(decoding: $0, as: UTF8.self) } ?? "{}"
    }

    // MARK: Effective delivery options

    /// Attempts after the first (default 3).
    var retry: UInt32 { UInt32(delivery.retry ?? 3) }
    var linearBackoff: Bool { delivery.backoffPolicy == "linear" }
    var backoffDelayMs: UInt64 {
        delivery.backoffDelay.flatMap(ISO8601Duration.nanoseconds).map { $0 / 1_000_000 } ?? 200
    }
    var backoffMaxMs: UInt64 {
        delivery.backoffMax.flatMap(ISO8601Duration.nanoseconds).map { $0 / 1_000_000 } ?? 60_000
    }
    /// The per-attempt HTTP timeout, or `nil` for the plugin's default.
    var timeoutMs: UInt64? { delivery.timeout.flatMap(ISO8601Duration.nanoseconds).map { $0 / 1_000_000 } }

    /// The kernel's wait before the attempt after `attempt` (as `docs/delivery.md` computes it), in ms.
    func backoffMs(afterAttempt attempt: UInt32) -> UInt64 {
        let n = UInt64(max(attempt, 1))
        let delay = max(backoffDelayMs, 1)
        let raw: UInt64
        if linearBackoff {
            raw = delay.multipliedReportingOverflow(by: n).overflow ? .max : delay * n
        } else {
            let factor = UInt64(1) << min(n - 1, 62)
            raw = delay.multipliedReportingOverflow(by: factor).overflow ? .max : delay * factor
        }
        return backoffMaxMs > 0 ? min(raw, backoffMaxMs) : raw
    }

    /// The topic dead letters go to: the one asked for, or one of the subscription's own when only a
    /// dead-letter sink was given.
    var deadLetterTopic: String? {
        if let topic = delivery.deadLetterTopic { return topic }
        return delivery.deadLetterSink == nil ? nil : "http-dls-\(id)"
    }
}
