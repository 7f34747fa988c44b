import Foundation
import PlexusABI
import PlexusKernel
import Synchronization

/// What the registry rules run against: the instance under test, a client for its hooks, and the watches
/// the current rule made (ended when the rule ends).
final class RegistryHarness: Sendable {
    let instance: StandalonePlugin.Instance
    let client: RegistryClient
    let options: ConformanceOptions
    let ledger: CallLedger
    private let watches = Mutex<[WatchHandle]>([])
    private let kvWatches = Mutex<[KVWatchHandle]>([])

    init(plugin: StandalonePlugin, instance: StandalonePlugin.Instance, options: ConformanceOptions, ledger: CallLedger)
        throws
    {
        guard let vtable = plugin.registry else { throw Violation("the plugin has no registry vtable") }
        self.instance = instance
        self.options = options
        self.ledger = ledger
        self.client = RegistryClient(
            vtable: vtable, instance: instance.pointer, ledger: ledger, timeout: options.completionTimeout)
    }

    /// A service name no other rule or run uses: `conformance-<label>-<8 hex digits>`.
    func uniqueName(_ label: String) -> String {
        "conformance-\(label)-\(String(UInt32.random(in: .min ... .max), radix: 16))"
    }

    /// Watches a service for the current rule (unwatched when the rule ends unless `unwatch` was called).
    func watch(_ service: String, dwellMicroseconds: Int = 0) throws -> WatchHandle {
        let watch = try client.watchOK(service, dwellMicroseconds: dwellMicroseconds)
        watches.withLock { $0.append(watch) }
        return watch
    }

    /// Ends a watch; returns what `on_unwatch` returned.
    func unwatch(_ watch: WatchHandle) -> px_status {
        watches.withLock { $0.removeAll { $0.id == watch.id } }
        return client.unwatch(watch)
    }

    /// Watches keys for the current rule (unwatched when the rule ends unless `kvUnwatch` was called).
    func kvWatch(_ prefix: String, from: UInt64) throws -> KVWatchHandle {
        let watch = try client.kvWatchOK(prefix, from: from)
        kvWatches.withLock { $0.append(watch) }
        return watch
    }

    /// Ends a metadata watch; returns what `on_kv_unwatch` returned.
    func kvUnwatch(_ watch: KVWatchHandle) -> px_status {
        kvWatches.withLock { $0.removeAll { $0.id == watch.id } }
        let status = client.kvUnwatch(watch)
        watch.recorder.forget()
        return status
    }

    /// Ends every watch the current rule left.
    func unwatchAll() {
        let left = watches.withLock { all -> [WatchHandle] in
            defer { all = [] }
            return all
        }
        for watch in left { _ = client.unwatch(watch) }
        let kvLeft = kvWatches.withLock { all -> [KVWatchHandle] in
            defer { all = [] }
            return all
        }
        for watch in kvLeft {
            _ = client.kvUnwatch(watch)
            watch.recorder.forget()
        }
    }

    func pause(_ duration: Duration) { Thread.sleep(forTimeInterval: Double(duration.nanoseconds) / 1e9) }
}

/// The registry contract of plexus.h (`px_registry_vtable`), one rule per MUST.
///
/// Every rule works on services of its own (unique names). Errors may be returned or reported through
/// the completion: the completion rule allows both.
enum RegistrySuite {
    static let lifecycleRule = "registry.lifecycle.stop-destroy"

