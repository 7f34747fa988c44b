import Foundation
import Logging
import PlexusCore
import PlexusKernel
import Synchronization

/// The protocols a driver exists for.
public enum ProtocolDriverKind: String, Sendable, CaseIterable {
    case tcp, http, grpc
}

/// The protocol contract: one body of publish/subscribe scenarios, run against a real node (memory storage
/// and the protocol plugin under test) through a small client driver per protocol.
enum ProtocolSuite {
    static let lifecycleRule = "protocol.lifecycle.node-stops"

    static let rules: [Rule<ProtocolHarness>] = [
        Rule(
            name: "protocol.publish.subscribe-receives",
            summary: "3 published events reach a subscriber, every attribute, extension and data byte unchanged",
            body: publishSubscribe),
        Rule(
            name: "protocol.ack.settles",
            summary: "an acknowledged delivery is not delivered again", body: ackSettles),
        Rule(
            name: "protocol.nack.redelivers",
            summary: "a nacked delivery is delivered again: the same event, a later attempt where the protocol says it",
            body: nackRedelivers),
        Rule(
            name: "protocol.order.per-partition-key",
            summary: "20 events on 2 partition keys, published in order, arrive in publish order per key",
            body: orderPerKey),
        Rule(
            name: "protocol.errors.bad-input-refused",
            summary:
                "input the protocol must refuse is refused with the protocol's error, and the same connection then publishes",
            body: badInput),
        Rule(
            name: "protocol.topic.unknown-refused",
            summary: "a publish to a topic the node does not know (autoCreate off) is refused, not stored",
            body: unknownTopic),
        Rule(
            name: "protocol.event.large",
            summary: "an event with 256 KiB of data is published and received byte for byte", body: largeEvent),
    ]

    static func descriptions() -> [RuleDescription] {
        rules.map { RuleDescription(name: $0.name, summary: $0.summary) } + [
            RuleDescription(
                name: lifecycleRule,
                summary: "the node stops, and the protocol plugin with it ends stopped (not failed)")
        ]
    }

    // MARK: Scenarios

    static func publishSubscribe(_ h: ProtocolHarness) throws {
        let topic = "conformance-publish"
        let events = (1...3).map { h.event("pubsub-\($0)", key: "k") }
        try h.blocking {
            let subscription = try await h.driver.subscribe(topic: topic, group: h.unique("g"), ordered: false)
            defer { Task { await subscription.cancel() } }
            if let refusal = try await h.driver.publish(topic: topic, events) {
                throw Violation(expected: "the publish to be stored", observed: "\(refusal)")
            }
            for expected in events {
                guard let delivery = try await h.receive(subscription, id: expected.id) else {
                    throw Violation(expected: "event \(expected.id) delivered", observed: "nothing within \(h.timeout)")
                }
                if let difference = TestEvents.difference(expected, delivery.event) {
                    throw Violation(expected: "event \(expected.id) unchanged", observed: difference)
                }
                try await subscription.ack(delivery)
            }
        }
    }

    static func ackSettles(_ h: ProtocolHarness) throws {
        let topic = "conformance-ack"
        let event = h.event("ack")
        try h.blocking {
            let subscription = try await h.driver.subscribe(topic: topic, group: h.unique("g"), ordered: false)
            defer { Task { await subscription.cancel() } }
            try await h.publishOK(topic, [event])
            guard let delivery = try await h.receive(subscription, id: event.id) else {
                throw Violation(expected: "event \(event.id) delivered", observed: "nothing within \(h.timeout)")
            }
            try await subscription.ack(delivery)
            if let again = try await subscription.next(timeout: .seconds(1)) {
                throw Violation(
                    expected: "no delivery after the ack", observed: "\(again.event.id) delivered again within 1 s")
            }
        }
    }

