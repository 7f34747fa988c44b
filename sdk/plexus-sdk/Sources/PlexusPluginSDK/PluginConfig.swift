import Foundation
import PlexusABI

/// What a plugin instance is created with: the manifest's configuration, validated and with defaults.
public struct PluginConfig: Sendable {
    public var instanceName: String
    public var nodeID: String
    /// A directory this instance owns.
    public var dataDirectory: String
    /// The whole configuration as one JSON object.
    public var json: String
    /// Top-level keys: scalars as text, lists and objects as JSON.
    public var entries: [String: String]

    public init(instanceName: String, nodeID: String, dataDirectory: String, json: String, entries: [String: String]) {
        self.instanceName = instanceName
        self.nodeID = nodeID
        self.dataDirectory = dataDirectory
        self.json = json
        self.entries = entries
    }

    init(copying c: UnsafePointer<px_plugin_config>) {
        let config = c.pointee
        var entries: [String: String] = [:]
        if let kvs = config.entries {
            for i in 0..<config.entry_count { entries[kvs[i].key.string] = kvs[i].value.string }
        }
        self.init(
            instanceName: config.instance_name.string, nodeID: config.node_id.string,
            dataDirectory: config.data_dir.string, json: config.json.string, entries: entries)
    }

    /// The value of `key`, or `fallback` when it is absent or empty.
    public func text(_ key: String, default fallback: String) -> String {
        entries[key].flatMap { $0.isEmpty ? nil : $0 } ?? fallback
    }

    /// The non-negative integer value of `key`, or `fallback` when it is absent or empty.
    /// - Throws: `PluginError` (`PX_ERR_INVALID_ARGUMENT`) naming the instance and key when it is not one.
    public func nonNegativeInteger(_ key: String, default fallback: Int) throws -> Int {
        guard let text = entries[key], !text.isEmpty else { return fallback }
        guard let value = Int(text), value >= 0 else {
            throw PluginError.invalidArgument("\(instanceName): '\(key)' must be a non-negative integer")
        }
        return value
    }

    /// Decodes the configuration into a `Decodable` type.
    /// - Throws: `PluginError` with `PX_ERR_INVALID_ARGUMENT` naming what did not decode.
    public func decode<T: Decodable>(_ type: T.Type) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(json.utf8))
        } catch {
            throw PluginError.invalidArgument("\(instanceName): configuration does not decode: \(error)")
        }
    }
}
