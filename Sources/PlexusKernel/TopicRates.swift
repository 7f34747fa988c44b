import Foundation
import NIOCore
import Synchronization

/// Publish and delivery rates per topic over the last `window` seconds, from counters the kernel already
/// keeps (`plexus_events_published_total`, `plexus_events_delivered_total`): one task on the kernel pool
/// samples them once a second, so the publish path pays nothing beyond its existing counter increment. The
/// same pass applies `maxEvents` retention (`TopicRetention`) by trimming the oldest events.
final class TopicRates: Sendable {
    /// Seconds the rates are computed over.
    static let window = 10

    private struct Sample {
        var at: ContinuousClock.Instant
        var published: UInt64
        var delivered: UInt64
    }

    private struct State {
        var samples: [String: [Sample]] = [:]
        var task: RepeatedTask?
        /// A trim in progress per topic, so that a slow storage is not asked twice.
        var trimming: Set<String> = []
    }
    private let state = Mutex(State())

    /// Starts sampling the router's topics once a second; idempotent.
    func start(router: Router) {
        state.withLock { s in
            guard s.task == nil else { return }
            s.task = KernelPool.next().scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) {
                [weak router] task in
                guard let router else { return task.cancel() }
                router.rates.sample(router)
            }
        }
    }

    func stop() {
        state.withLock {
            $0.task?.cancel()
            $0.task = nil
        }
    }

    /// The events delivered to every group of each topic so far.
    static func delivered(_ engine: DeliveryEngine) -> [String: UInt64] {
        var totals: [String: UInt64] = [:]
        for (key, group) in engine.allGroups() { totals[key.topic, default: 0] += group.metrics.delivered.value }
        return totals
    }

    private func sample(_ router: Router) {
        let now = ContinuousClock.now
        let topics = router.openTopics()
        let delivered = Self.delivered(router.engine)
        state.withLock { s in
            for (topic, open) in topics {
                var list = s.samples[topic] ?? []
                list.append(Sample(at: now, published: open.metrics.published.value, delivered: delivered[topic] ?? 0))
                if list.count > Self.window + 1 { list.removeFirst(list.count - Self.window - 1) }
                s.samples[topic] = list
            }
            for topic in s.samples.keys where topics[topic] == nil { s.samples[topic] = nil }
        }
        for (topic, open) in topics {
            guard let maxEvents = router.settings.retention(for: topic)?.maxEvents else { continue }
            enforce(maxEvents: maxEvents, topic: topic, open: open)
        }
    }

    /// Trims a topic to its newest `maxEvents` events, off the sampling task.
    private func enforce(maxEvents: UInt64, topic: String, open: Router.OpenTopic) {
        guard let extent = try? open.binding.extent(open.stream), extent.next - extent.first > maxEvents else { return }
        let start = state.withLock { $0.trimming.insert(topic).inserted }
        guard start else { return }
        DispatchQueue.global().async { [self] in
            defer { _ = state.withLock { $0.trimming.remove(topic) } }
            try? open.binding.trimNow(open.stream, before: extent.next - maxEvents)
        }
    }

    /// Events per second published to and delivered from `topic` over the last `window` seconds (0 before
    /// two samples exist).
    func rates(of topic: String) -> (publish: Double, delivered: Double) {
        state.withLock { s in
            guard let list = s.samples[topic], let last = list.last, let first = list.first, list.count > 1 else {
                return (0, 0)
            }
            let elapsed = last.at - first.at
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            guard seconds > 0 else { return (0, 0) }
            return (
                Double(last.published &- first.published) / seconds,
                Double(last.delivered &- first.delivered) / seconds
            )
        }
    }

    /// Forgets a deleted topic's samples.
    func forget(_ topic: String) { _ = state.withLock { $0.samples.removeValue(forKey: topic) } }
}