    static func nackRedelivers(_ h: ProtocolHarness) throws {
        let topic = "conformance-nack"
        let event = h.event("nack")
        try h.blocking {
            let subscription = try await h.driver.subscribe(topic: topic, group: h.unique("g"), ordered: false)
            defer { Task { await subscription.cancel() } }
            try await h.publishOK(topic, [event])
            guard let first = try await h.receive(subscription, id: event.id) else {
                throw Violation(expected: "event \(event.id) delivered", observed: "nothing within \(h.timeout)")
            }
            try await subscription.nack(first)
            guard let again = try await h.receive(subscription, id: event.id) else {
                throw Violation(
                    expected: "event \(event.id) delivered again after a nack", observed: "nothing within \(h.timeout)")
            }
            if let a = first.attempt, let b = again.attempt {
                try check(b > a, expected: "a later attempt than \(a)", observed: "attempt \(b)")
            }
            try await subscription.ack(again)
        }
    }

    static func orderPerKey(_ h: ProtocolHarness) throws {
        let topic = "conformance-order"
        let events = (0..<20).map { h.event("order-\($0)", key: $0 % 2 == 0 ? "even" : "odd") }
        try h.blocking {
            let subscription = try await h.driver.subscribe(topic: topic, group: h.unique("g"), ordered: true)
            defer { Task { await subscription.cancel() } }
            for event in events { try await h.publishOK(topic, [event]) }
            var seen: [String: [String]] = [:]
            var count = 0
            while count < events.count {
                guard let delivery = try await subscription.next(timeout: h.timeout) else {
                    throw Violation(
                        expected: "\(events.count) events delivered", observed: "\(count) within \(h.timeout)")
                }
                try await subscription.ack(delivery)
                guard delivery.event.id.hasPrefix(h.tag) else { continue }
                let key = delivery.event.extensions.first { $0.key == "partitionkey" }?.value ?? ""
                seen[key, default: []].append(delivery.event.id)
                count += 1
            }
            for key in ["even", "odd"] {
                let wanted = events.filter { $0.extensions.contains { $0.value == key } }.map(\.id)
                try check(
                    seen[key] == wanted, expected: "key '\(key)' in publish order \(wanted)",
                    observed: "\(seen[key] ?? [])")
            }
        }
    }

    static func badInput(_ h: ProtocolHarness) throws {
        try h.blocking {
            let (what, refusal) = try await h.driver.publishInvalid(topic: "conformance-bad")
            guard let refusal else {
                throw Violation(expected: "\(what) to be refused", observed: "it was accepted")
            }
            _ = refusal
            let event = h.event("after-bad")
            do {
                if let again = try await h.driver.publish(topic: "conformance-bad", [event]) {
                    throw Violation(
                        expected: "a valid publish on the same connection after refusing \(what)",
                        observed: "refused: \(again)")
                }
            } catch let violation as Violation {
                throw violation
            } catch {
                throw Violation(
                    expected: "the connection to stay up after refusing \(what) (\(refusal))",
                    observed: "the next publish failed: \(error)")
            }
        }
    }

    static func unknownTopic(_ h: ProtocolHarness) throws {
        try h.blocking {
            let refusal = try await h.driver.publish(topic: ProtocolNode.unknownTopic, [h.event("unknown")])
            try check(
                refusal != nil, expected: "a publish to the unknown topic '\(ProtocolNode.unknownTopic)' to be refused",
                observed: "it was stored")
            try await h.publishOK("conformance-bad", [h.event("after-unknown")])
        }
    }

