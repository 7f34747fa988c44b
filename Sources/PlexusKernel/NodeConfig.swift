import Foundation
import PlexusCore

/// The node file (`plexus.yaml`): who this node is, where its data lives, where the admin endpoint listens,
/// and where plugins come from. Relative paths are resolved against the node file's directory.
public struct NodeConfig: Sendable {
    public var nodeID: String = "node-1"
    public var dataDirectory: String = ".plexus/data"
    public var adminHost: String = "127.0.0.1"
    /// 0 picks a free port (tests); the default is EventMesh's admin port.
    public var adminPort: Int = 10106
    /// The bearer token every mutating admin request must carry (`admin.token`); none: no check. Required when
    /// `adminHost` is not a loopback address.
    public var adminToken: String?
    public var manifestDirectories: [String] = ["plugin-manifests"]
    /// Directories searched for a manifest's `library` after the manifest's own directory.
    public var pluginSearchPath: [String] = []
    /// Where loaded libraries are copied to, one content-addressed path per hash.
    public var pluginCacheDirectory: String?
    /// Refuse manifests that do not pin their library's sha256.
    public var requireSHA256 = false
    /// Which storage plugin each topic lives in. Every topic is stored: without `topics.defaultStorage` the
    /// node stores unbound topics in `raft-log`, else `memory-storage`, else refuses them (`DefaultStorage`).
    public var topics = TopicConfig()
    /// Load each plugin without a pinned sha256 in a child process first (`plugins.probe`).
    public var probe = false
    /// The executable the probe runs as `plugin-host --probe` (the `plexus` binary); set by `plexus serve`.
    public var probeExecutable: String?
    /// Whether the running node applies changes to its manifest directories (`plugins.watch`).
    public var watchPlugins = true
    /// How often the manifest directories are rescanned without an inotify event (`plugins.rescanMs`).
    public var rescanInterval: Duration = .seconds(2)
    /// Config values this node sets for its plugins over their manifests' (`plugins.config`).
    public var pluginConfig = ConfigOverrides()
    /// `security.trustedKeys`: raw Ed25519 public keys whose plugin signatures the node accepts.
    public var trustedKeys: [[UInt8]] = []
    /// `security.requireSigned`: refuse every plugin without a signature by a trusted key.
    public var requireSigned = false
    /// Whether spans of traced events are exported, and where (`tracing`); off by default.
    public var tracing = TracingConfig()

    public init() {}

    /// The cache directory, defaulting to `<dataDirectory>/plugin-cache`.
    public var resolvedCacheDirectory: String { pluginCacheDirectory ?? dataDirectory + "/plugin-cache" }

