import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization

/// What the kernel offers every plugin through `px_host_api`: logging, metrics, the event path, timers,
/// the registry and storage access. One per kernel; plugins reach it through their `PluginContext`.
public final class HostServices: Sendable {
    public let metrics: MetricsRegistry
    let timers = TimerService()
    /// The active registry plugin that registry calls are forwarded to.
    let registry = Mutex<RegistryBinding?>(nil)
    /// Registry completions the kernel owes plugins, by token.
    let owed = OwedCompletions.shared
    /// Registry watches by id, with the plugin that made them (cancelled when it goes).
    let watches = Mutex<[UInt64: ObjectIdentifier]>([:])
    /// Metadata watches (`kv_watch`, ABI 1.4) by id, with the plugin that made them (cancelled when it goes).
    let kvWatches = Mutex<[UInt64: ObjectIdentifier]>([:])
    /// Instances plugins registered with a TTL, renewed by the kernel until deregistered (ABI 1.4).
    let leases = RegistryLeases()

    /// Listening sockets owned for protocol plugins (`listen`, ABI 1.2).
    let listeners = ListenerTable()

    /// The most events one publish may carry.
    static let maxBatch = 1 << 20

    final class RegistryBinding: @unchecked Sendable {
        // Safe: the vtable is a static table in a mapped image (never unmapped), the instance pointer is
        // only passed back to that plugin, whose registry hooks are thread-safe by contract, and `calls`
        // is atomic.
        let vtable: UnsafePointer<px_registry_vtable>
        let instance: UnsafeMutableRawPointer?
        let name: String
        /// Registry hooks running now; the kernel waits for none before stopping the plugin.
        let calls = Atomic<Int>(0)

        init(vtable: UnsafePointer<px_registry_vtable>, instance: UnsafeMutableRawPointer?, name: String) {
            self.vtable = vtable
            self.instance = instance
            self.name = name
        }
    }

    /// Runs `body` with the bound registry, counted as a call in flight; `nil` when none is bound.
    func withRegistry<R>(_ body: (RegistryBinding) -> R) -> R? {
        guard
            let binding = registry.withLock({ binding -> RegistryBinding? in
                binding?.calls.add(1, ordering: .relaxed)
                return binding
            })
        else { return nil }
        defer { binding.calls.subtract(1, ordering: .releasing) }
        return body(binding)
    }