    static let rules: [Rule<RegistryHarness>] =
        [
            rule(
                "registry.register.lookup",
                "a lookup lists exactly the instances registered in that service, every field unchanged", registerLookup
            ),
            rule(
                "registry.lookup.none-is-not-an-error",
                "looking up a service without instances succeeds with zero instances", lookupUnknown),
            rule(
                "registry.register.replace",
                "registering the same service and instance id again replaces the instance", registerReplace),
            rule(
                "registry.deregister.removes",
                "a deregistered instance is no longer listed; the others stay", deregisterRemoves),
            rule(
                "registry.deregister.unknown-not-found",
                "deregistering an instance that is not registered fails with PX_ERR_NOT_FOUND", deregisterUnknown),
            rule(
                "registry.watch.existing-first",
                "a new watch sees a PUT for every live instance first, then the changes", watchExistingFirst),
            rule(
                "registry.watch.changes-in-order",
                "a watch sees every change of its service (PUT, DELETE) in the order it happened, and nothing of other services",
                watchChangesInOrder),
            rule(
                "registry.watch.serialized",
                "callbacks of one watch never run concurrently, even when registrations race", watchSerialized),
            rule(
                "registry.unwatch.stops-callbacks",
                "after on_unwatch returns, the watch's fn is not running and never runs again", unwatchStops),
            rule(
                "registry.ttl.expires",
                "an instance registered with ttl_ms disappears after it, reported as PX_WATCH_DELETE; ttl_ms 0 stays",
                ttlExpires),
            rule(
                "registry.errors.invalid-arguments",
                "a NULL instance, an empty service or instance id, or a NULL watch fn fail with PX_ERR_INVALID_ARGUMENT",
                invalidArguments),
        ] + RegistryKVRules.rules + [
            rule(
                "registry.completion.exactly-once",
                "every hook that returned PX_OK called its completion exactly once (checked over every call of the run)",
                completionExactlyOnce),
            rule(
                "registry.completion.never-after-error",
                "no hook that returned an error called its completion (checked over every call of the run)",
                completionNeverAfterError),
        ]

    /// A rule whose watches end when it ends.
    static func rule(
        _ name: String, _ summary: String, _ body: @escaping @Sendable (RegistryHarness) throws -> Void
    ) -> Rule<RegistryHarness> {
        Rule(name: name, summary: summary) { harness in
            defer { harness.unwatchAll() }
            try body(harness)
        }
    }

    static func run(
        _ plugin: StandalonePlugin, dataDirectory: String, options: ConformanceOptions, progress: (RuleResult) -> Void
    ) throws -> [RuleResult] {
        try Conformance.runSuite(
            rules, plugin: plugin, dataDirectory: dataDirectory, lifecycleRule: lifecycleRule, options: options,
            makeHarness: { instance, ledger in
                try RegistryHarness(plugin: plugin, instance: instance, options: options, ledger: ledger)
            },
            currentInstance: { _, instance in instance }, beforeStop: { $0.unwatchAll() }, progress: progress)
    }

    static func instance(
        _ service: String, _ id: String, address: String = "127.0.0.1:7000", metadata: [(String, String)] = [],
        ttl: UInt64 = 0
    ) -> ServiceRecord {
        ServiceRecord(service: service, instanceID: id, address: address, metadata: metadata, ttlMilliseconds: ttl)
    }

    /// Checks that `listed` holds exactly `expected`, in any order, every field equal.
    static func expectInstances(_ listed: [ServiceRecord], _ expected: [ServiceRecord], _ what: String) throws {
        let got = listed.sorted { $0.instanceID < $1.instanceID }
        let wanted = expected.sorted { $0.instanceID < $1.instanceID }
        try check(
            got == wanted,
            expected:
                "\(what) to list \(wanted.isEmpty ? "no instances" : wanted.map(\.description).joined(separator: ", "))",
            observed: got.isEmpty ? "no instances" : got.map(\.description).joined(separator: ", "))
    }

    /// The events a watch received, as `PUT a, DELETE b`.
    static func show(_ events: [WatchRecorder.Event]) -> String {
        events.isEmpty ? "no events" : events.map(\.description).joined(separator: ", ")
    }

    // MARK: Register, look up, deregister

    static func registerLookup(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("lookup")
        let other = h.uniqueName("lookup-other")
        let a = instance(
            service, "a", address: "127.0.0.1:7001", metadata: [("zone", "z1"), ("weight", "10"), ("version", "1.2.3")])
        let b = instance(service, "b", address: "http://127.0.0.1:7002/päth", metadata: [])
        let x = instance(other, "a", address: "127.0.0.1:7999", metadata: [("zone", "z9")])
        for record in [a, b, x] { try c.registerOK(record) }
        try expectInstances(try c.lookupOK(service), [a, b], "looking up \(service)")
        try expectInstances(try c.lookupOK(other), [x], "looking up \(other) (the same instance id in another service)")
    }

    static func lookupUnknown(_ h: RegistryHarness) throws {
        let service = h.uniqueName("nobody")
        let listed = try h.client.lookupOK(service, "looking up a service nobody registered (none is not an error)")
        try expectInstances(listed, [], "looking up a service nobody registered")
    }

