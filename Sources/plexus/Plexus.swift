import ArgumentParser
import Foundation
import Logging
import PlexusKernel
import ServiceLifecycle

@main
struct Plexus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plexus",
        abstract: "Plexus: an event mesh built as a microkernel of C-ABI plugins.",
        version: PlexusVersion.kernel,
        subcommands: [
            Serve.self, Dev.self, PluginCommand.self, TopicCommand.self, GroupCommand.self, Pub.self, Sub.self,
            Health.self, Ready.self, ClusterCommand.self, BenchCommand.self, ConformanceCommand.self, PluginHost.self,
        ])
}

/// What the node runs in a child process to load a plugin image before mapping it itself (`plugins.probe`), or
/// to run a process-isolated plugin (`isolation: process`).
struct PluginHost: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin-host", abstract: "Internal: load a plugin image in this process and report.",
        shouldDisplay: false)

    @Option(name: .long, help: "The library to load and call the entry of.") var probe: String?
    @Option(name: .long, help: "Serve a process-isolated plugin over this socket descriptor (isolation: process).")
    var serve: Int32?
    @Option(name: .long, help: "The plugin's name, for messages.") var name: String = "probe"
    @Option(name: .long, help: "How long the entry may take, in milliseconds.") var deadlineMs: Int = 10000

    func run() throws {
        if let serve {
            let status = PluginHostChild.serve(fd: serve)
            if status != 0 { throw ExitCode(status) }
            return
        }
        guard let probe else { throw ValidationError("plugin-host needs --probe LIBRARY or --serve FD") }
        let status = PluginProbe.runChild(path: probe, name: name, deadline: .milliseconds(deadlineMs))
        if status != 0 { throw ExitCode(status) }
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a node: load the manifests, start the plugins, serve the admin endpoint until SIGINT/SIGTERM.")

    @Option(
        name: .long,
        help: "The node file. Without it, plexus.yaml in the working directory if there is one, else the defaults.")
    var config: String?

    @Option(name: .long, help: "A manifest directory (repeatable); replaces the node file's list.")
    var manifests: [String] = []

    @Option(name: .long, help: "A directory searched for plugin libraries (repeatable); added to the node file's.")
    var pluginPath: [String] = []

    @Option(name: .long, help: "The admin endpoint's port on loopback (0: any free port).")
    var adminPort: Int?

    @Option(name: .long, help: "The node's data directory.")
    var dataDir: String?

    @Option(name: .long, help: "The node's id; replaces node.id of the node file.")
    var nodeId: String?

    @Option(name: .long, help: "The storage plugin for topics without a binding; replaces topics.defaultStorage.")
    var defaultStorage: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: String = "info"

    @Flag(
        name: .long,
        help: "Exit non-zero, after stopping what started, when any enabled plugin is not active and ready after start."
    )
    var strict = false

    /// The node file read when `--config` names none and the working directory holds one.
    static let nodeFileName = "plexus.yaml"

    /// Sends every log line at `name` or above to standard error.
    /// - Throws: `ValidationError` for an unknown level.
    static func bootstrapLogging(level name: String) throws {
        guard let level = Logger.Level(rawValue: name) else { throw ValidationError("unknown log level '\(name)'") }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }

    func run() async throws {
        try Self.bootstrapLogging(level: logLevel)
        let logger = Logger(label: "plexus")
        let cwd = FileManager.default.currentDirectoryPath
        func absolute(_ p: String) -> String { p.hasPrefix("/") ? p : cwd + "/" + p }
        var node = NodeConfig()
        let local = cwd + "/" + Self.nodeFileName
        if let config {
            node = try NodeConfig.load(path: config)
            logger.notice("node file: \(config) (--config)")
        } else if FileManager.default.fileExists(atPath: local) {
            node = try NodeConfig.load(path: local)
            logger.notice("node file: \(Self.nodeFileName) in the working directory (no --config given)")
        } else {
            node.dataDirectory = absolute(node.dataDirectory)
            node.manifestDirectories = node.manifestDirectories.map(absolute)
            logger.notice(
                "node file: none (no --config, no \(Self.nodeFileName) in the working directory); defaults apply")
        }
        if !manifests.isEmpty { node.manifestDirectories = manifests.map(absolute) }
        node.pluginSearchPath += pluginPath.map(absolute)
        if let adminPort { node.adminPort = adminPort }
        if let dataDir { node.dataDirectory = absolute(dataDir) }
        if let nodeId {
            guard ManifestParser.isValidName(nodeId) else {
                throw ValidationError("'\(nodeId)' is not a valid node id; expected lowercase letters, digits and '-'")
            }
            node.nodeID = nodeId
        }
        if let defaultStorage { node.topics.defaultStorage = defaultStorage }
        node.probeExecutable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
        let exporter = try TracingExporter.make(node.tracing, nodeID: node.nodeID, logger: logger)
        if node.tracing.exporter == .otlp {
            logger.notice("tracing: OTLP \(node.tracing.otlpProtocol.rawValue) to \(node.tracing.endpoint)")
        }
        let kernel = Kernel(config: node, logger: logger, tracing: exporter.tracing)
        let adminHost = node.adminHost
        let service = KernelService(kernel: kernel, strict: strict) { admin in
            // A machine-readable line for scripts and tests that start the node.
            FileHandle.standardOutput.write(Data("plexus: admin endpoint http://\(adminHost):\(admin.port)\n".utf8))
        }
        let group = ServiceGroup(
            configuration: .init(
                // The exporter first: services stop in reverse order, so it flushes the kernel's last spans.
                services: (exporter.service.map { [.init(service: $0)] } ?? []) + [.init(service: service)],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }
}

struct PluginCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plugin",
        abstract: "Inspect plugins, list a running node's plugins, call their operations.",
        subcommands: [
            List.self, Status.self, Inspect.self, Call.self, Install.self, Upgrade.self, Remove.self, Rollback.self,
            Stop.self, Start.self, Restart.self, Keygen.self, Pack.self, Sign.self, Verify.self, New.self,
        ])

    struct AdminOptions: ParsableArguments {
        @Option(name: .long, help: "The node's admin endpoint, HOST:PORT.")
        var admin: String = "127.0.0.1:10106"

        @Option(
            name: .long,
            help: "The node's admin token (admin.token), sent as a bearer token; default: $PLEXUS_ADMIN_TOKEN.")
        var token: String?

        func client() throws -> AdminClient { try AdminClient(address: admin, token: token) }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Show each plugin's state, version, kinds and last error on a running node.")

        @OptionGroup var options: AdminOptions
        @Flag(name: .long, help: "Print the node's JSON answer as it is.")
        var json = false

        func run() throws {
            let (status, body) = try options.client().request("GET", "/v1/plugins")
            guard status == 200 else { throw AdminClient.Failure(status: status, body: body) }
            if json {
                print(body)
                return
            }
            let plugins = try JSONDecoder().decode([PluginStatus].self, from: Data(body.utf8))
            let rows = plugins.map { p in
                [
                    p.name, p.state.rawValue, p.version, p.kinds.joined(separator: ","), p.health ?? "-",
                    p.lastError ?? "",
                ]
            }
            print(Table(columns: ["NAME", "STATE", "VERSION", "KINDS", "HEALTH", "LAST ERROR"]).render(rows: rows))
        }
    }

    struct Inspect: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Read a manifest (.yaml) or a plugin library (.so) and print what the kernel would do with it, without starting it."
        )

        @Argument(help: "A manifest file or a plugin .so.")
        var file: String

        @Option(name: .long, help: "A directory searched for the manifest's library (repeatable).")
        var pluginPath: [String] = []

        @Flag(
            name: .long, help: #"Print {"ok", "error", "fields": [{"key", "value"}]} as JSON, in the report's order."#)
        var json = false

        func run() throws {
            let cache = FileManager.default.temporaryDirectory.path + "/plexus-inspect-cache"
            let (report, error) =
                file.hasSuffix(".so") || file.contains(".so.")
                ? PluginInspector.inspectLibrary(path: file, cacheDirectory: cache)
                : PluginInspector.inspectManifest(path: file, searchPath: pluginPath, cacheDirectory: cache)
            if json {
                struct Field: Encodable {
                    var key: String
                    var value: String
                }
                struct Report: Encodable {
                    var ok: Bool
                    var error: String?
                    var fields: [Field]
                }
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys]
                let answer = Report(
                    ok: error == nil, error: error.map { "\($0)" }, fields: report.map { Field(key: $0.0, value: $0.1) }
                )
                print(String(decoding: try encoder.encode(answer), as: UTF8.self))
            } else {
                // Key and value, without a header: the value column is never cut (it is the report's point).
                let width = report.map(\.0.count).max() ?? 0
                for (key, value) in report {
                    print(Table.cut(key, to: width) + Table.separator + Table.singleLine(value))
                }
            }
            if error != nil { throw ExitCode(2) }
        }
    }

    struct Call: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Invoke a manifest operation of a plugin on a running node.",
            discussion:
                "Arguments are checked against the operation's declared C signature (see `plexus plugin inspect`).")

        @OptionGroup var options: AdminOptions
        @Argument(help: "The plugin's name.") var name: String
        @Argument(help: "The operation's name.") var operation: String
        @Flag(name: .long, help: #"Print the node's JSON answer as it is ({"result": …} or {"error", "code"})."#)
        var json = false
        @Argument(parsing: .allUnrecognized, help: "The operation's arguments.") var arguments: [String] = []

        func run() throws {
            struct Body: Encodable { var args: [String] }
            struct Answer: Decodable { var result: String }
            let payload = String(decoding: try JSONEncoder().encode(Body(args: arguments)), as: UTF8.self)
            let path = "/v1/plugins/\(AdminClient.escape(name))/operations/\(AdminClient.escape(operation))"
            let (status, body) = try options.client().request("POST", path, body: payload)
            if json {
                print(body)
                if status != 200 { throw ExitCode.failure }
                return
            }
            guard status == 200 else {
                let failure = AdminClient.Failure(status: status, body: body)
                FileHandle.standardError.write(
                    Data("plexus plugin call \(name) \(operation): \(failure.problem)\n".utf8))
                throw ExitCode.failure
            }
            print(try JSONDecoder().decode(Answer.self, from: Data(body.utf8)).result)
        }
    }
}

