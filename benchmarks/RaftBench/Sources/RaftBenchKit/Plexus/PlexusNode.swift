import Foundation
import Synchronization

/// Where the Plexus under test comes from: the `plexus` binary, the directory of the plugin libraries, and the
/// shipped manifests that each node's manifests are copied from.
public struct PlexusInstallation: Sendable {
    public var plexus: String
    public var pluginDirectory: String
    public var manifestDirectory: String

    public init(plexus: String, pluginDirectory: String, manifestDirectory: String) {
        self.plexus = plexus
        self.pluginDirectory = pluginDirectory
        self.manifestDirectory = manifestDirectory
    }
}

/// A manifest's `config.values`: each key's YAML text.
public struct ManifestValues: Sendable, Equatable {
    public private(set) var entries: [(key: String, yaml: String)] = []

    public init() {}

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.entries.map(\.key) == rhs.entries.map(\.key) && lhs.entries.map(\.yaml) == rhs.entries.map(\.yaml)
    }

    /// Sets a string value (written as a double-quoted YAML scalar).
    public mutating func set(_ key: String, string: String) {
        let escaped = string.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
        set(key, yaml: "\"\(escaped)\"")
    }

    /// Sets an integer value.
    public mutating func set(_ key: String, int: Int) { set(key, yaml: String(int)) }

    /// Sets `key=value` from the command line: digits are an integer, anything else a string.
    public mutating func set(assignment: String) throws {
        guard let equals = assignment.firstIndex(of: "="), equals != assignment.startIndex else {
            throw HarnessError("'\(assignment)' is not KEY=VALUE")
        }
        let key = String(assignment[..<equals])
        let value = String(assignment[assignment.index(after: equals)...])
        if let number = Int(value) { set(key, int: number) } else { set(key, string: value) }
    }

    private mutating func set(_ key: String, yaml: String) {
        entries.removeAll { $0.key == key }
        entries.append((key, yaml))
    }

    /// `text` (a manifest) with these values as `config.values`, placed after `config.schema`, just before the
    /// top-level `operations:` that follows the config block in every shipped manifest.
    ///
    /// - Throws: ``HarnessError`` when the manifest has no top-level `operations:` or already has values.
    public func applied(to text: String, manifest: String) throws -> String {
        guard !entries.isEmpty else { return text }
        guard !text.contains("\n  values:") else {
            throw HarnessError("\(manifest) already sets config.values; the benchmark sets its own")
        }
        guard let operations = text.range(of: "\noperations:") else {
            throw HarnessError("\(manifest) has no top-level 'operations:' to place config.values before")
        }
        let block = "\n  values:" + entries.map { "\n    \($0.key): \($0.yaml)" }.joined()
        return text.replacingCharacters(in: operations.lowerBound..<operations.lowerBound, with: block)
    }
}

/// One `plexus serve` node of the benchmark: one storage plugin (raft-log unless told otherwise) as every
/// topic's storage and tcp-protocol, on free 127.0.0.1 ports, in a directory of its own (manifests, node file,
/// data, log). It can be killed and started again on the same data directory and ports.
public final class PlexusNode: Sendable {
    /// The node id (also raft-log's `nodeId` in a cluster).
    public let id: String
    public let directory: String
    public let tcpPort: Int
    public let adminPort: Int
    public let installation: PlexusInstallation
    /// The storage plugin every topic is stored in (`raft-log`, `ledger-storage`).
    public let storage: String
    private let logLevel: String
    private let process = Mutex<ServerProcess?>(nil)

    /// The admin endpoint, `127.0.0.1:PORT`.
    public var admin: String { "\(Loopback.host):\(adminPort)" }

    /// Writes the node's manifests and node file under `directory`.
    ///
    /// - Parameters:
    ///   - storageValues: the storage plugin's `config.values` (empty: the shipped defaults; for raft-log, a single
    ///     member).
    ///   - storage: the storage plugin's name (its shipped manifest is `<storage>.yaml`).
    ///   - ports: its TCP and admin ports; `nil`: two free ones. A cluster passes ports it took in one call with
    ///     its members' raft ports, so that no two collide.
    /// - Throws: ``HarnessError`` when the shipped manifests cannot be read or the files written.
    public init(
        id: String, directory: String, installation: PlexusInstallation, storageValues: ManifestValues,
        storage: String = "raft-log", logLevel: String = "warning", ports: (tcp: Int, admin: Int)? = nil
    ) throws {
        self.id = id
        self.storage = storage
        self.directory = directory
        self.installation = installation
        self.logLevel = logLevel
        let chosen =
            try ports
            ?? {
                let free = try Loopback.freePorts(2); return (free[0], free[1])
            }()
        tcpPort = chosen.tcp
        adminPort = chosen.admin
        let manifests = directory + "/manifests"
        do {
            try FileManager.default.createDirectory(atPath: manifests, withIntermediateDirectories: true)
            var tcpValues = ManifestValues()
            tcpValues.set("port", int: tcpPort)
            tcpValues.set("node", string: "plexus-\(id)")
            for (name, values) in [(storage, storageValues), ("tcp-protocol", tcpValues)] {
                let source = "\(installation.manifestDirectory)/\(name).yaml"
                let text = try String(contentsOfFile: source, encoding: .utf8)
                try values.applied(to: text, manifest: source).write(
                    toFile: "\(manifests)/\(name).yaml", atomically: true, encoding: .utf8)
            }
            let node = """
                # Written by plexus-bench-raft: node \(id), \(storage) and tcp-protocol only.
                node: {id: \(id), dataDirectory: \(directory)/data}
                admin: {host: 127.0.0.1, port: \(adminPort)}
                topics: {defaultStorage: \(storage), autoCreate: true}
                plugins: {manifestDirectories: [\(manifests)], searchPath: [\(installation.pluginDirectory)], requireSha256: false}

                """
            try node.write(toFile: directory + "/node.yaml", atomically: true, encoding: .utf8)
        } catch let error as HarnessError {
            throw error
        } catch {
            throw HarnessError("cannot write node \(id)'s files under \(directory): \(error)")
        }
    }

