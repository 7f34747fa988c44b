import Foundation
import PlexusABI
import PlexusCore
import PlexusKernel
import Synchronization

/// The connector contract: a connector uses only the host API (a source publishes, a sink subscribes and
/// answers each delivery), so the kit checks it by being its host (`ConnectorHost`).
///
/// The kit starts one instance and watches what it does: a connector that subscribes within
/// `connectorObserve` is a sink and the sink rules apply; one that publishes is a source and the source rules
/// apply. The rules of a role it does not take are reported as not applicable, with that reason.
enum ConnectorSuite {
    static let actsRule = "connector.start.acts"
    static let sinkTopic = "connector.sink.subscribes-to-topic"
    static let sinkAnswers = "connector.sink.answers-exactly-once"
    static let sinkBackpressure = "connector.sink.max-in-flight-no-loss"
    static let sinkStop = "connector.sink.stop-clean"
    static let sinkRestart = "connector.sink.restart"
    static let sinkNeverBlocks = "connector.sink.deliver-never-blocks"
    static let sinkFault = "connector.sink.fault-nacks-never-acks"
    static let sourceValid = "connector.source.publishes-valid-events"
    static let sourceRefused = "connector.source.refused-offered-again"
    static let sourceStop = "connector.source.stop-clean"
    static let sourceRestart = "connector.source.at-least-once-across-restart"
    static let lifecycleRule = "connector.lifecycle.stop-destroy"

    /// The capability a connector's manifest provides to declare that it makes its events (a clock, a
    /// generator) rather than reading them from an external system.
    static let generatorCapability = "event-generator"

    /// Host functions a stopped instance may still call: observability and releasing what it holds.
    static let allowedAfterStop: Set<String> = [
        "log", "counter_add", "gauge_set", "histogram_record", "metric_record", "metric_create", "timer_cancel",
        "unsubscribe", "registry_unwatch", "kv_unwatch",
    ]

    /// In the order they run and are reported.
    static let rules: [RuleDescription] = [
        .init(
            name: actsRule,
            summary: "within the observation time after on_start it subscribes (a sink) or publishes (a source)"),
        .init(
            name: sinkTopic,
            summary: "a sink subscribes to its configured topic (`topic` or `topics` in its config, or --topic)"),
        .init(
            name: sinkAnswers,
            summary:
                "every delivery is answered (ack or nack) exactly once within the timeout; no answer for an unknown delivery"
        ),
        .init(
            name: sinkBackpressure,
            summary:
                "with deliveries outstanding up to its own max_in_flight (the kit never exceeds it and holds the rest), no event is lost: every one is acknowledged in the end, nacked ones after redelivery"
        ),
        .init(
            name: sourceValid,
            summary: "a source publishes valid CloudEvents to its configured topic (`topic` or `topics`, or --topic)"),
        .init(
            name: sourceRefused,
            summary:
                "events of a publish the host refused (PX_ERR_UNAVAILABLE returned, PX_ERR_RESOURCE_EXHAUSTED completed) are published again, same ids"
        ),
        .init(
            name: sinkStop,
            summary:
                "on_stop returns PX_OK within the deadline; every delivery was answered before it returned or handed back by unsubscribing; no ack, nack, publish or subscribe after it returned"
        ),
        .init(
            name: sourceStop,
            summary:
                "on_stop returns PX_OK within the deadline, with publishes unfinished; no publish after it returned"),
        .init(
            name: sourceRestart,
            summary:
                "publishes the host never completed before a stop are published again (same ids) by a new instance on the same data directory and metadata store"
        ),
        .init(
            name: sinkRestart,
            summary: "a new instance on the same data directory subscribes again and acknowledges deliveries"),
        .init(
            name: sinkNeverBlocks,
            summary: "each px_deliver_fn call of the run returned within the bound (--deliver-bound, 100 ms)"),
        .init(
            name: sinkFault,
            summary:
                "with --fault-config (its external system unreachable) no delivery is ever acknowledged; each is nacked within the timeout"
        ),
        .init(
            name: lifecycleRule,
            summary:
                "every instance of the run stopped and was destroyed in time, and none called the host after on_destroy"
        ),
    ]

