import Foundation
import Logging
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// A setup step of a connector test that failed: what and why.
struct HarnessError: Error, CustomStringConvertible {
    var description: String
}

enum Repository {
    /// The package's root: three levels above this file.
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The directory `swift build` put `library` in.
    static func products(holding library: String) throws -> String {
        var candidates: [URL] = []
        if let executable = Bundle.main.executableURL { candidates.append(executable.deletingLastPathComponent()) }
        candidates.append(root.appendingPathComponent(".build/debug"))
        for directory in candidates
        where FileManager.default.fileExists(atPath: directory.appendingPathComponent(library).path) {
            return directory.path
        }
        throw HarnessError(
            description: "\(library) is not built in any of \(candidates.map(\.path)): run `swift build` first")
    }

    /// A fresh temporary directory.
    static func temporaryDirectory(_ prefix: String) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}

/// A node in this process with memory-storage for every topic and one connector from its manifest under
/// `Plugins/`, configured with `values`; a client that publishes and subscribes through the host API.
final class ConnectorNode: Sendable {
    let root: URL
    let name: String
    let kernel: Kernel
    let client: LocalClient
    /// The node's last log lines (the connector's included), for a failure's message.
    let logTail: LogTail

    /// - Parameters:
    ///   - manifest: the connector's manifest, relative to the repository (`Plugins/X/x.yaml`).
    ///   - values: its `config.values`.
    ///   - registry: whether the node also runs standalone-registry (whose metadata store then keeps a
    ///     source's position).
    ///   - prepare: runs with the connector's data directory (created) before the node starts.
    init(
        manifest: String, library: String, values: [String: String], registry: Bool = false,
        prepare: (String) throws -> Void = { _ in }
    ) throws {
        root = try Repository.temporaryDirectory("plexus-connector")
        let manifests = root.appendingPathComponent("manifests")
        try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
        try FileManager.default.copyItem(
            at: Repository.root.appendingPathComponent("plugin-manifests/memory-storage.yaml"),
            to: manifests.appendingPathComponent("memory-storage.yaml"))
        if registry {
            _ = try Repository.products(holding: "libStandaloneRegistry.so")
            try FileManager.default.copyItem(
                at: Repository.root.appendingPathComponent("plugin-manifests/standalone-registry.yaml"),
                to: manifests.appendingPathComponent("standalone-registry.yaml"))
        }
        var text = try String(
            contentsOf: Repository.root.appendingPathComponent(manifest), encoding: .utf8)
        let lines = values.sorted { $0.key < $1.key }.map { "    \($0.key): \(Self.quoted($0.value))\n" }.joined()
        guard let range = text.range(of: "\nconfig:\n") else {
            throw HarnessError(description: "\(manifest) has no config section")
        }
        text.replaceSubrange(range, with: "\nconfig:\n  values:\n\(lines)")
        let parsed = try ManifestParser.parse(text, path: manifest)
        name = parsed.name
        try text.write(to: manifests.appendingPathComponent("\(name).yaml"), atomically: true, encoding: .utf8)
        let products = try Repository.products(holding: library)
        _ = try Repository.products(holding: "libMemoryStorage.so")
        var config = NodeConfig()
        config.nodeID = "test-node"
        config.dataDirectory = root.appendingPathComponent("data").path
        config.manifestDirectories = [manifests.path]
        config.pluginSearchPath = [products]
        config.topics.defaultStorage = "memory-storage"
        config.adminPort = 0
        let pluginData = root.appendingPathComponent("data/plugins/\(name)")
        try FileManager.default.createDirectory(at: pluginData, withIntermediateDirectories: true)
        try prepare(pluginData.path)
        let logTail = LogTail()
        self.logTail = logTail
        kernel = Kernel(config: config, logger: Logger(label: "test") { _ in logTail })
        kernel.start()
        client = LocalClient(kernel: kernel, name: "connector-test")
        guard kernel.status(of: name)?.state == .active else {
            kernel.stop()
            throw HarnessError(description: "\(name) did not start: \(kernel.status(of: name)?.lastError ?? "?")")
        }
    }

    /// A YAML scalar: integers and booleans as they are, everything else as a double-quoted string.
    static func quoted(_ value: String) -> String {
        if Int(value) != nil || value == "true" || value == "false" { return value }
        return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            + "\""
    }

    /// The connector's data directory.
    var dataDirectory: String { root.appendingPathComponent("data/plugins/\(name)").path }

