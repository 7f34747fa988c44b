import PlexusCore
import Foundation
import Logging
import PlexusABI
import Synchronization

/// What the kernel offers every plugin through `px_host_api`: logging, metrics, the event path, timers,
/// the registry and storage access. One per kernel; plugins reach it through their `PluginContext`.
public final class HostServices: Sendable {
    public let metrics: MetricsRegistry
    let timers = TimerService()
    let fanout = DirectFanout()
    /// The active registry plugin that registry calls are forwarded to.
    let registry = Mutex<RegistryBinding?>(nil)

    struct RegistryBinding: @unchecked Sendable {
        // Safe: the vtable is a static table in a mapped image (never unmapped) and the instance pointer
        // is only passed back to that plugin, whose registry hooks are thread-safe by contract.
        let vtable: UnsafePointer<px_registry_vtable>
        let instance: UnsafeMutableRawPointer?
        let name: String
    }

    init(metrics: MetricsRegistry) {
        self.metrics = metrics
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
        return UnsafePointer(table)
    }()
}

/// The kernel's version.
public enum PlexusVersion {
    public static let kernel = "0.1.0"
}

// MARK: - The host functions. Each recovers the calling plugin's context from its px_host handle.

/// A completion the plugin passed, with its user pointer, carried to wherever it is called.
private struct Completion<F>: @unchecked Sendable {
    // Safe: the plugin promised (ABI rules) that `user` stays valid until its completion is called and that
    // the function may be called on any thread.
    let fn: F
    let user: UnsafeMutableRawPointer?
}

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
    context.services.metrics.add(name.string, plugin: context.name, delta)
}

private let hostGaugeSet: px_host_gauge_set = { host, name, value in
    guard let context = PluginContext.from(host) else { return }
    context.services.metrics.set(name.string, plugin: context.name, value)
}

private let hostHistogramRecord: px_host_histogram_record = { host, name, value in
    guard let context = PluginContext.from(host) else { return }
    context.services.metrics.record(name.string, plugin: context.name, value)
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
    var copies: [CloudEvent] = []
    copies.reserveCapacity(count)
    for index in 0..<count {
        guard let event = events?[index] else {
            setError(err, "event \(index) of the batch is NULL")
            return PX_ERR_INVALID_ARGUMENT.status
        }
        guard event.pointee.struct_size >= UInt32(MemoryLayout<px_event>.size) else {
            setError(err, "event \(index) has struct_size \(event.pointee.struct_size); ABI 1.0 events are at least \(MemoryLayout<px_event>.size) bytes")
            return PX_ERR_INVALID_ARGUMENT.status
        }
        let copy = CloudEvent(copying: event)
        if let reason = copy.invalidReason {
            setError(err, "event \(index) is not a valid CloudEvent: \(reason)")
            return PX_ERR_INVALID_ARGUMENT.status
        }
        copies.append(copy)
    }
    let first = context.services.fanout.publish(topic: topicName, events: copies)
    context.services.metrics.add("events_published", plugin: context.name, UInt64(count))
    done(user, PX_OK.status, first, px_str(ptr: nil, len: 0))
    return PX_OK.status
}

