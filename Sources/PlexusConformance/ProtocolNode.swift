import Foundation
import Logging
import PlexusKernel

/// A real node for the protocol suite, in this process: memory storage and the protocol plugin under test
/// on a free 127.0.0.1 port (the plugin's own choice for port 0, read back through its `port` operation),
/// topics bound explicitly and `autoCreate` off, so that an unbound topic is unknown.
final class ProtocolNode: Sendable {
    let kernel: Kernel
    let home: String
    let plugin: String
    let port: Int

    /// The topics the node binds to memory storage.
    static let topics = [
        "conformance-publish", "conformance-ack", "conformance-nack", "conformance-order", "conformance-bad",
        "conformance-large",
    ]
    /// A topic the node does not know.
    static let unknownTopic = "conformance-unbound"

    /// Starts the node.
    /// - Parameters:
    ///   - library: the protocol plugin's library; `manifest` its manifest (its `library` is looked up beside
    ///     the library given).
    ///   - storage: the memory-storage library and manifest.
    ///   - configJSON: configuration values over the manifest's (the port is always set to 0).
    /// - Throws: `KernelError` when a manifest cannot be read or a plugin does not become active.
    init(
        library: String, manifest: String, storage: (library: String, manifest: String), configJSON: String?,
        logger: Logger
    ) throws {
        let fm = FileManager.default
        home = fm.temporaryDirectory.appendingPathComponent("plexus-conformance-node-\(UUID().uuidString)").path
        let manifests = home + "/manifests"
        do {
            try fm.createDirectory(atPath: manifests, withIntermediateDirectories: true)
            try fm.copyItem(atPath: manifest, toPath: manifests + "/protocol.yaml")
            try fm.copyItem(atPath: storage.manifest, toPath: manifests + "/storage.yaml")
        } catch {
            throw KernelError(.io, subject: home, "cannot prepare the node's manifests: \(error)")
        }
        let protocolManifest = try ManifestParser.load(path: manifest)
        let storageManifest = try ManifestParser.load(path: storage.manifest)
        plugin = protocolManifest.name
        var values: [String: Any] = [:]
        if let configJSON {
            guard let object = try? JSONSerialization.jsonObject(with: Data(configJSON.utf8)) as? [String: Any] else {
                throw KernelError(.configInvalid, subject: "config", "expected one JSON object such as {\"key\": 1}")
            }
            values = object
        }
        values["port"] = 0
        values["host"] = "127.0.0.1"
        let valuesJSON = String(
            decoding: try JSONSerialization.data(withJSONObject: values, options: [.sortedKeys]), as: UTF8.self)
        let searchPath = [library, storage.library].map { URL(fileURLWithPath: $0).deletingLastPathComponent().path }
        let bindings = Self.topics.map { "{topic: \"\($0)\", storage: \(storageManifest.name)}" }
        let text = """
            node: {id: conformance, dataDirectory: "\(home)/data"}
            plugins:
              manifestDirectories: ["\(manifests)"]
              searchPath: [\(searchPath.map { "\"\($0)\"" }.joined(separator: ", "))]
              config:
                \(plugin): \(valuesJSON)
            topics:
              defaultStorage: \(storageManifest.name)
              autoCreate: false
              bindings: [\(bindings.joined(separator: ", "))]

            """
        let config = try NodeConfig.parse(text, path: home + "/plexus.yaml", baseDirectory: home)
        let kernel = Kernel(config: config, logger: logger)
        self.kernel = kernel
        kernel.start()
        for name in [storageManifest.name, plugin] {
            guard let status = kernel.status(of: name), status.state == .active else {
                let status = kernel.status(of: name)
                kernel.stop()
                throw KernelError(
                    .hookFailed, subject: name,
                    "did not become active on the conformance node: \(status.map { "\($0.state)" } ?? "not found")\(status?.lastError.map { ": \($0)" } ?? "")"
                )
            }
        }
        let answer = (try? kernel.callOperation(plugin: plugin, operation: "port", arguments: [])) ?? ""
        guard let port = Int(answer.trimmingCharacters(in: .whitespacesAndNewlines)), port > 0 else {
            kernel.stop()
            throw KernelError(
                .descriptorInvalid, subject: plugin,
                "its `port` operation answered '\(answer)'; the protocol suite needs it to find the port the plugin chose for port 0"
            )
        }
        self.port = port
    }

    /// Stops the node and removes its files.
    /// - Returns: why the protocol plugin did not stop cleanly, or `nil` when it did.
    @discardableResult
    func stop() -> String? {
        kernel.stop()
        defer { try? FileManager.default.removeItem(atPath: home) }
        guard let status = kernel.status(of: plugin) else { return "the node no longer knows the plugin" }
        guard status.state == .stopped else {
            return "it ended \(status.state)\(status.lastError.map { ": \($0)" } ?? "")"
        }
        return nil
    }
}