    /// Reads a node file.
    public static func load(path: String) throws -> NodeConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw KernelError(.nodeConfigInvalid, subject: path, "cannot be read: \(error.localizedDescription)")
        }
        let base = URL(fileURLWithPath: path).deletingLastPathComponent().path
        return try parse(text, path: path, baseDirectory: base)
    }

    /// Parses node-file text; relative paths are taken relative to `baseDirectory`.
    /// - Parameter environment: what `${NAME}` in `plugins.config` values and `admin.token` is replaced from.
    public static func parse(
        _ text: String, path: String, baseDirectory: String,
        environment: [String: String] = ProcessInfo.processInfo.environment
    ) throws -> NodeConfig {
        let root = try YAMLReader(subject: path, code: .nodeConfigInvalid).document(text)
        try root.onlyKeys(["node", "admin", "plugins", "topics", "security", "tracing"])
        var config = NodeConfig()
        func resolve(_ p: String) -> String { p.hasPrefix("/") ? p : baseDirectory + "/" + p }
        if let node = root.optional("node") {
            try node.onlyKeys(["id", "dataDirectory"])
            if let id = node.optional("id") {
                config.nodeID = try id.string()
                guard ManifestParser.isValidName(config.nodeID) else {
                    throw id.fail(
                        "'\(config.nodeID)' is not a valid node id; expected lowercase letters, digits and '-'")
                }
            }
            if let dir = node.optional("dataDirectory") { config.dataDirectory = try dir.string() }
        }
        // The default too: a `node` section without `dataDirectory` must not leave it relative to the
        // working directory.
        config.dataDirectory = resolve(config.dataDirectory)
        if let admin = root.optional("admin") {
            try admin.onlyKeys(["host", "port", "token"])
            if let host = admin.optional("host") { config.adminHost = try host.string() }
            if let field = admin.optional("token") {
                let token = try ConfigOverrides.substitute(
                    try field.string(), environment: environment, subject: path, field: "admin.token")
                guard !token.isEmpty else {
                    throw field.fail("admin.token is empty (an unset environment variable?); give a non-empty token")
                }
                config.adminToken = token
            }
            if let port = admin.optional("port") {
                config.adminPort = try port.int("a TCP port")
                guard (0...65535).contains(config.adminPort) else { throw port.fail("expected a port from 0 to 65535") }
            }
        }
        config.manifestDirectories = config.manifestDirectories.map(resolve)
        if let plugins = root.optional("plugins") {
            try plugins.onlyKeys([
                "manifestDirectories", "searchPath", "cacheDirectory", "requireSha256", "config", "watch", "rescanMs",
                "probe",
            ])
            if let flag = plugins.optional("watch") { config.watchPlugins = try flag.bool() }
            if let flag = plugins.optional("probe") { config.probe = try flag.bool() }
            if let field = plugins.optional("rescanMs") {
                let ms = try field.int("a number of milliseconds")
                guard (100...3_600_000).contains(ms) else { throw field.fail("expected 100 to 3600000 milliseconds") }
                config.rescanInterval = .milliseconds(ms)
            }
            if let dirs = plugins.optional("manifestDirectories") {
                config.manifestDirectories = try dirs.items("directories").map { resolve(try $0.string()) }
            }
            if let dirs = plugins.optional("searchPath") {
                config.pluginSearchPath = try dirs.items("directories").map { resolve(try $0.string()) }
            }
            if let dir = plugins.optional("cacheDirectory") { config.pluginCacheDirectory = resolve(try dir.string()) }
            if let flag = plugins.optional("requireSha256") { config.requireSHA256 = try flag.bool() }
            config.pluginConfig.subject = path
            if let overrides = plugins.optional("config") {
                for (name, field) in try overrides.entries("a mapping from plugin name to its config values") {
                    guard ManifestParser.isValidName(name) else {
                        throw field.fail("'\(name)' is not a plugin name; expected lowercase letters, digits and '-'")
                    }
                    let values = try ConfigOverrides.substitutingEnvironment(
                        try field.configValue(), environment: environment, subject: path,
                        field: "plugins.config.\(name)")
                    guard case .object(let pairs) = values else {
                        throw field.fail("expected a mapping of config keys to values for plugin '\(name)'")
                    }
                    config.pluginConfig.values.append((name, pairs))
                }
            }
        }
        if let security = root.optional("security") {
            try security.onlyKeys(["trustedKeys", "requireSigned"])
            if let flag = security.optional("requireSigned") { config.requireSigned = try flag.bool() }
            if let keys = security.optional("trustedKeys") {
                config.trustedKeys = try keys.items("base64 Ed25519 public keys").map { item in
                    let text = try item.string()
                    guard let raw = Data(base64Encoded: text), raw.count == 32 else {
                        throw item.fail(
                            "'\(text)' is not an Ed25519 public key: expected 32 bytes in base64 (the second word of a key file from `plexus plugin keygen`)"
                        )
                    }
                    return Array(raw)
                }
            }
            if config.requireSigned, config.trustedKeys.isEmpty {
                throw KernelError(
                    .nodeConfigInvalid, subject: path, field: "security.trustedKeys",
                    "is empty, but security.requireSigned is on: no plugin could ever be accepted")
            }
        }
        if let topics = root.optional("topics") {
            config.topics.isDeclared = true
            try topics.onlyKeys([
                "defaultStorage", "autoCreate", "bindings", "defaultRetentionBytes", "defaultRetentionMs",
            ])
            if let storage = topics.optional("defaultStorage") { config.topics.defaultStorage = try storage.string() }
            if let field = topics.optional("defaultRetentionBytes") {
                config.topics.defaultRetentionBytes = UInt64(max(0, try field.int("a number of bytes")))
            }
            if let field = topics.optional("defaultRetentionMs") {
                config.topics.defaultRetentionMs = UInt64(max(0, try field.int("a number of milliseconds")))
            }
            if let flag = topics.optional("autoCreate") { config.topics.autoCreate = try flag.bool() }
            if let bindings = topics.optional("bindings") {
                config.topics.bindings = try bindings.items("topic bindings").map { item in
                    try item.onlyKeys(["topic", "storage", "retentionBytes", "retentionMs"])
                    var binding = TopicConfig.Binding(
                        topic: try item.required("topic", "the topic's name").string(),
                        storage: try item.required("storage", "the name of a storage plugin").string())
                    if let field = item.optional("retentionBytes") {
                        binding.retentionBytes = UInt64(max(0, try field.int("a number of bytes")))
                    }
                    if let field = item.optional("retentionMs") {
                        binding.retentionMs = UInt64(max(0, try field.int("a number of milliseconds")))
                    }
                    return binding
                }
                var seen = Set<String>()
                for (index, binding) in config.topics.bindings.enumerated() where !seen.insert(binding.topic).inserted {
                    throw KernelError(
                        .nodeConfigInvalid, subject: path, field: "topics.bindings[\(index)].topic",
                        "topic '\(binding.topic)' is bound twice")
                }
            }
        }
        if let tracing = root.optional("tracing") { config.tracing = try TracingConfig.parse(tracing) }
        return config
    }
}

