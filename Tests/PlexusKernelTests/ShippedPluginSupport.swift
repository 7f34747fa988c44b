import Foundation
import Logging
import PlexusABI
import PlexusCore
import Testing

@testable import PlexusKernel

/// The plugins `swift build` makes from `Plugins/`, with their shipped manifests from `plugin-manifests/`.
enum ShippedPlugins {
    struct SetupError: Error, CustomStringConvertible {
        var description: String
    }

    static let root = ManifestSamples.repositoryRoot()

    /// The directory holding `library`: the test bundle's own build directory when it has it, else
    /// `<root>/.build/debug`.
    /// - Throws: `SetupError` saying to run `swift build` when neither has it.
    static func productsDirectory(holding library: String) throws -> String {
        var candidates: [URL] = []
        if let executable = Bundle.main.executableURL { candidates.append(executable.deletingLastPathComponent()) }
        candidates.append(root.appendingPathComponent(".build/debug"))
        for directory in candidates
        where FileManager.default.fileExists(atPath: directory.appendingPathComponent(library).path) {
            return directory.path
        }
        throw SetupError(
            description: "\(library) is not built; none of \(candidates.map(\.path)) has it. Run `swift build` "
                + "(all products, not only the tests) before `swift test`.")
    }

    /// The text of `plugin-manifests/<name>.yaml` (or of `path`, relative to the repository), with `values` set
    /// under `config.values`.
    static func manifest(_ name: String, path: String? = nil, values: [String: String] = [:]) throws -> String {
        let path = root.appendingPathComponent(path ?? "plugin-manifests/\(name).yaml").path
        var text = try String(contentsOfFile: path, encoding: .utf8)
        if !values.isEmpty {
            let lines = values.sorted { $0.key < $1.key }.map { "    \($0.key): \($0.value)\n" }.joined()
            text = text.replacingOccurrences(
                of: #"(?m)^config:\n"#, with: "config:\n  values:\n\(lines)", options: .regularExpression)
        }
        let parsed = try ManifestParser.parse(text, path: path)
        for (key, value) in values where parsed.config[key]?.text != value {
            throw SetupError(description: "could not set config.values.\(key) in the copy of \(path):\n\(text)")
        }
        return text
    }
}

/// A kernel running one shipped plugin from a fresh temporary node directory.
struct ShippedPluginNode {
    let node: FixtureNode
    let name: String
    let library: String

    /// A node directory holding the manifest of `name` (from `manifestPath` when given, with `values`), its
    /// library found among the products.
    init(_ name: String, library: String, manifestPath: String? = nil, values: [String: String] = [:]) throws {
        node = try FixtureNode()
        self.name = name
        self.library = library
        try node.write(
            try ShippedPlugins.manifest(name, path: manifestPath, values: values), file: "\(name).yaml")
    }

