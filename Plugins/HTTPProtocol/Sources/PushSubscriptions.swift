import Dispatch
import Foundation
import PlexusPluginSDK
import Synchronization

/// The push subscriptions of the node: created, listed and deleted through `/subscriptions`, kept in the
/// plugin's data directory, restored when the plugin starts. Each is a kernel subscription whose deliveries
/// a `Webhook` posts to the sink; one with a dead-letter sink has a second one, on its dead-letter topic,
/// that posts the dead letters there.
final class PushSubscriptions: Sendable {
    let host: Host
    let client: WebhookClient
    let store: SubscriptionStore
    let settings: HTTPProtocol.Settings
    /// Creations and deletions run one at a time, off the event loops (they subscribe and fsync).
    private let queue = DispatchQueue(label: "http-protocol.subscriptions")
    private let state = Mutex<[String: Active]>([:])

    /// A running push subscription and its kernel subscriptions.
    private struct Active: Sendable {
        var spec: SubscriptionSpec
        var subscriptions: [Subscription]
    }

    init(host: Host, client: WebhookClient, store: SubscriptionStore, settings: HTTPProtocol.Settings) {
        self.host = host
        self.client = client
        self.store = store
        self.settings = settings
    }

    var count: Int { state.withLock { $0.count } }

    /// Starts every stored subscription; one that cannot start is logged and kept (it is tried again at the
    /// next start).
    /// - Throws: `PluginError` when the stored file cannot be read.
    func restore() throws {
        let specs = try store.load()
        for spec in specs {
            do {
                let subscriptions = try start(spec)
                state.withLock { $0[spec.id] = Active(spec: spec, subscriptions: subscriptions) }
            } catch {
                host.log(.error, "subscription \(spec.id) on \(TopicName.quoted(spec.topic)) cannot start: \(error)")
                state.withLock { $0[spec.id] = Active(spec: spec, subscriptions: []) }
            }
        }
        if !specs.isEmpty { host.log(.info, "restored \(specs.count) push subscription(s)") }
    }

    /// Subscribes a spec's webhook (and its dead-letter sink's, if any) with the kernel.
    private func start(_ spec: SubscriptionSpec) throws -> [Subscription] {
        guard let sink = SinkURL(spec.sink) else {
            throw PluginError.invalidArgument("sink '\(spec.sink)' is not an http:// URL")
        }
        let webhook = Webhook(
            host: host, client: client, spec: spec, sink: sink, replyTopic: spec.replyTopic,
            defaultTimeoutMs: settings.webhookTimeoutMs, maxRetryAfterMs: settings.maxRetryAfterMs)
        var options = SubscriptionOptions()
        options.group = spec.group
        options.filters = spec.filters.sorted { $0.key < $1.key }
        options.retry = max(spec.retry, 1)
        options.linearBackoff = spec.linearBackoff
        options.backoffDelayMs = max(spec.backoffDelayMs, 1)
        options.backoffMaxMs = spec.backoffMaxMs
        options.timeoutMs = webhook.kernelTimeoutMs
        options.deadLetterTopic = spec.deadLetterTopic ?? ""
        options.ordered = spec.ordered
        options.maxInFlight = UInt32(spec.maxInFlight)
        options.start = spec.start == "earliest" ? .earliest : .latest
        var started: [Subscription] = []
        do {
            if let deadLetterSink = spec.delivery.deadLetterSink, let topic = spec.deadLetterTopic,
                let url = SinkURL(deadLetterSink)
            {
                started.append(try startDeadLetterSink(spec, topic: topic, url: url))
            }
            started.append(try host.subscribe(topic: spec.topic, options: options) { webhook.deliver($0) })
        } catch {
            for subscription in started { host.unsubscribe(subscription) }
            throw error
        }
        return started
    }

