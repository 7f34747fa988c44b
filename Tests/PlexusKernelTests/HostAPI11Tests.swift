import Dispatch
import Foundation
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// The host services ABI 1.1 added: work items on the shared pool and metric handles.
@Suite("Host services of ABI 1.1")
struct HostAPI11Tests {
    /// Counts work items run, from C.
    final class Ran: Sendable {
        let count = Atomic<Int>(0)
        let done = DispatchSemaphore(value: 0)
    }

    @Test("run executes each work item exactly once, off the caller's thread, on a bounded set of threads")
    func runWorkItems() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let api = HostServices.api.pointee
        let ran = Ran()
        let user = Unmanaged.passRetained(ran).toOpaque()
        defer { Unmanaged<Ran>.fromOpaque(user).release() }
        let items = 2_000
        for _ in 0..<items {
            let status = api.run(
                h.client.context.handle,
                { user in
                    let ran = Unmanaged<Ran>.fromOpaque(user!).takeUnretainedValue()
                    ran.count.add(1, ordering: .relaxed)
                    ran.done.signal()
                }, user, nil)
            #expect(status == PX_OK.status)
        }
        for _ in 0..<items { #expect(ran.done.wait(timeout: .now() + 10) == .success) }
        #expect(ran.count.load(ordering: .relaxed) == items)
        #expect(api.run(h.client.context.handle, nil, user, nil) == PX_ERR_INVALID_ARGUMENT.status)
    }

    func create(
        _ h: DeliveryHarness, kind: UInt32, name: String, labels: [(String, String)] = [], buckets: [Double] = []
    ) -> (px_status, OpaquePointer?, String) {
        let api = HostServices.api.pointee
        var out: OpaquePointer?
        let message = Mutex("")
        let status = withPXStr(name) { nameStr in
            withPXStr("") { help in
                let keys = labels.map { CEventStrings($0.0, $0.1) }
                return withExtendedLifetime(keys) {
                    let pairs = keys.map(\.pair)
                    return pairs.withUnsafeBufferPointer { labelPointer in
                        buckets.withUnsafeBufferPointer { bucketPointer in
                            var spec = px_metric_spec(
                                struct_size: UInt32(MemoryLayout<px_metric_spec>.size), kind: kind, name: nameStr,
                                help: help, labels: labelPointer.baseAddress, label_count: pairs.count,
                                buckets: bucketPointer.baseAddress, bucket_count: buckets.count)
                            let (status, text) = StandalonePlugin.withErrorBuffer { err in
                                api.metric_create(h.client.context.handle, &spec, &out, err)
                            }
                            message.withLock { $0 = text }
                            return status
                        }
                    }
                }
            }
        }
        return (status, out, message.withLock { $0 })
    }

    @Test("a metric made once is recorded into by handle: counter, gauge and histogram with its own buckets")
    func metricHandles() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let api = HostServices.api.pointee
        let counterKind = UInt32(PX_METRIC_COUNTER.rawValue)
        let (s1, counter, _) = create(h, kind: counterKind, name: "frames_sent", labels: [("peer", "a")])
        #expect(s1 == PX_OK.status)
        let (again, same, _) = create(h, kind: counterKind, name: "frames_sent", labels: [("peer", "a")])
        #expect(again == PX_OK.status && same == counter, "the same name, kind and labels give the same handle")
        let (s2, gauge, _) = create(h, kind: UInt32(PX_METRIC_GAUGE.rawValue), name: "open_sessions")
        let (s3, histogram, _) = create(
            h, kind: UInt32(PX_METRIC_HISTOGRAM.rawValue), name: "frame_bytes", buckets: [100, 1000])
        #expect(s2 == PX_OK.status && s3 == PX_OK.status)
        for _ in 0..<5 { api.metric_record(counter, 2) }
        api.metric_record(counter, -1)
        api.metric_record(gauge, 7)
        api.metric_record(histogram, 50)
        api.metric_record(histogram, 500)
        let text = h.kernel.services.metrics.prometheusText()
        #expect(text.contains(#"plexus_frames_sent_total{plugin="test-client",peer="a"} 10"#), "\(text)")
        #expect(text.contains("# TYPE plexus_frames_sent_total counter"))
        #expect(text.contains(#"plexus_open_sessions{plugin="test-client"} 7.0"#), "\(text)")
        #expect(text.contains(#"plexus_frame_bytes_bucket{plugin="test-client",le="100.0"} 1"#), "\(text)")
        #expect(text.contains(#"plexus_frame_bytes_bucket{plugin="test-client",le="1000.0"} 2"#), "\(text)")
    }

    @Test("a bad metric spec is refused with the reason; a name taken by another kind is ALREADY_EXISTS")
    func metricRefusals() throws {
        let h = try DeliveryHarness()
        defer { h.shutDown() }
        let counter = UInt32(PX_METRIC_COUNTER.rawValue)
        #expect(create(h, kind: 9, name: "x").2.contains("unknown metric kind 9"))
        #expect(create(h, kind: counter, name: "Bad-Name").2.contains("lower-case letters"))
        #expect(create(h, kind: counter, name: "x", labels: [("plugin", "me")]).2.contains("not 'plugin'"))
        #expect(
            create(h, kind: UInt32(PX_METRIC_HISTOGRAM.rawValue), name: "h", buckets: [5, 1]).2.contains("increasing"))
        #expect(create(h, kind: UInt32(PX_METRIC_GAUGE.rawValue), name: "depth").0 == PX_OK.status)
        let clash = create(h, kind: UInt32(PX_METRIC_HISTOGRAM.rawValue), name: "depth")
        #expect(clash.0 == PX_ERR_ALREADY_EXISTS.status, "\(clash.2)")
    }
}

/// A label pair kept alive as C strings for a test's call.
final class CEventStrings {
    let key: UnsafeMutablePointer<CChar>
    let value: UnsafeMutablePointer<CChar>
    init(_ key: String, _ value: String) {
        self.key = strdup(key)
        self.value = strdup(value)
    }
    deinit {
        free(key)
        free(value)
    }
    var pair: px_kv {
        px_kv(
            key: px_str(ptr: key, len: strlen(key)), value: px_str(ptr: value, len: strlen(value)))
    }
}
