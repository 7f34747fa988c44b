import Foundation
import PlexusABI
import PlexusCore
import PlexusKernel
import Synchronization

/// The bodies of the connector rules that need more than a few lines.
extension ConnectorRun {
    /// `connector.sink.answers-exactly-once`: 20 deliveries, within the sink's limit; each answered once.
    func answersExactlyOnce(_ host: ConnectorHost) throws -> Outcome {
        guard let sub = target(host) else { throw Violation(expected: "an open subscription", observed: "none") }
        let limit = window(sub)
        var ids: [UInt64] = []
        for _ in 0..<20 {
            let open = waitUntil(options.completionTimeout) {
                ids.filter { host.delivery($0)?.answers.isEmpty ?? true }.count < limit
            }
            try check(
                open,
                expected:
                    "the sink to answer deliveries so that fewer than its max_in_flight \(limit) are outstanding",
                observed: "\(limit) unanswered for \(options.completionTimeout)")
            guard let id = host.deliver(event("answer"), to: sub.id) else {
                throw Violation(expected: "the subscription to stay open", observed: "it was ended")
            }
            ids.append(id)
        }
        waitUntil(options.completionTimeout) { ids.allSatisfy { host.delivery($0)?.answers.isEmpty == false } }
        Thread.sleep(forTimeInterval: Double(options.grace.components.attoseconds) / 1e18 + 0.1)
        let records = ids.compactMap { host.delivery($0) }
        let unanswered = records.filter { $0.answers.isEmpty }
        let twice = records.filter { $0.answers.count > 1 }
        let unknown = host.snapshot.unknownAnswers
        try check(
            unanswered.isEmpty,
            expected: "each of \(ids.count) deliveries answered within \(options.completionTimeout)",
            observed: "\(unanswered.count) never answered (\(Self.list(unanswered.map(\.eventID))))")
        try check(
            twice.isEmpty, expected: "each delivery answered exactly once",
            observed:
                "\(twice.count) answered more than once (\(Self.list(twice.map { "\($0.eventID): \($0.answers.map { $0.action == nil ? "ack" : "nack" }.joined(separator: "+"))" })))"
        )
        try check(
            unknown.isEmpty, expected: "no answer for a delivery the host never made",
            observed: "answers for delivery ids \(Self.list(unknown.map { "\($0)" }))")
        return .passed
    }

    /// `connector.sink.max-in-flight-no-loss`: a burst of up to 3 × max_in_flight events, never more than
    /// max_in_flight outstanding; nacked ones redelivered (up to 5 attempts); every event acknowledged.
    func backpressure(_ host: ConnectorHost) throws -> Outcome {
        guard let sub = target(host) else { throw Violation(expected: "an open subscription", observed: "none") }
        let limit = window(sub)
        let total = max(1, min(3 * limit, options.connectorBurst))
        var queue: [(CloudEvent, UInt32)] = (0..<total).map { _ in (event("burst"), 1) }
        queue.reverse()
        var outstanding: [UInt64: (CloudEvent, UInt32)] = [:]
        var acked = Set<String>()
        var gaveUp: [String] = []
        var twice: [String] = []
        var peak = 0
        let deadline = ContinuousClock.now + options.completionTimeout * 3
        while acked.count + gaveUp.count < total, ContinuousClock.now < deadline {
            var progressed = false
            for (id, (event, attempt)) in outstanding {
                guard let record = host.delivery(id), let first = record.answers.first else { continue }
                outstanding[id] = nil
                progressed = true
                if record.answers.count > 1 { twice.append(event.id) }
                if first.action == nil {
                    acked.insert(event.id)
                } else if attempt < 5 {
                    queue.insert((event, attempt + 1), at: 0)
                } else {
                    gaveUp.append(event.id)
                }
            }
            while outstanding.count < limit, let next = queue.popLast() {
                let (event, attempt) = next
                guard let id = host.deliver(event, to: sub.id, attempt: attempt) else {
                    throw Violation(expected: "the subscription to stay open", observed: "it was ended")
                }
                outstanding[id] = (event, attempt)
                peak = max(peak, outstanding.count)
                progressed = true
            }
            if !progressed { Thread.sleep(forTimeInterval: 0.001) }
        }
        Thread.sleep(forTimeInterval: Double(options.grace.components.attoseconds) / 1e18)
        for id in host.snapshot.deliveries.keys {
            if let record = host.delivery(id), record.answers.count > 1, !twice.contains(record.eventID),
                record.eventID.contains("-burst-")
            {
                twice.append(record.eventID)
            }
        }
        let lost = total - acked.count - gaveUp.count
        try check(
            lost == 0,
            expected:
                "all \(total) events of a burst (at most \(limit) outstanding, the kit holding the rest) answered, none lost",
            observed:
                "\(lost) still unanswered after \(options.completionTimeout * 3) (\(outstanding.count) outstanding, peak \(peak))"
        )
        try check(
            gaveUp.isEmpty, expected: "every event acknowledged within 5 attempts",
            observed: "\(gaveUp.count) nacked 5 times (\(Self.list(gaveUp)))")
        try check(
            twice.isEmpty, expected: "each delivery of the burst answered once",
            observed: "\(twice.count) answered more than once (\(Self.list(twice)))")
        return .passed
    }

