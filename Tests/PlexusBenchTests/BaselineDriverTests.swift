import PlexusBench
import Testing

/// Each baseline driver against its real server on a free loopback port: a one-second workload goes
/// through, every acknowledged message is consumed once, and nothing fails. Skipped when the server is not
/// installed (`scripts/bench-deps --servers` installs both).
@Suite("Baseline drivers against real servers", .serialized)
struct BaselineDriverTests {
    /// One second at 2000 msg/s, 256 B, no warmup.
    static let tiny = Workload(
        name: "tiny", messageSize: 256, producerRate: 2000, durationSeconds: 1, maxInFlight: 100, drainSeconds: 10)

    static func run(_ name: String, server: ServerProcess, fireAndForget: Bool = false) async throws -> BenchReport {
        var workload = tiny
        workload.fireAndForget = fireAndForget
        let options = try DriverOptions(address: server.address, fireAndForget: fireAndForget)
        let driver = try BenchDrivers.make(name: name, options: options)
        return try await BenchRunner(workload: workload, driver: driver, server: server.address).run()
    }

    static func expectConsistent(_ report: BenchReport) {
        let context = Comment(rawValue: ReportFormatter.table(report))
        // How many a second the driver managed is the benchmark's business, not this test's: here it must
        // have published, and every count must match.
        #expect(report.published > 0, context)
        #expect(report.published == report.sent, context)
        #expect(report.consumed == report.published, context)
        #expect(report.publishErrors == 0 && report.consumerErrors == 0 && report.malformed == 0, context)
        #expect(report.notes.isEmpty, context)
        #expect(report.endToEndLatency.count > 0 && report.publishLatency.count > 0, context)
        #expect(report.series.reduce(0) { $0 + $1.consumed } == report.consumed, context)
    }

    @Test(
        "nats and jetstream: counts match, acked and fire-and-forget",
        .enabled(
            if: ServerProcess.find("nats-server") != nil,
            "nats-server is not installed; scripts/bench-deps --servers installs it"))
    func nats() async throws {
        let server = try ServerProcess("nats-server") { port, directory in
            ["-js", "-a", "127.0.0.1", "-p", "\(port)", "-sd", directory]
        }
        defer { server.stop() }
        for driver in ["nats", "jetstream"] {
            for fireAndForget in [false, true] {
                let report = try await Self.run(driver, server: server, fireAndForget: fireAndForget)
                Self.expectConsistent(report)
            }
        }
    }

    @Test(
        "redis: counts match, acked and fire-and-forget",
        .enabled(
            if: ServerProcess.find("redis-server") != nil,
            "redis-server is not installed; scripts/bench-deps --servers installs it"))
    func redis() async throws {
        let server = try ServerProcess("redis-server") { port, directory in
            [
                "--port", "\(port)", "--bind", "127.0.0.1", "--dir", directory, "--appendonly", "yes",
                "--appendfsync", "everysec", "--save", "",
            ]
        }
        defer { server.stop() }
        for fireAndForget in [false, true] {
            let report = try await Self.run("redis", server: server, fireAndForget: fireAndForget)
            Self.expectConsistent(report)
            #expect(report.semantics.contains("appendfsync everysec"), "\(report.semantics)")
        }
    }

    @Test("A driver that cannot connect fails set-up with connect-failed, naming the address")
    func refused() async throws {
        let port = try ServerProcess.freePort()
        for name in ["nats", "jetstream", "redis"] {
            let driver = try BenchDrivers.make(name: name, options: DriverOptions(port: port, timeoutSeconds: 2))
            let error = await #expect(throws: BenchError.self) {
                _ = try await BenchRunner(workload: Self.tiny, driver: driver, server: "127.0.0.1:\(port)").run()
            }
            #expect(error?.code == .connectFailed, "\(String(describing: error))")
            #expect(error?.subject.contains("127.0.0.1:\(port)") == true, "\(String(describing: error))")
        }
    }

    @Test(
        "jetstream against a server without JetStream says so",
        .enabled(
            if: ServerProcess.find("nats-server") != nil,
            "nats-server is not installed; scripts/bench-deps --servers installs it"))
    func jetStreamDisabled() async throws {
        let server = try ServerProcess("nats-server") { port, _ in ["-a", "127.0.0.1", "-p", "\(port)"] }
        defer { server.stop() }
        let driver = try BenchDrivers.make(name: "jetstream", options: DriverOptions(address: server.address))
        let error = await #expect(throws: BenchError.self) {
            _ = try await BenchRunner(workload: Self.tiny, driver: driver, server: server.address).run()
        }
        #expect(error?.message.contains("JetStream") == true, "\(String(describing: error))")
    }

    @Test("An unknown driver name lists the known ones")
    func unknownDriver() throws {
        let error = #expect(throws: BenchError.self) {
            try BenchDrivers.make(name: "kafka", options: DriverOptions(port: 1))
        }
        #expect(error?.code == .unknownDriver)
        #expect(error?.message.contains("jetstream, nats, plexus, redis") == true, "\(String(describing: error))")
    }
}
