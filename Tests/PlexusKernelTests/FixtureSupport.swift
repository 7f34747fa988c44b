import Foundation
import Logging
import PlexusABI
import Synchronization
import Testing

@testable import PlexusKernel

/// The fixture plugins of `Tests/Fixtures/plugins/*.c`, compiled against the current header, and of
/// `Tests/Fixtures/abi-<version>/*.c`, compiled against the published header of that version
/// (`abi/published/<version>/plexus.h`): once per test process with the system C compiler, exactly as their
/// header comments say. Every library lands in one directory, so file stems are unique across the folders.
enum FixtureLibraries {
    struct BuildError: Error, CustomStringConvertible, Sendable {
        var description: String
    }

    /// A folder of fixture sources and the folder holding the `plexus.h` they are compiled against.
    struct SourceSet: Sendable {
        var sources: URL
        var include: URL
    }

    /// The repository root, found from this file (`<root>/Tests/PlexusKernelTests/FixtureSupport.swift`).
    static let repositoryRoot = ManifestSamples.repositoryRoot()

    static var sourceDirectory: URL { repositoryRoot.appendingPathComponent("Tests/Fixtures/plugins") }

    /// The folder of fixtures built from the published header of ABI `version` ("1.0").
    static func sourceDirectory(abi version: String) -> URL {
        repositoryRoot.appendingPathComponent("Tests/Fixtures/abi-\(version)")
    }

    /// `Tests/Fixtures/plugins` with the current header, then every `Tests/Fixtures/abi-<version>` with
    /// `abi/published/<version>`.
    /// - Throws: `BuildError` when a fixture folder names a version that has no published header.
    static func sourceSets() throws -> [SourceSet] {
        var sets = [
            SourceSet(
                sources: sourceDirectory,
                include: repositoryRoot.appendingPathComponent("sdk/plexus-sdk/Sources/PlexusABI/include"))
        ]
        let fixtures = repositoryRoot.appendingPathComponent("Tests/Fixtures")
        let folders = try FileManager.default.contentsOfDirectory(atPath: fixtures.path)
            .filter { $0.hasPrefix("abi-") }.sorted()
        for folder in folders {
            let version = String(folder.dropFirst("abi-".count))
            let include = repositoryRoot.appendingPathComponent("abi/published/\(version)")
            guard FileManager.default.fileExists(atPath: include.appendingPathComponent("plexus.h").path) else {
                throw BuildError(
                    description: "Tests/Fixtures/\(folder) has no published header: abi/published/\(version)/plexus.h "
                        + "is missing")
            }
            sets.append(SourceSet(sources: fixtures.appendingPathComponent(folder), include: include))
        }
        return sets
    }

    private static let built = Mutex<Result<String, BuildError>?>(nil)

    /// The directory holding `lib<stem>.so` for every fixture, compiling them on first use.
    /// - Throws: `BuildError` with the compiler's output when a fixture does not compile.
    static func directory() throws -> String {
        try built.withLock { state in
            if state == nil {
                state = Result { try compileAll() }.mapError { $0 as? BuildError ?? BuildError(description: "\($0)") }
                // The libraries live as long as the test process: remove them when it exits.
                atexit { FixtureLibraries.removeBuilt() }
            }
            return try state!.get()
        }
    }

