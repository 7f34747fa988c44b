import Logging
import OTel
import PlexusKernel
import ServiceLifecycle

/// The node file's `tracing` section made real: an OpenTelemetry tracer (swift-otel) whose spans a batch
/// processor exports over OTLP/HTTP, and the service that runs the export beside the kernel.
enum TracingExporter {
    /// The kernel's tracing and the service to run with it; `.off` and no service when `exporter` is `none`.
    static func make(_ config: TracingConfig, nodeID: String, logger: Logger) throws -> (
        tracing: KernelTracing, service: (any Service)?
    ) {
        guard config.exporter == .otlp else { return (.off, nil) }
        var otel = OTel.Configuration.default
        otel.serviceName = config.serviceName
        otel.resourceAttributes = ["service.instance.id": nodeID]
        otel.diagnosticLogger = .custom(logger)
        otel.propagators = [.traceContext]
        otel.metrics.enabled = false
        otel.logs.enabled = false
        otel.traces.enabled = true
        otel.traces.exporter = .otlp
        otel.traces.sampler = sampler(config)
        // An endpoint set explicitly is used as it is: the signal's path is the node's to add.
        let base = config.endpoint.hasSuffix("/") ? String(config.endpoint.dropLast()) : config.endpoint
        otel.traces.otlpExporter.endpoint = base + "/v1/traces"
        otel.traces.otlpExporter.protocol = config.otlpProtocol == .httpJSON ? .httpJSON : .httpProtobuf
        let backend = try OTel.makeTracingBackend(configuration: otel)
        return (KernelTracing(tracer: backend.factory), backend.service)
    }

    static func sampler(_ config: TracingConfig) -> OTel.Configuration.TracesConfiguration.SamplerConfiguration {
        switch config.sampler {
        case .alwaysOn: return .alwaysOn
        case .alwaysOff: return .alwaysOff
        case .parentBasedAlwaysOn: return .parentBasedAlwaysOn
        case .parentBasedAlwaysOff: return .parentBasedAlwaysOff
        case .traceIDRatio: return .traceIDRatio(ratio: config.ratio) ?? .traceIDRatio
        case .parentBasedTraceIDRatio: return .parentBasedTraceIDRatio(ratio: config.ratio) ?? .parentBasedTraceIDRatio
        }
    }
}
