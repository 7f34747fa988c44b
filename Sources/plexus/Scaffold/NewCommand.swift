import ArgumentParser
import Foundation
import PlexusABI
import PlexusCore
import PlexusKernel

extension PluginCommand {
    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Scaffold an out-of-tree plugin that builds with one command, with its manifest, a test and a conformance run.",
            discussion: """
                C (--lang c): built by `make` with the system C compiler against the plexus.h written beside it. \
                Swift (--lang swift): a SwiftPM package depending only on the SDK package (--sdk), built by \
                `swift build`. Every kind in both languages. \
                The tutorial: docs/authoring.md.
                """)

        @Argument(help: "The plugin's name: lowercase letters, digits and '-'.") var name: String
        @Argument(help: "The directory to create (default: ./NAME); it must not exist or must be empty.")
        var directory: String?
        @Option(name: .long, help: "protocol, registry, storage or connector.") var kind: String = "connector"
        @Option(name: .long, help: "c or swift.") var lang: String = "c"
        @Option(
            name: .long,
            help:
                "Swift only: the SDK package (default: the sdk/plexus-sdk found in this executable's directory or a parent)."
        )
        var sdk: String?

        func run() throws {
            guard ManifestParser.isValidName(name) else {
                throw ValidationError("'\(name)' is not a plugin name: lowercase letters, digits and '-'")
            }
            guard ["protocol", "registry", "storage", "connector"].contains(kind) else {
                throw ValidationError("--kind is protocol, registry, storage or connector, not '\(kind)'")
            }
            guard ["c", "swift"].contains(lang) else { throw ValidationError("--lang is c or swift, not '\(lang)'") }
            let sdkPath = lang == "swift" ? try resolveSDK() : ""
            let target = directory ?? name
            let fm = FileManager.default
            if fm.fileExists(atPath: target) {
                guard (try? fm.contentsOfDirectory(atPath: target))?.isEmpty == true else {
                    throw ValidationError("\(target) exists and is not an empty directory")
                }
            }
            let names = Scaffold.Names(name: name, kind: kind, sdk: sdkPath)
            let files = lang == "c" ? Scaffold.c(kind: kind, names) : Scaffold.swift(kind: kind, names)
            try fm.createDirectory(atPath: target, withIntermediateDirectories: true)
            for file in files {
                let path = target + "/" + file.path
                try fm.createDirectory(
                    atPath: URL(fileURLWithPath: path).deletingLastPathComponent().path,
                    withIntermediateDirectories: true)
                try file.text.write(toFile: path, atomically: true, encoding: .utf8)
                try fm.setAttributes([.posixPermissions: file.mode], ofItemAtPath: path)
            }
            print("\(target): \(files.map(\.path).joined(separator: ", "))")
            if lang == "c" {
                print("next: cd \(target) && make && make test   (make conformance; make dev: a throwaway node)")
            } else {
                print(
                    "next: cd \(target) && swift build && swift test   (make: build and copy the library beside the manifest; make conformance; make dev)"
                )
            }
        }

        /// The SDK package for a Swift scaffold: `--sdk`, else `sdk/plexus-sdk` in the directory of this executable
        /// or one of its parents (a build directory inside the repository, or an installed tree).
        func resolveSDK() throws -> String {
            func isSDK(_ path: String) -> Bool {
                FileManager.default.fileExists(atPath: path + "/Package.swift")
                    && FileManager.default.fileExists(atPath: path + "/plugin.version-script")
            }
            if let sdk {
                let path = URL(fileURLWithPath: sdk).standardizedFileURL.path
                guard isSDK(path) else {
                    throw ValidationError("--sdk \(sdk): no Package.swift and plugin.version-script there")
                }
                return path
            }
            let executable =
                (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0]
            var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
            var looked: [String] = []
            while true {
                let candidate = directory.appendingPathComponent("sdk/plexus-sdk").path
                looked.append(candidate)
                if isSDK(candidate) { return candidate }
                let parent = directory.deletingLastPathComponent()
                if parent.path == directory.path { break }
                directory = parent
            }
            throw ValidationError(
                "no Plexus SDK package found (looked in \(looked.joined(separator: ", "))); name it with --sdk PATH")
        }
    }
}

/// What `plexus plugin new` writes, by kind and language.
enum Scaffold {
    /// One file to write, relative to the plugin's directory.
    struct File {
        var path: String
        var text: String
        var mode: Int = 0o644
    }

