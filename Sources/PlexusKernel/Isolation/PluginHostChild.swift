import Foundation
import PlexusABI
import PlexusCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The child side of process isolation: `plexus plugin-host --serve FD` maps one plugin image, runs the hooks
/// the kernel asks for over the socket `FD`, and gives the plugin a `px_host_api` whose every function becomes
/// a message to the kernel (`run` alone stays local: it runs on this process's own pool).
///
/// The child exits when the socket closes (the kernel stopped or died), so it never outlives its node.
public enum PluginHostChild {
    /// Serves the kernel on `fd` until it destroys the instance or goes away; the process's exit status.
    public static func serve(fd: Int32) -> Int32 {
        signal(SIGPIPE, SIG_IGN)
        let host = ChildHost(channel: IsolationChannel(fd: fd, name: "plexus.plugin-host.reader"))
        ChildHost.shared = host
        let finished = DispatchSemaphore(value: 0)
        host.channel.start(onFrame: { frame in host.handle(frame) }, onClose: { _ in finished.signal() })
        finished.wait()
        // The kernel is gone or let go: end now, whatever threads the plugin still runs.
        _exit(0)
    }
}

/// The one plugin instance this child hosts, and what it left with the kernel.
final class ChildHost: @unchecked Sendable {
    // Safe: `descriptor` and `instance` are written by the
    // lifecycle queue only (hello, create) before the kernel sends any call that reads them; every table is in
    // a Mutex.

    /// The host functions reach the instance through this (one instance per child process).
    nonisolated(unsafe) static var shared: ChildHost?

    let channel: IsolationChannel
    var descriptor = px_plugin_descriptor()
    var instance: UnsafeMutableRawPointer?
    /// Lifecycle hooks, one at a time.
    let lifecycle = DispatchQueue(label: "plexus.plugin-host.lifecycle")
    /// Storage calls, in the order the kernel made them.
    let calls = DispatchQueue(label: "plexus.plugin-host.calls")
    /// Deliveries and timer firings.
    let callbacks = DispatchQueue(label: "plexus.plugin-host.callbacks")

    struct Callback: @unchecked Sendable {
        // Safe: the plugin's function and user pointer, called only as the ABI lets the kernel call them.
        var fn: UnsafeRawPointer
        var user: UnsafeMutableRawPointer?
    }