    /// The connector's health as the kernel reports it.
    var health: String { kernel.status(of: name)?.health ?? "?" }

    func restartConnector() throws {
        let change = try kernel.restartPlugin(name)
        guard kernel.status(of: name)?.state == .active else {
            throw HarnessError(description: "\(name) did not restart: \(change.message)")
        }
    }

    func publish(_ topic: String, _ events: [CloudEvent]) throws {
        for chunk in stride(from: 0, to: events.count, by: 50) {
            try client.publishAndWait(topic, Array(events[chunk..<min(events.count, chunk + 50)]))
        }
    }

    /// Subscribes from the earliest offset and acknowledges every delivery; the collector sees them all.
    func collect(_ topic: String, group: String = "test-collector") throws -> Collector {
        let collector = Collector(client: client)
        var options = LocalClient.Options()
        options.start = .earliest
        _ = try client.subscribe(topic: topic, group: group, options: options) { collector.received($0) }
        return collector
    }

    func shutDown() {
        kernel.stop()
        try? FileManager.default.removeItem(at: root)
    }
}

/// Everything one subscription received, acknowledged as it arrives.
final class Collector: Sendable {
    private let events = Mutex<[CloudEvent]>([])
    private let client: LocalClient

    init(client: LocalClient) { self.client = client }

    func received(_ delivery: LocalClient.Delivery) {
        events.withLock { $0.append(delivery.event) }
        _ = client.ack(delivery)
    }

    var all: [CloudEvent] { events.withLock { $0 } }

    /// Waits (bounded) until at least `count` events arrived; returns them all.
    @discardableResult
    func wait(for count: Int, seconds: Double = 10) -> [CloudEvent] {
        Wait.until(seconds: seconds) { self.all.count >= count }
        return all
    }
}

/// A log handler that keeps the last 100 lines in memory.
struct LogTail: LogHandler, Sendable {
    private final class Lines: Sendable {
        let kept = Mutex<[String]>([])
    }
    private let lines = Lines()
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .info

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let context = merged.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value) " }.joined()
        lines.kept.withLock {
            $0.append("\(event.level) \(context)\(event.message)")
            if $0.count > 100 { $0.removeFirst($0.count - 100) }
        }
    }

    /// The kept lines, oldest first.
    var text: String { lines.kept.withLock { $0.joined(separator: "\n") } }
}

enum Wait {
    /// Polls `condition` every 20 ms until it holds or `seconds` passed; whether it held.
    @discardableResult
    static func until(seconds: Double, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.02)
        }
        return try condition()
    }
}

/// Test events: `<prefix>-<n>` ids, data naming the id, a partition key.
func testEvents(_ prefix: String, _ range: Range<Int>) -> [CloudEvent] {
    range.map {
        CloudEvent(
            id: "\(prefix)-\($0)", source: "/connector-test", type: "test.event", datacontenttype: "text/plain",
            subject: "n\($0)", extensions: [(key: "seq", value: String($0))], data: Array("payload \($0) ✓".utf8))
    }
}

/// A child process of a test (a server), stopped when the test ends.
final class ServerProcess: @unchecked Sendable {
    // Safe: used from the one test that owns it.
    let executable: String
    let arguments: [String]
    private var process: Process?
    let log: URL

    /// The signal `stop` sends. The test process blocks some signals in its threads (the node's signal
    /// handling), and a child inherits that mask: a server that does not reset its mask (redis-server)
    /// never sees SIGTERM, so it is stopped with SIGKILL (a crash: with fsync always, nothing written is
    /// lost); postgres resets its mask and stops fast on SIGINT.
    let stopSignal: Int32

    init(executable: String, arguments: [String], log: URL, stopSignal: Int32) {
        self.executable = executable
        self.arguments = arguments
        self.log = log
        self.stopSignal = stopSignal
    }

    func start() throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.process = process
    }

    /// Stops the server (`stopSignal`, then SIGKILL after 10 s) and waits until it exited.
    func stop() {
        guard let process else { return }
        self.process = nil
        guard process.isRunning else { return }
        kill(process.processIdentifier, stopSignal)
        if !Wait.until(seconds: 10, { !process.isRunning }) { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    var output: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    deinit { stop() }
}

/// Finds a program on PATH; nil when absent.
func which(_ program: String) -> String? {
    for directory in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
        let path = "\(directory)/\(program)"
        if FileManager.default.isExecutableFile(atPath: path) { return path }
    }
    return nil
}