    private static func removeBuilt() {
        if case .success(let directory)? = built.withLock({ $0 }) {
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    /// The path of one fixture's library (`stem` is the source file name without `.c`).
    static func library(_ stem: String) throws -> String {
        let path = try directory() + "/lib\(stem).so"
        guard FileManager.default.fileExists(atPath: path) else {
            let folders = (try? sourceSets().map(\.sources.path)) ?? [sourceDirectory.path]
            throw BuildError(description: "no fixture \(stem).c in \(folders.joined(separator: " or "))")
        }
        return path
    }

    private static func compileAll() throws -> String {
        var sources: [(file: URL, include: URL)] = []
        for set in try sourceSets() {
            let files = try FileManager.default.contentsOfDirectory(atPath: set.sources.path)
                .filter { $0.hasSuffix(".c") }.sorted()
            guard !files.isEmpty else { throw BuildError(description: "no fixture sources in \(set.sources.path)") }
            sources += files.map { (set.sources.appendingPathComponent($0), set.include) }
        }
        let stems = sources.map { $0.file.deletingPathExtension().lastPathComponent }
        if let clash = stems.first(where: { stem in stems.filter { $0 == stem }.count > 1 }) {
            throw BuildError(
                description: "two fixtures are named \(clash).c; their libraries would overwrite each other")
        }
        let output = FileManager.default.temporaryDirectory.appendingPathComponent(
            "plexus-fixtures-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
        // Compile them all at once; each compiler writes its diagnostics to a file of its own.
        let jobs = try sources.map { source, include -> (String, Process, URL) in
            let stem = source.deletingPathExtension().lastPathComponent
            let log = output.appendingPathComponent("\(stem).log")
            _ = FileManager.default.createFile(atPath: log.path, contents: nil)
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = [
                "cc", "-std=c99", "-shared", "-fPIC", "-I", include.path, source.path,
                "-o", output.appendingPathComponent("lib\(stem).so").path,
            ]
            let handle = try FileHandle(forWritingTo: log)
            process.standardOutput = handle
            process.standardError = handle
            try process.run()
            return (source.lastPathComponent, process, log)
        }
        var failures: [String] = []
        for (source, process, log) in jobs {
            process.waitUntilExit()
            if process.terminationStatus != 0 {
                let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
                failures.append("cc \(source) exited \(process.terminationStatus):\n\(text)")
            }
        }
        guard failures.isEmpty else { throw BuildError(description: failures.joined(separator: "\n")) }
        return output.path
    }
}

/// A kernel's worth of directories for one test: manifests, data, and the fixture libraries on the search
/// path. Everything lives under a fresh UUID-named temporary directory; call `remove()` when done.
struct FixtureNode {
    let root: URL
    var manifestDirectory: String { root.appendingPathComponent("manifests").path }
    var dataDirectory: String { root.appendingPathComponent("data").path }

    init() throws {
        root = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(
            atPath: root.appendingPathComponent("manifests").path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(at: root) }

    /// The ABI of the current header (`sdk/plexus-sdk/Sources/PlexusABI/include/plexus.h`), which the fixtures of
    /// `Tests/Fixtures/plugins` are built against: as text ("1.1") and as a manifest's `abi` value.
    static let currentABI = "\(PX_ABI_VERSION_MAJOR).\(PX_ABI_VERSION_MINOR)"
    static let currentABIYAML = "{major: \(PX_ABI_VERSION_MAJOR), minor: \(PX_ABI_VERSION_MINOR)}"

    /// The manifest name of a fixture: its file stem with `_` turned into `-` (`ok_minimal` → `ok-minimal`).
    static func name(_ stem: String) -> String { stem.replacingOccurrences(of: "_", with: "-") }

    /// The manifest the fixture's header comment implies (version 1.0.0, kind connector, the current header's
    /// ABI; a fixture of `Tests/Fixtures/abi-<version>` passes its own), with `extra`
    /// YAML appended and any of the first lines overridden.
    static func manifestText(
        fixture stem: String, name: String? = nil, version: String = "1.0.0", kind: String = "connector",
        library: String? = nil, abi: String = currentABIYAML, extra: String = ""
    ) -> String {
        """
        manifest: 1
        name: \(name ?? Self.name(stem))
        version: \(version)
        kind: \(kind)
        library: \(library ?? "lib\(stem).so")
        abi: \(abi)
        \(extra)
        """
    }

    /// Writes a manifest file (`<file>.yaml`, by default named after the plugin) into the manifest directory.
    @discardableResult
    func write(_ text: String, file: String) throws -> String {
        let path = manifestDirectory + "/" + file
        try text.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// Writes the manifest of a fixture (see `manifestText`).
    @discardableResult
    func writeManifest(
        fixture stem: String, name: String? = nil, version: String = "1.0.0", kind: String = "connector",
        library: String? = nil, abi: String = currentABIYAML, extra: String = "", file: String? = nil
    ) throws -> String {
        let text = Self.manifestText(
            fixture: stem, name: name, version: version, kind: kind, library: library, abi: abi, extra: extra)
        return try write(text, file: file ?? "\(name ?? Self.name(stem)).yaml")
    }

    /// A kernel reading this node's manifests and finding libraries among the compiled fixtures; `configure`
    /// adjusts the node's configuration (topic bindings, for instance) before the kernel is made.
    func kernel(requireSHA256: Bool = false, configure: (inout NodeConfig) -> Void = { _ in }) throws -> Kernel {
        var config = NodeConfig()
        config.nodeID = "test-node"
        config.manifestDirectories = [manifestDirectory]
        config.dataDirectory = dataDirectory
        config.pluginSearchPath = [try FixtureLibraries.directory()]
        config.adminPort = 0
        config.requireSHA256 = requireSHA256
        configure(&config)
        return Kernel(config: config, logger: Logger(label: "plexus.test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }
}

extension Kernel {
    /// The status of `name`, failing the test when there is none.
    func requireStatus(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> PluginStatus {
        try #require(
            status(of: name), "no plugin '\(name)'; have \(statuses().map(\.name))", sourceLocation: sourceLocation)
    }
}

extension PluginStatus {
    /// The states the plugin went through, in order.
    var states: [PluginState] { history.map(\.state) }
}

/// An independent SHA-256 of a file (coreutils `sha256sum`), to check the kernel's own.
func sha256sum(_ path: String) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["sha256sum", path]
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let text = String(decoding: data, as: UTF8.self)
    guard process.terminationStatus == 0, let digest = text.split(separator: " ").first, digest.count == 64 else {
        throw FixtureLibraries.BuildError(description: "sha256sum \(path) failed: \(text)")
    }
    return String(digest)
}