    static func largeEvent(_ h: ProtocolHarness) throws {
        let topic = "conformance-large"
        var large = h.event("large")
        large.data = (0..<(256 << 10)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
        let event = large
        try h.blocking {
            let subscription = try await h.driver.subscribe(topic: topic, group: h.unique("g"), ordered: false)
            defer { Task { await subscription.cancel() } }
            try await h.publishOK(topic, [event])
            guard let delivery = try await h.receive(subscription, id: event.id) else {
                throw Violation(expected: "the large event delivered", observed: "nothing within \(h.timeout)")
            }
            if let difference = TestEvents.difference(event, delivery.event) {
                throw Violation(expected: "the large event unchanged", observed: difference)
            }
            try await subscription.ack(delivery)
        }
    }

    // MARK: Running

    /// Starts a node with the protocol plugin, connects a driver, runs every scenario, stops the node.
    static func run(
        library: String, manifest: String, storage: (library: String, manifest: String),
        driver kind: ProtocolDriverKind,
        configJSON: String?, options: ConformanceOptions, logger: Logger, progress: (RuleResult) -> Void
    ) throws -> [RuleResult] {
        let node = try ProtocolNode(
            library: library, manifest: manifest, storage: storage, configJSON: configJSON, logger: logger)
        let driver: any ProtocolDriver
        do {
            driver = try ProtocolHarness.blockingStatic {
                switch kind {
                case .tcp: return try await TCPDriver(port: node.port) as any ProtocolDriver
                case .http: return try HTTPDriver(port: node.port) as any ProtocolDriver
                case .grpc: return try GRPCDriver(port: node.port) as any ProtocolDriver
                }
            }
        } catch {
            node.stop()
            throw KernelError(.hookFailed, subject: node.plugin, "the \(kind.rawValue) driver cannot connect: \(error)")
        }
        let harness = ProtocolHarness(driver: driver, timeout: options.completionTimeout)
        let ledger = CallLedger()
        let (results, _) = RuleRunner.run(
            rules, harness: harness, ledger: ledger, ruleTimeout: options.ruleTimeout, progress: progress)
        _ = try? ProtocolHarness.blockingStatic { await driver.close() }
        let started = ContinuousClock.now
        let problem = node.stop()
        let stopped = RuleResult(
            rule: lifecycleRule, passed: problem == nil,
            reason: problem.map { "expected the protocol plugin to stop cleanly with the node; observed \($0)" },
            milliseconds: (ContinuousClock.now - started).wholeMilliseconds)
        progress(stopped)
        ledger.close()
        return results + [stopped]
    }
}

/// What the protocol scenarios run with: the driver, and names unique to this run.
final class ProtocolHarness: Sendable {
    let driver: any ProtocolDriver
    let timeout: Duration
    let tag = "conformance-\(String(UInt32.random(in: .min ... .max), radix: 16))"

    init(driver: any ProtocolDriver, timeout: Duration) {
        self.driver = driver
        self.timeout = timeout
    }

    func unique(_ label: String) -> String { "\(tag)-\(label)" }

    /// An event of this run, with a partition key when given and binary data naming it.
    func event(_ label: String, key: String? = nil) -> CloudEvent {
        CloudEvent(
            id: unique(label), source: "/plexus/conformance", type: "org.plexus.conformance.protocol",
            datacontenttype: "application/octet-stream", subject: "s-\(label)",
            extensions: key.map { [(key: "partitionkey", value: $0)] } ?? [],
            data: Array("payload \(label)".utf8) + [0, 1, 255])
    }

    func publishOK(_ topic: String, _ events: [CloudEvent]) async throws {
        if let refusal = try await driver.publish(topic: topic, events) {
            throw Violation(expected: "the publish to \(topic) to be stored", observed: "\(refusal)")
        }
    }

    /// The next delivery of the event `id`, acknowledging others of this run's topic that come first.
    func receive(_ subscription: any DriverSubscription, id: String) async throws -> DriverDelivery? {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let delivery = try await subscription.next(timeout: deadline - ContinuousClock.now) else {
                return nil
            }
            if delivery.event.id == id { return delivery }
            try await subscription.ack(delivery)
        }
        return nil
    }

    /// Runs async scenario code from a rule's thread.
    func blocking(_ body: @escaping @Sendable () async throws -> Void) throws {
        try Self.blockingStatic(body)
    }

    static func blockingStatic<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
        let result = Mutex<Result<T, any Error>?>(nil)
        let done = DispatchSemaphore(value: 0)
        Task {
            let outcome: Result<T, any Error>
            do { outcome = .success(try await body()) } catch { outcome = .failure(error) }
            result.withLock { $0 = outcome }
            done.signal()
        }
        done.wait()
        guard let outcome = result.withLock({ $0 }) else { throw Violation("the scenario ended without a result") }
        return try outcome.get()
    }
}