    /// Runs the suite against `plugin`.
    /// - Parameters:
    ///   - reload: loads the same library with another configuration (for `--fault-config`).
    /// - Throws: `KernelError` when the first instance cannot be created and started.
    static func run(
        _ plugin: StandalonePlugin, dataDirectory: String, options: ConformanceOptions,
        reload: @escaping (String) throws -> StandalonePlugin, progress: (RuleResult) -> Void
    ) throws -> [RuleResult] {
        try withoutActuallyEscaping(progress) { progress in
            let run = ConnectorRun(plugin: plugin, dataDirectory: dataDirectory, options: options, progress: progress)
            // A rule thread abandoned after its deadline, or a host table an abandoned instance still holds, may
            // keep the run alive after this returns: drop the caller's closure first, so it does not escape.
            defer { run.dropProgress() }
            return try run.execute(reload: reload)
        }
    }
}

/// The state of one connector suite run: its instances, their hosts, and the results so far.
final class ConnectorRun: @unchecked Sendable {
    // Safe: used from the suite's thread; rule bodies run one at a time on their own threads while the
    // suite's thread waits for them (`RuleRunner.runOnThread`), and touch the run only then.
    typealias S = ConnectorSuite

    let plugin: StandalonePlugin
    let dataDirectory: String
    let options: ConformanceOptions
    /// The caller's progress closure, until `dropProgress` (touched under the same rule as `results`).
    private var reporter: ((RuleResult) -> Void)?
    let kv = KVStore()
    let tag = String(UInt32.random(in: .min ... .max), radix: 16)
    var results: [RuleResult] = []
    var hosts: [ConnectorHost] = []
    var stopFailures: [String] = []
    var hungIn: String?
    var counter = 0

    init(
        plugin: StandalonePlugin, dataDirectory: String, options: ConformanceOptions,
        progress: @escaping (RuleResult) -> Void
    ) {
        self.plugin = plugin
        self.dataDirectory = dataDirectory
        self.options = options
        reporter = progress
    }

    // MARK: Running rules

    enum Outcome { case passed, notApplicable(String) }

    /// Forgets the caller's progress closure (it must not outlive `ConnectorSuite.run`).
    func dropProgress() { reporter = nil }

    func emit(_ result: RuleResult) {
        results.append(result)
        reporter?(result)
    }

    func notApplicable(_ rule: String, _ reason: String) { emit(.notApplicable(rule, reason)) }

    /// Runs one rule body under the rule deadline.
    func rule(_ name: String, _ body: @escaping () throws -> Outcome) {
        if let hungIn {
            emit(
                RuleResult(
                    rule: name, passed: false,
                    reason:
                        "not run: the connector was still inside a hook called by \(hungIn), so the instance was abandoned",
                    milliseconds: 0))
            return
        }
        let started = ContinuousClock.now
        let outcome = Mutex<Outcome?>(nil)
        let box = UnsafeSendable(body)
        let result = RuleRunner.runOnThread(name: "plexus.conformance.\(name)", timeout: options.ruleTimeout) {
            let value = try box.value()
            outcome.withLock { $0 = value }
        }
        let ms = (ContinuousClock.now - started).wholeMilliseconds
        switch result {
        case .none:
            hungIn = name
            emit(
                RuleResult(
                    rule: name, passed: false,
                    reason:
                        "expected the rule to finish within \(options.ruleTimeout); observed a hook or deliver call that had not returned by then (a hook must not block)",
                    milliseconds: ms))
        case .some(.failure(let error)):
            emit(RuleResult(rule: name, passed: false, reason: "\(error)", milliseconds: ms))
        case .some(.success):
            if case .notApplicable(let why)? = outcome.withLock({ $0 }) {
                emit(RuleResult(rule: name, passed: true, reason: why, milliseconds: ms, notApplicable: true))
            } else {
                emit(RuleResult(rule: name, passed: true, reason: nil, milliseconds: ms))
            }
        }
    }

    // MARK: Instances

    /// Creates and starts an instance on the kit's host.
    func start(_ plugin: StandalonePlugin, dataDirectory: String) throws -> (StandalonePlugin.Instance, ConnectorHost) {
        let host = ConnectorHost(name: plugin.manifest.name, kv: kv)
        hosts.append(host)
        do {
            let instance = try plugin.start(dataDirectory: dataDirectory, host: host.hostTable)
            return (instance, host)
        } catch {
            host.setPhase(.destroyed)
            throw error
        }
    }

    /// What a stop showed.
    struct StopReport {
        var error: String?
        /// Effect calls made after `on_stop` returned.
        var lateCalls: [HostCall]
        /// Deliveries neither answered before `on_stop` returned nor handed back by unsubscribing.
        var unanswered: [DeliveryRecord]
    }

