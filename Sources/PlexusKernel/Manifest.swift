import PlexusABI

/// What a plugin is and how this node runs it: one manifest file (see docs/manifest.md).
public struct Manifest: Sendable {
    /// The manifest format version this kernel reads.
    public static let formatVersion = 1

    /// A plugin kind, as in `px_plugin_kind`.
    public enum Kind: String, Sendable, CaseIterable, Comparable {
        case protocolKind = "protocol"
        case registry
        case storage
        case connector

        /// The `px_plugin_kind` bit.
        public var bit: UInt32 {
            switch self {
            case .protocolKind: return UInt32(PX_KIND_PROTOCOL.rawValue)
            case .registry: return UInt32(PX_KIND_REGISTRY.rawValue)
            case .storage: return UInt32(PX_KIND_STORAGE.rawValue)
            case .connector: return UInt32(PX_KIND_CONNECTOR.rawValue)
            }
        }

        /// The kinds whose bits are set in `mask`.
        public static func kinds(in mask: UInt32) -> [Kind] { allCases.filter { mask & $0.bit != 0 } }

        public static func < (lhs: Kind, rhs: Kind) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    /// A capability another plugin must provide.
    public struct Requirement: Sendable {
        public var capability: String
        public var range: VersionRange
        public var optional: Bool
    }

    /// A capability this plugin provides.
    public struct Provision: Sendable {
        public var capability: String
        public var version: SemanticVersion
    }

    /// How the plugin runs: in the node's process, or in a `plexus plugin-host` child (`ProcessIsolation`).
    public enum Isolation: String, Sendable {
        case inProcess = "in-process"
        case process
    }

    /// How a process-isolated plugin is restarted after its child fails (`restart` in the manifest).
    public struct RestartPolicy: Sendable, Equatable {
        /// Failures within `windowSeconds` that quarantine the plugin (no further restart).
        public var maxFailures = 5
        public var windowSeconds: Int64 = 60
        /// The delay before the first restart; doubled for each further failure within the window.
        public var backoffMs: Int64 = 100
        /// The longest delay between restarts.
        public var maxBackoffMs: Int64 = 5000

        public init() {}
    }

    /// Where the manifest was read from (for messages).
    public var path: String
    /// The manifest file's bytes that were parsed, when it was read from a file (`ManifestParser.load`): a
    /// plugin signature signs their digest (`PluginTrust`), so it is taken of these, never of the file again.
    public var fileBytes: [UInt8]?
    public var name: String
    public var version: SemanticVersion
    public var description: String
    public var kinds: [Kind]
    /// The library as written in the manifest.
    public var library: String
    /// The pinned sha256 of the library, lowercase hex; `nil` when the manifest pins none.
    public var sha256: String?
    public var abiMajor: Int
    public var abiMinor: Int
    /// For Swift plugins, the toolchain that built them (`swift-6.3.1`); `nil` for C plugins.
    public var toolchain: String?
    public var requires: [Requirement]
    public var provides: [Provision]
    public var configSchema: ConfigSchema
    /// The configuration this node runs the plugin with, validated against `configSchema`, defaults filled in.
    public var config: ConfigValue
    /// The config values as the manifest writes them (before defaults), so a node's values can be laid over.
    public var configValues: ConfigValue = .object([])
    /// The keys whose values the node file set (`plugins.config`), for reports.
    public var configOverridden: [String] = []
    public var isolation: Isolation
    public var operations: [OperationDeclaration]
    /// How long `on_start` may take.
    public var startTimeout: Duration
    /// How long `on_stop` may take.
    public var stopTimeout: Duration
    /// Whether the plugin is to be started (false: verified and reported, not loaded).
    public var enabled: Bool
    /// With `isolation: process`: when its child is restarted, and when it is quarantined instead.
    public var restart = RestartPolicy()
}