    static func registerReplace(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("replace")
        let first = instance(service, "a", address: "127.0.0.1:7101", metadata: [("zone", "z1")])
        let second = instance(service, "a", address: "127.0.0.1:7102", metadata: [("zone", "z2"), ("new", "yes")])
        try c.registerOK(first)
        try c.registerOK(second, "registering a again with another address and metadata")
        try expectInstances(try c.lookupOK(service), [second], "looking up \(service) after re-registering a")
    }

    static func deregisterRemoves(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("deregister")
        let a = instance(service, "a", address: "127.0.0.1:7201")
        let b = instance(service, "b", address: "127.0.0.1:7202")
        try c.registerOK(a)
        try c.registerOK(b)
        try c.deregisterOK(service: service, id: "a")
        try expectInstances(try c.lookupOK(service), [b], "looking up \(service) after deregistering a")
        try c.deregisterOK(service: service, id: "b")
        try expectInstances(try c.lookupOK(service), [], "looking up \(service) after deregistering both")
    }

    static func deregisterUnknown(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("unknown")
        let notFound = PX_ERR_NOT_FOUND.status
        try c.deregister(service: service, id: "never-registered").expectFailure(
            notFound, "deregistering an instance id nobody registered", timeout: c.timeout)
        try c.registerOK(instance(service, "a"))
        try c.deregisterOK(service: service, id: "a")
        try c.deregister(service: service, id: "a").expectFailure(
            notFound, "deregistering a a second time", timeout: c.timeout)
        try c.registerOK(instance(service, "b"))
        try c.deregister(service: h.uniqueName("elsewhere"), id: "b").expectFailure(
            notFound, "deregistering b from a service it is not registered in", timeout: c.timeout)
        try expectInstances(try c.lookupOK(service), [instance(service, "b")], "looking up \(service) afterwards")
    }

    // MARK: Watch

    static func watchExistingFirst(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("existing")
        let a = instance(service, "a", address: "127.0.0.1:7301", metadata: [("zone", "z1")])
        let b = instance(service, "b", address: "127.0.0.1:7302")
        try c.registerOK(a)
        try c.registerOK(b)
        let watch = try h.watch(service)
        let initial = watch.recorder.wait(for: 2, h.options.completionTimeout)
        let put = UInt32(PX_WATCH_PUT.rawValue)
        let head = initial.prefix(2)
        try check(
            head.count == 2 && head.allSatisfy({ $0.kind == put })
                && Set(head.compactMap { $0.instance?.instanceID }) == ["a", "b"],
            expected: "a PUT for each live instance (a, b) first", observed: show(initial))
        for event in head {
            let wanted = event.instance?.instanceID == "a" ? a : b
            try check(
                event.instance == wanted, expected: "the initial PUT to carry \(wanted)",
                observed: event.instance.map(\.description) ?? "a NULL instance")
        }
        let c3 = instance(service, "c", address: "127.0.0.1:7303")
        try c.registerOK(c3)
        _ = watch.recorder.wait(for: 3, h.options.completionTimeout)
        h.pause(h.options.grace)
        let all = watch.recorder.received
        try check(
            all.count == 3 && all[2].kind == put && all[2].instance == c3,
            expected: "PUT a, PUT b (in any order), then PUT c after registering c", observed: show(all))
    }

