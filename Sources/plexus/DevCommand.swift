import ArgumentParser
import Foundation
import Logging
import PlexusBench
import PlexusKernel
import ServiceLifecycle

/// `plexus dev`: a throwaway node for writing a plugin (docs/operations.md, "A node for plugin development").
struct Dev: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Run a throwaway node with memory storage and the TCP and HTTP protocols on free ports, your plugin loaded, and reloaded when its files change.",
        discussion: """
            TARGET is your plugin's manifest, its library (a manifest is written from what the library's \
            descriptor declares), or a directory holding one manifest. The node's files live in a temporary \
            directory, removed when the node stops (Ctrl-C) unless --keep is given. Topics are kept in memory.
            """)

    @Argument(help: "Your plugin: a manifest, a library (.so), or a directory holding one manifest.")
    var target: String

    @Option(name: .long, help: "The directory of the shipped manifests (default: found beside this executable).")
    var shipped: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "notice"

    @Flag(name: .long, help: "Keep the node's temporary directory when it stops.")
    var keep = false

    /// The plugins a development node runs besides the author's.
    static let companions = ["memory-storage", "tcp-protocol", "http-protocol"]

    func run() async throws {
        try Serve.bootstrapLogging(level: logLevel)
        let logger = Logger(label: "plexus-dev")
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        let products = URL(fileURLWithPath: executable).deletingLastPathComponent().path
        let shippedDirectory = try shipped.map(Self.absolute) ?? Self.findShipped(from: products)
        let home = FileManager.default.temporaryDirectory.appendingPathComponent(
            "plexus-dev-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        ).path
        let manifests = home + "/manifests"
        try FileManager.default.createDirectory(atPath: manifests, withIntermediateDirectories: true)
        defer {
            if keep {
                FileHandle.standardError.write(Data("plexus dev: kept \(home)\n".utf8))
            } else {
                try? FileManager.default.removeItem(atPath: home)
            }
        }
        for name in Self.companions {
            try FileManager.default.copyItem(
                atPath: shippedDirectory + "/" + name + ".yaml", toPath: manifests + "/" + name + ".yaml")
        }
        let (pluginName, watched, searchPath) = try placeAuthorPlugin(into: manifests, cache: home + "/inspect")

        let ports = try LoopbackPorts.free(3)
        let nodeFile = """
            node: {id: dev, dataDirectory: "\(home)/data"}
            admin: {host: 127.0.0.1, port: \(ports[0])}
            plugins:
              manifestDirectories: ["\(manifests)"]
              searchPath: [\((searchPath + [products]).map { "\"\($0)\"" }.joined(separator: ", "))]
              rescanMs: 500
              config:
                tcp-protocol: {port: \(ports[1])}
                http-protocol: {port: \(ports[2])}
            topics: {defaultStorage: memory-storage}

            """
        try nodeFile.write(toFile: home + "/plexus.yaml", atomically: true, encoding: .utf8)
        var node = try NodeConfig.parse(nodeFile, path: home + "/plexus.yaml", baseDirectory: home)
        node.probeExecutable = executable
        let kernel = Kernel(config: node, logger: logger)
        let service = KernelService(kernel: kernel, strict: false) { admin in
            let status = kernel.status(of: pluginName)
            var lines = [
                "plexus dev: admin 127.0.0.1:\(admin.port) (plexus plugin list --admin 127.0.0.1:\(admin.port))",
                "plexus dev: tcp 127.0.0.1:\(ports[1])",
                "plexus dev: http http://127.0.0.1:\(ports[2])",
                "plexus dev: plugin \(pluginName): \(status.map { "\($0.state)" } ?? "not found")"
                    + (status?.lastError.map { " (\($0))" } ?? ""),
                "plexus dev: reloading when \(watched.joined(separator: " or ")) changes; Ctrl-C stops the node",
            ]
            if keep { lines.append("plexus dev: files in \(home)") }
            FileHandle.standardOutput.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }

    /// `plugin-manifests/` in the directory of the executable or one of its parents (a build directory inside
    /// the repository), or in the working directory.
    static func findShipped(from products: String) throws -> String {
        var candidates: [String] = []
        var directory = URL(fileURLWithPath: products)
        for _ in 0..<5 {
            candidates.append(directory.path + "/plugin-manifests")
            directory.deleteLastPathComponent()
        }
        candidates.append(FileManager.default.currentDirectoryPath + "/plugin-manifests")
        guard
            let found = candidates.first(where: { candidate in
                companions.allSatisfy { FileManager.default.fileExists(atPath: candidate + "/" + $0 + ".yaml") }
            })
        else {
            throw ValidationError(
                "the shipped manifests (\(companions.joined(separator: ", "))) were not found in \(candidates.joined(separator: ", ")); name their directory with --shipped"
            )
        }
        return found
    }

    /// Puts the author's manifest into the node's manifest directory: a symbolic link to it (so an edit is an
    /// upgrade), or, for a bare library, a manifest written from its descriptor naming it by absolute path.
    /// - Returns: the plugin's name, the files whose change reloads it, and where its library is looked for.
    func placeAuthorPlugin(into manifests: String, cache: String) throws -> (String, [String], [String]) {
        var path = Self.absolute(target)
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ValidationError("\(target) does not exist")
        }
        if isDirectory.boolValue {
            let yaml = try FileManager.default.contentsOfDirectory(atPath: path).filter {
                !$0.hasPrefix(".") && ($0.hasSuffix(".yaml") || $0.hasSuffix(".yml"))
            }
            guard yaml.count == 1 else {
                throw ValidationError(
                    "\(target) holds \(yaml.count) manifests (\(yaml.joined(separator: ", "))); name the one to load")
            }
            path += "/" + yaml[0]
        }
        if path.hasSuffix(".yaml") || path.hasSuffix(".yml") {
            let manifest = try ManifestParser.load(path: path)
            guard !Self.companions.contains(manifest.name) else {
                throw ValidationError("'\(manifest.name)' is one of the dev node's own plugins; rename yours")
            }
            let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
            try FileManager.default.createSymbolicLink(
                atPath: manifests + "/" + manifest.name + ".yaml", withDestinationPath: path)
            let library = manifest.library.hasPrefix("/") ? manifest.library : directory + "/" + manifest.library
            return (manifest.name, [path, library], [directory])
        }
        let declared = try PluginInspector.declared(library: path, cacheDirectory: cache)
        let kinds = declared.kinds.map(\.rawValue)
        var text = """
            # Written by plexus dev from what \(path) declares.
            manifest: 1
            name: \(declared.name)
            version: \(declared.version)
            kind: \(kinds.count == 1 ? kinds[0] : "[\(kinds.joined(separator: ", "))]")
            library: "\(path)"
            abi: {major: \(declared.abiMajor), minor: \(declared.abiMinor)}

            """
        if let toolchain = declared.toolchain { text += "toolchain: \(toolchain)\n" }
        try text.write(toFile: manifests + "/" + declared.name + ".yaml", atomically: true, encoding: .utf8)
        return (declared.name, [path], [])
    }
}