    /// Another node over the same directories (a restart).
    func kernel() throws -> Kernel {
        var config = NodeConfig()
        config.nodeID = "test-node"
        config.manifestDirectories = [node.manifestDirectory]
        config.dataDirectory = node.dataDirectory
        config.pluginSearchPath = [try ShippedPlugins.productsDirectory(holding: library)]
        config.adminPort = 0
        return Kernel(config: config, logger: Logger(label: "plexus.test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    /// The plugin's data directory under this node.
    var dataDirectory: String { node.dataDirectory + "/plugins/" + name }

    func remove() { node.remove() }
}

extension Kernel {
    /// The loaded descriptor and the instance pointer of an active plugin, failing the test otherwise.
    func requireLoaded(_ name: String, sourceLocation: SourceLocation = #_sourceLocation) throws -> (
        descriptor: px_plugin_descriptor, instance: UnsafeMutableRawPointer
    ) {
        let status = try requireStatus(name, sourceLocation: sourceLocation)
        try #require(status.state == .active, "\(name): \(status.lastError ?? "")", sourceLocation: sourceLocation)
        let snapshot = try #require(record(name)?.snapshot, sourceLocation: sourceLocation)
        let descriptor = try #require(snapshot.loaded?.descriptor, sourceLocation: sourceLocation)
        let instance = try #require(snapshot.instance?.raw, sourceLocation: sourceLocation)
        return (descriptor, instance)
    }
}

/// What a plugin hook did with a completion: refused synchronously (the completion must never run), or
/// returned `PX_OK` and completed.
enum HookOutcome<Value> {
    case refused(px_status, String)
    case completed(px_status, Value, String)

    /// The value of a successful completion, failing the test otherwise.
    func value(sourceLocation: SourceLocation = #_sourceLocation) throws -> Value {
        switch self {
        case .completed(let status, let value, _) where status == PX_OK.status:
            return value
        case .completed(let status, _, let message):
            Issue.record("completed with status \(status): \(message)", sourceLocation: sourceLocation)
        case .refused(let status, let message):
            Issue.record("refused with status \(status): \(message)", sourceLocation: sourceLocation)
        }
        throw ShippedPlugins.SetupError(description: "the call did not succeed")
    }

    /// The status and text of a synchronous refusal; `nil` when the hook returned `PX_OK`.
    var refusal: (status: px_status, message: String)? {
        if case .refused(let status, let message) = self { return (status, message) }
        return nil
    }
}

/// Counts and keeps every call of one C completion, to check the completion rule.
final class CompletionProbe<Value>: @unchecked Sendable {
    // Safe: `calls` is guarded by `lock`; the semaphore is thread-safe.
    private let lock = NSLock()
    private var calls: [(status: px_status, value: Value, message: String)] = []
    private let semaphore = DispatchSemaphore(value: 0)

    func record(_ status: px_status, _ value: Value, _ message: String) {
        lock.withLock { calls.append((status, value, message)) }
        semaphore.signal()
    }

    var count: Int { lock.withLock { calls.count } }

    /// The first call, waiting up to `timeout` for it.
    func first(timeout: Double = 5) -> (status: px_status, value: Value, message: String)? {
        if semaphore.wait(timeout: .now() + timeout) == .timedOut { return nil }
        semaphore.signal()
        return lock.withLock { calls.first }
    }

    var user: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }

    static func from(_ user: UnsafeMutableRawPointer?) -> CompletionProbe<Value>? {
        user.map { Unmanaged<CompletionProbe<Value>>.fromOpaque($0).takeUnretainedValue() }
    }
}

/// Every probe of a test, kept alive until the test ends (a late completion must find its probe), and
/// checked at the end: a refused call never completed, an accepted one exactly once.
final class ProbeLedger: @unchecked Sendable {
    // Safe: guarded by `lock`.
    private let lock = NSLock()
    private var entries: [(refused: Bool, count: () -> Int, what: String)] = []

    /// Runs a hook with a fresh probe and an error buffer; returns its outcome, waiting for the completion.
    func call<Value>(
        _ what: String, _ hook: (UnsafeMutableRawPointer, UnsafeMutablePointer<px_error>) -> px_status
    ) -> HookOutcome<Value> {
        let probe = CompletionProbe<Value>()
        let (status, message) = withErrorBuffer { hook(probe.user, $0) }
        lock.withLock { entries.append((status != PX_OK.status, { probe.count }, what)) }
        guard status == PX_OK.status else {
            #expect(probe.count == 0, "\(what): the hook returned \(status) but called its completion")
            return .refused(status, message)
        }
        guard let first = probe.first() else {
            Issue.record("\(what): returned PX_OK but never called its completion within 5 s")
            return .refused(PX_ERR_TIMEOUT.status, "no completion")
        }
        return .completed(first.status, first.value, first.message)
    }

    /// Checks every call so far: refused ones never completed, accepted ones completed exactly once.
    func expectCompletionRule(sourceLocation: SourceLocation = #_sourceLocation) {
        for entry in lock.withLock({ entries }) {
            let expected = entry.refused ? 0 : 1
            #expect(
                entry.count() == expected, "\(entry.what): completion called \(entry.count()) times",
                sourceLocation: sourceLocation)
        }
    }
}

/// Runs `body` with a `px_error` of the kernel's capacity; returns its result and the text written.
func withErrorBuffer<R>(_ body: (UnsafeMutablePointer<px_error>) -> R) -> (R, String) {
    let capacity = Int(PX_ERROR_CAPACITY)
    let message = UnsafeMutablePointer<CChar>.allocate(capacity: capacity)
    message.initialize(repeating: 0, count: capacity)
    defer { message.deallocate() }
    var err = px_error(
        struct_size: UInt32(MemoryLayout<px_error>.size), reserved: 0, message: message, capacity: capacity)
    let result = body(&err)
    return (result, String(cString: message))
}
