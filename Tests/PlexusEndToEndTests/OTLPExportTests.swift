import Foundation
import PlexusClient
import PlexusCore
import Testing

/// The node file's `tracing: {exporter: otlp}`: a node exports its spans over OTLP/HTTP (protobuf) to a receiver in
/// the test, which reads the `ExportTraceServiceRequest` bodies it gets.
@Suite("OTLP export", .serialized, .timeLimit(.minutes(3)))
struct OTLPExportTests {
    /// The fields of an OTLP `Span` the test checks.
    struct ExportedSpan: Equatable {
        var traceID = ""
        var spanID = ""
        var parentSpanID = ""
        var name = ""
        var attributes: [String: String] = [:]
    }

    @Test("publish over TCP, consume over TCP: the receiver gets publish, store and deliver under the producer's trace")
    func exportsSpans() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let receiver = try await TestSink.start { _, _ in
            TestSink.Answer(status: 200, headers: [("Content-Type", "application/x-protobuf")])
        }
        defer { receiver.stop() }
        let nodeFile = directory.url.appendingPathComponent("plexus.yaml")
        try """
        tracing:
          exporter: otlp
          endpoint: "\(receiver.url)"
          protocol: http/protobuf
          serviceName: plexus-test
        """.write(to: nodeFile, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 1000), data: try directory.subdirectory("data"),
            in: directory.url,
            extraArguments: ["--config", nodeFile.path, "--default-storage", "memory-storage"])
        defer { node.kill() }
        let tcp = try await node.tcpPort()
        let traceID = "5bf92f3577b34da6a3ce929d0e0e4737"
        let producerSpan = "10f067aa0ba902b8"
        let client = try await PlexusClient.connect(ClientConfiguration(port: tcp, name: "otlp-test", reconnect: false))
        _ = try await client.publish(
            topic: "exported",
            CloudEvent(
                id: "e1", source: "/otlp", type: "t", extensions: [("traceparent", "00-\(traceID)-\(producerSpan)-01")])
        )
        await client.close()
        let stored = try await HTTPProtocolTests.readBack(tcp: tcp, topic: "exported", count: 1)
        #expect(stored.count == 1)
        // The batch processor sends within its schedule delay (5 s by default).
        var spans: [ExportedSpan] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            spans = receiver.requests("/v1/traces").flatMap { Self.spans(ofRequest: $0.body) }
            if Set(spans.map(\.name)).isSuperset(of: ["publish", "store", "deliver"]) { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        let request = try #require(receiver.requests("/v1/traces").first)
        #expect(request.header("Content-Type") == "application/x-protobuf")
        let publish = try #require(spans.first { $0.name == "publish" }, "\(spans)")
        let store = try #require(spans.first { $0.name == "store" })
        let deliver = try #require(spans.first { $0.name == "deliver" })
        for span in [publish, store, deliver] { #expect(span.traceID == traceID) }
        #expect(publish.parentSpanID == producerSpan)
        #expect(store.parentSpanID == publish.spanID)
        #expect(deliver.parentSpanID == producerSpan)
        #expect(publish.attributes["messaging.destination.name"] == "exported")
        #expect(deliver.attributes["plexus.delivery.outcome"] == "ack")
    }

    // MARK: Reading OTLP's protobuf

    /// The spans of an `ExportTraceServiceRequest` (opentelemetry/proto/collector/trace/v1): resource_spans = 1,
    /// then ResourceSpans.scope_spans = 2, ScopeSpans.spans = 2; Span: trace_id = 1, span_id = 2,
    /// parent_span_id = 4, name = 5, attributes = 9 (KeyValue: key = 1, value = 2; AnyValue.string_value = 1).
    static func spans(ofRequest body: [UInt8]) -> [ExportedSpan] {
        var out: [ExportedSpan] = []
        for resource in fields(body, 1) {
            for scope in fields(resource, 2) {
                for span in fields(scope, 2) {
                    var s = ExportedSpan()
                    s.traceID = hex(fields(span, 1).first ?? [])
                    s.spanID = hex(fields(span, 2).first ?? [])
                    s.parentSpanID = hex(fields(span, 4).first ?? [])
                    s.name = String(decoding: fields(span, 5).first ?? [], as: UTF8.self)
                    for kv in fields(span, 9) {
                        let key = String(decoding: fields(kv, 1).first ?? [], as: UTF8.self)
                        if let value = fields(kv, 2).first, let text = fields(value, 1).first {
                            s.attributes[key] = String(decoding: text, as: UTF8.self)
                        }
                    }
                    out.append(s)
                }
            }
        }
        return out
    }

    static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

    /// The length-delimited fields numbered `number` of a protobuf message (others skipped by wire type).
    static func fields(_ message: [UInt8], _ number: UInt64) -> [[UInt8]] {
        var found: [[UInt8]] = []
        var i = 0
        func varint() -> UInt64? {
            var value: UInt64 = 0
            var shift: UInt64 = 0
            while i < message.count, shift < 64 {
                let byte = message[i]
                i += 1
                value |= UInt64(byte & 0x7F) << shift
                if byte & 0x80 == 0 { return value }
                shift += 7
            }
            return nil
        }
        while i < message.count {
            guard let tag = varint() else { break }
            switch tag & 7 {
            case 0: guard varint() != nil else { return found }
            case 1: i += 8
            case 5: i += 4
            case 2:
                guard let length = varint(), i + Int(length) <= message.count else { return found }
                if tag >> 3 == number { found.append(Array(message[i..<i + Int(length)])) }
                i += Int(length)
            default: return found
            }
        }
        return found
    }
}
