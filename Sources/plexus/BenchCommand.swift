import ArgumentParser
import Foundation
import PlexusBench

/// `plexus bench`: runs a workload against one system (a baseline or Plexus) over its own wire protocol and
/// reports rates and latency percentiles.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure publish and end-to-end latency and throughput of one system with one workload.",
        discussion: """
            Producers send payloads stamped with their send time at the workload's rate (or as fast as \
            maxInFlight allows), consumers of one group per topic take the end-to-end latency from the stamp. \
            The warmup is left out of every figure. Prints a table; --json writes the full report, with a \
            per-second series, for benchmarks/tcp/report.py. Drivers: \
            \(BenchDrivers.registry.names.joined(separator: ", ")). `plexus bench --write-node DIR` writes a \
            node for a benchmark with every listener on a free port instead.
            """)

    @Argument(help: "The workload file (YAML): see benchmarks/tcp/workloads.")
    var workload: String?

    @Option(name: .long, help: "The system to measure: \(BenchDrivers.registry.names.joined(separator: ", ")).")
    var driver: String?

    @Option(name: .long, help: "The server's address, HOST:PORT.")
    var server: String?

    @Option(
        name: .long, help: "Total publish rate in messages per second; replaces the workload's producerRate (0: max).")
    var rate: Int?

    @Flag(name: .long, help: "Publishes complete when written instead of when acknowledged; replaces the workload's.")
    var fireAndForget = false

    @Option(name: .long, help: "Seconds measured; replaces the workload's durationSeconds.")
    var duration: Double?

    @Option(name: .long, help: "Seconds of warmup; replaces the workload's warmupSeconds.")
    var warmup: Double?

    @Option(name: .long, help: "Write the report as JSON to this file.")
    var json: String?

    @Option(name: .long, help: "The run's name in reports and plots (default: the driver's name).")
    var label: String?

    @Option(name: .customLong("set"), help: "A driver-specific setting, KEY=VALUE (repeatable).")
    var settings: [String] = []

    @Flag(name: .long, help: "No progress lines while running.")
    var quiet = false

    @Flag(name: .long, help: "Print the drivers this binary has, one per line, and exit.")
    var listDrivers = false

    @OptionGroup(title: "Writing a benchmark node (--write-node DIR)")
    var node: BenchNodeOptions

    /// Checks what was given; what a run requires is checked in `run()`, as `--write-node` needs none of it.
    func validate() throws {
        if listDrivers || node.writeNode != nil { return }
        if let driver, !BenchDrivers.registry.names.contains(driver) {
            throw ValidationError(
                "unknown driver '\(driver)'; known: \(BenchDrivers.registry.names.joined(separator: ", "))")
        }
        if let rate, rate < 0 { throw ValidationError("--rate must be 0 (max) or more messages per second") }
        for setting in settings where !setting.contains("=") {
            throw ValidationError("--set '\(setting)': expected KEY=VALUE")
        }
    }

    func run() async throws {
        if listDrivers {
            print(BenchDrivers.registry.names.joined(separator: "\n"))
            return
        }
        if let directory = node.writeNode {
            print(try node.write(directory: directory).shellAssignments)
            return
        }
        guard let path = workload else {
            throw ValidationError("give a workload file, e.g. benchmarks/tcp/workloads/1kb-1p-1c-max.yaml")
        }
        guard let driverName = driver else {
            throw ValidationError("--driver is required: \(BenchDrivers.registry.names.joined(separator: ", "))")
        }
        guard let server else { throw ValidationError("--server HOST:PORT is required") }
        var workload = try Workload.load(path: path)
        if let rate { workload.producerRate = rate }
        if fireAndForget { workload.fireAndForget = true }
        if let duration { workload.durationSeconds = duration }
        if let warmup { workload.warmupSeconds = warmup }
        try workload.validate()

        var options = try DriverOptions(address: server, fireAndForget: workload.fireAndForget)
        for setting in settings {
            let parts = setting.split(separator: "=", maxSplits: 1)
            options.settings[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        let driver = try BenchDrivers.make(name: driverName, options: options)
        let progress: (@Sendable (String) -> Void)? =
            quiet ? nil : { @Sendable line in FileHandle.standardError.write(Data((line + "\n").utf8)) }
        let runner = BenchRunner(
            workload: workload, driver: driver, server: options.address, label: label, progress: progress)
        let report = try await runner.run()
        print(ReportFormatter.table(report))
        if let json {
            try ReportFormatter.json(report).write(to: URL(fileURLWithPath: json))
        }
    }
}

/// `plexus bench --write-node DIR`: writes the files of one benchmark node (manifests copied from the shipped
/// ones, a node file) with every listener (admin, tcp-protocol, http-protocol, any plugin with a `port` key)
/// on a free 127.0.0.1 port taken in one call, and prints the ports as shell assignments for the run scripts
/// (`node_dir`, `node_config`, `admin_port`, `port_<plugin>`, `listeners='owner:port …'`), which must then
/// check that every listener accepts and every plugin is active.
struct BenchNodeOptions: ParsableArguments {
    @Option(name: .long, help: "Write a benchmark node under this directory, print its ports, and exit.")
    var writeNode: String?

    @Option(name: .long, help: "With --write-node: the shipped manifests to copy.")
    var manifests = "plugin-manifests"

    @Option(name: .long, help: "With --write-node: where the plugin libraries are.")
    var pluginPath = ".build/release"

    @Option(name: .long, help: "With --write-node: every topic's storage (topics.defaultStorage).")
    var storage = "raft-log"

    @Option(name: .long, help: "With --write-node: topics.defaultRetentionBytes (0: none).")
    var retentionBytes = 0

    @Option(
        name: .customLong("value"), help: "With --write-node: a plugin config value, PLUGIN.KEY=VALUE (repeatable).")
    var values: [String] = []

    @Option(name: .long, help: "With --write-node: copy only these manifests (plugin names; repeatable). Default: all.")
    var only: [String] = []

    func write(directory: String) throws -> BenchNodeFiles {
        var parsed: [String: [(key: String, yaml: String)]] = [:]
        for value in values {
            guard let equals = value.firstIndex(of: "="), let dot = value[..<equals].firstIndex(of: "."),
                dot != value.startIndex
            else {
                throw ValidationError("--value '\(value)': expected PLUGIN.KEY=VALUE, e.g. raft-log.fsync=interval")
            }
            parsed[String(value[..<dot]), default: []].append(
                (String(value[value.index(after: dot)..<equals]), String(value[value.index(after: equals)...])))
        }
        return try BenchNodeFiles.write(
            directory: directory, manifestDirectory: manifests, pluginSearchPath: pluginPath, storage: storage,
            retentionBytes: retentionBytes, values: parsed, only: Set(only))
    }
}