    /// Unbinds the registry plugin `name` and waits (until `deadline`) for its hooks in flight.
    func unbindRegistry(_ name: String, until deadline: ContinuousClock.Instant) -> Bool {
        guard
            let binding = registry.withLock({ binding -> RegistryBinding? in
                guard binding?.name == name else { return nil }
                defer { binding = nil }
                return binding
            })
        else { return true }
        while binding.calls.load(ordering: .acquiring) > 0 {
            if ContinuousClock.now >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.001)
        }
        return true
    }

    /// Releases what a stopping plugin instance left with the host (timers, subscriptions, registry watches)
    /// and refuses it new ones. `wait: false` for an abandoned instance, whose callbacks may never return.
    func release(owner: ObjectIdentifier, wait: Bool) {
        timers.cancelAll(owner: owner, wait: wait)
        leases.forgetAll(owner: owner)
        router.engine.unsubscribeAll(owner: owner, wait: wait)
        unwatchAll(owner: owner)
    }

    /// Cancels the registry watches an owner left.
    func unwatchAll(owner: ObjectIdentifier) {
        let ids = watches.withLock { all in
            let mine = all.filter { $0.value == owner }.map(\.key)
            for id in mine { all[id] = nil }
            return mine
        }
        for id in ids {
            _ = withRegistry { binding in binding.vtable.pointee.on_unwatch?(binding.instance, id) }
        }
        let kvIDs = kvWatches.withLock { all in
            let mine = all.filter { $0.value == owner }.map(\.key)
            for id in mine { all[id] = nil }
            return mine
        }
        for id in kvIDs {
            _ = withRegistry { binding in binding.vtable.pointee.on_kv_unwatch?(binding.instance, id) }
        }
    }

    /// The router and delivery engine: every publish goes to the storage bound to its topic.
    let router: Router

    init(
        metrics: MetricsRegistry, topics: TopicConfig = TopicConfig(), clock: any DeliveryClock = SystemDeliveryClock(),
        tracing: KernelTracing = .off
    ) {
        self.metrics = metrics
        self.router = Router(config: topics, clock: clock, metrics: metrics, tracing: tracing)
    }

    /// The table handed to every plugin; built once per process and never freed.
    nonisolated(unsafe) static let api: UnsafePointer<px_host_api> = {
        let table = UnsafeMutablePointer<px_host_api>.allocate(capacity: 1)
        table.initialize(to: px_host_api())
        table.pointee.struct_size = UInt32(MemoryLayout<px_host_api>.size)
        table.pointee.abi_major = UInt16(PX_ABI_VERSION_MAJOR)
        table.pointee.abi_minor = UInt16(PX_ABI_VERSION_MINOR)
        table.pointee.kernel_version = UnsafePointer(strdup(PlexusVersion.kernel))
        table.pointee.log = hostLog
        table.pointee.counter_add = hostCounterAdd
        table.pointee.gauge_set = hostGaugeSet
        table.pointee.histogram_record = hostHistogramRecord
        table.pointee.publish = hostPublish
        table.pointee.subscribe = hostSubscribe
        table.pointee.unsubscribe = hostUnsubscribe
        table.pointee.ack = hostAck
        table.pointee.nack = hostNack
        table.pointee.timer_start = hostTimerStart
        table.pointee.timer_cancel = hostTimerCancel
        table.pointee.registry_register = hostRegistryRegister
        table.pointee.registry_deregister = hostRegistryDeregister
        table.pointee.registry_lookup = hostRegistryLookup
        table.pointee.registry_watch = hostRegistryWatch
        table.pointee.registry_unwatch = hostRegistryUnwatch
        table.pointee.storage_read = hostStorageRead
        table.pointee.run = hostRun
        table.pointee.metric_create = hostMetricCreate
        table.pointee.metric_record = hostMetricRecord
        table.pointee.listen = hostListen
        installMetadataStore(table)
        return UnsafePointer(table)
    }()
}

/// The kernel's version.
public enum PlexusVersion {
    public static let kernel = "0.1.0"
}

// MARK: - The host functions. Each recovers the calling plugin's context from its px_host handle.

func setError(_ err: UnsafeMutablePointer<px_error>?, _ text: String) {
    text.withCString { px_error_set(err, $0) }
}

private let hostLog: px_host_log = { host, level, message in
    guard let context = PluginContext.from(host) else { return }
    let logLevel: Logger.Level
    switch Int(level) {
    case Int(PX_LOG_TRACE.rawValue): logLevel = .trace
    case Int(PX_LOG_DEBUG.rawValue): logLevel = .debug
    case Int(PX_LOG_INFO.rawValue): logLevel = .info
    case Int(PX_LOG_NOTICE.rawValue): logLevel = .notice
    case Int(PX_LOG_WARNING.rawValue): logLevel = .warning
    case Int(PX_LOG_ERROR.rawValue): logLevel = .error
    default: logLevel = .critical
    }
    context.logger.log(level: logLevel, "\(message.string)")
}

private let hostCounterAdd: px_host_counter_add = { host, name, delta in
    guard let context = PluginContext.from(host) else { return }
    context.metrics.add(name.string, delta)
}

private let hostGaugeSet: px_host_gauge_set = { host, name, value in
    guard let context = PluginContext.from(host) else { return }
    context.metrics.set(name.string, value)
}

private let hostHistogramRecord: px_host_histogram_record = { host, name, value in
    guard let context = PluginContext.from(host) else { return }
    context.metrics.record(name.string, value)
}

/// The status a host function returns for a thrown error, its text written to `err`: a refusal's own status,
/// `otherwise` for anything else.
private func refused(_ error: any Error, _ err: UnsafeMutablePointer<px_error>?, otherwise: px_status) -> px_status {
    if let refusal = error as? Router.Refusal {
        setError(err, refusal.message)
        return refusal.status
    }
    setError(err, "\(error)")
    return otherwise
}

