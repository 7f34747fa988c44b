import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The files of one `plexus serve` node that a benchmark starts: copies of the shipped manifests with
/// benchmark values, and a node file, where **every** listener gets a free 127.0.0.1 port.
///
/// A listener is the node's admin endpoint and every plugin whose manifest declares a `port` key in its
/// `config.schema` (today tcp-protocol and http-protocol). All ports are taken in one call, each by binding
/// it, with every socket held until all are chosen, so they are distinct and were free a moment before the
/// node starts; the run script then waits until each one accepts and checks that every plugin is active.
/// A default port (10000, 10105, 10106) is never used: a node that could not bind one fails its check
/// instead of running without that plugin.
///
/// raft-log's node-to-node port (`listen`) is not a listener of a single-member node (no peers, no
/// network); the clusters of `make bench-raft` take it with their members' other ports in one call.
public struct BenchNodeFiles: Sendable, Equatable {
    /// One listening port of the node.
    public struct Listener: Sendable, Equatable {
        /// `admin`, or the plugin's name.
        public var owner: String
        public var port: Int
    }

    /// The node's directory: `manifests/`, `plexus.yaml`, `data/`.
    public var directory: String
    /// The admin endpoint's port.
    public var adminPort: Int
    /// Every listener: the admin endpoint first, then the plugins', by manifest name.
    public var listeners: [Listener]

    /// The port of `owner` (`admin` or a plugin's name), if it has one.
    public func port(of owner: String) -> Int? { listeners.first { $0.owner == owner }?.port }

