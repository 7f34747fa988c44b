import Foundation

/// Where a plugin is in its life (docs/manifest.md, "Lifecycle").
///
/// `discovered → verified → resolved → loaded → created → active → stopping → stopped`, plus `failed`.
/// A plugin whose manifest says `enabled: false` stays `resolved`.
public enum PluginState: String, Sendable, Codable, CaseIterable {
    case discovered, verified, resolved, loaded, created, active, stopping, stopped, failed
}

/// What the kernel reports about one plugin (`plexus plugin list`, the admin endpoint).
public struct PluginStatus: Sendable, Codable, Equatable {
    public struct Transition: Sendable, Codable, Equatable {
        public var state: PluginState
        /// Unix time in seconds.
        public var at: Double
    }

    public struct Operation: Sendable, Codable, Equatable {
        public var name: String
        public var signature: String
        public var description: String
    }

    public var name: String
    public var version: String
    public var kinds: [String]
    public var state: PluginState
    public var lastError: String?
    public var errorCode: String?
    public var manifest: String
    public var library: String?
    public var sha256: String?
    public var health: String?
    public var operations: [Operation]
    public var history: [Transition]
}
