import CCurl
import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#endif

/// Where and how the sink reaches its bucket, from its configuration.
struct S3Options: Sendable {
    var endpoint: String
    var region: String
    var bucket: String
    var prefix: String
    var accessKeyID: String
    var secretAccessKey: String
    var maxObjectBytes: Int
    var timeoutMs: Int

    init(_ config: PluginConfig) throws {
        let entries = config.entries
        func text(_ key: String) -> String? { entries[key].flatMap { $0.isEmpty ? nil : $0 } }
        func integer(_ key: String, _ fallback: Int, minimum: Int) throws -> Int {
            guard let text = text(key) else { return fallback }
            guard let value = Int(text), value >= minimum else {
                throw PluginError.invalidArgument("'\(key)' must be an integer of at least \(minimum), not '\(text)'")
            }
            return value
        }
        guard let endpoint = text("endpoint"), endpoint.hasPrefix("http://") || endpoint.hasPrefix("https://") else {
            throw PluginError.invalidArgument("'endpoint' must be an http:// or https:// URL (the S3 endpoint)")
        }
        var trimmed = Substring(endpoint)
        while trimmed.last == "/" { trimmed = trimmed.dropLast() }
        self.endpoint = String(trimmed)
        region = text("region") ?? "us-east-1"
        guard let bucket = text("bucket"), !bucket.contains("/") else {
            throw PluginError.invalidArgument("'bucket' must name a bucket (no '/')")
        }
        self.bucket = bucket
        prefix = entries["prefix"] ?? ""
        accessKeyID = entries["accessKeyId"] ?? ""
        secretAccessKey = entries["secretAccessKey"] ?? ""
        maxObjectBytes = try integer("maxObjectBytes", 8 << 20, minimum: 1)
        timeoutMs = try integer("timeoutMs", 30_000, minimum: 1)
    }

    /// The configured credentials, else `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and `AWS_SESSION_TOKEN`)
    /// from the node's environment, read at each connection (so rotated variables are picked up).
    /// - Throws: `S3Error` when neither gives both keys.
    func credentials() throws -> S3Credentials {
        func environment(_ name: String) -> String? {
            getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 }
        }
        if !accessKeyID.isEmpty && !secretAccessKey.isEmpty {
            return S3Credentials(accessKeyID: accessKeyID, secretAccessKey: secretAccessKey, sessionToken: nil)
        }
        guard let id = environment("AWS_ACCESS_KEY_ID"), let secret = environment("AWS_SECRET_ACCESS_KEY") else {
            throw S3Error(
                request: "credentials",
                reason: "set accessKeyId and secretAccessKey, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        }
        return S3Credentials(
            accessKeyID: id, secretAccessKey: secret, sessionToken: environment("AWS_SESSION_TOKEN"))
    }
}

/// An S3-compatible sink: writes the events of a topic as objects of CloudEvents JSON lines, one object per
/// batch (a count or time window), acknowledged after the `PUT` answered 200.
public final class S3Connector: Plugin {
    public static let name = "s3-sink"
    public static let version = "1.0.0"
    public static let kinds: PluginKinds = [.connector]

    let sink: SinkConnector

    public init(host: Host, config: PluginConfig) throws {
        let name = config.instanceName
        do {
            let settings = try ConnectorSettings(config)
            let options = try S3Options(config)
            let status = px_curl_global_init()
            guard status == CURLE_OK else {
                throw PluginError(PX_ERR_INTERNAL, "libcurl: \(String(cString: curl_easy_strerror(status)))")
            }
            let driver = S3Sink(options: options, workers: settings.concurrency)
            sink = SinkConnector(name: name, host: host, settings: settings, driver: driver)
        } catch let error as PluginError {
            throw PluginError(status: error.status, "\(name): \(error.message)")
        }
    }

    public func start() throws { try sink.start() }
    public func stop(timeout: Duration) throws { try sink.stop(timeout: timeout) }
    public func health() throws { try sink.health.check() }
}

@_cdecl("px_plugin_entry_v1")
public func s3ConnectorEntry(
    _ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
    _ err: UnsafeMutablePointer<px_error>?
) -> px_status {
    PluginExport.entry(S3Connector.self, api, out, err)
}

/// Operation `written`: events this instance wrote (their objects answered 200) and acknowledged.
@_cdecl("px_op_s3_sink_written")
public func s3SinkWritten(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(S3Connector.self, instance)?.sink.writtenCount ?? 0
}