    /// Writes the node under `directory`.
    ///
    /// - Parameters:
    ///   - manifestDirectory: The shipped manifests (`plugin-manifests`); each `*.yaml` is copied.
    ///   - pluginSearchPath: Where the plugin libraries are (`.build/release`), made absolute.
    ///   - storage: Every topic's storage (`topics.defaultStorage`).
    ///   - retentionBytes: `topics.defaultRetentionBytes`, so a run at max rate fits; 0 leaves it out.
    ///   - values: Extra `config.values` per plugin name (`raft-log` → `fsync` → `interval`), as YAML scalars.
    ///   - only: When not empty, the manifest names to copy; the others are left out.
    /// - Throws: ``BenchError`` (`invalidOption`) naming the manifest or file that could not be read,
    ///   edited or written, or when no free port could be bound.
    public static func write(
        directory: String, manifestDirectory: String, pluginSearchPath: String, storage: String,
        retentionBytes: Int = 0, values: [String: [(key: String, yaml: String)]] = [:], only: Set<String> = []
    ) throws -> BenchNodeFiles {
        let fm = FileManager.default
        let directory = absolute(directory)
        let manifests = directory + "/manifests"
        func failure(_ subject: String, _ message: String) -> BenchError {
            BenchError(.invalidOption, subject: subject, message)
        }
        let names: [String]
        do {
            try fm.createDirectory(atPath: manifests, withIntermediateDirectories: true)
            names = try fm.contentsOfDirectory(atPath: manifestDirectory).filter { $0.hasSuffix(".yaml") }.sorted()
        } catch {
            throw failure(manifestDirectory, "cannot list the manifests or create \(manifests): \(error)")
        }
        var texts: [(name: String, file: String, text: String)] = []
        for file in names {
            let path = manifestDirectory + "/" + file
            guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
                throw failure(path, "cannot read the manifest")
            }
            let name = manifestName(text) ?? String(file.dropLast(5))
            if !only.isEmpty && !only.contains(name) { continue }
            texts.append((name, file, text))
        }
        let owners = texts.filter { listenerKeys(in: $0.text).contains("port") }.map(\.name)
        let ports = try LoopbackPorts.free(1 + owners.count)
        var listeners = [Listener(owner: "admin", port: ports[0])]
        for (index, owner) in owners.enumerated() { listeners.append(Listener(owner: owner, port: ports[index + 1])) }
        for entry in texts {
            var set = values[entry.name] ?? []
            if let listener = listeners.first(where: { $0.owner == entry.name }) {
                set.removeAll { $0.key == "port" }
                set.append(("port", String(listener.port)))
            }
            let path = manifestDirectory + "/" + entry.file
            let edited = try applying(set, to: entry.text, manifest: path)
            do {
                try edited.write(toFile: manifests + "/" + entry.file, atomically: true, encoding: .utf8)
            } catch {
                throw failure(manifests + "/" + entry.file, "cannot write: \(error)")
            }
        }
        var topics = "{defaultStorage: \(storage), autoCreate: true"
        if retentionBytes > 0 { topics += ", defaultRetentionBytes: \(retentionBytes)" }
        topics += "}"
        let node = """
            # Written by `plexus bench --write-node`: every listener on a free 127.0.0.1 port taken for this run.
            node: {id: bench, dataDirectory: \(directory)/data}
            admin: {host: 127.0.0.1, port: \(ports[0])}
            topics: \(topics)
            plugins: {manifestDirectories: [\(manifests)], searchPath: [\(absolute(pluginSearchPath))], requireSha256: false}

            """
        do {
            try node.write(toFile: directory + "/plexus.yaml", atomically: true, encoding: .utf8)
        } catch {
            throw failure(directory + "/plexus.yaml", "cannot write: \(error)")
        }
        return BenchNodeFiles(directory: directory, adminPort: ports[0], listeners: listeners)
    }

    /// The manifest's top-level `name:`.
    static func manifestName(_ text: String) -> String? {
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) where line.hasPrefix("name:") {
            let value = line.dropFirst(5).trimmingCharacters(in: .whitespaces)
            return value.isEmpty ? nil : value
        }
        return nil
    }

    /// The keys of `config.schema` that name a listening port (`port`), in order.
    static func listenerKeys(in text: String) -> [String] {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let config = lines.firstIndex(of: "config:"),
            let schema = lines[(config + 1)...].firstIndex(where: { $0.hasPrefix("  schema:") })
        else { return [] }
        var keys: [String] = []
        for line in lines[(schema + 1)...] {
            if line.trimmingCharacters(in: .whitespaces).isEmpty || line.hasPrefix("      ") || line.hasPrefix("#") {
                continue
            }
            guard line.hasPrefix("    "), !line.hasPrefix("     ") else { break }
            let key = line.dropFirst(4).prefix { $0 != ":" }
            if key == "port" { keys.append(String(key)) }
        }
        return keys
    }

    /// `text` with `values` in its `config.values` block: added to the block when the manifest has one
    /// (a key already there is replaced), else a new block at the end of `config:`.
    ///
    /// - Throws: ``BenchError`` (`invalidOption`) when the manifest has no `config:` block or writes its
    ///   values in flow style (`values: {…}`).
    static func applying(_ values: [(key: String, yaml: String)], to text: String, manifest: String) throws -> String {
        guard !values.isEmpty else { return text }
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard let config = lines.firstIndex(of: "config:") else {
            throw BenchError(.invalidOption, subject: manifest, "has no top-level 'config:' block to set values in")
        }
        // The config block ends at the next top-level line (not indented, not a comment) or at the end.
        let end =
            lines[(config + 1)...].firstIndex { !$0.isEmpty && !$0.hasPrefix(" ") && !$0.hasPrefix("#") }
            ?? lines.count
        let entries = values.map { "    \($0.key): \($0.yaml)" }
        if let block = lines[(config + 1)..<end].firstIndex(where: { $0.hasPrefix("  values:") }) {
            guard lines[block].trimmingCharacters(in: .whitespaces) == "values:" else {
                throw BenchError(.invalidOption, subject: manifest, "writes config.values in flow style; use a block")
            }
            var blockEnd =
                lines[(block + 1)..<end].firstIndex { !$0.isEmpty && !$0.hasPrefix("   ") } ?? end
            for (key, _) in values {
                if let existing = lines[(block + 1)..<blockEnd].firstIndex(where: { $0.hasPrefix("    \(key):") }) {
                    lines.remove(at: existing)
                    blockEnd -= 1
                }
            }
            lines.insert(contentsOf: entries, at: blockEnd)
        } else {
            var at = end
            while at > config + 1 && lines[at - 1].trimmingCharacters(in: .whitespaces).isEmpty { at -= 1 }
            lines.insert(contentsOf: ["  values:"] + entries, at: at)
        }
        return lines.joined(separator: "\n")
    }

    private static func absolute(_ path: String) -> String {
        path.hasPrefix("/") ? path : FileManager.default.currentDirectoryPath + "/" + path
    }
}

extension BenchNodeFiles {
    /// Shell assignments for a run script (`eval "$(plexus bench --write-node DIR …)"`): `admin_port=…`, one
    /// `port_<plugin>=…` per plugin listener (dashes as underscores), and `listeners="owner:port …"`.
    public var shellAssignments: String {
        var lines = ["node_dir='\(directory)'", "node_config='\(directory)/plexus.yaml'", "admin_port=\(adminPort)"]
        for listener in listeners where listener.owner != "admin" {
            lines.append("port_\(listener.owner.replacingOccurrences(of: "-", with: "_"))=\(listener.port)")
        }
        lines.append("listeners='\(listeners.map { "\($0.owner):\($0.port)" }.joined(separator: " "))'")
        return lines.joined(separator: "\n")
    }

}
