import Foundation
import PlexusKernel
import Testing

@Suite("node file: tracing")
struct TracingConfigTests {
    @Test("off by default; the OTLP exporter's endpoint, protocol, sampler and service name; bad values named")
    func tracingSection() throws {
        let off = try NodeConfig.parse("admin: {port: 0}\n", path: "plexus.yaml", baseDirectory: "/srv")
        #expect(off.tracing.exporter == .none)
        let text = [
            "tracing:", "  exporter: otlp", "  endpoint: \"http://collector:4318\"", "  protocol: http/json",
            "  sampler: parentbased_traceidratio", "  ratio: 0.25", "  serviceName: mesh",
        ].joined(separator: "\n")
        let config = try NodeConfig.parse(text + "\n", path: "plexus.yaml", baseDirectory: "/srv")
        #expect(config.tracing.exporter == .otlp)
        #expect(config.tracing.endpoint == "http://collector:4318")
        #expect(config.tracing.otlpProtocol == .httpJSON)
        #expect(config.tracing.sampler == .parentBasedTraceIDRatio)
        #expect(config.tracing.ratio == 0.25)
        #expect(config.tracing.serviceName == "mesh")
        let bad = [
            ("tracing: {exporter: zipkin}\n", "zipkin"), ("tracing: {protocol: grpc}\n", "grpc"),
            ("tracing: {ratio: 2}\n", "probability"), ("tracing: {endpoint: collector}\n", "http://"),
        ]
        for (text, mentioned) in bad {
            #expect {
                try NodeConfig.parse(text, path: "plexus.yaml", baseDirectory: "/srv")
            } throws: { error in
                "\(error)".contains(mentioned) && "\(error)".contains("tracing.")
            }
        }
    }
}
