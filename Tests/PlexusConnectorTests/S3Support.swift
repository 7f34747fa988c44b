import Foundation
import PlexusBench
import PlexusCore

/// moto's S3 server (`moto_server`, PyPI `moto[server]`, installed by scripts/interop-deps into the project's
/// virtual environment) on a free loopback port. moto keeps its buckets in memory: a restart starts empty.
/// The test talks to it with the `curl` program, signing with SigV4 like the sink.
final class MotoServer: @unchecked Sendable {
    // Safe: used from the one test that owns it.
    /// moto's fixed fake credentials (any key is accepted): NOT a secret, only for the test server.
    static let fakeAccessKey = "testing"
    static let fakeSecretKey = "testing"
    static let region = "us-east-1"

    let port: Int
    let directory: URL
    private let server: ServerProcess

    /// The moto_server of the project's virtual environment, else one on PATH.
    static func executable() throws -> String {
        let venv = Repository.root.appendingPathComponent(".build/interop-venv/bin/moto_server").path
        if FileManager.default.isExecutableFile(atPath: venv) { return venv }
        if let found = which("moto_server") { return found }
        throw HarnessError(description: "moto_server is not installed: run scripts/interop-deps")
    }

    init() throws {
        port = try LoopbackPorts.free(1)[0]
        directory = try Repository.temporaryDirectory("plexus-moto")
        // SIGKILL: the test process's blocked signals are inherited and Python keeps them blocked (see
        // ServerProcess); moto holds nothing on disk.
        server = ServerProcess(
            executable: try Self.executable(), arguments: ["-H", "127.0.0.1", "-p", String(port)],
            log: directory.appendingPathComponent("moto.log"), stopSignal: SIGKILL)
        try start()
    }

    var endpoint: String { "http://127.0.0.1:\(port)" }

    func start() throws {
        try server.start()
        guard Wait.until(seconds: 30, { (try? curl("GET", "/").status) == 200 }) else {
            throw HarnessError(description: "moto_server did not start:\n\(server.output)")
        }
    }

    func stop() { server.stop() }

    func restart() throws {
        stop()
        try start()
    }

    /// Sends one signed request with the `curl` program; the status and the body.
    @discardableResult
    func curl(_ method: String, _ path: String) throws -> (status: Int, body: Data) {
        guard let program = which("curl") else { throw HarnessError(description: "curl is missing") }
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = [
            "-s", "-X", method, "--aws-sigv4", "aws:amz:\(Self.region):s3", "--user",
            "\(Self.fakeAccessKey):\(Self.fakeSecretKey)", "-w", "\n%{http_code}", "--max-time", "5",
            endpoint + path,
        ]
        process.standardOutput = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard let newline = output.lastIndex(of: 0x0A),
            let status = Int(String(decoding: output[(newline + 1)...], as: UTF8.self))
        else { throw HarnessError(description: "curl \(method) \(path) failed (exit \(process.terminationStatus))") }
        return (status, Data(output[..<newline]))
    }

    func createBucket(_ bucket: String) throws {
        let answer = try curl("PUT", "/\(bucket)")
        guard answer.status == 200 else {
            throw HarnessError(
                description: "cannot create \(bucket): \(answer.status) \(String(decoding: answer.body, as: UTF8.self))"
            )
        }
    }

    /// The keys of a bucket, sorted (ListObjectsV2; the tests write fewer than 1000 objects).
    func keys(_ bucket: String) throws -> [String] {
        let answer = try curl("GET", "/\(bucket)?list-type=2")
        guard answer.status == 200 else { throw HarnessError(description: "cannot list \(bucket): \(answer.status)") }
        let xml = String(decoding: answer.body, as: UTF8.self)
        return xml.components(separatedBy: "<Key>").dropFirst().compactMap {
            $0.components(separatedBy: "</Key>").first
        }
        .sorted()
    }

    /// An object's events, one CloudEvents JSON line each.
    func events(_ bucket: String, _ key: String) throws -> [CloudEvent] {
        let answer = try curl("GET", "/\(bucket)/\(key)")
        guard answer.status == 200 else { throw HarnessError(description: "cannot read \(key): \(answer.status)") }
        return try answer.body.split(separator: 0x0A).map { try CloudEventJSON.decode(Array($0)) }
    }

    /// Every object's events in key order (the sink's keys sort by offset), with their keys.
    func objects(_ bucket: String) throws -> [(key: String, events: [CloudEvent])] {
        try keys(bucket).map { (key: $0, events: try events(bucket, $0)) }
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}
