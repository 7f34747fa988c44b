import EtcdClient
import PlexusPluginSDK

/// The manifest's configuration of the etcd registry (see the README for each key).
struct Settings: Decodable, Sendable {
    struct TLSFiles: Decodable, Sendable {
        var ca: String = ""
        var cert: String = ""
        var key: String = ""

        enum CodingKeys: String, CodingKey { case ca, cert, key }

        init(from decoder: any Decoder) throws {
            let keys = try decoder.container(keyedBy: CodingKeys.self)
            ca = try keys.decodeIfPresent(String.self, forKey: .ca) ?? ""
            cert = try keys.decodeIfPresent(String.self, forKey: .cert) ?? ""
            key = try keys.decodeIfPresent(String.self, forKey: .key) ?? ""
        }
    }

    /// Who renews the lease of an instance registered with a TTL.
    enum Renewal: String, Decodable, Sendable {
        /// The plugin, while it runs (a `LeaseKeepAlive` stream): the instance lives as long as its node.
        case plugin
        /// Only registering again or `keepAlive`: the instance expires `ttl_ms` after its latest renewal.
        case caller
    }

    var endpoints: [String] = ["127.0.0.1:2379"]
    var prefix = "plexus"
    var username = ""
    var password = ""
    var tls: TLSFiles?
    var dialTimeoutMs = 2000
    var requestTimeoutMs = 5000
    var renewal = Renewal.plugin

    enum CodingKeys: String, CodingKey {
        case endpoints, prefix, username, password, tls, dialTimeoutMs, requestTimeoutMs, renewal
    }

    init() {}

    init(from decoder: any Decoder) throws {
        let keys = try decoder.container(keyedBy: CodingKeys.self)
        endpoints = try keys.decodeIfPresent([String].self, forKey: .endpoints) ?? endpoints
        prefix = try keys.decodeIfPresent(String.self, forKey: .prefix) ?? prefix
        username = try keys.decodeIfPresent(String.self, forKey: .username) ?? ""
        password = try keys.decodeIfPresent(String.self, forKey: .password) ?? ""
        tls = try keys.decodeIfPresent(TLSFiles.self, forKey: .tls)
        dialTimeoutMs = try keys.decodeIfPresent(Int.self, forKey: .dialTimeoutMs) ?? dialTimeoutMs
        requestTimeoutMs = try keys.decodeIfPresent(Int.self, forKey: .requestTimeoutMs) ?? requestTimeoutMs
        renewal = try keys.decodeIfPresent(Renewal.self, forKey: .renewal) ?? renewal
    }

    /// The client configuration these settings describe.
    /// - Throws: `PluginError` (`PX_ERR_INVALID_ARGUMENT`) naming the key that is wrong.
    func etcd() throws -> EtcdConfiguration {
        let name = EtcdRegistry.name
        guard !endpoints.isEmpty else { throw PluginError.invalidArgument("\(name): endpoints is empty") }
        guard !prefix.isEmpty, !prefix.hasSuffix("/") else {
            throw PluginError.invalidArgument("\(name): prefix '\(prefix)' must be non-empty without a trailing /")
        }
        guard dialTimeoutMs > 0, requestTimeoutMs > 0 else {
            throw PluginError.invalidArgument("\(name): dialTimeoutMs and requestTimeoutMs must be positive")
        }
        guard username.isEmpty == password.isEmpty || !username.isEmpty else {
            throw PluginError.invalidArgument("\(name): password given without username")
        }
        var configuration: EtcdConfiguration
        do {
            configuration = EtcdConfiguration(endpoints: try endpoints.map { try .init(parsing: $0) })
        } catch {
            throw PluginError.invalidArgument("\(name): endpoints: \(error)")
        }
        configuration.username = username
        configuration.password = password
        if let tls {
            guard tls.cert.isEmpty == tls.key.isEmpty else {
                throw PluginError.invalidArgument("\(name): tls needs both cert and key, or neither")
            }
            configuration.tls = .init(caFile: tls.ca, certFile: tls.cert, keyFile: tls.key)
        }
        configuration.dialTimeout = .milliseconds(dialTimeoutMs)
        configuration.requestTimeout = .milliseconds(requestTimeoutMs)
        return configuration
    }
}