    /// Stops an instance as a node does, completing held publishes between `on_stop` and `on_destroy`.
    func stop(_ instance: StandalonePlugin.Instance, _ host: ConnectorHost) -> StopReport {
        host.setPhase(.stopping)
        var failure: String?
        do {
            try instance.stop(afterStop: {
                host.setPhase(.stopped)
                host.releaseAfterStop()
            })
        } catch {
            failure = "\(error)"
            stopFailures.append("\(host.name): \(error)")
        }
        host.setPhase(.destroyed)
        let snapshot = host.snapshot
        let late = snapshot.calls.filter { $0.phase == .stopped && !S.allowedAfterStop.contains($0.function) }
        let unanswered = snapshot.deliveries.values.filter { delivery in
            let answeredInTime = delivery.answers.first.map { $0.phase <= .stopping } ?? false
            let handedBack =
                snapshot.subscriptions[delivery.subscription]?.unsubscribedIn.map { $0 <= .stopping } ?? false
            return !answeredInTime && !handedBack
        }.sorted { $0.id < $1.id }
        return StopReport(error: failure, lateCalls: late, unanswered: unanswered)
    }

    // MARK: Helpers

    /// Polls `condition` every 2 ms until it holds or `timeout` passed.
    @discardableResult
    func waitUntil(_ timeout: Duration, _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.002)
        }
        return true
    }

    func event(_ label: String) -> CloudEvent {
        counter += 1
        let id = "conformance-\(label)-\(tag)-\(counter)"
        return CloudEvent(
            id: id, source: TestEvents.source, type: TestEvents.type, datacontenttype: "application/json",
            data: Array(#"{"n":\#(counter)}"#.utf8))
    }

    /// The topic the configuration names: --topic, else `topic`, else the first of `topics`.
    var expectedTopic: String? {
        if let topic = options.connectorTopic { return topic }
        guard case .object(let pairs) = plugin.manifest.config else { return nil }
        for (key, value) in pairs where key == "topic" {
            if case .string(let topic) = value { return topic }
        }
        for (key, value) in pairs where key == "topics" {
            if case .array(let list) = value, case .string(let topic)? = list.first { return topic }
        }
        return nil
    }

    var isGenerator: Bool { plugin.manifest.provides.contains { $0.capability == S.generatorCapability } }

    /// The max_in_flight the kit honours for a subscription: its own, or the kernel's default of 100.
    func window(_ subscription: SubscriptionRecord) -> Int {
        subscription.maxInFlight == 0 ? 100 : Int(min(subscription.maxInFlight, 10_000))
    }

    static func list(_ items: [String], limit: Int = 5) -> String {
        items.prefix(limit).joined(separator: ", ") + (items.count > limit ? ", … (\(items.count) in all)" : "")
    }

    /// The subscription to deliver to: the one on the expected topic, else the first.
    func target(_ host: ConnectorHost) -> SubscriptionRecord? {
        let open = host.openSubscriptions
        if let topic = expectedTopic, let match = open.first(where: { $0.topic == topic }) { return match }
        return open.first
    }

    // MARK: The run

    func execute(reload: @escaping (String) throws -> StandalonePlugin) throws -> [RuleResult] {
        let (first, hostA) = try start(plugin, dataDirectory: dataDirectory)
        var instanceA: StandalonePlugin.Instance? = first

        // Which role it takes: what it does after start.
        var subscribed = false
        var published = false
        rule(S.actsRule) { [self] in
            waitUntil(options.connectorObserve) {
                !hostA.snapshot.subscriptions.isEmpty || !hostA.snapshot.publishes.isEmpty
            }
            Thread.sleep(forTimeInterval: 0.2)
            let s = hostA.snapshot
            subscribed = !s.subscriptions.isEmpty
            published = !s.publishes.isEmpty
            try check(
                subscribed || published,
                expected: "the connector to subscribe or publish within \(options.connectorObserve) of on_start",
                observed:
                    "neither (host calls: \(Self.list(Array(Set(s.calls.map(\.function))).sorted())); log: \(Self.list(s.logs, limit: 3)))"
            )
            return .passed
        }
        let notSink = "the connector did not subscribe within \(options.connectorObserve) of start: it is not a sink"
        let notSource = "the connector did not publish within \(options.connectorObserve) of start: it is not a source"
        let generatorReason =
            "its manifest provides '\(S.generatorCapability)': it makes its events instead of reading them from an external system, so there is no original a dropped or unfinished event could be taken from again (no position to resume from)"

        // Sink rules on the first instance.
        if subscribed {
            rule(S.sinkTopic) { [self] in
                guard let topic = expectedTopic else {
                    return .notApplicable(
                        "no --topic given and the configuration names no `topic` or `topics`: the kit cannot tell which topic is configured"
                    )
                }
                let topics = hostA.openSubscriptions.map(\.topic)
                try check(
                    topics.contains(topic), expected: "a subscription to its configured topic '\(topic)'",
                    observed: topics.isEmpty ? "no open subscription" : "subscriptions to \(Self.list(topics))")
                return .passed
            }
            rule(S.sinkAnswers) { [self] in try answersExactlyOnce(hostA) }
            rule(S.sinkBackpressure) { [self] in try backpressure(hostA) }
        } else {
            for name in [S.sinkTopic, S.sinkAnswers, S.sinkBackpressure] { notApplicable(name, notSink) }
        }

        // Source rules on the first instance.
        if published {
            rule(S.sourceValid) { [self] in try validEvents(hostA) }
            if isGenerator {
                notApplicable(S.sourceRefused, generatorReason)
            } else {
                rule(S.sourceRefused) { [self] in try refusedOfferedAgain(hostA) }
            }
        } else {
            for name in [S.sourceValid, S.sourceRefused] { notApplicable(name, notSource) }
        }

        // The stop of the first instance, with deliveries outstanding and publishes unfinished.
        var held: [String] = []
        var stopReport: StopReport?
        if hungIn == nil, let instance = instanceA {
            if published {
                hostA.setPolicy { _, _ in .hold }
                waitUntil(options.completionTimeout) { hostA.snapshot.held.count > 0 }
                held = hostA.snapshot.publishes.filter {
                    if case .hold = $0.answer { return true }
                    return false
                }.flatMap(\.ids)
            }
            if subscribed, let sub = target(hostA) {
                for _ in 0..<min(5, window(sub)) { hostA.deliver(event("stop"), to: sub.id) }
            }
            stopReport = stop(instance, hostA)
            instanceA = nil
        }
        func stopRule(_ name: String, what: String) {
            rule(name) {
                guard let report = stopReport else { throw Violation("not run: the first instance was abandoned") }
                if let error = report.error {
                    throw Violation(expected: "on_stop to return PX_OK within the deadline", observed: "\(error)")
                }
                try check(
                    report.lateCalls.isEmpty, expected: "no \(what) after on_stop returned",
                    observed: Self.list(report.lateCalls.map { "\($0.function)" }) + " after it returned")
                return .passed
            }
        }
        if subscribed {
            rule(S.sinkStop) {
                guard let report = stopReport else { throw Violation("not run: the first instance was abandoned") }
                if let error = report.error {
                    throw Violation(expected: "on_stop to return PX_OK within the deadline", observed: "\(error)")
                }
                try check(
                    report.unanswered.isEmpty,
                    expected: "every delivery answered before on_stop returned, or handed back by unsubscribing",
                    observed:
                        "\(report.unanswered.count) left unanswered by then (\(Self.list(report.unanswered.map { "\($0.eventID)\($0.answers.isEmpty ? "" : " answered after on_stop")" })))"
                )
                try check(
                    report.lateCalls.isEmpty, expected: "no ack, nack, publish or subscribe after on_stop returned",
                    observed: Self.list(report.lateCalls.map(\.function)) + " after it returned")
                return .passed
            }
        } else {
            notApplicable(S.sinkStop, notSink)
        }
        if published {
            stopRule(S.sourceStop, what: "publish or other effect")
        } else {
            notApplicable(S.sourceStop, notSource)
        }

        // A second instance on the same data directory and metadata store.
        var hostB: ConnectorHost?
        var instanceB: StandalonePlugin.Instance?
        var restartFailure: String?
        if hungIn == nil, subscribed || (published && !isGenerator) {
            do {
                let (instance, host) = try start(plugin, dataDirectory: dataDirectory)
                instanceB = instance
                hostB = host
            } catch {
                restartFailure = "\(error)"
            }
        }
        if published {
            if isGenerator {
                notApplicable(S.sourceRestart, generatorReason)
            } else {
                rule(S.sourceRestart) { [self] in
                    guard let hostB else {
                        throw Violation(
                            expected: "a new instance to start on the same data directory",
                            observed: restartFailure ?? "the first instance was abandoned")
                    }
                    try check(
                        !held.isEmpty, expected: "a publish in flight when the first instance stopped",
                        observed: "none within \(options.completionTimeout) of the kit holding its completions")
                    let arrived = waitUntil(options.completionTimeout * 2) {
                        Set(held).isSubset(of: Set(hostB.acceptedIDs))
                    }
                    if !arrived {
                        let missing = held.filter { !hostB.acceptedIDs.contains($0) }
                        throw Violation(
                            expected:
                                "the \(held.count) event(s) the host never completed before the stop to be published again by the new instance",
                            observed:
                                "\(Self.list(missing)) not published again within \(options.completionTimeout * 2) (it published \(hostB.acceptedIDs.count) other event(s))"
                        )
                    }
                    return .passed
                }
            }
        } else {
            notApplicable(S.sourceRestart, notSource)
        }
        if subscribed {
            rule(S.sinkRestart) { [self] in
                guard let hostB else {
                    throw Violation(
                        expected: "a new instance to start on the same data directory",
                        observed: restartFailure ?? "the first instance was abandoned")
                }
                try check(
                    waitUntil(options.connectorObserve) { target(hostB) != nil },
                    expected: "the new instance to subscribe",
                    observed: "no subscription within \(options.connectorObserve)")
                guard let sub = target(hostB) else { throw Violation("the subscription vanished") }
                var ids: [UInt64] = []
                for _ in 0..<3 {
                    guard let id = hostB.deliver(event("restart"), to: sub.id) else {
                        throw Violation(expected: "the subscription to stay open", observed: "it was ended")
                    }
                    ids.append(id)
                }
                waitUntil(options.completionTimeout) { ids.allSatisfy { hostB.delivery($0)?.answers.isEmpty == false } }
                let acked = ids.filter { hostB.delivery($0)?.acked == true }
                try check(
                    acked.count == ids.count, expected: "the new instance to acknowledge 3 deliveries",
                    observed:
                        "\(acked.count) acknowledged, \(ids.filter { hostB.delivery($0)?.nacked == true }.count) nacked"
                )
                return .passed
            }
        } else {
            notApplicable(S.sinkRestart, notSink)
        }
        if hungIn == nil, let instance = instanceB, let host = hostB {
            let report = stop(instance, host)
            if !report.lateCalls.isEmpty {
                stopFailures.append(
                    "the second instance called \(Self.list(report.lateCalls.map(\.function))) after on_stop returned")
            }
        }

        if subscribed {
            rule(S.sinkNeverBlocks) { [self] in
                let all = hosts.flatMap { $0.snapshot.deliveries.values }
                let slow = all.filter { $0.duration > options.deliverBound }.sorted { $0.duration > $1.duration }
                try check(
                    !all.isEmpty, expected: "deliveries to time", observed: "none was made")
                try check(
                    slow.isEmpty, expected: "every px_deliver_fn call to return within \(options.deliverBound)",
                    observed:
                        "\(slow.count) of \(all.count) took longer, the longest \(slow.first.map { "\($0.duration)" } ?? "")"
                )
                return .passed
            }
        } else {
            notApplicable(S.sinkNeverBlocks, notSink)
        }

        // The fault configuration: its external system unreachable.
        if !subscribed {
            notApplicable(S.sinkFault, notSink)
        } else if let fault = options.faultConfigJSON {
            rule(S.sinkFault) { [self] in try faultNeverAcks(reload: reload, config: fault) }
        } else {
            notApplicable(
                S.sinkFault,
                "no --fault-config given: give a configuration that points the connector at an unreachable external system (e.g. port 1) to check that it never acknowledges what it could not hand on"
            )
        }

        // Late calls: after every on_destroy, wait a little for calls that must not come.
        if hungIn == nil {
            rule(S.lifecycleRule) { [self] in
                Thread.sleep(forTimeInterval: Double(options.grace.components.attoseconds) / 1e18 + 0.2)
                if !stopFailures.isEmpty {
                    throw Violation(
                        expected: "every instance to stop and be destroyed",
                        observed: stopFailures.joined(separator: "; "))
                }
                let late = hosts.flatMap { host in host.calls(in: [.destroyed]).map { "\($0.function)" } }
                try check(
                    late.isEmpty, expected: "no host call after on_destroy returned",
                    observed: "\(late.count): \(Self.list(late))")
                return .passed
            }
        } else {
            emit(
                RuleResult(
                    rule: S.lifecycleRule, passed: false,
                    reason: "not run: a hook never returned, so the instance was abandoned without on_stop",
                    milliseconds: 0))
        }
        return results
    }
}
