import Foundation
import PlexusBench
import PlexusKernel
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// The `plexus` CLI against a real node: operation failures, tables, `sub --count/--timeout/--from`, and
/// `pub` when the node goes away.
@Suite("plexus CLI", .serialized)
struct CLITests {
    /// A `plexus` process whose standard input the test writes, with stdout and stderr in files.
    final class Interactive {
        let process = Process()
        let input = Pipe()
        let out: URL
        let err: URL

        init(_ arguments: [String], in directory: URL, name: String) throws {
            out = directory.appendingPathComponent("\(name).out")
            err = directory.appendingPathComponent("\(name).err")
            _ = FileManager.default.createFile(atPath: out.path, contents: nil)
            _ = FileManager.default.createFile(atPath: err.path, contents: nil)
            process.executableURL = try Repository.plexus()
            process.arguments = arguments
            process.currentDirectoryURL = directory
            process.standardInput = input
            process.standardOutput = try FileHandle(forWritingTo: out)
            process.standardError = try FileHandle(forWritingTo: err)
            try process.run()
        }

        deinit {
            if process.isRunning {
                Glibc.kill(process.processIdentifier, SIGKILL)
                process.waitUntilExit()
            }
        }

        var stdout: String { (try? String(contentsOf: out, encoding: .utf8)) ?? "" }
        var stderr: String { (try? String(contentsOf: err, encoding: .utf8)) ?? "" }
        var stdoutLines: [String] { stdout.split(separator: "\n").map(String.init) }

        /// Writes lines to the process's standard input (it is blocked reading, so the pipe is open).
        func send(_ lines: [String]) {
            input.fileHandleForWriting.write(Data(lines.map { $0 + "\n" }.joined().utf8))
        }

        func closeInput() { try? input.fileHandleForWriting.close() }

        /// Waits until `condition` holds on this process, or throws after `timeout`.
        func wait(
            upTo timeout: Duration, for what: String, sourceLocation: SourceLocation = #_sourceLocation,
            _ condition: (Interactive) -> Bool
        ) async throws {
            let deadline = ContinuousClock.now + timeout
            while !condition(self) {
                try #require(
                    ContinuousClock.now < deadline, "\(what) within \(timeout); stderr: \(stderr)",
                    sourceLocation: sourceLocation)
                try await Task.sleep(for: .milliseconds(20))
            }
        }

