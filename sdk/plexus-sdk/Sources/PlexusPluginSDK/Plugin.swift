@_exported import PlexusABI
@_exported import PlexusCore

/// A Plexus plugin written in Swift: a type conforming to this protocol, plus one exported entry function:
///
/// ```swift
/// @_cdecl("px_plugin_entry_v1")
/// public func entry(_ api: UnsafePointer<px_host_api>?, _ out: UnsafeMutablePointer<UnsafePointer<px_plugin_descriptor>?>?,
///                   _ err: UnsafeMutablePointer<px_error>?) -> px_status {
///     PluginExport.entry(MyPlugin.self, api, out, err)
/// }
/// ```
///
/// Thrown errors become `px_status` codes with their text in the kernel's error buffer; nothing traps across
/// the C boundary.
///
/// - Important: The kernel calls the lifecycle methods one at a time, on its own threads. `health()` and the
///   plugin's operations may run concurrently with everything else, so shared state needs a lock.
public protocol Plugin: AnyObject, Sendable {
    /// The plugin's name; must equal the manifest's `name`.
    static var name: String { get }
    /// SemVer; must equal the manifest's `version`.
    static var version: String { get }
    static var kinds: PluginKinds { get }

    /// Creates an instance from its validated configuration. Must not start work yet.
    /// - Throws: `PluginError` (or any error, reported as `PX_ERR_INTERNAL`) to refuse.
    init(host: Host, config: PluginConfig) throws

    /// Starts the plugin's work. On failure, undo partial work before throwing.
    func start() throws

    /// Stops the plugin's work within `timeout`.
    func stop(timeout: Duration) throws

    /// Throws when the plugin is unhealthy; the error's text is the reason.
    func health() throws
}

extension Plugin {
    public func health() throws {}
}

/// The kinds a plugin declares (`px_plugin_kind`).
public struct PluginKinds: OptionSet, Sendable {
    public let rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }

    public static let protocolKind = PluginKinds(rawValue: PX_KIND_PROTOCOL.rawValue)
    public static let registry = PluginKinds(rawValue: PX_KIND_REGISTRY.rawValue)
    public static let storage = PluginKinds(rawValue: PX_KIND_STORAGE.rawValue)
    public static let connector = PluginKinds(rawValue: PX_KIND_CONNECTOR.rawValue)
}

/// An error a plugin reports to the kernel: a `px_status` code and a reason.
public struct PluginError: Error, CustomStringConvertible, Sendable {
    public var status: px_status
    public var message: String
    /// For a metadata write refused with `PX_ERR_FAILED_PRECONDITION` (ABI 1.4): the key's current version
    /// and the store's revision. `nil` for every other error.
    public var conflict: KVConflict?

    public init(_ code: px_status_code, _ message: String) {
        self.status = code.status
        self.message = message
    }

    public init(status: px_status, _ message: String) {
        self.status = status
        self.message = message
    }

    public var description: String { message }

    public static func invalidArgument(_ message: String) -> PluginError {
        PluginError(PX_ERR_INVALID_ARGUMENT, message)
    }
}
