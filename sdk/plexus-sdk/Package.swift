// swift-tools-version: 6.1
import PackageDescription

/// The Plexus plugin SDK: what a plugin author needs and nothing else. The C ABI (`PlexusABI`: `plexus.h` and
/// the static asserts pinning its layouts), the value types shared with the kernel (`PlexusCore`: CloudEvent,
/// StoredRecord, their C layouts) and the Swift SDK (`PlexusPluginSDK`). It depends on no other package; the
/// Plexus repository's own plugins build against it exactly as an outside plugin does (docs/authoring.md).
///
/// A plugin links its `.dynamic` library with `plugin.version-script` (beside this file), which exports only
/// `px_plugin_entry_v1` and the manifest operations `px_op_*`.
let package = Package(
    name: "plexus-sdk",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "PlexusABI", targets: ["PlexusABI"]),
        .library(name: "PlexusCore", targets: ["PlexusCore"]),
        .library(name: "PlexusPluginSDK", targets: ["PlexusPluginSDK"]),
    ],
    targets: [
        .target(name: "PlexusABI", path: "Sources/PlexusABI"),
        .target(name: "PlexusCore", dependencies: ["PlexusABI"]),
        .target(name: "PlexusPluginSDK", dependencies: ["PlexusABI", "PlexusCore"]),
    ]
)
