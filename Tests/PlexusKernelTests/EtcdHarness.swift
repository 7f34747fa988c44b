import EtcdClient
import Foundation
import PlexusBench

/// etcd servers (Debian's `etcd`, installed by `scripts/etcd-deps`) started on free 127.0.0.1 ports with a
/// temporary data directory per member, for the etcd registry's tests; killed and removed by `stop()`.
///
/// The members run with a 25 ms heartbeat and a 250 ms election timeout, so leases as short as one second
/// are granted and a new leader is elected within a second of a kill.
final class EtcdCluster: @unchecked Sendable {
    // Safe: `processes` is guarded by `lock`; everything else is immutable after init.
    struct SetupError: Error, CustomStringConvertible {
        var description: String
    }

    struct Member {
        let name: String
        let clientPort: Int
        let peerPort: Int
        let dataDirectory: String
        var endpoint: String { "127.0.0.1:\(clientPort)" }
    }

    let members: [Member]
    let root: String
    private let token = "plexus-test-\(UUID().uuidString.prefix(8))"
    private let lock = NSLock()
    private var processes: [Int: Process] = [:]

    /// Starts `size` members and waits until each answers `/health`.
    /// - Throws: `SetupError` naming what failed (etcd not installed, a member that never became healthy).
    init(size: Int = 1) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw SetupError(description: "\(Self.binary) is missing: run scripts/etcd-deps (Debian's etcd-server)")
        }
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-etcd-\(UUID().uuidString)")
            .path
        self.root = root
        let ports = try LoopbackPorts.free(2 * size)
        members = (0..<size).map { i in
            Member(
                name: "m\(i)", clientPort: ports[2 * i], peerPort: ports[2 * i + 1],
                dataDirectory: "\(root)/m\(i)")
        }
        do {
            for index in members.indices { try start(index) }
            for index in members.indices { try waitHealthy(index) }
        } catch {
            stop()
            throw error
        }
    }

    static var binary: String {
        for directory in ["/usr/bin", "/usr/local/bin"]
        where FileManager.default.isExecutableFile(atPath: directory + "/etcd") {
            return directory + "/etcd"
        }
        return "/usr/bin/etcd"
    }

    var endpoints: [String] { members.map(\.endpoint) }

    /// Starts member `index` (again, over its data directory after a kill).
    func start(_ index: Int) throws {
        let member = members[index]
        try FileManager.default.createDirectory(atPath: member.dataDirectory, withIntermediateDirectories: true)
        let cluster = members.map { "\($0.name)=http://127.0.0.1:\($0.peerPort)" }.joined(separator: ",")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: Self.binary)
        process.arguments = [
            "--name", member.name, "--data-dir", member.dataDirectory,
            "--listen-client-urls", "http://127.0.0.1:\(member.clientPort)",
            "--advertise-client-urls", "http://127.0.0.1:\(member.clientPort)",
            "--listen-peer-urls", "http://127.0.0.1:\(member.peerPort)",
            "--initial-advertise-peer-urls", "http://127.0.0.1:\(member.peerPort)",
            "--initial-cluster", cluster, "--initial-cluster-token", token, "--initial-cluster-state", "new",
            "--heartbeat-interval", "25", "--election-timeout", "250", "--log-level", "error",
        ]
        let log = FileHandle(forWritingAtPath: "/dev/null")
        process.standardOutput = log
        process.standardError = log
        try process.run()
        lock.withLock { processes[index] = process }
    }

    /// Kills member `index` with SIGKILL and waits for it to exit.
    func kill(_ index: Int) {
        guard let process = lock.withLock({ processes.removeValue(forKey: index) }) else { return }
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Kills and starts member `index` again over the same data directory; waits until it is healthy.
    func restart(_ index: Int) throws {
        kill(index)
        try start(index)
        try waitHealthy(index)
    }

    /// Waits up to 20 s until member `index` answers `GET /health` with `"health":"true"` (curl, so that no
    /// Swift task is needed: the caller may be on a cooperative thread).
    func waitHealthy(_ index: Int) throws {
        let endpoint = members[index].endpoint
        let deadline = Date().addingTimeInterval(20)
        var last = "no answer"
        while Date() < deadline {
            let curl = Process()
            curl.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
            curl.arguments = ["-s", "-m", "1", "http://\(endpoint)/health"]
            let output = Pipe()
            curl.standardOutput = output
            curl.standardError = FileHandle(forWritingAtPath: "/dev/null")
            try curl.run()
            let answer = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            curl.waitUntilExit()
            if answer.contains(#""health":"true""#) { return }
            last = answer.isEmpty ? "no answer" : answer
            Thread.sleep(forTimeInterval: 0.1)
        }
        throw SetupError(
            description: "etcd member \(members[index].name) at \(endpoint) not healthy within 20 s: \(last)")
    }

    /// Kills every member and removes the data directories.
    func stop() {
        let all = lock.withLock { () -> [Process] in
            defer { processes.removeAll() }
            return Array(processes.values)
        }
        for process in all {
            Foundation.kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: root)
    }

    /// A client of every member, in order.
    func client(requestTimeout: Duration = .seconds(2)) throws -> EtcdClient {
        var configuration = EtcdConfiguration(endpoints: try endpoints.map { try .init(parsing: $0) })
        configuration.requestTimeout = requestTimeout
        configuration.dialTimeout = .milliseconds(500)
        return try EtcdClient(configuration)
    }

    /// Runs `body` on a task of the etcd executor and waits for it (the registry tests are synchronous; the
    /// client is async).
    static func blocking<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) -> Result<T, any Error> {
        let box = ResultBox<T>()
        let done = DispatchSemaphore(value: 0)
        Task(executorPreference: EtcdExecutor.shared) {
            do { box.set(.success(try await body())) } catch { box.set(.failure(error)) }
            done.signal()
        }
        done.wait()
        return box.get()
    }
}

/// One result handed from a task to a waiting thread.
final class ResultBox<T: Sendable>: @unchecked Sendable {
    // Safe: guarded by `lock`.
    private let lock = NSLock()
    private var value: Result<T, any Error>?

    func set(_ result: Result<T, any Error>) { lock.withLock { value = result } }
    func get() -> Result<T, any Error> {
        lock.withLock { value } ?? .failure(EtcdCluster.SetupError(description: "no result"))
    }
}

/// Runs an async body from a synchronous test, rethrowing its error.
func etcdSync<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    try EtcdCluster.blocking(body).get()
}
