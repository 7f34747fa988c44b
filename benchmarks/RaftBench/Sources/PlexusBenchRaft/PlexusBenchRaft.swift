import ArgumentParser
import Foundation
import RaftBenchKit

#if canImport(Glibc)
    import Glibc
#endif

/// `plexus-bench-raft` (`make bench-raft`): the targets of issue 6 in one run, printed as one table with ratios.
@main
struct PlexusBenchRaft: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plexus-bench-raft",
        abstract: "Replicated raft-log against etcd 3.4, the single member against the disk, and leader failover.",
        discussion: """
            Sections: durable (three Plexus members vs three etcd members, 1 KiB acknowledged writes at each \
            concurrency), single (one member end to end over TCP vs raw pwrite+fdatasync at its best grouping \
            for the same window, measured on its own), failover (kill -9 of the leader, time to the next \
            acknowledged write), ledger (three ledger-storage bookies with E=3 Qw=2 Qa=2 vs three raft-log \
            members, the same load; not in the default set: `make bench-ledger` runs it). Every server listens \
            on 127.0.0.1 and is killed when the benchmark ends, however it ends.
            """)

    @Option(help: "The plexus binary.") var plexus: String
    @Option(help: "The directory of the plugin libraries (the release build).") var plugins: String
    @Option(help: "The shipped manifests each node's are copied from.") var manifests: String
    @Option(help: "The etcd binary.") var etcd = "etcd"
    @Option(help: "Working directory (data, logs); default: a new one under the temporary directory.")
    var work: String?
    @Flag(help: "Keep the working directory (logs, data) afterwards.") var keepWork = false
    @Option(help: "A file to append the pid of every server started to (for the calling script's cleanup).")
    var pidFile: String?
    @Option(help: "Sections to run, comma-separated: durable, single, failover, ledger.") var sections =
        "durable,single,failover"
    @Option(help: "Writes in flight per level, comma-separated.") var concurrency = "1,16,128"
    @Option(help: "Measured seconds per level (three members).") var seconds = 10.0
    @Option(help: "Warm-up seconds before each level.") var warmup = 2.0
    @Option(help: "Measured seconds per round (single member), and the ceiling's as long.") var singleSeconds = 5.0
    @Option(help: "Rounds per level (single member); the medians are reported.") var rounds = 3
    @Option(help: "Bytes per record.") var size = 1024
    @Option(help: "Leader kills (failover).") var kills = 20
    @Option(help: "Writes per second during the failover test.") var failoverRate = 100.0
    @Option(name: .customLong("raft-set"), help: "A raft-log value for the three members, KEY=VALUE (repeatable).")
    var raftSet: [String] = []
    @Option(
        name: .customLong("ledger-set"),
        help: "A ledger-storage value for the three ledger nodes, KEY=VALUE (repeatable; section ledger).")
    var ledgerSet: [String] = []
    @Option(help: "The nodes' log level.") var logLevel = "warning"
    @Option(help: "Write the report as JSON to this file.") var json: String?

    func validate() throws {
        let known = Set(["durable", "single", "failover", "ledger"])
        for section in sectionList where !known.contains(section) {
            throw ValidationError("unknown section '\(section)'; known: durable, single, failover, ledger")
        }
        guard !levels.isEmpty, levels.allSatisfy({ $0 > 0 }) else {
            throw ValidationError("--concurrency: expected positive numbers, e.g. 1,16,128")
        }
        guard seconds > 0, singleSeconds > 0, warmup >= 0, rounds > 0, kills > 0, failoverRate > 0, size > 0 else {
            throw ValidationError("durations, rounds, kills, rates and sizes must be positive")
        }
    }

    var sectionList: [String] { sections.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
    var levels: [Int] { concurrency.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) } }

    func run() async throws {
        let ownWork = work == nil
        let directory =
            work ?? FileManager.default.temporaryDirectory.appendingPathComponent("plexus-bench-raft-\(getpid())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if let pidFile { ServerProcess.recordPIDs(in: pidFile) }
        let cleanup: @Sendable () -> Void = {
            ServerProcess.killAll()
            if ownWork && !keepWork { try? FileManager.default.removeItem(atPath: directory) }
        }
        let signals = Self.onTermination { signal in
            FileHandle.standardError.write(Data("plexus-bench-raft: signal \(signal); stopping every server\n".utf8))
            cleanup()
            Glibc.exit(128 + signal)
        }
        defer {
            withExtendedLifetime(signals) {}
            cleanup()
        }

        func absolute(_ path: String) -> String {
            path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
        }
        var settings = RaftBenchSettings(
            installation: PlexusInstallation(
                plexus: absolute(plexus), pluginDirectory: absolute(plugins), manifestDirectory: absolute(manifests)),
            workDirectory: directory)
        settings.etcd = etcd
        settings.concurrency = levels
        settings.warmup = .milliseconds(Int64(warmup * 1000))
        settings.duration = .milliseconds(Int64(seconds * 1000))
        settings.singleDuration = .milliseconds(Int64(singleSeconds * 1000))
        settings.rounds = rounds
        settings.payloadSize = size
        settings.kills = kills
        settings.failoverRate = failoverRate
        settings.raftValues = raftSet
        settings.ledgerValues = ledgerSet
        settings.logLevel = logLevel
        let runner = RaftBenchSections(settings: settings) { line in
            FileHandle.standardError.write(Data("bench-raft: \(line)\n".utf8))
        }

        var report = RaftBenchReport(
            machine: Self.machine(directory), startedAt: ISO8601DateFormatter().string(from: Date()),
            payloadSize: size, warmupSeconds: warmup, seconds: seconds, singleSeconds: singleSeconds, rounds: rounds)
        print("Plexus raft-log benchmark (issue 6): \(report.machine)")
        print("work directory: \(directory)")
        let chosen = sectionList
        if chosen.contains("durable") {
            let durable = await runner.durable()
            report.durable = durable
            print("\n" + ReportText.durable(durable, report))
        }
        if chosen.contains("single") {
            let single = await runner.single()
            report.single = single
            print("\n" + ReportText.single(single, report))
        }
        if chosen.contains("failover") {
            let failover = await runner.failover()
            report.failover = failover
            print("\n" + ReportText.failover(failover))
        }
        if chosen.contains("ledger") {
            let ledger = await runner.ledger()
            report.ledger = ledger
            print("\n" + ReportText.ledger(ledger, report))
        }
        print("\n" + ReportText.targets(report))
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(report).write(to: URL(fileURLWithPath: json))
        }
        if !report.complete {
            print("\nbench-raft: some parts did not run (see 'not run' above); the figures shown are real but partial")
            throw ExitCode(1)
        }
    }

    /// Cores, kernel and the filesystem of the working directory, for the report's caveat line.
    static func machine(_ directory: String) -> String {
        var name = utsname()
        uname(&name)
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return "\(ProcessInfo.processInfo.activeProcessorCount) cores, Linux \(release), data under \(directory)"
    }

    /// SIGINT, SIGTERM and SIGHUP run `handler` (on a queue of their own) instead of ending the process at once.
    static func onTermination(_ handler: @escaping @Sendable (Int32) -> Void) -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM, SIGHUP].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: DispatchQueue(label: "signals"))
            source.setEventHandler { handler(number) }
            source.resume()
            return source
        }
    }
}