extension PluginCommand {
    /// Sends a deployment command and prints each change; exits non-zero when one was refused.
    static func deploy(_ options: AdminOptions, _ method: String, _ path: String, body: String = "", json: Bool) throws
    {
        struct Answer: Decodable {
            struct Change: Decodable {
                var action: String
                var plugin: String
                var message: String
            }
            var changes: [Change]
            var plugin: PluginStatus?
        }
        let (status, text) = try options.client().request(method, path, body: body)
        if json {
            print(text)
            if status != 200 { throw ExitCode.failure }
            return
        }
        guard status == 200 || status == 409, let answer = try? JSONDecoder().decode(Answer.self, from: Data(text.utf8))
        else { throw AdminClient.Failure(status: status, body: text) }
        for change in answer.changes { print("\(change.action) \(change.plugin): \(change.message)") }
        if let plugin = answer.plugin {
            print(
                "\(plugin.name): \(plugin.state.rawValue), version \(plugin.version)\(plugin.deployment.map { " — \($0)" } ?? "")"
            )
        }
        if status == 409 { throw ExitCode(1) }
    }

    /// `{"manifest": PATH}`, or `{"archive": PATH}` when the file is a plugin archive (`plexus plugin pack`).
    static func body(manifest: String) throws -> String {
        let path = URL(fileURLWithPath: manifest).standardizedFileURL.path
        let key = PluginArchiveFile.isArchive(path) ? "archive" : "manifest"
        return String(decoding: try JSONEncoder().encode([key: path]), as: UTF8.self)
    }

