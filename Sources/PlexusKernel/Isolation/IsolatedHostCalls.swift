import Foundation
import PlexusABI
import PlexusCore

#if canImport(Glibc)
    import Glibc
#endif

/// The kernel serving a child's host calls: each request is made on the child's behalf through the kernel's own
/// `px_host_api` with the instance's `px_host`, and answered with a reply carrying the request's id (for an
/// asynchronous function, once its completion ran). Deliveries, timer firings and registry watch changes go to
/// the child as notices.
extension IsolatedInstance {
    /// A frame from a child (on its channel's reader thread): served in order on `hostCalls`, so that a host
    /// function that waits for this plugin never blocks the reader that would answer it.
    func received(_ frame: IsolationFrame, from child: PluginHostProcess) {
        hostCalls.async { [self] in
            do {
                try serve(frame, from: child)
            } catch {
                if frame.kind == .request {
                    var w = WireWriter()
                    w.outcome(PX_ERR_INVALID_ARGUMENT.status, "the kernel refused a malformed \(frame.op): \(error)")
                    child.channel.reply(to: frame, w.bytes)
                }
            }
        }
    }

    /// A completion's way back: the child and the request it answers.
    final class ReplyLink: @unchecked Sendable {
        // Safe: immutable.
        let child: PluginHostProcess
        let frame: IsolationFrame
        init(_ child: PluginHostProcess, _ frame: IsolationFrame) {
            self.child = child
            self.frame = frame
        }
        var retained: UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }
        static func take(_ user: UnsafeMutableRawPointer?) -> ReplyLink? {
            guard let user else { return nil }
            return Unmanaged<ReplyLink>.fromOpaque(user).takeRetainedValue()
        }
        func reply(_ status: px_status, _ error: String, _ more: (inout WireWriter) -> Void = { _ in }) {
            var w = WireWriter()
            w.outcome(status, error)
            more(&w)
            child.channel.reply(to: frame, w.bytes)
        }
    }

    /// A completion the kernel owes a child for a 1.4 call (`registry_keepalive`, `kv_*`): sent as a
    /// `hostCompletion` notice with the token the child's request carried.
    final class CompletionLink: @unchecked Sendable {
        // Safe: immutable.
        let child: PluginHostProcess
        let token: UInt64
        init(_ child: PluginHostProcess, _ token: UInt64) {
            self.child = child
            self.token = token
        }
        var retained: UnsafeMutableRawPointer { Unmanaged.passRetained(self).toOpaque() }
        static func take(_ user: UnsafeMutableRawPointer?) -> CompletionLink? {
            guard let user else { return nil }
            return Unmanaged<CompletionLink>.fromOpaque(user).takeRetainedValue()
        }
        func complete(_ status: px_status, _ error: String, _ more: (inout WireWriter) -> Void = { _ in }) {
            var w = WireWriter()
            w.u64(token)
            w.outcome(status, error)
            more(&w)
            child.channel.notify(.hostCompletion, w.bytes)
        }
    }

    /// A subscription, timer or watch the kernel made for a child: where its callbacks go.
    final class CallbackLink: @unchecked Sendable {
        // Safe: immutable.
        let child: PluginHostProcess
        let local: UInt64
        init(_ child: PluginHostProcess, _ local: UInt64) {
            self.child = child
            self.local = local
        }
    }

    private func serve(_ frame: IsolationFrame, from child: PluginHostProcess) throws {
        var r = WireReader(frame.payload)
        func answer(_ status: px_status, _ error: String = "", _ more: (inout WireWriter) -> Void = { _ in }) {
            var w = WireWriter()
            w.outcome(status, error)
            more(&w)
            child.channel.reply(to: frame, w.bytes)
        }
        switch frame.op {
        case .log:
            let level = try r.i32()
            let message = try r.text()
            message.withPxStr { api.pointee.log(host, level, $0) }
        case .counterAdd:
            let name = try r.text()
            let delta = try r.u64()
            name.withPxStr { api.pointee.counter_add(host, $0, delta) }
        case .gaugeSet:
            let name = try r.text()
            let value = try r.f64()
            name.withPxStr { api.pointee.gauge_set(host, $0, value) }
        case .histogramRecord:
            let name = try r.text()
            let value = try r.f64()
            name.withPxStr { api.pointee.histogram_record(host, $0, value) }
        case .metricRecord:
            let id = try r.u64()
            let value = try r.f64()
            if let metric = OpaquePointer(bitPattern: state.withLock({ $0.metrics[id] }) ?? 0) {
                api.pointee.metric_record(metric, value)
            }
        case .publish:
            let topic = try r.text()
            let events = CEventBatch(try r.events())
            try r.finish()
            let link = ReplyLink(child, frame).retained
            let pointers = events.pointers
            let (status, message) = topic.withPxStr { topicStr in
                ErrorBuffer.with { err in
                    (
                        api.pointee.publish(
                            host, topicStr, pointers.baseAddress, pointers.count,
                            { user, status, first, error in
                                ReplyLink.take(user)?.reply(status, error.string) { $0.u64(first) }
                            }, link, err), ErrorBuffer.text(err)
                    )
                }
            }
            withExtendedLifetime(events) {}
            if status != PX_OK.status {
                ReplyLink.take(link)?.reply(status, message) { $0.u64(0) }
            }
        case .subscribe:
            try subscribe(&r, frame, child, answer)
        case .unsubscribe:
            let id = try r.u64()
            child.subscriptions.withLock { $0.removeAll { $0 == id } }
            answer(api.pointee.unsubscribe(host, id))
        case .ack:
            answer(api.pointee.ack(host, try r.u64()))
        case .nack:
            let id = try r.u64()
            let action = try r.u32()
            let reason = try r.text()
            answer(reason.withPxStr { api.pointee.nack(host, id, action, $0) })
        case .timerStart:
            let local = try r.u64()
            let delay = try r.u64()
            let interval = try r.u64()
            let link = Unmanaged.passRetained(CallbackLink(child, local)).toOpaque()
            var id: UInt64 = 0
            let (status, message) = ErrorBuffer.with { err in
                (
                    api.pointee.timer_start(
                        host, delay, interval,
                        { user, timerID in
                            guard let user else { return }
                            let link = Unmanaged<CallbackLink>.fromOpaque(user).takeUnretainedValue()
                            var w = WireWriter()
                            w.u64(link.local)
                            w.u64(timerID)
                            link.child.channel.notify(.timerFired, w.bytes)
                        }, link, &id, err), ErrorBuffer.text(err)
                )
            }
            // The link stays retained for the life of the process: a timer may fire once more after cancel
            // when it was running.
            guard status == PX_OK.status else { return answer(status, message) }
            child.timers.withLock { $0.append(id) }
            answer(PX_OK.status) { $0.u64(id) }
        case .timerCancel:
            let id = try r.u64()
            child.timers.withLock { $0.removeAll { $0 == id } }
            answer(api.pointee.timer_cancel(host, id))
        case .storageRead:
            let topic = try r.text()
            let from = try r.u64()
            let maxRecords = Int(try r.u64())
            let maxBytes = Int(try r.u64())
            let link = ReplyLink(child, frame).retained
            let (status, message) = topic.withPxStr { topicStr in
                ErrorBuffer.with { err in
                    (
                        api.pointee.storage_read(
                            host, topicStr, from, maxRecords, maxBytes,
                            { user, status, records, count, next, error in
                                ReplyLink.take(user)?.reply(status, error.string) { w in
                                    w.records(records, count)
                                    w.u64(next)
                                }
                            }, link, err), ErrorBuffer.text(err)
                    )
                }
            }
            if status != PX_OK.status {
                ReplyLink.take(link)?.reply(status, message) { w in
                    w.u32(0)
                    w.u64(0)
                }
            }
        case .metricCreate:
            try metricCreate(&r, answer)
        case .listen:
            let address = try r.text()
            let port = try r.i32()
            let backlog = try r.i32()
            var fd: Int32 = -1
            let (status, message) = address.withPxStr { addressStr in
                ErrorBuffer.with { err in
                    (api.pointee.listen(host, addressStr, port, backlog, &fd, err), ErrorBuffer.text(err))
                }
            }
            guard status == PX_OK.status else { return answer(status, message) }
            var w = WireWriter()
            w.outcome(PX_OK.status, "")
            w.u8(1)
            child.channel.reply(to: frame, w.bytes, fd: fd)
            // The child holds its own copy now.
            close(fd)
        case .registryRegister:
            let service = try r.text()
            let instanceID = try r.text()
            let address = try r.text()
            let metadata = try r.kvs()
            let ttl = try r.u64()
            let instance = ServiceInstanceWire.Instance(
                service: service, instanceID: instanceID, address: address, metadata: metadata, ttl: ttl)
            let link = ReplyLink(child, frame).retained
            let (status, message) = ServiceInstanceWire.withC([instance]) { pointers in
                ErrorBuffer.with { err in
                    (
                        api.pointee.registry_register(
                            host, pointers[0],
                            { user, status, error in ReplyLink.take(user)?.reply(status, error.string) }, link, err),
                        ErrorBuffer.text(err)
                    )
                }
            }
            if status != PX_OK.status { ReplyLink.take(link)?.reply(status, message) }
        case .registryDeregister:
            let service = try r.text()
            let instanceID = try r.text()
            let link = ReplyLink(child, frame).retained
            let (status, message) = service.withPxStr { serviceStr in
                instanceID.withPxStr { idStr in
                    ErrorBuffer.with { err in
                        (
                            api.pointee.registry_deregister(
                                host, serviceStr, idStr,
                                { user, status, error in ReplyLink.take(user)?.reply(status, error.string) }, link, err),
                            ErrorBuffer.text(err)
                        )
                    }
                }
            }
            if status != PX_OK.status { ReplyLink.take(link)?.reply(status, message) }
        case .registryLookup:
            let service = try r.text()
            let link = ReplyLink(child, frame).retained
            let (status, message) = service.withPxStr { serviceStr in
                ErrorBuffer.with { err in
                    (
                        api.pointee.registry_lookup(
                            host, serviceStr,
                            { user, status, instances, count, error in
                                ReplyLink.take(user)?.reply(status, error.string) { w in
                                    ServiceInstanceWire.write(&w, instances, count)
                                }
                            }, link, err), ErrorBuffer.text(err)
                    )
                }
            }
            if status != PX_OK.status { ReplyLink.take(link)?.reply(status, message) { $0.u32(0) } }
        case .registryWatch:
            let local = try r.u64()
            let service = try r.text()
            let link = Unmanaged.passRetained(CallbackLink(child, local)).toOpaque()
            var id: UInt64 = 0
            let (status, message) = service.withPxStr { serviceStr in
                ErrorBuffer.with { err in
                    (
                        api.pointee.registry_watch(
                            host, serviceStr,
                            { user, kind, instance in
                                guard let user, let instance else { return }
                                let link = Unmanaged<CallbackLink>.fromOpaque(user).takeUnretainedValue()
                                let i = instance.pointee
                                var w = WireWriter()
                                w.u64(link.local)
                                w.u32(kind)
                                w.text(i.service)
                                w.text(i.instance_id)
                                w.text(i.address)
                                w.kvs(i.metadata, i.metadata_count)
                                w.u64(i.ttl_ms)
                                link.child.channel.notify(.watchEvent, w.bytes)
                            }, link, &id, err), ErrorBuffer.text(err)
                    )
                }
            }
            guard status == PX_OK.status else { return answer(status, message) }
            child.watches.withLock { $0.append(id) }
            answer(PX_OK.status) { $0.u64(id) }
        case .registryUnwatch:
            let id = try r.u64()
            child.watches.withLock { $0.removeAll { $0 == id } }
            answer(api.pointee.registry_unwatch(host, id))
        case .registryKeepAlive, .kvGet, .kvPut, .kvDelete, .kvList, .kvWatch, .kvUnwatch:
            try serveMetadata(frame, &r, child, answer)
        default:
            if frame.kind == .request {
                answer(PX_ERR_UNSUPPORTED.status, "the kernel serves no \(frame.op) from a plugin-host")
            }
        }
    }

    /// The ABI 1.4 calls: each answered at once with the kernel's synchronous status (a refusal's reason with
    /// it), its completion sent after as a `hostCompletion` notice; a watch's changes as `kvWatchEvent` notices.
    private func serveMetadata(
        _ frame: IsolationFrame, _ r: inout WireReader, _ child: PluginHostProcess,
        _ answer: (px_status, String, (inout WireWriter) -> Void) -> Void
    ) throws {
        let table = api.pointee
        // Calls `body` with a retained completion link; released when the call refused (no completion comes).
        func owed(_ token: UInt64, _ body: (UnsafeMutableRawPointer, UnsafeMutablePointer<px_error>) -> px_status?) {
            let link = CompletionLink(child, token).retained
            let (status, message) = ErrorBuffer.with { err -> (px_status, String) in
                guard let status = body(link, err) else {
                    return (PX_ERR_UNSUPPORTED.status, "the kernel's host table has no \(frame.op)")
                }
                return (status, ErrorBuffer.text(err))
            }
            if status != PX_OK.status { _ = CompletionLink.take(link) }
            answer(status, message, { _ in })
        }
        let writeDone: px_kv_write_done_fn = { user, status, version, revision, error in
            CompletionLink.take(user)?.complete(status, error.string) { w in
                w.u64(version)
                w.u64(revision)
            }
        }
        switch frame.op {
        case .registryKeepAlive:
            let token = try r.u64()
            let service = try r.text()
            let instanceID = try r.text()
            try r.finish()
            owed(token) { link, err in
                guard let keepAlive = table.registry_keepalive else { return nil }
                return service.withPxStr { s in
                    instanceID.withPxStr { i in
                        keepAlive(
                            host, s, i,
                            { user, status, error in CompletionLink.take(user)?.complete(status, error.string) },
                            link, err)
                    }
                }
            }
        case .kvGet:
            let token = try r.u64()
            let key = try r.text()
            try r.finish()
            owed(token) { link, err in
                guard let get = table.kv_get else { return nil }
                return key.withPxStr { k in
                    get(
                        host, k,
                        { user, status, entry, revision, error in
                            CompletionLink.take(user)?.complete(status, error.string) { w in
                                w.u8(entry == nil ? 0 : 1)
                                if let entry { w.kvEntry(entry.pointee) }
                                w.u64(revision)
                            }
                        }, link, err)
                }
            }
        case .kvPut:
            let token = try r.u64()
            let key = try r.text()
            let value = try r.data()
            let expected = try r.u64()
            try r.finish()
            owed(token) { link, err in
                guard let put = table.kv_put else { return nil }
                return key.withPxStr { k in
                    value.withUnsafeBufferPointer { v in
                        put(host, k, px_bytes(ptr: v.baseAddress, len: v.count), expected, writeDone, link, err)
                    }
                }
            }
        case .kvDelete:
            let token = try r.u64()
            let key = try r.text()
            let expected = try r.u64()
            try r.finish()
            owed(token) { link, err in
                guard let delete = table.kv_delete else { return nil }
                return key.withPxStr { delete(host, $0, expected, writeDone, link, err) }
            }
        case .kvList:
            let token = try r.u64()
            let prefix = try r.text()
            try r.finish()
            owed(token) { link, err in
                guard let list = table.kv_list else { return nil }
                return prefix.withPxStr { p in
                    list(
                        host, p,
                        { user, status, entries, count, revision, error in
                            CompletionLink.take(user)?.complete(status, error.string) { w in
                                w.kvEntries(entries, count)
                                w.u64(revision)
                            }
                        }, link, err)
                }
            }
        case .kvWatch:
            let local = try r.u64()
            let prefix = try r.text()
            let from = try r.u64()
            try r.finish()
            guard let watch = table.kv_watch else {
                return answer(PX_ERR_UNSUPPORTED.status, "the kernel's host table has no kv_watch", { _ in })
            }
            let link = Unmanaged.passRetained(CallbackLink(child, local)).toOpaque()
            var id: UInt64 = 0
            let (status, message) = prefix.withPxStr { p in
                ErrorBuffer.with { err in
                    (
                        watch(
                            host, p, from,
                            { user, kind, entry in
                                guard let user, let entry else { return }
                                let link = Unmanaged<CallbackLink>.fromOpaque(user).takeUnretainedValue()
                                var w = WireWriter()
                                w.u64(link.local)
                                w.u32(kind)
                                w.kvEntry(entry.pointee)
                                link.child.channel.notify(.kvWatchEvent, w.bytes)
                            }, link, &id, err), ErrorBuffer.text(err)
                    )
                }
            }
            guard status == PX_OK.status else {
                // Refused: the registry never calls it.
                Unmanaged<CallbackLink>.fromOpaque(link).release()
                return answer(status, message, { _ in })
            }
            // The link stays retained for the life of the process, as a subscription's: `user` must stay valid
            // until kv_unwatch returns, which may be the kernel's own when the child dies.
            child.kvWatches.withLock { $0.append(id) }
            answer(PX_OK.status, "", { $0.u64(id) })
        case .kvUnwatch:
            let id = try r.u64()
            try r.finish()
            child.kvWatches.withLock { $0.removeAll { $0 == id } }
            answer(table.kv_unwatch?(host, id) ?? PX_ERR_UNSUPPORTED.status, "", { _ in })
        default:
            break
        }
    }

    private func subscribe(
        _ r: inout WireReader, _ frame: IsolationFrame, _ child: PluginHostProcess,
        _ answer: (px_status, String, (inout WireWriter) -> Void) -> Void
    ) throws {
        let local = try r.u64()
        let groupMode = try r.u32()
        let topic = try r.text()
        let group = try r.optionalText()
        let filters = try r.kvs()
        let retry = try r.u32()
        let backoffPolicy = try r.u32()
        let backoffDelay = try r.u64()
        let backoffMax = try r.u64()
        let timeout = try r.u64()
        let deadLetter = try r.optionalText()
        let ordered = try r.u32()
        let maxInFlight = try r.u32()
        let startPosition = try r.u32()
        let startOffset = try r.u64()
        try r.finish()
        let strings = CStringArena()
        defer { strings.free() }
        let pairs = filters.map { px_kv(key: strings.str($0.key), value: strings.str($0.value)) }
        let link = Unmanaged.passRetained(CallbackLink(child, local)).toOpaque()
        var id: UInt64 = 0
        let (status, message) = pairs.withUnsafeBufferPointer { buffer -> (px_status, String) in
            var spec = px_subscription_spec()
            spec.struct_size = UInt32(MemoryLayout<px_subscription_spec>.size)
            spec.group_mode = groupMode
            spec.topic = strings.str(topic)
            spec.group = group.map { strings.str($0) } ?? px_str()
            spec.filters = buffer.baseAddress
            spec.filter_count = buffer.count
            spec.retry = retry
            spec.backoff_policy = backoffPolicy
            spec.backoff_delay_ms = backoffDelay
            spec.backoff_max_ms = backoffMax
            spec.timeout_ms = timeout
            spec.dead_letter_topic = deadLetter.map { strings.str($0) } ?? px_str()
            spec.ordered = ordered
            spec.max_in_flight = maxInFlight
            spec.start_position = startPosition
            spec.start_offset = startOffset
            spec.user = link
            spec.deliver = { user, delivery in
                guard let user, let delivery else { return }
                let link = Unmanaged<CallbackLink>.fromOpaque(user).takeUnretainedValue()
                let d = delivery.pointee
                var w = WireWriter()
                w.u64(link.local)
                w.u32(d.attempt)
                w.u64(d.delivery_id)
                w.u64(d.subscription_id)
                w.text(d.topic)
                var record = d.record
                withUnsafePointer(to: &record) { w.records($0, 1) }
                link.child.channel.notify(.deliver, w.bytes)
            }
            return ErrorBuffer.with { err in (api.pointee.subscribe(host, &spec, &id, err), ErrorBuffer.text(err)) }
        }
        // The link stays retained for the life of the process: the kernel may still be inside deliver when
        // the subscription ends.
        guard status == PX_OK.status else { return answer(status, message, { _ in }) }
        child.subscriptions.withLock { $0.append(id) }
        answer(PX_OK.status, "", { $0.u64(id) })
    }

    private func metricCreate(_ r: inout WireReader, _ answer: (px_status, String, (inout WireWriter) -> Void) -> Void)
        throws
    {
        let kind = try r.u32()
        let name = try r.text()
        let help = try r.text()
        let labels = try r.kvs()
        let hasBuckets = try r.u8() == 1
        let bucketCount = try r.count(minimumBytes: 8)
        let buckets = try (0..<bucketCount).map { _ in try r.f64() }
        try r.finish()
        let strings = CStringArena()
        defer { strings.free() }
        let pairs = labels.map { px_kv(key: strings.str($0.key), value: strings.str($0.value)) }
        var metric: OpaquePointer?
        let (status, message) = pairs.withUnsafeBufferPointer { labelBuffer in
            buckets.withUnsafeBufferPointer { bucketBuffer in
                var spec = px_metric_spec()
                spec.struct_size = UInt32(MemoryLayout<px_metric_spec>.size)
                spec.kind = kind
                spec.name = strings.str(name)
                spec.help = strings.str(help)
                spec.labels = labelBuffer.baseAddress
                spec.label_count = labelBuffer.count
                spec.buckets = hasBuckets ? bucketBuffer.baseAddress : nil
                spec.bucket_count = hasBuckets ? bucketBuffer.count : 0
                return ErrorBuffer.with { err in
                    (api.pointee.metric_create(host, &spec, &metric, err), ErrorBuffer.text(err))
                }
            }
        }
        guard status == PX_OK.status, let metric else { return answer(status, message, { _ in }) }
        let id = state.withLock { state -> UInt64 in
            let bits = UInt(bitPattern: metric)
            if let known = state.metrics.first(where: { $0.value == bits })?.key { return known }
            let id = UInt64(state.metrics.count + 1)
            state.metrics[id] = bits
            return id
        }
        answer(PX_OK.status, "", { $0.u64(id) })
    }
}
