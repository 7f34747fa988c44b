import Foundation

@testable import PlexusKernel

/// Manifest text for unit tests, and the repository's own files located from this source file.
enum ManifestSamples {
    /// Where the sample manifests pretend to live; every error must name it.
    static let path = "/srv/plexus/manifests/sample.yaml"

    /// The smallest valid manifest, one top-level key per line so that tests can drop or replace one.
    static let minimal = """
        manifest: 1
        name: sample
        version: 1.0.0
        kind: connector
        library: libSample.so
        abi: {major: 1, minor: 4}
        """

    /// `minimal` without the line of top-level `key`.
    static func minimal(without key: String) -> String {
        minimal.split(separator: "\n").filter { !$0.hasPrefix("\(key):") }.joined(separator: "\n")
    }

    /// `minimal` with the line of top-level `key` replaced by `key: value` (appended when absent).
    static func minimal(setting key: String, to value: String) -> String {
        minimal(without: key) + "\n\(key): \(value)"
    }

    /// `minimal` followed by more YAML.
    static func minimal(appending yaml: String) -> String { minimal + "\n" + yaml }

    static func parse(_ text: String, path: String = ManifestSamples.path) throws -> Manifest {
        try ManifestParser.parse(text, path: path)
    }

    /// A manifest for resolver tests: `provides` maps capability to version; `requires` lists
    /// (capability, range, optional).
    static func plugin(
        _ name: String, provides: [String: String] = [:], requires: [(String, String, Bool)] = [],
        path: String? = nil
    ) throws -> Manifest {
        var text = """
            manifest: 1
            name: \(name)
            version: 1.0.0
            kind: connector
            library: lib\(name).so
            abi: {major: 1, minor: 4}

            """
        if !requires.isEmpty {
            text += "requires:\n"
            for (capability, range, optional) in requires {
                text += "  - {capability: \(capability), version: \"\(range)\", optional: \(optional)}\n"
            }
        }
        if !provides.isEmpty {
            text += "provides:\n"
            for (capability, version) in provides.sorted(by: { $0.key < $1.key }) {
                text += "  - {capability: \(capability), version: \(version)}\n"
            }
        }
        return try ManifestParser.parse(text, path: path ?? "/srv/plexus/manifests/\(name).yaml")
    }

    /// The repository root, found from this file (`<root>/Tests/PlexusKernelTests/ManifestSamples.swift`).
    static func repositoryRoot(filePath: String = #filePath) -> URL {
        URL(fileURLWithPath: filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
    }
}
