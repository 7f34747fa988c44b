import Foundation
import PlexusABI
import PlexusCore

/// How a subscription wants its events delivered (docs/delivery.md): the Knative DeliverySpec plus
/// ordering and flow control.
public struct DeliveryPolicy: Sendable, Equatable {
    public enum Backoff: Sendable, Equatable {
        case linear, exponential
    }

    /// Attempts after the first.
    public var retry: UInt32 = 3
    public var backoff: Backoff = .exponential
    /// The base delay, in nanoseconds.
    public var backoffDelay: UInt64 = 200_000_000
    /// The longest delay between attempts, in nanoseconds; 0 means no cap.
    public var backoffMax: UInt64 = 60_000_000_000
    /// How long one attempt may go unacknowledged before it counts as failed, in nanoseconds.
    public var timeout: UInt64 = 30_000_000_000
    /// Where events go after the last attempt; `nil` drops (and counts) them.
    public var deadLetterTopic: String?
    /// One event in flight per partition key, in publish order.
    public var ordered = false
    /// Unacknowledged events per member.
    public var maxInFlight: Int = 100

    public init() {}

    /// The delay before attempt `attempt + 1`, after `attempt` attempts failed (attempt ≥ 1): linear is
    /// `delay × attempt`, exponential `delay × 2^(attempt−1)`, both capped by `backoffMax`.
    public func delay(afterAttempt attempt: UInt32) -> UInt64 {
        let n = UInt64(max(attempt, 1))
        let raw: UInt64
        switch backoff {
        case .linear:
            raw = backoffDelay.multipliedReportingOverflow(by: n).overflow ? .max : backoffDelay * n
        case .exponential:
            let shift = min(n - 1, 62)
            let factor = UInt64(1) << shift
            raw = backoffDelay.multipliedReportingOverflow(by: factor).overflow ? .max : backoffDelay * factor
        }
        return backoffMax > 0 ? min(raw, backoffMax) : raw
    }

    /// Reads the delivery options of a `px_subscription_spec`; zero fields keep the defaults.
    init(spec: px_subscription_spec) throws {
        self.init()
        if spec.retry > 0 { retry = spec.retry }
        switch spec.backoff_policy {
        case UInt32(PX_BACKOFF_EXPONENTIAL.rawValue): backoff = .exponential
        case UInt32(PX_BACKOFF_LINEAR.rawValue): backoff = .linear
        default:
            throw DeliveryPolicyError(
                "backoff_policy \(spec.backoff_policy) is neither PX_BACKOFF_EXPONENTIAL nor PX_BACKOFF_LINEAR")
        }
        if spec.backoff_delay_ms > 0 { backoffDelay = Self.nanoseconds(ms: spec.backoff_delay_ms) }
        if spec.backoff_max_ms > 0 { backoffMax = Self.nanoseconds(ms: spec.backoff_max_ms) }
        if spec.timeout_ms > 0 { timeout = Self.nanoseconds(ms: spec.timeout_ms) }
        deadLetterTopic = spec.dead_letter_topic.optionalString.flatMap { $0.isEmpty ? nil : $0 }
        // Checked now: a dead letter to a topic the router refuses would be retried forever.
        if let topic = deadLetterTopic, let problem = TopicName.problem(topic) {
            throw DeliveryPolicyError("dead_letter_topic: \(problem)")
        }
        ordered = spec.ordered != 0
        if spec.max_in_flight > 0 { maxInFlight = Int(min(spec.max_in_flight, 100_000)) }
    }

    private static func nanoseconds(ms: UInt64) -> UInt64 {
        ms.multipliedReportingOverflow(by: 1_000_000).overflow ? .max : ms * 1_000_000
    }

    /// Parses an ISO-8601 duration (`PT0.5S`, `PT2M`, `P1DT1H`) into nanoseconds, as Knative's
    /// `backoffDelay` and `timeout` are written.
    public static func parseISO8601Duration(_ text: String) -> UInt64? { ISO8601Duration.nanoseconds(text) }
}

/// A delivery option that cannot be honoured.
public struct DeliveryPolicyError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