    /// Starts `plexus serve` and waits until its TCP port accepts and the storage plugin is active.
    ///
    /// - Throws: ``HarnessError`` with the node's log when it exits or does not listen within `timeout`, or
    ///   with the storage plugin's last error when it failed.
    public func start(timeout: Duration = .seconds(60)) async throws {
        let server = try ServerProcess(
            name: "plexus-\(id)", executable: installation.plexus,
            arguments: ["serve", "--config", directory + "/node.yaml", "--log-level", logLevel],
            logPath: directory + "/node.log")
        process.withLock { $0 = server }
        try await Loopback.waitUntilListening(server, port: tcpPort, timeout: timeout)
        try await waitForStorage(timeout: timeout)
    }

    /// What `plexus plugin list --json` says about one plugin.
    struct PluginListEntry: Decodable {
        var name: String
        var state: String
        var lastError: String?
    }

    /// Waits until the node reports its storage plugin `active`.
    private func waitForStorage(timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        var last = "not listed"
        while ContinuousClock.now < deadline {
            let output = try await Command.run(installation.plexus, ["plugin", "list", "--json", "--admin", admin])
            if output.status == 0,
                let plugins = try? JSONDecoder().decode([PluginListEntry].self, from: Data(output.stdout.utf8))
            {
                // The TCP protocol starts after the storage, so by now the storage is active or has failed; a
                // manifest the kernel refused is not listed at all (the log says why).
                guard let plugin = plugins.first(where: { $0.name == storage }) else { break }
                if plugin.state == "active" { return }
                last = plugin.state + (plugin.lastError.map { ": \($0)" } ?? "")
                if plugin.state == "failed" { break }
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw HarnessError("\(storage) on node \(id) is not active (\(last)); \(directory)/node.log:\n\(logTail())")
    }

    /// Whether the node's process is running.
    public var isRunning: Bool { process.withLock { $0.map { !$0.hasExited } ?? false } }

    /// `kill -9` of the node's process; returns once it is reaped.
    public func kill9() { process.withLock { $0 }?.kill9() }

    /// Stops the node (SIGTERM; SIGKILL after 10 s).
    public func stop() { process.withLock { $0 }?.stop() }

    /// The node's log tail, for messages.
    public func logTail() -> String { process.withLock { $0 }?.logTail() ?? "(never started)" }

    /// `plexus plugin call raft-log OPERATION ARGS… --admin 127.0.0.1:PORT`: the operation's printed result.
    ///
    /// - Throws: ``HarnessError`` with what the command printed when it fails.
    public func raftLog(_ operation: String, _ arguments: [String] = []) async throws -> String {
        let output = try await Command.run(
            installation.plexus, ["plugin", "call", "--admin", admin, "raft-log", operation] + arguments)
        guard output.status == 0 else {
            let message = (output.stderr + output.stdout).trimmingCharacters(in: .whitespacesAndNewlines)
            throw HarnessError("plexus plugin call raft-log \(operation) on node \(id) failed: \(message)")
        }
        return output.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// raft-log's `status` on this node.
    ///
    /// - Throws: ``HarnessError`` when the call fails or the answer is not the contract's JSON.
    public func status() async throws -> RaftStatus { try RaftStatus(json: try await raftLog("status")) }

    /// One of raft-log's `uint64` counters (`appends`, `group-commits`, `bytes-on-disk`, …).
    ///
    /// - Throws: ``HarnessError`` when the call fails or the answer is not a number.
    public func counter(_ operation: String) async throws -> UInt64 {
        let text = try await raftLog(operation)
        guard let value = UInt64(text) else {
            throw HarnessError("raft-log \(operation) on node \(id) answered '\(text)', not a number")
        }
        return value
    }
}
