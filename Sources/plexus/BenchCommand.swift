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
            \(BenchDrivers.registry.names.joined(separator: ", ")).
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

    func validate() throws {
        if listDrivers { return }
        guard workload != nil else {
            throw ValidationError("give a workload file, e.g. benchmarks/tcp/workloads/1kb-1p-1c-max.yaml")
        }
        guard let driver else {
            throw ValidationError("--driver is required: \(BenchDrivers.registry.names.joined(separator: ", "))")
        }
        guard BenchDrivers.registry.names.contains(driver) else {
            throw ValidationError(
                "unknown driver '\(driver)'; known: \(BenchDrivers.registry.names.joined(separator: ", "))")
        }
        guard server != nil else { throw ValidationError("--server HOST:PORT is required") }
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
        guard let path = workload, let driverName = driver, let server else { throw ExitCode.validationFailure }
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