    /// `connector.source.publishes-valid-events`.
    func validEvents(_ host: ConnectorHost) throws -> Outcome {
        waitUntil(options.connectorObserve) { host.snapshot.publishes.flatMap(\.events).count >= 3 }
        let publishes = host.snapshot.publishes
        let invalid = publishes.flatMap(\.invalid)
        try check(
            invalid.isEmpty, expected: "every published event to be a valid CloudEvent",
            observed: "\(invalid.count) invalid: \(Self.list(invalid, limit: 3))")
        let empty = publishes.filter(\.events.isEmpty).count
        try check(empty == 0, expected: "no empty publish", observed: "\(empty) publish(es) of no event")
        if let topic = expectedTopic {
            let others = Set(publishes.map(\.topic)).subtracting([topic]).sorted()
            try check(
                others.isEmpty, expected: "every publish to its configured topic '\(topic)'",
                observed: "publishes to \(Self.list(others))")
        }
        return .passed
    }

    /// `connector.source.refused-offered-again`: the next publish is refused (returned
    /// `PX_ERR_UNAVAILABLE`), the one after fails through its completion (`PX_ERR_RESOURCE_EXHAUSTED`); their
    /// events must be published again.
    func refusedOfferedAgain(_ host: ConnectorHost) throws -> Outcome {
        let seen = Atomic<Int>(0)
        host.setPolicy { _, _ in
            switch seen.add(1, ordering: .relaxed).newValue {
            case 1: return .refuse(PX_ERR_UNAVAILABLE.status)
            case 2: return .fail(PX_ERR_RESOURCE_EXHAUSTED.status)
            default: return .accept
            }
        }
        defer { host.setPolicy { _, _ in .accept } }
        let before = host.snapshot.publishes.count
        try check(
            waitUntil(options.connectorObserve) { seen.load(ordering: .relaxed) >= 2 },
            expected: "two more publishes within \(options.connectorObserve)",
            observed: "\(seen.load(ordering: .relaxed))")
        let refused = host.snapshot.publishes.dropFirst(before).prefix(2).flatMap(\.ids)
        let timeout = options.completionTimeout * 2
        let again = waitUntil(timeout) {
            let accepted = Set(host.snapshot.publishes.dropFirst(before + 2).filter(\.accepted).flatMap(\.ids))
            return Set(refused).isSubset(of: accepted)
        }
        if !again {
            let accepted = Set(host.snapshot.publishes.dropFirst(before + 2).filter(\.accepted).flatMap(\.ids))
            let dropped = refused.filter { !accepted.contains($0) }
            throw Violation(
                expected:
                    "the events of the refused publishes (\(Self.list(refused))) published again with the same ids",
                observed:
                    "\(Self.list(dropped)) not offered again within \(timeout); it published \(accepted.count) other event(s)"
            )
        }
        return .passed
    }

    /// `connector.sink.fault-nacks-never-acks`: an instance with the fault configuration on a data directory of
    /// its own; 5 events, each redelivered up to 3 times while nacked; no ack, every delivery answered.
    func faultNeverAcks(reload: @escaping (String) throws -> StandalonePlugin, config: String) throws -> Outcome {
        let faulty: StandalonePlugin
        do {
            faulty = try reload(config)
        } catch {
            throw Violation(expected: "the library to load with --fault-config", observed: "\(error)")
        }
        let directory = dataDirectory + "-fault-\(tag)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (instance, host) = try start(faulty, dataDirectory: directory)
        var stopped = false
        defer { if !stopped { _ = stop(instance, host) } }
        try check(
            waitUntil(options.connectorObserve) { target(host) != nil }, expected: "the instance to subscribe",
            observed: "no subscription within \(options.connectorObserve)")
        guard let sub = target(host) else { throw Violation("the subscription vanished") }
        var unanswered: [String] = []
        for _ in 0..<5 {
            let event = event("fault")
            for attempt in UInt32(1)...3 {
                guard let id = host.deliver(event, to: sub.id, attempt: attempt) else {
                    throw Violation(expected: "the subscription to stay open", observed: "it was ended")
                }
                waitUntil(options.completionTimeout) { host.delivery(id)?.answers.isEmpty == false }
                guard let record = host.delivery(id), let first = record.answers.first else {
                    unanswered.append(event.id)
                    break
                }
                if first.action == nil { break }
            }
        }
        let deliveries = host.snapshot.deliveries.values
        let acked = deliveries.filter { $0.answers.contains { $0.action == nil } }
        stopped = true
        let report = stop(instance, host)
        try check(
            acked.isEmpty,
            expected:
                "no delivery acknowledged while the external system is unreachable (an ack claims it has the event)",
            observed: "\(acked.count) of \(deliveries.count) acknowledged (\(Self.list(acked.map(\.eventID))))")
        try check(
            unanswered.isEmpty, expected: "each delivery nacked within \(options.completionTimeout)",
            observed: "\(unanswered.count) never answered (\(Self.list(unanswered)))")
        if let error = report.error {
            throw Violation(expected: "the fault instance to stop", observed: error)
        }
        return .passed
    }
}