    static func watchChangesInOrder(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("changes")
        let other = h.uniqueName("changes-other")
        let watch = try h.watch(service)
        let bystander = try h.watch(other)
        h.pause(h.options.grace)
        try check(
            watch.recorder.received.isEmpty, expected: "no events from a watch on a service without instances",
            observed: show(watch.recorder.received))
        let a1 = instance(service, "a", address: "127.0.0.1:7401", metadata: [("v", "1")])
        let b = instance(service, "b", address: "127.0.0.1:7402")
        let a2 = instance(service, "a", address: "127.0.0.1:7403", metadata: [("v", "2")])
        let c3 = instance(service, "c", address: "127.0.0.1:7404")
        try c.registerOK(a1)
        try c.registerOK(b)
        try c.registerOK(a2, "registering a again (a change)")
        try c.deregisterOK(service: service, id: "b")
        try c.registerOK(c3)
        try c.deregisterOK(service: service, id: "a")
        let put = UInt32(PX_WATCH_PUT.rawValue)
        let delete = UInt32(PX_WATCH_DELETE.rawValue)
        let expected: [(UInt32, String, ServiceRecord?)] = [
            (put, "a", a1), (put, "b", b), (put, "a", a2), (delete, "b", nil), (put, "c", c3), (delete, "a", nil),
        ]
        _ = watch.recorder.wait(for: expected.count, h.options.completionTimeout)
        h.pause(h.options.grace)
        let got = watch.recorder.received
        let wanted = "PUT a, PUT b, PUT a (changed), DELETE b, PUT c, DELETE a"
        try check(got.count == expected.count, expected: wanted, observed: show(got))
        for (index, (event, (kind, id, record))) in zip(got, expected).enumerated() {
            try check(
                event.kind == kind && event.instance?.instanceID == id && (record == nil || event.instance == record),
                expected:
                    "\(wanted); event #\(index + 1) to be \(kind == put ? "PUT" : "DELETE") \(record?.description ?? id)",
                observed:
                    "\(show(got)); event #\(index + 1) was \(event.kindName) \(event.instance?.description ?? "(no instance)")"
            )
        }
        try check(
            bystander.recorder.received.isEmpty, expected: "no events for a watch on another service",
            observed: show(bystander.recorder.received))
    }

    static func watchSerialized(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("serialized")
        let watch = try h.watch(service, dwellMicroseconds: 200)
        let threads = 4
        let each = 25
        try RuleRunner.concurrently(threads, timeout: h.options.completionTimeout * 4) { t in
            for i in 0..<each { try c.registerOK(instance(service, "t\(t)-\(i)")) }
        }
        let got = watch.recorder.wait(for: threads * each, h.options.completionTimeout)
        try check(
            !watch.recorder.didOverlap, expected: "callbacks of one watch never to run concurrently",
            observed: "two callbacks of the watch running at the same time")
        let ids = Set(got.compactMap { $0.instance?.instanceID })
        try check(
            got.count == threads * each && got.allSatisfy({ $0.kind == UInt32(PX_WATCH_PUT.rawValue) })
                && ids.count == threads * each,
            expected: "\(threads * each) PUTs, one per registration",
            observed: "\(got.count) events for \(ids.count) instances")
    }

    static func unwatchStops(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("unwatch")
        let watch = try h.watch(service, dwellMicroseconds: 100)
        // Registrations keep coming from another thread while the watch ends.
        let stop = Atomic<Bool>(false)
        let failure = Mutex<(any Error)?>(nil)
        let finished = DispatchSemaphore(value: 0)
        let writer = Thread {
            var i = 0
            while !stop.load(ordering: .relaxed) {
                do {
                    try c.registerOK(instance(service, "u\(i)"))
                } catch {
                    failure.withLock { $0 = error }
                    break
                }
                i += 1
            }
            finished.signal()
        }
        writer.start()
        var joined = false
        func join() {
            guard !joined else { return }
            stop.store(true, ordering: .relaxed)
            finished.wait()
            joined = true
        }
        defer { join() }
        let seen = watch.recorder.wait(for: 10, h.options.completionTimeout)
        if let error = failure.withLock({ $0 }) { throw error }
        try check(
            seen.count >= 10, expected: "PUTs for the instances registered while watching", observed: show(seen))
        let status = h.unwatch(watch)
        let running = watch.recorder.isRunning
        try check(
            status == PX_OK.status, expected: "on_unwatch of a live watch to return PX_OK", observed: statusName(status)
        )
        try check(
            !running, expected: "fn not to be running once on_unwatch returned", observed: "a callback still running")
        h.pause(.milliseconds(50))
        join()
        try c.registerOK(instance(service, "after-unwatch"))
        h.pause(h.options.grace)
        try check(
            watch.recorder.lateCalls == 0, expected: "no callback after on_unwatch returned",
            observed: "\(watch.recorder.lateCalls) callback(s) afterwards")
    }

