import ArgumentParser
import Foundation
import PlexusABI
import PlexusKernel

extension PluginCommand {
    struct New: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Scaffold an out-of-tree plugin that builds with one command (make), with its manifest and a test.",
            discussion: """
                Written so far: --kind connector --lang c, a sink showing the deliver → queue → worker → ack \
                pattern and a stop that loses nothing (docs/operations.md, "Writing a plugin from a scaffold").
                """)

        @Argument(help: "The plugin's name: lowercase letters, digits and '-'.") var name: String
        @Argument(help: "The directory to create (default: ./NAME); it must not exist or must be empty.")
        var directory: String?
        @Option(name: .long, help: "protocol, registry, storage or connector.") var kind: String = "connector"
        @Option(name: .long, help: "c or swift.") var lang: String = "c"

        func run() throws {
            guard ManifestParser.isValidName(name) else {
                throw ValidationError("'\(name)' is not a plugin name: lowercase letters, digits and '-'")
            }
            guard ["protocol", "registry", "storage", "connector"].contains(kind) else {
                throw ValidationError("--kind is protocol, registry, storage or connector, not '\(kind)'")
            }
            guard ["c", "swift"].contains(lang) else { throw ValidationError("--lang is c or swift, not '\(lang)'") }
            guard kind == "connector", lang == "c" else {
                throw ValidationError(
                    "only --kind connector --lang c is scaffolded so far; a Swift scaffold needs the standalone SDK package, and the other kinds their conformance suites to test against"
                )
            }
            let target = directory ?? name
            let fm = FileManager.default
            if fm.fileExists(atPath: target) {
                guard (try? fm.contentsOfDirectory(atPath: target))?.isEmpty == true else {
                    throw ValidationError("\(target) exists and is not an empty directory")
                }
            }
            try fm.createDirectory(atPath: target, withIntermediateDirectories: true)
            let ident = name.replacingOccurrences(of: "-", with: "_")
            let library = "lib\(ident).so"
            func fill(_ text: String) -> String {
                text.replacingOccurrences(of: "@NAME@", with: name).replacingOccurrences(of: "@IDENT@", with: ident)
                    .replacingOccurrences(of: "@LIBRARY@", with: library)
                    .replacingOccurrences(of: "@ABI_MINOR@", with: "\(PX_ABI_VERSION_MINOR)")
            }
            let files: [(String, String, Int)] = [
                ("\(name).c", fill(CSinkTemplate.source), 0o644),
                ("\(name).yaml", fill(CSinkTemplate.manifest), 0o644),
                ("Makefile", fill(CSinkTemplate.makefile), 0o644),
                ("plugin.version-script", CSinkTemplate.versionScript, 0o644),
                ("test.sh", fill(CSinkTemplate.test), 0o755),
                ("README.md", fill(CSinkTemplate.readme), 0o644),
                ("plexus.h", PlexusHeader.text, 0o644),
            ]
            for (file, text, mode) in files {
                let path = target + "/" + file
                try text.write(toFile: path, atomically: true, encoding: .utf8)
                try fm.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
            }
            print("\(target): \(files.map(\.0).joined(separator: ", "))")
            print("next: cd \(target) && make && make test   (make dev: run it in a throwaway node)")
        }
    }
}