/// The node file's `tracing` section (docs/operations.md, "Tracing"): whether the node makes spans for traced
/// events and exports them over OTLP/HTTP.
public struct TracingConfig: Sendable, Equatable {
    /// Where spans go: `none` (tracing off, the default) or `otlp`.
    public enum Exporter: String, Sendable, Equatable { case none, otlp }
    /// The OTLP encodings over HTTP (`http/protobuf`, the default, or `http/json`).
    public enum OTLPProtocol: String, Sendable, Equatable {
        case httpProtobuf = "http/protobuf"
        case httpJSON = "http/json"
    }
    /// Which traces are recorded (the OpenTelemetry sampler names).
    public enum Sampler: String, Sendable, Equatable, CaseIterable {
        case alwaysOn = "always_on"
        case alwaysOff = "always_off"
        case traceIDRatio = "traceidratio"
        case parentBasedAlwaysOn = "parentbased_always_on"
        case parentBasedAlwaysOff = "parentbased_always_off"
        case parentBasedTraceIDRatio = "parentbased_traceidratio"
    }

    public var exporter = Exporter.none
    /// The collector's base URL; spans go to `<endpoint>/v1/traces`.
    public var endpoint = "http://127.0.0.1:4318"
    public var otlpProtocol = OTLPProtocol.httpProtobuf
    public var sampler = Sampler.parentBasedAlwaysOn
    /// The probability of the ratio samplers, 0 to 1.
    public var ratio = 1.0
    /// The `service.name` resource attribute.
    public var serviceName = "plexus"

    public init() {}

    static func parse(_ node: YAMLField) throws -> TracingConfig {
        try node.onlyKeys(["exporter", "endpoint", "protocol", "sampler", "ratio", "serviceName"])
        var config = TracingConfig()
        if let field = node.optional("exporter") {
            let text = try field.string()
            guard let exporter = Exporter(rawValue: text) else {
                throw field.fail("unknown exporter '\(text)'; expected none or otlp")
            }
            config.exporter = exporter
        }
        if let field = node.optional("endpoint") {
            config.endpoint = try field.string()
            guard config.endpoint.hasPrefix("http://") || config.endpoint.hasPrefix("https://") else {
                throw field.fail("'\(config.endpoint)' is not an http:// or https:// URL")
            }
        }
        if let field = node.optional("protocol") {
            let text = try field.string()
            guard let value = OTLPProtocol(rawValue: text) else {
                throw field.fail("unsupported OTLP protocol '\(text)'; expected http/protobuf or http/json")
            }
            config.otlpProtocol = value
        }
        if let field = node.optional("sampler") {
            let text = try field.string()
            guard let value = Sampler(rawValue: text) else {
                let known = Sampler.allCases.map(\.rawValue).joined(separator: ", ")
                throw field.fail("unknown sampler '\(text)'; expected one of \(known)")
            }
            config.sampler = value
        }
        if let field = node.optional("ratio") {
            let text = try field.string()
            guard let ratio = Double(text), (0...1).contains(ratio) else {
                throw field.fail("expected a probability from 0 to 1, not '\(text)'")
            }
            config.ratio = ratio
        }
        if let field = node.optional("serviceName") {
            config.serviceName = try field.string()
            guard !config.serviceName.isEmpty else { throw field.fail("the service name is empty") }
        }
        return config
    }
}