    static func ttlExpires(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("ttl")
        let ttl = h.options.ttlMilliseconds
        let watch = try h.watch(service)
        let ephemeral = instance(service, "ephemeral", address: "127.0.0.1:7501", ttl: ttl)
        let lasting = instance(service, "lasting", address: "127.0.0.1:7502")
        let registered = ContinuousClock.now
        try c.registerOK(ephemeral)
        try c.registerOK(lasting)
        let early = try c.lookupOK(service)
        if ContinuousClock.now - registered < .milliseconds(Int(ttl)) {
            try check(
                early.contains { $0.instanceID == "ephemeral" },
                expected: "ephemeral (ttl_ms \(ttl)) to be listed before its TTL passed",
                observed: "not listed \((ContinuousClock.now - registered).wholeMilliseconds) ms after registering")
        }
        let deadline = registered + .milliseconds(Int(ttl)) + h.options.ttlSlack
        var listed = early
        while listed.contains(where: { $0.instanceID == "ephemeral" }), ContinuousClock.now < deadline {
            h.pause(.milliseconds(25))
            listed = try c.lookupOK(service)
        }
        try check(
            !listed.contains { $0.instanceID == "ephemeral" },
            expected: "ephemeral (ttl_ms \(ttl)) to expire within \(ttl) ms + \(h.options.ttlSlack)",
            observed: "still listed after \((ContinuousClock.now - registered).wholeMilliseconds) ms")
        try check(
            listed.contains { $0.instanceID == "lasting" }, expected: "lasting (ttl_ms 0) to stay registered",
            observed: "not listed")
        let delete = UInt32(PX_WATCH_DELETE.rawValue)
        var events = watch.recorder.received
        while !events.contains(where: { $0.kind == delete }), ContinuousClock.now < deadline + .seconds(1) {
            h.pause(.milliseconds(5))
            events = watch.recorder.received
        }
        try check(
            events.contains { $0.kind == delete && $0.instance?.instanceID == "ephemeral" },
            expected: "the expiry of ephemeral reported to the watch as DELETE ephemeral", observed: show(events))
        try check(
            !events.contains { $0.kind == delete && $0.instance?.instanceID == "lasting" },
            expected: "no DELETE for lasting", observed: show(events))
    }

    // MARK: Errors

    static func invalidArguments(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("invalid")
        let invalid = PX_ERR_INVALID_ARGUMENT.status
        let t = c.timeout
        try c.register(nil).expectFailure(invalid, "on_register with a NULL instance", timeout: t)
        try c.register(instance("", "a")).expectFailure(invalid, "on_register with an empty service", timeout: t)
        try c.register(instance(service, "")).expectFailure(
            invalid, "on_register with an empty instance_id", timeout: t)
        try c.deregister(service: "", id: "a").expectFailure(
            invalid, "on_deregister with an empty service", timeout: t)
        try c.deregister(service: service, id: "").expectFailure(
            invalid, "on_deregister with an empty instance_id", timeout: t)
        try c.lookup("").expectFailure(invalid, "on_lookup with an empty service", timeout: t)
        for (label, emptyService, nullFunction) in [
            ("on_watch with an empty service", true, false), ("on_watch with a NULL fn", false, true),
        ] {
            let (status, message, watch) = c.watch(emptyService ? "" : service, nullFunction: nullFunction)
            if status == PX_OK.status { _ = c.unwatch(watch) }
            try check(
                status == invalid, expected: "\(label) to fail with PX_ERR_INVALID_ARGUMENT",
                observed: "\(statusName(status))\(CallRecord.reason(message))")
        }
        try expectInstances(try c.lookupOK(service), [], "looking up \(service) after the refused calls")
    }

    // MARK: Completions

    static func completionExactlyOnce(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("exactly-once")
        for call in [
            c.register(instance(service, "a")), c.lookup(service), c.deregister(service: service, id: "a"),
        ] where call.returnedStatus == PX_OK.status {
            _ = call.wait(h.options.completionTimeout)
        }
        h.pause(h.options.grace)
        if let problems = CompletionAudit.exactlyOnce(h.ledger.records) { throw problems }
    }

    static func completionNeverAfterError(_ h: RegistryHarness) throws {
        let c = h.client
        let service = h.uniqueName("after-error")
        for call in [
            c.deregister(service: service, id: "never-registered"), c.register(nil), c.lookup(""),
            c.deregister(service: "", id: ""),
        ] where call.returnedStatus == PX_OK.status {
            _ = call.wait(h.options.completionTimeout)
        }
        h.pause(h.options.grace)
        if let problems = CompletionAudit.neverAfterError(h.ledger.records) { throw problems }
    }
}