        /// Waits for the process to exit; its status.
        func exit(upTo timeout: Duration) async throws -> Int32 {
            try await wait(upTo: timeout, for: "plexus exits") { !$0.process.isRunning }
            process.waitUntilExit()
            return process.terminationStatus
        }
    }

    /// Runs `plexus` to completion with `environment` added.
    static func run(_ arguments: [String], in directory: URL, environment: [String: String] = [:]) async throws
        -> CommandResult
    {
        let out = directory.appendingPathComponent("run-\(UUID().uuidString).out")
        let err = directory.appendingPathComponent("run-\(UUID().uuidString).err")
        let process = try Command.launch(
            try Repository.plexus(), arguments, in: directory, stdout: out, stderr: err, environment: environment)
        let deadline = ContinuousClock.now + .seconds(60)
        while process.isRunning {
            if ContinuousClock.now > deadline { Glibc.kill(process.processIdentifier, SIGKILL) }
            try await Task.sleep(for: .milliseconds(20))
        }
        process.waitUntilExit()
        return CommandResult(
            status: process.terminationStatus, stdout: (try? String(contentsOf: out, encoding: .utf8)) ?? "",
            stderr: (try? String(contentsOf: err, encoding: .utf8)) ?? "")
    }

    /// A node with the shipped manifests and its TCP endpoint.
    static func node(in directory: TestDirectory, storage: String = "memory-storage") async throws -> (
        NodeProcess, String
    ) {
        let node = try await NodeProcess.start(
            manifests: try directory.shippedManifests(intervalMs: 60000), data: try directory.subdirectory("data"),
            in: directory.url, extraArguments: ["--default-storage", storage])
        return (node, "127.0.0.1:\(try await node.tcpPort())")
    }

    @Test("a failing operation exits non-zero naming its px_status; the admin endpoint answers 422 operation-failed")
    func failingOperation() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, _) = try await Self.node(in: directory)
        defer { node.kill() }

        let zero = try await node.call("heartbeat-source", "set-interval", ["0"])
        #expect(zero.status != 0, "set-interval 0 is refused by the plugin: \(zero.stdout)")
        #expect(zero.stdout.isEmpty, "nothing on stdout: \(zero.stdout)")
        #expect(zero.stderr.contains("PX_ERR_INVALID_ARGUMENT"), "\(zero.stderr)")
        #expect(zero.stderr.contains("operation-failed"), "\(zero.stderr)")
        #expect(zero.stderr.split(separator: "\n").count == 1, "one line: \(zero.stderr)")

        let json = try await node.cli(["plugin", "call", "--json", "heartbeat-source", "set-interval", "0"])
        #expect(json.status != 0)
        let answer = try #require(
            try JSONSerialization.jsonObject(with: Data(json.stdout.utf8)) as? [String: Any], "\(json.stdout)")
        #expect(answer["code"] as? String == "operation-failed")
        #expect((answer["error"] as? String)?.contains("returned PX_ERR_INVALID_ARGUMENT") == true, "\(answer)")

        let good = try await node.call("heartbeat-source", "set-interval", ["500"])
        #expect(good.status == 0, "\(good.stderr)")
        #expect(good.output == "PX_OK")
    }

    @Test("plugin list stays aligned when a plugin's last error spans lines; --json on every reading command")
    func tableWithMultiLineError() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 60000)
        _ = try await Repository.compileFixture(
            "start_fails", into: manifests,
            defines: [#"START_FAILS_MESSAGE="first line of the refusal\n\tsecond line\nthird line""#])
        try """
        manifest: 1
        name: start-fails
        version: 1.0.0
        kind: connector
        library: libstart_fails.so
        abi: {major: 1, minor: 4}
        """.write(to: manifests.appendingPathComponent("start-fails.yaml"), atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url,
            extraArguments: ["--default-storage", "memory-storage"])
        defer { node.kill() }
        let plugins = try await node.list()
        let failed = try #require(plugins.first { $0.name == "start-fails" })
        #expect(failed.lastError?.contains("second line\n") == true, "the error spans lines: \(failed.lastError ?? "")")

        for columns in ["400", "60"] {
            let table = try await Self.run(
                ["plugin", "list", "--admin", node.admin], in: directory.url, environment: ["COLUMNS": columns])
            #expect(table.status == 0, "\(table.stderr)")
            let lines = table.stdout.split(separator: "\n", omittingEmptySubsequences: false).dropLast().map(
                String.init)
            #expect(lines.count == plugins.count + 1, "one line per plugin and a header:\n\(table.stdout)")
            let width = lines.first?.count ?? 0
            #expect(lines.allSatisfy { $0.count == width }, "every line equally wide:\n\(table.stdout)")
            #expect(width <= Int(columns)!, "fits \(columns) columns:\n\(table.stdout)")
            #expect(!table.stdout.contains("\t"))
            // Each column starts where its header does: the character before it is a space on every line.
            let header = lines[0]
            for title in ["STATE", "VERSION", "KINDS", "HEALTH", "LAST ERROR"] {
                guard let range = header.range(of: title) else { continue }
                let start = header.distance(from: header.startIndex, to: range.lowerBound)
                for line in lines {
                    let before = line[line.index(line.startIndex, offsetBy: start - 1)]
                    #expect(before == " ", "column \(title) starts at \(start) on: \(line)")
                }
            }
            let row = try #require(lines.first { $0.hasPrefix("start-f") }, "\(table.stdout)")
            #expect(row.contains("failed"))
            if columns == "400" {
                #expect(row.contains("first line of the refusal ⏎ second line ⏎ third line"), "\(row)")
            } else {
                #expect(row.hasSuffix("…"), "cut to fit 60 columns: \(row)")
            }
        }

        let status = try await node.cli(["plugin", "status", "start-fails", "--json"])
        #expect(status.status == 0, "\(status.stderr)")
        #expect(try JSONDecoder().decode(PluginStatus.self, from: Data(status.stdout.utf8)).state == .failed)
        let text = try await node.cli(["plugin", "status", "start-fails"])
        #expect(text.stdout.contains("hook-failed"), "\(text.stdout)")
        let health = try await node.cli(["health", "--json"])
        #expect(health.status == 0 && health.stdout.contains(#""status":"up""#), "\(health.stdout)")
        let ready = try await node.cli(["ready"])
        #expect(ready.status != 0, "a failed plugin makes the node not ready: \(ready.stdout)")
        #expect(ready.stdout.contains("not-ready") && ready.stdout.contains("start-fails"), "\(ready.stdout)")
        let readyJSON = try await node.cli(["ready", "--json"])
        #expect(readyJSON.status != 0)
        let reasons = try #require(
            (try JSONSerialization.jsonObject(with: Data(readyJSON.stdout.utf8)) as? [String: Any])?["reasons"]
                as? [String], "\(readyJSON.stdout)")
        #expect(
            ready.stdout.split(separator: "\n").count == 1 + reasons.count,
            "one line per reason, however many lines a reason has:\n\(ready.stdout)")
    }

    @Test("sub --count 5 --timeout 2s with three events prints them and exits non-zero in about 2 s")
    func subCountTimeout() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, server) = try await Self.node(in: directory)
        defer { node.kill() }
        for n in 1...3 {
            let pub = try await Self.run(["pub", "t", "--data", "e\(n)", "--server", server], in: directory.url)
            #expect(pub.status == 0, "\(pub.stderr)")
        }
        let started = ContinuousClock.now
        let sub = try await Self.run(
            ["sub", "t", "--from", "earliest", "--count", "5", "--timeout", "2s", "--server", server],
            in: directory.url)
        let elapsed = ContinuousClock.now - started
        #expect(sub.status == 1, "\(sub.stderr)")
        #expect(sub.stdout.split(separator: "\n").count == 3, "\(sub.stdout)")
        for n in 1...3 { #expect(sub.stdout.contains(#""data":"e\#(n)""#), "\(sub.stdout)") }
        #expect(sub.stderr.contains("3 of 5 events arrived on t within --timeout"), "\(sub.stderr)")
        #expect(elapsed >= .seconds(2) && elapsed < .seconds(15), "it waited for the timeout, not for ever: \(elapsed)")
        #expect(!sub.stderr.contains("--from earliest applies only"), "no group given: no note about --from")

        let enough = try await Self.run(
            ["sub", "t", "--from", "earliest", "--count", "3", "--timeout", "30s", "--server", server],
            in: directory.url)
        #expect(enough.status == 0, "three events arrived in time: \(enough.stderr)")
    }

    @Test("--from with a named group says when it applies and that an existing group resumes where it was")
    func fromWithGroup() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, server) = try await Self.node(in: directory)
        defer { node.kill() }
        let pub = try await Self.run(["pub", "t", "--data", "x", "--server", server], in: directory.url)
        #expect(pub.status == 0, "\(pub.stderr)")
        let sub = try await Self.run(
            ["sub", "t", "--group", "g", "--from", "earliest", "--count", "1", "--timeout", "10s", "--server", server],
            in: directory.url)
        #expect(sub.status == 0, "\(sub.stderr)")
        #expect(
            sub.stderr.contains(
                "--from earliest applies only if group 'g' has no committed offset on 't'; if it has one (it consumed before), delivery resumes after it and --from earliest does not apply (move it with `plexus group reset`)"
            ), "\(sub.stderr)")
        let plain = try await Self.run(
            ["sub", "t", "--group", "g", "--count", "1", "--timeout", "1s", "--server", server], in: directory.url)
        #expect(!plain.stderr.contains("applies only"), "no --from, no note: \(plain.stderr)")
    }

    @Test("pub stops once, with a summary and exit status 2, when the node dies mid-stream")
    func pubStopsOnLostConnection() async throws {
        signal(SIGPIPE, SIG_IGN)
        let directory = try TestDirectory()
        defer { directory.remove() }
        let (node, server) = try await Self.node(in: directory)
        defer { node.kill() }
        let pub = try Interactive(["pub", "t", "--server", server], in: directory.url, name: "pub")
        pub.send((1...5).map { "line \($0)" })
        try await pub.wait(upTo: .seconds(20), for: "five acknowledgements") { $0.stdoutLines.count == 5 }
        node.kill()
        pub.send((6...25).map { "line \($0)" })
        pub.closeInput()
        let status = try await pub.exit(upTo: .seconds(20))
        #expect(status == 2, "stderr: \(pub.stderr)")
        #expect(pub.stdoutLines.count == 5)
        let lines = pub.stderr.split(separator: "\n")
        #expect(lines.count == 2, "one stop line and one summary, not one error per line:\n\(pub.stderr)")
        #expect(lines.first?.hasPrefix("plexus pub: stopped: \(server): ") == true, "\(pub.stderr)")
        #expect(lines.last?.contains("5 acknowledged, 1 not acknowledged") == true, "\(pub.stderr)")
        #expect(lines.last?.contains("the rest of the input not sent") == true, "\(pub.stderr)")
    }

    @Test("pub --retry reconnects across a node restart and every line is stored at least once")
    func pubRetriesAcrossRestart() async throws {
        signal(SIGPIPE, SIG_IGN)
        let directory = try TestDirectory()
        defer { directory.remove() }
        let port = try LoopbackPorts.one()
        let manifests = try directory.shippedManifests(intervalMs: 60000, tcpValues: ["port": "\(port)"])
        let data = try directory.subdirectory("data")
        func start(_ name: String) async throws -> NodeProcess {
            try await NodeProcess.start(
                manifests: manifests, data: data, in: try directory.subdirectory(name),
                extraArguments: ["--default-storage", "raft-log"])
        }
        let server = "127.0.0.1:\(port)"
        var first: NodeProcess? = try await start("first")
        let pub = try Interactive(
            ["pub", "t", "--retry", "--retry-for", "60s", "--server", server], in: directory.url, name: "pub")
        pub.send((1...5).map { "line \($0)" })
        try await pub.wait(upTo: .seconds(20), for: "five acknowledgements") { $0.stdoutLines.count == 5 }
        first?.kill()
        first = nil
        pub.send((6...10).map { "line \($0)" })
        try await Task.sleep(for: .milliseconds(500))
        #expect(pub.process.isRunning, "pub --retry waits for the node: \(pub.stderr)")
        let second = try await start("second")
        defer { second.kill() }
        pub.closeInput()
        let status = try await pub.exit(upTo: .seconds(45))
        #expect(status == 0, "stderr: \(pub.stderr)")
        #expect(pub.stdoutLines.count == 10, "\(pub.stdout)")
        #expect(pub.stderr.contains("10 acknowledged"), "\(pub.stderr)")

        // Everything stored, duplicates included (at least once): read for 3 s.
        let sub = try await Self.run(
            ["sub", "t", "--from", "earliest", "--timeout", "3s", "--server", server], in: directory.url)
        #expect(sub.status == 0, "\(sub.stderr)")
        for n in 1...10 { #expect(sub.stdout.contains(#""data":"line \#(n)""#), "line \(n) stored: \(sub.stdout)") }
    }
}