    /// Pushes the subscription's dead letters (those of its group, with the dead-letter extensions) from the
    /// dead-letter topic to its dead-letter sink, with the subscription's own retry policy.
    private func startDeadLetterSink(_ spec: SubscriptionSpec, topic: String, url: SinkURL) throws -> Subscription {
        var deadLetters = spec
        deadLetters.delivery.deadLetterTopic = nil
        deadLetters.delivery.deadLetterSink = nil
        let webhook = Webhook(
            host: host, client: client, spec: deadLetters, sink: url, replyTopic: nil,
            defaultTimeoutMs: settings.webhookTimeoutMs, maxRetryAfterMs: settings.maxRetryAfterMs)
        var options = SubscriptionOptions()
        options.group = spec.group + "-dls"
        options.filters = [("deadlettergroup", spec.group)]
        options.retry = max(spec.retry, 1)
        options.linearBackoff = spec.linearBackoff
        options.backoffDelayMs = max(spec.backoffDelayMs, 1)
        options.backoffMaxMs = spec.backoffMaxMs
        options.timeoutMs = webhook.kernelTimeoutMs
        options.maxInFlight = UInt32(spec.maxInFlight)
        options.start = .earliest
        return try host.subscribe(topic: topic, options: options) { webhook.deliver($0) }
    }

    /// `POST /subscriptions`: 201 with the subscription (every default filled in), 400 naming the field.
    func create(body: [UInt8], completion: @escaping @Sendable (Response) -> Void) {
        let id = Self.newID()
        let spec: SubscriptionSpec
        do {
            spec = try SubscriptionSpec.parse(body, id: id, created: Self.timestamp())
        } catch let invalid as SubscriptionSpec.Invalid {
            return completion(.problem(.badRequest, invalid.message, attribute: invalid.field))
        } catch {
            return completion(.problem(.badRequest, "\(error)"))
        }
        queue.async { [self] in
            let subscriptions: [Subscription]
            do {
                subscriptions = try start(spec)
            } catch {
                let failure = error as? PluginError ?? PluginError(PX_ERR_INTERNAL, "\(error)")
                return completion(.problem(for: failure, overloadRetryAfter: settings.overloadRetryAfterSeconds))
            }
            let all = state.withLock { s -> [SubscriptionSpec] in
                s[spec.id] = Active(spec: spec, subscriptions: subscriptions)
                return s.values.map(\.spec)
            }
            do {
                try store.save(all.sorted { ($0.created, $0.id) < ($1.created, $1.id) })
            } catch {
                state.withLock { _ = $0.removeValue(forKey: spec.id) }
                for subscription in subscriptions { host.unsubscribe(subscription) }
                return completion(.problem(.internalServerError, "the subscription could not be stored: \(error)"))
            }
            host.log(
                .info,
                "subscription \(spec.id): \(TopicName.quoted(spec.topic)) (group \(TopicName.quoted(spec.group))) → \(spec.sink)"
            )
            completion(.json(.created, spec.json, headers: [("Location", "/subscriptions/\(spec.id)")]))
        }
    }

    /// `GET /subscriptions`: every subscription, oldest first.
    func list() -> Response {
        let specs = state.withLock { $0.values.map(\.spec) }.sorted { ($0.created, $0.id) < ($1.created, $1.id) }
        return .json(.ok, "[" + specs.map(\.json).joined(separator: ",") + "]")
    }

    /// `GET /subscriptions/{id}`.
    func describe(id: String) -> Response {
        guard let spec = state.withLock({ $0[id]?.spec }) else {
            return .problem(.notFound, "no subscription '\(id)'")
        }
        return .json(.ok, spec.json)
    }

    /// `DELETE /subscriptions/{id}`: 204 once it is ended and forgotten on disk; 404 when unknown.
    func delete(id: String, completion: @escaping @Sendable (Response) -> Void) {
        queue.async { [self] in
            let (removed, remaining) = state.withLock { s -> (Active?, [SubscriptionSpec]) in
                let removed = s.removeValue(forKey: id)
                return (removed, s.values.map(\.spec))
            }
            guard let removed else { return completion(.problem(.notFound, "no subscription '\(id)'")) }
            for subscription in removed.subscriptions { host.unsubscribe(subscription) }
            do {
                try store.save(remaining.sorted { ($0.created, $0.id) < ($1.created, $1.id) })
            } catch {
                return completion(.problem(.internalServerError, "the deletion could not be stored: \(error)"))
            }
            host.log(.info, "subscription \(id) deleted")
            completion(Response(status: .noContent))
        }
    }

    /// Ends every kernel subscription (the stored set stays, for the next start).
    func stopAll() {
        let all = state.withLock { s -> [Subscription] in
            defer { s.removeAll() }
            return s.values.flatMap(\.subscriptions)
        }
        for subscription in all { host.unsubscribe(subscription) }
    }

    private static func newID() -> String {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return "sub-" + String(repeating: "0", count: 16 - hex.count) + hex
    }

    private static func timestamp() -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: Date())
    }
}