/// A full-size copy of a struct a plugin passed, the fields its size does not cover zero; `nil` (with the
/// reason in `err`) when the kernel does not accept its size.
private func widened<T>(
    _ given: UnsafePointer<T>, _ name: String, zero: T, what: String, _ err: UnsafeMutablePointer<px_error>?
) -> T? {
    let size = UnsafeRawPointer(given).load(as: UInt32.self)
    if let problem = ABIStruct.sizeProblem(size, of: name, known: MemoryLayout<T>.size, what: what) {
        setError(err, problem)
        return nil
    }
    return ABIStruct.copy(UnsafeRawPointer(given), size: Int(size), zero: zero)
}

private let hostRun: px_host_run = { host, fn, user, err in
    guard PluginContext.from(host) != nil, let fn else {
        setError(err, "run needs a host handle and a work function")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let work = Completion(fn: fn, user: user)
    KernelPool.run { work.fn(work.user) }
    return PX_OK.status
}

private let hostMetricCreate: px_host_metric_create = { host, spec, out, err in
    guard let context = PluginContext.from(host), let spec, let out else {
        setError(err, "metric_create needs a host handle, a spec and an out pointer")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    guard let full = widened(spec, "px_metric_spec", zero: px_metric_spec(), what: "the metric spec", err) else {
        return PX_ERR_INVALID_ARGUMENT.status
    }
    do {
        let handle = try context.metricHandle(full)
        out.pointee = OpaquePointer(Unmanaged.passUnretained(handle).toOpaque())
        return PX_OK.status
    } catch {
        return refused(error, err, otherwise: PX_ERR_INVALID_ARGUMENT.status)
    }
}

private let hostMetricRecord: px_host_metric_record = { metric, value in
    guard let metric else { return }
    Unmanaged<PluginMetric>.fromOpaque(UnsafeRawPointer(metric)).takeUnretainedValue().record(value)
}

private let hostListen: px_host_listen = { host, address, port, backlog, out, err in
    guard let context = PluginContext.from(host), let out else {
        setError(err, "listen needs a host handle and an out pointer")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    do throws(ListenerTable.Refusal) {
        out.pointee = try context.services.listeners.listen(
            plugin: context.name, requester: context.id, host: address.string, port: Int(port),
            backlog: Int(backlog))
        return PX_OK.status
    } catch {
        setError(err, error.description)
        return error.status
    }
}

private let hostPublish: px_host_publish = { host, topic, events, count, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "publish needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let topicName = topic.string
    guard !topicName.isEmpty else {
        setError(err, "publish needs a topic")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    guard count >= 0, count <= HostServices.maxBatch, events != nil || count == 0 else {
        setError(
            err,
            "a batch holds 0 to \(HostServices.maxBatch) events and needs an array unless empty; got count \(count)")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    // The caller's events are checked where they lie and handed on as they are: no CloudEvent is made.
    var smaller = false
    for index in 0..<count {
        guard let event = events?[index] else {
            setError(err, "event \(index) of the batch is NULL")
            return PX_ERR_INVALID_ARGUMENT.status
        }
        let size = event.pointee.struct_size
        if let problem = ABIStruct.sizeProblem(
            size, of: "px_event", known: MemoryLayout<px_event>.size, what: "event \(index)")
        {
            setError(err, problem)
            return PX_ERR_INVALID_ARGUMENT.status
        }
        smaller = smaller || Int(size) < MemoryLayout<px_event>.size
    }
    // Events of an older, smaller px_event (none is published yet) are widened first, so that the storage
    // and the checks below never read past their end.
    let widened: [px_event] =
        smaller
        ? (0..<count).map {
            ABIStruct.copy(events![$0]!, size: Int(events![$0]!.pointee.struct_size), zero: px_event())
        }
        : []
    return widened.withUnsafeBufferPointer { full -> px_status in
        let pointers = UnsafeMutableBufferPointer<UnsafePointer<px_event>?>.allocate(capacity: smaller ? count : 0)
        defer { pointers.deallocate() }
        if smaller { for index in 0..<count { pointers[index] = full.baseAddress! + index } }
        let batch = smaller ? UnsafeBufferPointer(pointers) : UnsafeBufferPointer(start: events, count: count)
        for (index, event) in batch.enumerated() {
            if let reason = EventCheck.invalidReason(event!) {
                setError(err, "event \(index) is not a valid CloudEvent: \(reason)")
                return PX_ERR_INVALID_ARGUMENT.status
            }
        }
        context.owe()
        let target = Completion(fn: done, user: user)
        let router = context.services.router
        // Tracing off (the default): one check per batch, nothing per event.
        let spans =
            router.tracing.tracer == nil
            ? nil : router.tracing.publishing(topic: topicName, producer: context.name, events: batch)
        router.publish(topic: topicName, events: batch, spans: spans) { result in
            switch result {
            case .success(let first):
                context.published.increment(by: UInt64(count))
                target.fn(target.user, PX_OK.status, first, px_str(ptr: nil, len: 0))
            case .failure(let refusal):
                withPXStr(refusal.message) { target.fn(target.user, refusal.status, 0, $0) }
            }
            context.paid()
        }
        return PX_OK.status
    }
}

private let hostSubscribe: px_host_subscribe = { host, given, outID, err in
    guard let context = PluginContext.from(host), let given, let outID else {
        setError(err, "subscribe needs a host handle, a spec and an out id")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    // Read through a full-size copy: an older plugin's smaller spec has the newer fields zero (the default).
    guard
        var full = widened(
            given, "px_subscription_spec", zero: px_subscription_spec(), what: "the subscription spec", err)
    else {
        return PX_ERR_INVALID_ARGUMENT.status
    }
    return withUnsafePointer(to: &full) { spec in subscribe(context, spec, outID, err) }
}

private func subscribe(
    _ context: PluginContext, _ spec: UnsafePointer<px_subscription_spec>, _ outID: UnsafeMutablePointer<UInt64>,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    guard let deliver = spec.pointee.deliver else {
        setError(err, "the subscription spec has no deliver function")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let topic = spec.pointee.topic.string
    guard !topic.isEmpty else {
        setError(err, "subscribe needs a topic")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let filterCount = spec.pointee.filter_count
    guard filterCount >= 0, filterCount <= 64, spec.pointee.filters != nil || filterCount == 0 else {
        setError(err, "a subscription has 0 to 64 filters; got filter_count \(filterCount)")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    var filters: [(String, String)] = []
    if let kvs = spec.pointee.filters {
        for i in 0..<filterCount { filters.append((kvs[i].key.string, kvs[i].value.string)) }
    }
    let target = Completion(fn: deliver, user: spec.pointee.user)
    do {
        let policy = try DeliveryPolicy(spec: spec.pointee)
        outID.pointee = try context.services.router.engine.subscribe(
            owner: context.id, ownerName: context.name, spec: spec.pointee, policy: policy, filters: filters
        ) { delivery in
            target.fn(target.user, delivery)
        }
        return PX_OK.status
    } catch {
        return refused(error, err, otherwise: PX_ERR_INVALID_ARGUMENT.status)
    }
}

private let hostUnsubscribe: px_host_unsubscribe = { host, id in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    return context.services.router.engine.unsubscribe(id, owner: context.id) ? PX_OK.status : PX_ERR_NOT_FOUND.status
}

private let hostAck: px_host_ack = { host, deliveryID in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    guard DeliveryEngine.owns(deliveryID) else { return PX_ERR_NOT_FOUND.status }
    return context.services.router.engine.ack(deliveryID, owner: context.id) ? PX_OK.status : PX_ERR_NOT_FOUND.status
}

private let hostNack: px_host_nack = { host, deliveryID, action, reason in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    guard action <= PX_NACK_DEAD_LETTER.rawValue else { return PX_ERR_INVALID_ARGUMENT.status }
    guard DeliveryEngine.owns(deliveryID) else { return PX_ERR_NOT_FOUND.status }
    let settled = context.services.router.engine.nack(
        deliveryID, owner: context.id, deadLetter: action == PX_NACK_DEAD_LETTER.rawValue, reason: reason.string)
    return settled ? PX_OK.status : PX_ERR_NOT_FOUND.status
}

private let hostTimerStart: px_host_timer_start = { host, delay, interval, fn, user, outID, err in
    guard let context = PluginContext.from(host), let fn, let outID else {
        setError(err, "timer_start needs a host handle, a function and an out id")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let target = Completion(fn: fn, user: user)
    guard
        let id = context.services.timers.start(
            owner: context.id, delay: delay, interval: interval,
            fire: { id in
                target.fn(target.user, id)
            })
    else {
        setError(err, "the plugin is stopping; it may not start timers")
        return PX_ERR_FAILED_PRECONDITION.status
    }
    outID.pointee = id
    return PX_OK.status
}

private let hostTimerCancel: px_host_timer_cancel = { host, id in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    return context.services.timers.cancel(id, owner: context.id) ? PX_OK.status : PX_ERR_NOT_FOUND.status
}

// MARK: Registry forwarding

/// Completions the kernel holds for plugins while a registry plugin works, by token. The token, not a
/// pointer, is what the registry plugin gets as `user`: a completion called twice, or called although its
/// hook returned an error, finds no entry and is ignored instead of freeing anything twice.
final class OwedCompletions: Sendable {
    enum Kind {
        case done(Completion<px_done_fn>)
        case lookup(Completion<px_lookup_done_fn>)
        case kvGet(Completion<px_kv_get_done_fn>)
        case kvWrite(Completion<px_kv_write_done_fn>)
        case kvList(Completion<px_kv_list_done_fn>)
    }

    struct Entry: @unchecked Sendable {
        // Safe: see Completion.
        let context: PluginContext
        let kind: Kind
    }

    /// One table for the process: tokens must be unique across every kernel in it (tests run several).
    static let shared = OwedCompletions()

    private let table = TokenTable<Entry>()

    func add(_ entry: Entry) -> UnsafeMutableRawPointer? {
        entry.context.owe()
        return table.add(entry)
    }

    /// Takes the entry for a token once; `nil` when it was already taken.
    func take(_ user: UnsafeMutableRawPointer?) -> Entry? { table.take(user) }

    /// Undoes `add` when the hook refused synchronously (unless the completion already ran).
    func cancel(_ user: UnsafeMutableRawPointer?) {
        if let entry = take(user) { entry.context.paid() }
    }
}

/// A completion the plugin passed, with its user pointer, carried to wherever it is called.
struct Completion<F>: @unchecked Sendable {
    // Safe: the plugin promised (ABI rules) that `user` stays valid until its completion is called and that
    // the function may be called on any thread.
    let fn: F
    let user: UnsafeMutableRawPointer?
}

let registryDone: px_done_fn = { user, status, error in
    guard let entry = OwedCompletions.shared.take(user), case .done(let c) = entry.kind else { return }
    c.fn(c.user, status, error)
    entry.context.paid()
}

private let registryLookupDone: px_lookup_done_fn = { user, status, instances, count, error in
    guard let entry = OwedCompletions.shared.take(user), case .lookup(let c) = entry.kind else { return }
    c.fn(c.user, status, instances, count, error)
    entry.context.paid()
}

/// Forwards a registry call with a status completion, owed until it runs.
func forward(
    _ context: PluginContext, _ kind: OwedCompletions.Kind, _ err: UnsafeMutablePointer<px_error>?,
    _ call: (HostServices.RegistryBinding, UnsafeMutableRawPointer?) -> px_status
) -> px_status {
    let services = context.services
    let status = services.withRegistry { binding -> px_status in
        let token = services.owed.add(.init(context: context, kind: kind))
        let status = call(binding, token)
        if status != PX_OK.status { services.owed.cancel(token) }
        return status
    }
    guard let status else {
        setError(err, "no registry plugin is active on this node")
        return PX_ERR_UNAVAILABLE.status
    }
    return status
}

private let hostRegistryRegister: px_host_registry_register = { host, instance, done, user, err in
    guard let context = PluginContext.from(host), let instance, let done else {
        setError(err, "registry_register needs a host handle, an instance and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    // The registry plugin gets a full-size instance, whatever size the caller's was.
    guard
        var full = widened(
            instance, "px_service_instance", zero: px_service_instance(), what: "the service instance", err)
    else {
        return PX_ERR_INVALID_ARGUMENT.status
    }
    full.struct_size = UInt32(MemoryLayout<px_service_instance>.size)
    let status = withUnsafePointer(to: &full) { instance in
        forward(context, .done(Completion(fn: done, user: user)), err) { binding, token in
            binding.vtable.pointee.on_register?(binding.instance, instance, registryDone, token, err)
                ?? PX_ERR_UNSUPPORTED.status
        }
    }
    // Registered with a TTL: the kernel renews it until the plugin deregisters it or stops (ABI 1.4).
    if status == PX_OK.status {
        context.services.leases.registered(full, by: context)
    }
    return status
}

private let hostRegistryDeregister: px_host_registry_deregister = { host, service, instanceID, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "registry_deregister needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let status = forward(context, .done(Completion(fn: done, user: user)), err) { binding, token in
        binding.vtable.pointee.on_deregister?(binding.instance, service, instanceID, registryDone, token, err)
            ?? PX_ERR_UNSUPPORTED.status
    }
    if status == PX_OK.status || status == PX_ERR_NOT_FOUND.status {
        context.services.leases.deregistered(service: service.string, instanceID: instanceID.string, by: context)
    }
    return status
}

private let hostRegistryLookup: px_host_registry_lookup = { host, service, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "registry_lookup needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    return forward(context, .lookup(Completion(fn: done, user: user)), err) { binding, token in
        binding.vtable.pointee.on_lookup?(binding.instance, service, registryLookupDone, token, err)
            ?? PX_ERR_UNSUPPORTED.status
    }
}

private let hostRegistryWatch: px_host_registry_watch = { host, service, fn, user, outID, err in
    guard let context = PluginContext.from(host), fn != nil, let outID else {
        setError(err, "registry_watch needs a host handle, a function and an out id")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let status = context.services.withRegistry { binding -> px_status in
        let status =
            binding.vtable.pointee.on_watch?(binding.instance, service, fn, user, outID, err)
            ?? PX_ERR_UNSUPPORTED.status
        if status == PX_OK.status {
            let id = outID.pointee
            context.services.watches.withLock { $0[id] = context.id }
        }
        return status
    }
    guard let status else {
        setError(err, "no registry plugin is active on this node")
        return PX_ERR_UNAVAILABLE.status
    }
    return status
}

private let hostRegistryUnwatch: px_host_registry_unwatch = { host, id in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    let mine = context.services.watches.withLock { all -> Bool in
        guard all[id] == context.id else { return false }
        all[id] = nil
        return true
    }
    guard mine else { return PX_ERR_NOT_FOUND.status }
    return context.services.withRegistry { binding in
        binding.vtable.pointee.on_unwatch?(binding.instance, id) ?? PX_ERR_UNSUPPORTED.status
    } ?? PX_ERR_UNAVAILABLE.status
}

private let hostStorageRead: px_host_storage_read = { host, topic, from, maxRecords, maxBytes, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "storage_read needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    guard maxRecords > 0 else {
        setError(err, "storage_read needs max_records of at least 1")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let target: Router.OpenTopic
    do {
        target = try context.services.router.stream(for: topic.string, create: false)
    } catch {
        return refused(error, err, otherwise: PX_ERR_INTERNAL.status)
    }
    context.owe()
    let completion = Completion(fn: done, user: user)
    target.binding.read(target.stream, from: from, maxRecords: min(maxRecords, 10_000), maxBytes: max(maxBytes, 1)) {
        result in
        defer { context.paid() }
        switch result {
        case .success(let batch):
            // The records go to the reader as the storage (or the kernel's one copy) laid them out.
            let pointers = UnsafeMutablePointer<UnsafePointer<px_record>?>.allocate(capacity: max(batch.count, 1))
            defer { pointers.deallocate() }
            for index in 0..<batch.count { pointers[index] = batch.record(at: index) }
            withExtendedLifetime(batch) {
                completion.fn(
                    completion.user, PX_OK.status, pointers, batch.count, batch.nextOffset, px_str(ptr: nil, len: 0))
            }
        case .failure(let failure):
            withPXStr(failure.message) { completion.fn(completion.user, failure.status, nil, 0, from, $0) }
        }
    }
    return PX_OK.status
}