private let hostSubscribe: px_host_subscribe = { host, spec, outID, err in
    guard let context = PluginContext.from(host), let spec, let deliver = spec.pointee.deliver, let outID else {
        setError(err, "subscribe needs a host handle, a spec with a deliver function, and an out id")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let topic = spec.pointee.topic.string
    guard !topic.isEmpty else {
        setError(err, "subscribe needs a topic")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    var filters: [(String, String)] = []
    if let kvs = spec.pointee.filters {
        for i in 0..<spec.pointee.filter_count { filters.append((kvs[i].key.string, kvs[i].value.string)) }
    }
    let target = Completion(fn: deliver, user: spec.pointee.user)
    outID.pointee = context.services.fanout.subscribe(owner: context.id, topic: topic, filters: filters) { delivery in
        target.fn(target.user, delivery)
    }
    return PX_OK.status
}

private let hostUnsubscribe: px_host_unsubscribe = { host, id in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    return context.services.fanout.unsubscribe(id) ? PX_OK.status : PX_ERR_NOT_FOUND.status
}

private let hostAck: px_host_ack = { host, deliveryID in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    guard context.services.fanout.settle(deliveryID) else { return PX_ERR_NOT_FOUND.status }
    context.services.metrics.add("deliveries_acked", plugin: context.name, 1)
    return PX_OK.status
}

private let hostNack: px_host_nack = { host, deliveryID, action, reason in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    guard action <= PX_NACK_DEAD_LETTER.rawValue else { return PX_ERR_INVALID_ARGUMENT.status }
    guard context.services.fanout.settle(deliveryID) else { return PX_ERR_NOT_FOUND.status }
    context.services.metrics.add("deliveries_nacked", plugin: context.name, 1)
    context.logger.debug("delivery \(deliveryID) rejected: \(reason.string)")
    return PX_OK.status
}

private let hostTimerStart: px_host_timer_start = { host, delay, interval, fn, user, outID, err in
    guard let context = PluginContext.from(host), let fn, let outID else {
        setError(err, "timer_start needs a host handle, a function and an out id")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    let target = Completion(fn: fn, user: user)
    outID.pointee = context.services.timers.start(owner: context.id, delay: delay, interval: interval) { id in
        target.fn(target.user, id)
    }
    return PX_OK.status
}

private let hostTimerCancel: px_host_timer_cancel = { host, id in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    return context.services.timers.cancel(id) ? PX_OK.status : PX_ERR_NOT_FOUND.status
}

/// The registry binding, or an error written to `err`.
private func registryBinding(_ context: PluginContext, _ err: UnsafeMutablePointer<px_error>?) -> HostServices.RegistryBinding? {
    guard let binding = context.services.registry.withLock({ $0 }) else {
        setError(err, "no registry plugin is active on this node")
        return nil
    }
    return binding
}

/// Wraps a plugin's status completion so that the kernel knows it is owed until it runs.
private func owedDone(_ context: PluginContext, _ done: px_done_fn, _ user: UnsafeMutableRawPointer?) -> (px_done_fn, UnsafeMutableRawPointer) {
    context.owe()
    let box = Unmanaged.passRetained(DoneBox(context: context, completion: Completion(fn: done, user: user)))
    let trampoline: px_done_fn = { raw, status, error in
        guard let raw else { return }
        let box = Unmanaged<DoneBox>.fromOpaque(raw).takeRetainedValue()
        box.completion.fn(box.completion.user, status, error)
        box.context.paid()
    }
    return (trampoline, box.toOpaque())
}

private final class DoneBox: Sendable {
    let context: PluginContext
    let completion: Completion<px_done_fn>
    init(context: PluginContext, completion: Completion<px_done_fn>) {
        self.context = context
        self.completion = completion
    }
}

/// Calls a registry hook with an owed completion; undoes the debt when the hook refuses synchronously.
private func forwardDone(
    _ context: PluginContext, _ done: px_done_fn, _ user: UnsafeMutableRawPointer?,
    _ call: (px_done_fn, UnsafeMutableRawPointer) -> px_status
) -> px_status {
    let (trampoline, box) = owedDone(context, done, user)
    let status = call(trampoline, box)
    if status != PX_OK.status {
        Unmanaged<DoneBox>.fromOpaque(box).release()
        context.paid()
    }
    return status
}

private let hostRegistryRegister: px_host_registry_register = { host, instance, done, user, err in
    guard let context = PluginContext.from(host), let instance, let done else {
        setError(err, "registry_register needs a host handle, an instance and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    guard let binding = registryBinding(context, err), let hook = binding.vtable.pointee.on_register else {
        return PX_ERR_UNAVAILABLE.status
    }
    return forwardDone(context, done, user) { hook(binding.instance, instance, $0, $1, err) }
}

private let hostRegistryDeregister: px_host_registry_deregister = { host, service, instanceID, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "registry_deregister needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    guard let binding = registryBinding(context, err), let hook = binding.vtable.pointee.on_deregister else {
        return PX_ERR_UNAVAILABLE.status
    }
    return forwardDone(context, done, user) { hook(binding.instance, service, instanceID, $0, $1, err) }
}

private let hostRegistryLookup: px_host_registry_lookup = { host, service, done, user, err in
    guard let context = PluginContext.from(host), let done else {
        setError(err, "registry_lookup needs a host handle and a completion")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    guard let binding = registryBinding(context, err), let hook = binding.vtable.pointee.on_lookup else {
        return PX_ERR_UNAVAILABLE.status
    }
    context.owe()
    let box = Unmanaged.passRetained(LookupBox(context: context, completion: Completion(fn: done, user: user)))
    let status = hook(binding.instance, service, { raw, status, instances, count, error in
        guard let raw else { return }
        let box = Unmanaged<LookupBox>.fromOpaque(raw).takeRetainedValue()
        box.completion.fn(box.completion.user, status, instances, count, error)
        box.context.paid()
    }, box.toOpaque(), err)
    if status != PX_OK.status {
        box.release()
        context.paid()
    }
    return status
}

private final class LookupBox: Sendable {
    let context: PluginContext
    let completion: Completion<px_lookup_done_fn>
    init(context: PluginContext, completion: Completion<px_lookup_done_fn>) {
        self.context = context
        self.completion = completion
    }
}

private let hostRegistryWatch: px_host_registry_watch = { host, service, fn, user, outID, err in
    guard let context = PluginContext.from(host), fn != nil, outID != nil else {
        setError(err, "registry_watch needs a host handle, a function and an out id")
        return PX_ERR_INVALID_ARGUMENT.status
    }
    guard let binding = registryBinding(context, err), let hook = binding.vtable.pointee.on_watch else {
        return PX_ERR_UNAVAILABLE.status
    }
    return hook(binding.instance, service, fn, user, outID, err)
}

private let hostRegistryUnwatch: px_host_registry_unwatch = { host, id in
    guard let context = PluginContext.from(host) else { return PX_ERR_INVALID_ARGUMENT.status }
    guard let binding = context.services.registry.withLock({ $0 }), let hook = binding.vtable.pointee.on_unwatch else {
        return PX_ERR_UNAVAILABLE.status
    }
    return hook(binding.instance, id)
}

private let hostStorageRead: px_host_storage_read = { host, topic, _, _, _, _, _, err in
    setError(err, "topic '\(topic.string)' has no storage bound on this node; reads need a storage binding")
    return PX_ERR_UNAVAILABLE.status
}