    struct Install: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Copy a manifest (and the library beside it), or unpack a plugin archive, into a running node and start it."
        )
        @OptionGroup var options: AdminOptions
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        @Argument(help: "The manifest file, or a plugin archive from `plexus plugin pack`.") var manifest: String
        func run() throws {
            try deploy(options, "POST", "/v1/plugins", body: try body(manifest: manifest), json: json)
        }
    }

    struct Upgrade: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace a running plugin's manifest (and library) with new ones and switch to the new image.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The plugin's name.") var name: String
        @Argument(help: "The new manifest file, or a plugin archive.") var manifest: String
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        func run() throws {
            try deploy(
                options, "POST", "/v1/plugins/\(AdminClient.escape(name))/upgrade",
                body: try body(manifest: manifest), json: json)
        }
    }

    struct Remove: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop a plugin and move its manifest out of the node's manifest directory.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The plugin's name.") var name: String
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        func run() throws {
            try deploy(options, "DELETE", "/v1/plugins/\(AdminClient.escape(name))", json: json)
        }
    }

    struct Rollback: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Return a running plugin to the image it replaced (still cached and mapped).")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The plugin's name.") var name: String
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        func run() throws {
            try deploy(options, "POST", "/v1/plugins/\(AdminClient.escape(name))/rollback", json: json)
        }
    }
}

extension PluginCommand {
    struct Stop: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop a plugin on a running node (it starts again with the node, or with `plugin start`).")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The plugin's name.") var name: String
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        func run() throws { try deploy(options, "POST", "/v1/plugins/\(AdminClient.escape(name))/stop", json: json) }
    }

    struct Start: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Start a stopped or failed plugin again from the image it last ran.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The plugin's name.") var name: String
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        func run() throws { try deploy(options, "POST", "/v1/plugins/\(AdminClient.escape(name))/start", json: json) }
    }

    struct Restart: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Stop a running plugin and start a new instance of the same image.")
        @OptionGroup var options: AdminOptions
        @Argument(help: "The plugin's name.") var name: String
        @Flag(name: .long, help: "Print the node's JSON answer as it is.") var json = false
        func run() throws { try deploy(options, "POST", "/v1/plugins/\(AdminClient.escape(name))/restart", json: json) }
    }
}