    /// Open stream handles by the id the kernel knows them by (as bit patterns: pointers are not Sendable).
    let streams = Mutex<(next: UInt64, open: [UInt64: UInt])>((1, [:]))
    let subscriptions = Mutex<(next: UInt64, byLocal: [UInt64: Callback], localByKernel: [UInt64: UInt64])>(
        (1, [:], [:]))
    let timers = Mutex<(next: UInt64, byLocal: [UInt64: Callback], localByKernel: [UInt64: UInt64])>((1, [:], [:]))
    let watches = Mutex<(next: UInt64, byLocal: [UInt64: Callback], localByKernel: [UInt64: UInt64])>((1, [:], [:]))
    /// Metadata watches (`kv_watch`, ABI 1.4).
    let kvWatches = Mutex<(next: UInt64, byLocal: [UInt64: Callback], localByKernel: [UInt64: UInt64])>(
        (1, [:], [:]))
    /// Completions the kernel owes the plugin for its 1.4 calls, by the token their request carried.
    let owed = Mutex<(next: UInt64, completions: [UInt64: @Sendable (px_status, String, inout WireReader) -> Void])>(
        (1, [:]))
    /// Marks the callbacks queue, so that a wait for it is not made from inside it.
    private static let onCallbacks = DispatchSpecificKey<Bool>()
    /// The `px_host` handle the plugin is given: any non-null pointer (the child serves one instance).
    let hostHandle = OpaquePointer(UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8))

    init(channel: IsolationChannel) {
        self.channel = channel
        callbacks.setSpecific(key: Self.onCallbacks, value: true)
    }

    /// Returns once no callback (delivery, timer, watch change, completion) runs on the callbacks queue, unless
    /// called from it, where none other can be running.
    func waitForRunningCallback() {
        if DispatchQueue.getSpecific(key: Self.onCallbacks) == nil { callbacks.sync {} }
    }

    /// How long a host call that must answer synchronously (subscribe, timer_start, listen, ...) waits.
    static let syncTimeout = Duration.seconds(30)

    func handle(_ frame: IsolationFrame) {
        switch frame.op {
        case .hello, .create, .start, .stop, .destroy:
            lifecycle.async { self.lifecycleHook(frame) }
        case .health:
            DispatchQueue.global().async { self.health(frame) }
        case .streamInfo:
            // Synchronous in the plugin and ordered with nothing: not queued behind the appends on `calls` (the
            // kernel waits for it).
            DispatchQueue.global().async { self.storageCall(frame) }
        case .deliver, .timerFired, .watchEvent, .kvWatchEvent, .hostCompletion:
            callbacks.async { self.callback(frame) }
        default:
            calls.async { self.storageCall(frame) }
        }
    }

    private func replyOutcome(
        _ frame: IsolationFrame, _ status: px_status, _ error: String, _ more: (inout WireWriter) -> Void = { _ in }
    ) {
        var writer = WireWriter()
        writer.outcome(status, error)
        more(&writer)
        channel.reply(to: frame, writer.bytes)
    }

    // MARK: Lifecycle

    private func lifecycleHook(_ frame: IsolationFrame) {
        var reader = WireReader(frame.payload)
        do {
            switch frame.op {
            case .hello:
                let path = try reader.text()
                let name = try reader.text()
                let deadline = Duration.milliseconds(Int64(try reader.u64()))
                try reader.finish()
                do {
                    let (_, copied) = try PluginLoader.open(
                        path, subject: path, library: path, entryName: name, deadline: deadline,
                        api: ChildHost.api)
                    descriptor = copied
                } catch {
                    return replyOutcome(frame, PX_ERR_VERSION_MISMATCH.status, "\(error)")
                }
                let d = descriptor
                replyOutcome(frame, PX_OK.status, "") { w in
                    w.text(d.name.map { String(cString: $0) } ?? "")
                    w.text(d.version.map { String(cString: $0) } ?? "")
                    w.u32(d.kinds)
                    w.u32(UInt32(d.abi_major))
                    w.u32(UInt32(d.abi_minor))
                    w.optionalText(d.toolchain.map { String(cString: $0) })
                    w.u8(d.on_health == nil ? 0 : 1)
                    w.u8(d.storage == nil ? 0 : 1)
                    w.u32(d.storage?.pointee.durability ?? 0)
                    w.u8(d.registry == nil ? 0 : 1)
                }
            case .create:
                let instanceName = try reader.text()
                let nodeID = try reader.text()
                let dataDir = try reader.text()
                let json = try reader.text()
                let entries = try reader.kvs()
                try reader.finish()
                let strings = CStringArena()
                defer { strings.free() }
                let pairs = entries.map { px_kv(key: strings.str($0.key), value: strings.str($0.value)) }
                var config = px_plugin_config(
                    struct_size: UInt32(MemoryLayout<px_plugin_config>.size), reserved: 0,
                    instance_name: strings.str(instanceName), node_id: strings.str(nodeID),
                    data_dir: strings.str(dataDir), json: strings.str(json), entries: nil, entry_count: pairs.count)
                let (status, message) = pairs.withUnsafeBufferPointer { buffer -> (px_status, String) in
                    config.entries = buffer.baseAddress
                    return ErrorBuffer.with { err in
                        var created: UnsafeMutableRawPointer?
                        let status = descriptor.on_create(ChildHost.api, hostHandle, &config, &created, err)
                        instance = created
                        return (status, ErrorBuffer.text(err))
                    }
                }
                replyOutcome(frame, status, message)
            case .start:
                let (status, message) = ErrorBuffer.with { err in
                    (descriptor.on_start(instance, err), ErrorBuffer.text(err))
                }
                replyOutcome(frame, status, message)
            case .stop:
                let timeout = try reader.u64()
                let (status, message) = ErrorBuffer.with { err in
                    (descriptor.on_stop(instance, timeout, err), ErrorBuffer.text(err))
                }
                replyOutcome(frame, status, message)
            case .destroy:
                descriptor.on_destroy(instance)
                instance = nil
                replyOutcome(frame, PX_OK.status, "")
                // Whatever threads the plugin leaked end with the process.
                channel.shutDown()
                usleep(50_000)
                _exit(0)
            default:
                break
            }
        } catch {
            replyOutcome(frame, PX_ERR_INVALID_ARGUMENT.status, "plugin-host: \(error)")
        }
    }

    private func health(_ frame: IsolationFrame) {
        guard let hook = descriptor.on_health else { return replyOutcome(frame, PX_OK.status, "") }
        let (status, message) = ErrorBuffer.with { err in (hook(instance, err), ErrorBuffer.text(err)) }
        replyOutcome(frame, status, message)
    }

    // MARK: Storage

    /// Reply context for a storage completion: the request it answers.
    final class Pending: @unchecked Sendable {
        // Safe: immutable.
        let host: ChildHost
        let frame: IsolationFrame
        init(_ host: ChildHost, _ frame: IsolationFrame) {
            self.host = host
            self.frame = frame
        }
        var retained: UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }
        static func take(_ user: UnsafeMutableRawPointer?) -> Pending? {
            guard let user else { return nil }
            return Unmanaged<Pending>.fromOpaque(user).takeRetainedValue()
        }
    }

    private func stream(_ handle: UInt64) -> OpaquePointer? {
        OpaquePointer(bitPattern: streams.withLock { $0.open[handle] } ?? 0)
    }

    private func storageCall(_ frame: IsolationFrame) {
        guard let vtable = descriptor.storage?.pointee else {
            return replyOutcome(frame, PX_ERR_UNSUPPORTED.status, "the plugin is not a storage plugin")
        }
        var reader = WireReader(frame.payload)
        do {
            switch frame.op {
            case .openStream:
                let name = try reader.text()
                var options = px_stream_options(
                    struct_size: UInt32(MemoryLayout<px_stream_options>.size), reserved: 0,
                    retention_bytes: try reader.u64(), retention_ms: try reader.u64())
                try reader.finish()
                let pending = Pending(self, frame)
                let status = name.withPxStr { nameStr in
                    ErrorBuffer.with { err -> px_status in
                        if let open = vtable.on_open_stream_async {
                            let user = pending.retained
                            let status = open(
                                instance, nameStr, &options,
                                { user, status, stream, error in
                                    guard let pending = Pending.take(user) else { return }
                                    pending.host.openDone(pending.frame, status, stream, error.string)
                                }, user, err)
                            if status != PX_OK.status {
                                _ = Pending.take(user)
                                replyOutcome(frame, status, ErrorBuffer.text(err))
                            }
                            return PX_OK.status
                        }
                        var stream: OpaquePointer?
                        let status = vtable.on_open_stream(instance, nameStr, &options, &stream, err)
                        openDone(frame, status, stream, ErrorBuffer.text(err))
                        return PX_OK.status
                    }
                }
                _ = status
            case .closeStream:
                let handle = try reader.u64()
                if let stream = OpaquePointer(
                    bitPattern: streams.withLock({ $0.open.removeValue(forKey: handle) }) ?? 0)
                {
                    vtable.on_close_stream(instance, stream)
                }
            case .append:
                let handle = try reader.u64()
                let events = CEventBatch(try reader.events())
                try reader.finish()
                guard let stream = stream(handle) else { return unknownStream(frame, handle) }
                let user = Pending(self, frame).retained
                let pointers = events.pointers
                let (status, message) = ErrorBuffer.with { err in
                    (
                        vtable.on_append(
                            instance, stream, pointers.baseAddress, pointers.count,
                            { user, status, first, error in
                                guard let pending = Pending.take(user) else { return }
                                pending.host.replyOutcome(pending.frame, status, error.string) { $0.u64(first) }
                            }, user, err), ErrorBuffer.text(err)
                    )
                }
                withExtendedLifetime(events) {}
                if status != PX_OK.status {
                    _ = Pending.take(user)
                    replyOutcome(frame, status, message) { $0.u64(0) }
                }
            case .read:
                let handle = try reader.u64()
                let from = try reader.u64()
                let maxRecords = Int(try reader.u64())
                let maxBytes = Int(try reader.u64())
                try reader.finish()
                guard let stream = stream(handle) else { return unknownStream(frame, handle) }
                let user = Pending(self, frame).retained
                let (status, message) = ErrorBuffer.with { err -> (px_status, String) in
                    if let readBatch = vtable.on_read_batch {
                        return (
                            readBatch(
                                instance, stream, from, maxRecords, maxBytes,
                                { user, status, batch, error in
                                    guard let pending = Pending.take(user) else { return }
                                    pending.host.replyOutcome(pending.frame, status, error.string) { w in
                                        w.records(batch?.pointee.records, batch?.pointee.count ?? 0)
                                        w.u64(batch?.pointee.next_offset ?? 0)
                                    }
                                    if let batch { batch.pointee.release?(batch) }
                                }, user, err), ErrorBuffer.text(err)
                        )
                    }
                    return (
                        vtable.on_read(
                            instance, stream, from, maxRecords, maxBytes,
                            { user, status, records, count, next, error in
                                guard let pending = Pending.take(user) else { return }
                                pending.host.replyOutcome(pending.frame, status, error.string) { w in
                                    w.records(records, count)
                                    w.u64(next)
                                }
                            }, user, err), ErrorBuffer.text(err)
                    )
                }
                if status != PX_OK.status {
                    _ = Pending.take(user)
                    replyOutcome(frame, status, message) { w in
                        w.u32(0)
                        w.u64(0)
                    }
                }
            case .commitOffset:
                let handle = try reader.u64()
                let group = try reader.text()
                let offset = try reader.u64()
                try reader.finish()
                guard let stream = stream(handle) else { return unknownStream(frame, handle) }
                let user = Pending(self, frame).retained
                let (status, message) = group.withPxStr { groupStr in
                    ErrorBuffer.with { err in
                        (
                            vtable.on_commit_offset(
                                instance, stream, groupStr, offset,
                                { user, status, error in
                                    guard let pending = Pending.take(user) else { return }
                                    pending.host.replyOutcome(pending.frame, status, error.string)
                                }, user, err), ErrorBuffer.text(err)
                        )
                    }
                }
                if status != PX_OK.status {
                    _ = Pending.take(user)
                    replyOutcome(frame, status, message)
                }
            case .fetchOffset:
                let handle = try reader.u64()
                let group = try reader.text()
                try reader.finish()
                guard let stream = stream(handle) else { return unknownStream(frame, handle) }
                let user = Pending(self, frame).retained
                let (status, message) = group.withPxStr { groupStr in
                    ErrorBuffer.with { err in
                        (
                            vtable.on_fetch_offset(
                                instance, stream, groupStr,
                                { user, status, offset, error in
                                    guard let pending = Pending.take(user) else { return }
                                    pending.host.replyOutcome(pending.frame, status, error.string) { $0.u64(offset) }
                                }, user, err), ErrorBuffer.text(err)
                        )
                    }
                }
                if status != PX_OK.status {
                    _ = Pending.take(user)
                    replyOutcome(frame, status, message) { $0.u64(0) }
                }
            case .trim:
                let handle = try reader.u64()
                let before = try reader.u64()
                try reader.finish()
                guard let stream = stream(handle) else { return unknownStream(frame, handle) }
                let user = Pending(self, frame).retained
                let (status, message) = ErrorBuffer.with { err in
                    (
                        vtable.on_trim(
                            instance, stream, before,
                            { user, status, error in
                                guard let pending = Pending.take(user) else { return }
                                pending.host.replyOutcome(pending.frame, status, error.string)
                            }, user, err), ErrorBuffer.text(err)
                    )
                }
                if status != PX_OK.status {
                    _ = Pending.take(user)
                    replyOutcome(frame, status, message)
                }
            case .streamInfo:
                let handle = try reader.u64()
                try reader.finish()
                guard let stream = stream(handle) else { return unknownStream(frame, handle) }
                var info = px_stream_info()
                info.struct_size = UInt32(MemoryLayout<px_stream_info>.size)
                let (status, message) = ErrorBuffer.with { err in
                    (vtable.on_stream_info(instance, stream, &info, err), ErrorBuffer.text(err))
                }
                replyOutcome(frame, status, message) { w in
                    w.u64(info.first_offset)
                    w.u64(info.next_offset)
                    w.u64(info.size_bytes)
                }
            default:
                replyOutcome(frame, PX_ERR_UNSUPPORTED.status, "plugin-host: no call \(frame.op)")
            }
        } catch {
            replyOutcome(frame, PX_ERR_INVALID_ARGUMENT.status, "plugin-host: \(error)")
        }
    }

    private func unknownStream(_ frame: IsolationFrame, _ handle: UInt64) {
        replyOutcome(frame, PX_ERR_NOT_FOUND.status, "plugin-host: no open stream \(handle)")
    }

    fileprivate func openDone(_ frame: IsolationFrame, _ status: px_status, _ stream: OpaquePointer?, _ error: String) {
        var handle: UInt64 = 0
        if status == PX_OK.status, let stream {
            handle = streams.withLock { state in
                let id = state.next
                state.next += 1
                state.open[id] = UInt(bitPattern: stream)
                return id
            }
        }
        replyOutcome(frame, status, error) { $0.u64(handle) }
    }

    // MARK: Callbacks from the kernel

    private func callback(_ frame: IsolationFrame) {
        var reader = WireReader(frame.payload)
        switch frame.op {
        case .deliver:
            guard let local = try? reader.u64(), let attempt = try? reader.u32(), let deliveryID = try? reader.u64(),
                let subscriptionID = try? reader.u64(), let topic = try? reader.text(),
                let records = try? reader.records(), records.count == 1,
                let callback = subscriptions.withLock({ $0.byLocal[local] })
            else { return }
            let batch = CRecordBatch(records)
            topic.withPxStr { topicStr in
                var delivery = px_delivery(
                    struct_size: UInt32(MemoryLayout<px_delivery>.size), attempt: attempt, delivery_id: deliveryID,
                    subscription_id: subscriptionID, topic: topicStr, record: batch.pointers[0])
                let deliver = unsafeBitCast(callback.fn, to: px_deliver_fn.self)
                deliver(callback.user, &delivery)
            }
            withExtendedLifetime(batch) {}
        case .timerFired:
            guard let local = try? reader.u64(), let kernelID = try? reader.u64(),
                let callback = timers.withLock({ $0.byLocal[local] })
            else { return }
            unsafeBitCast(callback.fn, to: px_timer_fn.self)(callback.user, kernelID)
        case .watchEvent:
            guard let local = try? reader.u64(), let kind = try? reader.u32(), let service = try? reader.text(),
                let instanceID = try? reader.text(), let address = try? reader.text(), let metadata = try? reader.kvs(),
                let ttl = try? reader.u64(), let callback = watches.withLock({ $0.byLocal[local] })
            else { return }
            let strings = CStringArena()
            defer { strings.free() }
            let pairs = metadata.map { px_kv(key: strings.str($0.key), value: strings.str($0.value)) }
            pairs.withUnsafeBufferPointer { buffer in
                var instance = px_service_instance(
                    struct_size: UInt32(MemoryLayout<px_service_instance>.size), reserved: 0,
                    service: strings.str(service), instance_id: strings.str(instanceID), address: strings.str(address),
                    metadata: buffer.baseAddress, metadata_count: buffer.count, ttl_ms: ttl)
                unsafeBitCast(callback.fn, to: px_watch_fn.self)(callback.user, kind, &instance)
            }
        case .kvWatchEvent:
            guard let local = try? reader.u64(), let kind = try? reader.u32(), let entry = try? reader.kvEntry(),
                let callback = kvWatches.withLock({ $0.byLocal[local] })
            else { return }
            KVEntryWire.withC([entry]) { pointers in
                unsafeBitCast(callback.fn, to: px_kv_watch_fn.self)(callback.user, kind, pointers[0])
            }
        case .hostCompletion:
            guard let token = try? reader.u64(),
                let completion = owed.withLock({ $0.completions.removeValue(forKey: token) })
            else { return }
            guard let (status, error) = try? reader.outcome() else {
                var empty = WireReader([])
                return completion(PX_ERR_INTERNAL.status, "the kernel's completion was malformed", &empty)
            }
            completion(status, error, &reader)
        default:
            break
        }
    }
}

/// C strings made for one call and freed after it.
final class CStringArena {
    private var allocations: [UnsafeMutablePointer<CChar>] = []

    func str(_ text: String) -> px_str {
        let pointer = strdup(text) ?? UnsafeMutablePointer<CChar>.allocate(capacity: 1)
        allocations.append(pointer)
        return px_str(ptr: UnsafePointer(pointer), len: text.utf8.count)
    }

    func free() {
        for pointer in allocations { Glibc.free(pointer) }
        allocations = []
    }
}

extension String {
    /// Runs `body` with the text as a borrowed `px_str`.
    func withPxStr<R>(_ body: (px_str) -> R) -> R {
        var copy = self
        return copy.withUTF8 { buffer in
            buffer.withMemoryRebound(to: CChar.self) { body(px_str(ptr: $0.baseAddress, len: $0.count)) }
        }
    }
}
