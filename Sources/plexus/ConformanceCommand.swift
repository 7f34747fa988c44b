import ArgumentParser
import Foundation
import Logging
import PlexusConformance
import PlexusKernel

/// `plexus conformance`: runs a kind's conformance suite against a plugin library, loaded through the
/// kernel's own loader, and reports PASS or FAIL per rule.
struct ConformanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "Check a plugin library against its kind's contract in plexus.h, rule by rule.",
        discussion: """
            Loads the library as a node would (verified, content-addressed copy, ABI negotiation, descriptor \
            checked against the manifest, or against one derived from the descriptor), creates and starts one \
            instance, runs every rule of the suite against it, then stops and destroys it. Prints one line per \
            rule and a summary. Exits 0 when every rule passed, 1 when any failed, 2 when the plugin could not \
            be loaded or started.
            """)

    @Option(
        name: .long, help: "The suite to run: \(ConformanceKind.allCases.map(\.rawValue).joined(separator: " or ")).")
    var kind: String

    @Argument(help: "The plugin library (.so).")
    var library: String

    @Option(name: .long, help: "A manifest to load the library with (default: one derived from its descriptor).")
    var manifest: String?

    @Option(name: .long, help: "The instance's configuration, one JSON object (validated against --manifest's schema).")
    var config: String?

    @Option(
        name: .long,
        help: "The instance's data directory (default: a new temporary directory, removed afterwards).")
    var dataDir: String?

    @Flag(name: .long, help: "Print the report as JSON instead of text.")
    var json = false

    @Option(name: .long, help: "Seconds a completion may take before its rule fails.")
    var timeout: Double = 5

    @Option(
        name: .long,
        help: "Seconds one rule may take in all; a hook still running then fails it and the instance is abandoned.")
    var ruleTimeout: Double = 60

    @Option(
        name: .long,
        help:
            "Connectors: a configuration (one JSON object) that points the connector at an unreachable external system, for the fault rule."
    )
    var faultConfig: String?

    @Option(
        name: .long, help: "Connectors: the topic the connector is configured with (default: its `topic` or `topics`).")
    var topic: String?

    @Option(name: .long, help: "Connectors: seconds to wait after start for a subscribe or publish.")
    var observe: Double = 5

    @Option(name: .long, help: "Connectors: milliseconds one deliver call may take.")
    var deliverBound: Double = 100

    @Option(name: .long, help: "Protocols: the client driver to run the scenarios with: tcp, http or grpc.")
    var driver: String?

    @Option(
        name: .long,
        help: "Protocols: the memory-storage library the node stores in (default: libMemoryStorage.so beside plexus).")
    var storage: String?

    @Option(
        name: .long,
        help: "Protocols: the memory-storage manifest (default: memory-storage.yaml of the shipped manifests).")
    var storageManifest: String?

    @Option(name: .long, help: "The plugin's log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "warning"

    func validate() throws {
        guard ConformanceKind(rawValue: kind) != nil else {
            throw ValidationError(
                "unknown kind '\(kind)'; expected \(ConformanceKind.allCases.map(\.rawValue).joined(separator: " or "))"
            )
        }
        guard timeout > 0, ruleTimeout > 0, observe > 0, deliverBound > 0 else {
            throw ValidationError("--timeout, --rule-timeout, --observe and --deliver-bound must be positive numbers")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
        if kind == ConformanceKind.protocol.rawValue {
            guard let driver, ProtocolDriverKind(rawValue: driver) != nil else {
                throw ValidationError(
                    "--kind protocol needs --driver \(ProtocolDriverKind.allCases.map(\.rawValue).joined(separator: " or "))"
                )
            }
            guard manifest != nil else {
                throw ValidationError("--kind protocol needs --manifest: the node loads the plugin from it")
            }
        }
    }

    func run() throws {
        guard let suite = ConformanceKind(rawValue: kind), let level = Logger.Level(rawValue: logLevel) else {
            throw ExitCode.validationFailure
        }
        let temporary = FileManager.default.temporaryDirectory.path
        let dataDirectory = dataDir ?? temporary + "/plexus-conformance-\(UUID().uuidString)"
        defer { if dataDir == nil { try? FileManager.default.removeItem(atPath: dataDirectory) } }
        var logger = Logger(label: "plexus.conformance", factory: { StreamLogHandler.standardError(label: $0) })
        logger.logLevel = level
        var options = ConformanceOptions()
        options.completionTimeout = .milliseconds(Int(timeout * 1000))
        options.ruleTimeout = .milliseconds(Int(ruleTimeout * 1000))
        options.connectorObserve = .milliseconds(Int(observe * 1000))
        options.deliverBound = .microseconds(Int(deliverBound * 1000))
        options.faultConfigJSON = faultConfig
        options.connectorTopic = topic

        if suite == .protocol {
            try runProtocol(options: options, logger: logger)
            return
        }
        let plugin: StandalonePlugin
        do {
            plugin = try StandalonePlugin(
                library: library, manifest: manifest, configJSON: config,
                cacheDirectory: temporary + "/plexus-conformance-cache", logger: logger)
        } catch {
            Self.fail("cannot load \(library): \(error)")
        }
        do {
            try Conformance.requireKind(suite, of: plugin)
        } catch {
            Self.fail("cannot run the \(suite.rawValue) suite against \(library): \(error)")
        }
        if !json {
            var notes = [
                plugin.manifestIsSynthetic ? "manifest derived from its descriptor" : "manifest \(plugin.manifest.path)"
            ]
            if suite == .storage, let durability = Conformance.durability(of: plugin) {
                notes.insert("durability \(durability)", at: 0)
            }
            Self.emit(
                "\(suite.rawValue) conformance of \(plugin.manifest.name) \(plugin.manifest.version) from \(library) (\(notes.joined(separator: ", ")))"
            )
        }
        let report: ConformanceReport
        do {
            report = try Conformance.run(
                suite, plugin: plugin, dataDirectory: dataDirectory, options: options,
                progress: { result in if !json { Self.emit(result.line) } })
        } catch {
            Self.fail("cannot run the \(suite.rawValue) suite against \(library): \(error)")
        }
        if json {
            Self.emit(try report.json())
        } else {
            Self.emit(report.summary)
        }
        if report.failed > 0 { throw ExitCode(1) }
    }

    /// The protocol suite: a node around the plugin, the scenarios through `--driver`.
    func runProtocol(options: ConformanceOptions, logger: Logger) throws {
        guard let driverName = driver, let kind = ProtocolDriverKind(rawValue: driverName), let manifest else {
            throw ExitCode.validationFailure
        }
        let executable =
            (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        let products = URL(fileURLWithPath: executable).deletingLastPathComponent().path
        let storageLibrary = storage ?? products + "/libMemoryStorage.so"
        let storageManifestPath: String
        if let storageManifest {
            storageManifestPath = storageManifest
        } else {
            do {
                storageManifestPath = try Dev.findShipped(from: products) + "/memory-storage.yaml"
            } catch {
                Self.fail("cannot find the memory-storage manifest: \(error); name it with --storage-manifest")
            }
        }
        if !json { Self.emit("protocol conformance of \(library) over \(kind.rawValue) (manifest \(manifest))") }
        let report: ConformanceReport
        do {
            report = try Conformance.runProtocol(
                library: library, manifest: manifest, driver: kind,
                storage: (storageLibrary, storageManifestPath), configJSON: config, options: options, logger: logger,
                progress: { result in if !json { Self.emit(result.line) } })
        } catch {
            Self.fail("cannot run the protocol suite against \(library): \(error)")
        }
        if json {
            Self.emit(try report.json())
        } else {
            Self.emit(report.summary)
        }
        if report.failed > 0 { throw ExitCode(1) }
    }

    /// Writes a line to standard output at once (unbuffered), so that the rules reported so far survive a
    /// plugin that crashes the process.
    static func emit(_ line: String) {
        FileHandle.standardOutput.write(Data((line + "\n").utf8))
    }

    static func fail(_ message: String) -> Never {
        FileHandle.standardError.write(Data("plexus conformance: \(message)\n".utf8))
        Foundation.exit(2)
    }
}