    /// The placeholders' values.
    struct Names {
        var name: String
        var kind: String
        var sdk: String
        /// A C identifier: the name with '-' as '_'.
        var ident: String { name.replacingOccurrences(of: "-", with: "_") }
        /// The Swift target: the name in UpperCamelCase (`my-sink` → `MySink`), never starting with a digit.
        var target: String {
            let camel = name.split(separator: "-").map { $0.prefix(1).uppercased() + $0.dropFirst() }.joined()
            return camel.first?.isNumber == true ? "Plugin" + camel : camel
        }

        func fill(_ text: String) -> String {
            text.replacingOccurrences(of: "@NAME@", with: name).replacingOccurrences(of: "@IDENT@", with: ident)
                .replacingOccurrences(of: "@TARGET@", with: target)
                .replacingOccurrences(of: "@LIBRARY@", with: "lib\(ident).so")
                .replacingOccurrences(of: "@SDK@", with: sdk)
                .replacingOccurrences(of: "@TOOLCHAIN@", with: Toolchain.current)
                .replacingOccurrences(of: "@ABI_MINOR@", with: "\(PX_ABI_VERSION_MINOR)")
                .replacingOccurrences(of: "@KIND@", with: kind)
        }
    }

    static func c(kind: String, _ n: Names) -> [File] {
        let (source, manifest, test, readme): (String, String, String, String)
        switch kind {
        case "registry":
            (source, manifest, test, readme) = (
                CRegistryTemplate.source, CRegistryTemplate.manifest, CRegistryTemplate.test, CRegistryTemplate.readme
            )
        case "storage":
            (source, manifest, test, readme) = (
                CStorageTemplate.source, CStorageTemplate.manifest, CStorageTemplate.test, CStorageTemplate.readme
            )
        case "protocol":
            (source, manifest, test, readme) = (
                CProtocolTemplate.source, CProtocolTemplate.manifest, CProtocolTemplate.test, CProtocolTemplate.readme
            )
        default:
            (source, manifest, test, readme) = (
                CSinkTemplate.source, CSinkTemplate.manifest, CSinkTemplate.test, CSinkTemplate.readme
            )
        }
        let extra = kind == "protocol" ? [File(path: "test-client.c", text: n.fill(CProtocolTemplate.client))] : []
        return extra + [
            File(path: "\(n.name).c", text: n.fill(source)),
            File(path: "\(n.name).yaml", text: n.fill(manifest)),
            File(path: "Makefile", text: n.fill(CSinkTemplate.makefile)),
            File(path: "plugin.version-script", text: CSinkTemplate.versionScript),
            File(path: "test.sh", text: n.fill(test), mode: 0o755),
            File(path: "README.md", text: n.fill(readme)),
            File(path: "plexus.h", text: PlexusHeader.text),
        ]
    }

    static func swift(kind: String, _ n: Names) -> [File] {
        let (source, test, manifest, readme): (String, String, String, String)
        switch kind {
        case "protocol":
            (source, test, manifest, readme) = (
                SwiftTemplates.protocolSource, SwiftTemplates.protocolTest, SwiftTemplates.protocolManifest,
                SwiftTemplates.protocolReadme
            )
        case "storage":
            (source, test, manifest, readme) = (
                SwiftTemplates.storageSource, SwiftTemplates.storageTest, SwiftTemplates.storageManifest,
                SwiftTemplates.storageReadme
            )
        case "registry":
            (source, test, manifest, readme) = (
                SwiftTemplates.registrySource, SwiftTemplates.registryTest, SwiftTemplates.registryManifest,
                SwiftTemplates.registryReadme
            )
        default:
            (source, test, manifest, readme) = (
                SwiftTemplates.connectorSource, SwiftTemplates.connectorTest, SwiftTemplates.connectorManifest,
                SwiftTemplates.connectorReadme
            )
        }
        return [
            File(path: "Package.swift", text: n.fill(SwiftTemplates.package)),
            File(path: "Sources/\(n.target)/\(n.target).swift", text: n.fill(source)),
            File(path: "Tests/\(n.target)Tests/\(n.target)Tests.swift", text: n.fill(test)),
            File(path: "\(n.name).yaml", text: n.fill(manifest)),
            File(path: "Makefile", text: n.fill(SwiftTemplates.makefile)),
            File(path: "README.md", text: n.fill(readme)),
            File(path: ".gitignore", text: SwiftTemplates.gitignore),
        ]
    }
}
