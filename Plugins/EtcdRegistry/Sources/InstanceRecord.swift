import Foundation
import PlexusPluginSDK

/// The JSON value of an instance's key, `<prefix>/services/<service>/<instance_id>`.
struct InstanceRecord: Codable, Equatable {
    var service: String
    var instanceId: String
    var address: String
    var metadata: [String: String]
    var ttlMs: UInt64

    init(_ instance: ServiceInstance) {
        service = instance.service
        instanceId = instance.instanceID
        address = instance.address
        metadata = instance.metadata
        ttlMs = instance.ttlMilliseconds
    }

    var instance: ServiceInstance {
        ServiceInstance(
            service: service, instanceID: instanceId, address: address, metadata: metadata, ttlMilliseconds: ttlMs)
    }

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        // Encoding strings and integers cannot fail.
        return (try? Array(encoder.encode(self))) ?? []
    }

    /// Decodes a value written by this plugin; nil for anything else (another writer's key is skipped, never
    /// trusted).
    static func decode(_ bytes: [UInt8]) -> InstanceRecord? {
        try? JSONDecoder().decode(InstanceRecord.self, from: Data(bytes))
    }
}

/// The keys of the registry under its prefix.
struct KeyLayout: Sendable {
    let prefix: String

    /// `<prefix>/services/<service>/` (the service escaped).
    func servicePrefix(_ service: String) -> [UInt8] { Array("\(prefix)/services/\(Self.escape(service))/".utf8) }

    func instanceKey(_ service: String, _ instanceID: String) -> [UInt8] {
        servicePrefix(service) + Array(Self.escape(instanceID).utf8)
    }

    /// `<prefix>/kv/<key>`.
    func kvKey(_ key: String) -> [UInt8] { Array("\(prefix)/kv/\(key)".utf8) }

    var kvPrefix: [UInt8] { Array("\(prefix)/kv/".utf8) }

    /// A name with `%` and `/` percent-encoded, so one segment stays one segment.
    static func escape(_ name: String) -> String {
        guard name.contains(where: { $0 == "%" || $0 == "/" }) else { return name }
        return name.replacingOccurrences(of: "%", with: "%25").replacingOccurrences(of: "/", with: "%2F")
    }
}
