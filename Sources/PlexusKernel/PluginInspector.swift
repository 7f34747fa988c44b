import Foundation
import PlexusABI
import PlexusCore

/// What `plexus plugin inspect` reports: what the kernel would do with a manifest or a library, without
/// creating or starting anything.
public enum PluginInspector {
    /// A report as lines of `key: value` text.
    public typealias Report = [(String, String)]

    /// Inspects a manifest: parses and validates it, finds and verifies its library, and negotiates with it.
    public static func inspectManifest(path: String, searchPath: [String], cacheDirectory: String) -> (
        Report, KernelError?
    ) {
        var report: Report = [("manifest", path)]
        do {
            let manifest = try ManifestParser.load(path: path)
            report += [
                ("name", manifest.name), ("version", "\(manifest.version)"),
                ("kinds", manifest.kinds.map(\.rawValue).joined(separator: ", ")),
                (
                    "abi",
                    "\(manifest.abiMajor).\(manifest.abiMinor) (kernel speaks \(PX_ABI_VERSION_MAJOR).\(PX_ABI_VERSION_MINOR))"
                ),
                ("toolchain", manifest.toolchain ?? "none (C plugin)"),
                (
                    "requires",
                    manifest.requires.map { "\($0.capability) \($0.range)\($0.optional ? " (optional)" : "")" }.joined(
                        separator: "; ")
                ),
                ("provides", manifest.provides.map { "\($0.capability) \($0.version)" }.joined(separator: "; ")),
                ("config", manifest.config.json),
            ]
            for key in manifest.configSchema.keys {
                report.append(
                    (
                        "config key \(key.name)",
                        "\(key.type.rawValue)\(key.defaultValue.map { ", default \($0.json)" } ?? ""): \(key.description)"
                    ))
            }
            for op in manifest.operations {
                report.append(
                    (
                        "operation \(op.name)",
                        "\(op.symbol): \(op.signature)\(op.description.isEmpty ? "" : " — \(op.description)")"
                    ))
            }
            let loader = PluginLoader(searchPath: searchPath, cacheDirectory: cacheDirectory, requireSHA256: false)
            let library = try loader.locate(manifest)
            report.append(("library", library))
            let digest = try loader.verify(manifest, library: library)
            report.append(
                (
                    "sha256",
                    digest
                        + (manifest.sha256 == nil
                            ? " (not pinned: add `sha256: \(digest)` to pin it)" : " (matches the pin)")
                ))
            let mapped = try loader.cache(library, sha256: digest, subject: manifest.path)
            let loaded = try loader.load(manifest, path: mapped, sha256: digest, deadline: manifest.startTimeout)
            report += describe(loaded.descriptor)
            for op in manifest.operations {
                _ = try OperationInvoker(declaration: op, handle: loaded.handle, plugin: manifest.name)
            }
            report.append(("verdict", "the kernel would load, create and start this plugin"))
            return (report, nil)
        } catch let error as KernelError {
            report.append(("verdict", "the kernel would refuse it: [\(error.code.rawValue)] \(error)"))
            return (report, error)
        } catch {
            let wrapped = KernelError(.io, subject: path, "\(error)")
            report.append(("verdict", "the kernel would refuse it: \(wrapped)"))
            return (report, wrapped)
        }
    }

    /// Inspects a library: its hash, and what its entry says about it (the entry only fills in a descriptor).
    public static func inspectLibrary(path: String, cacheDirectory: String) -> (Report, KernelError?) {
        var report: Report = [("library", path)]
        do {
            let digest = try PluginLoader.sha256(ofFile: path)
            report.append(("sha256", digest))
            let loader = PluginLoader(searchPath: [], cacheDirectory: cacheDirectory, requireSHA256: false)
            let mapped = try loader.cache(path, sha256: digest, subject: path)
            let (_, descriptor) = try PluginLoader.open(
                mapped, subject: path, library: path, entryName: "inspect", deadline: .seconds(10))
            report += describe(descriptor)
            report.append(("verdict", "a Plexus plugin; write a manifest naming it (see docs/manifest.md)"))
            return (report, nil)
        } catch let error as KernelError {
            report.append(("verdict", "not loadable: [\(error.code.rawValue)] \(error)"))
            return (report, error)
        } catch {
            return (report + [("verdict", "not loadable: \(error)")], KernelError(.io, subject: path, "\(error)"))
        }
    }

    /// What a library's descriptor declares, enough to write a manifest for it (`plexus dev LIBRARY`).
    public struct Declared: Sendable {
        public var name: String
        public var version: String
        public var kinds: [Manifest.Kind]
        public var abiMajor: Int
        public var abiMinor: Int
        public var toolchain: String?
    }

    /// Maps `path` (its content-addressed copy) and reads its descriptor.
    /// - Throws: `KernelError` when it is not a loadable plugin.
    public static func declared(library path: String, cacheDirectory: String) throws -> Declared {
        let digest = try PluginLoader.sha256(ofFile: path)
        let loader = PluginLoader(searchPath: [], cacheDirectory: cacheDirectory, requireSHA256: false)
        let mapped = try loader.cache(path, sha256: digest, subject: path)
        let (_, d) = try PluginLoader.open(
            mapped, subject: path, library: path, entryName: "dev", deadline: .seconds(10))
        guard let name = d.name.map({ String(cString: $0) }), let version = d.version.map({ String(cString: $0) })
        else {
            throw KernelError(.descriptorInvalid, subject: path, "the descriptor names no plugin name or version")
        }
        return Declared(
            name: name, version: version, kinds: Manifest.Kind.kinds(in: d.kinds), abiMajor: Int(d.abi_major),
            abiMinor: Int(d.abi_minor), toolchain: d.toolchain.map { String(cString: $0) })
    }

    static func describe(_ d: px_plugin_descriptor) -> Report {
        [
            ("plugin name", d.name.map { String(cString: $0) } ?? "(none)"),
            ("plugin version", d.version.map { String(cString: $0) } ?? "(none)"),
            ("plugin abi", "\(d.abi_major).\(d.abi_minor)"),
            ("plugin kinds", Manifest.Kind.kinds(in: d.kinds).map(\.rawValue).joined(separator: ", ")),
            ("plugin toolchain", d.toolchain.map { String(cString: $0) } ?? "none (C plugin)"),
        ]
    }
}
