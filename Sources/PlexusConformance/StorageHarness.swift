import Foundation
import PlexusABI
import PlexusKernel
import Synchronization

/// What the storage rules run against: the instance under test (which a rule may restart on the same data
/// directory), a client for its hooks, and the streams the current rule opened.
final class StorageHarness: Sendable {
    let plugin: StandalonePlugin
    let options: ConformanceOptions
    let ledger: CallLedger
    let dataDirectory: String
    /// The vtable's `durability` (`px_durability`).
    let durability: UInt32
    private let state: Mutex<State>

    private struct State {
        /// `nil` after a restart failed to create the instance again.
        var instance: StandalonePlugin.Instance?
        var client: StorageClient?
        var restartFailure: String?
        var open: [StreamHandle] = []
    }

    init(plugin: StandalonePlugin, instance: StandalonePlugin.Instance, options: ConformanceOptions, ledger: CallLedger)
        throws
    {
        guard let vtable = plugin.storage else { throw Violation("the plugin has no storage vtable") }
        self.plugin = plugin
        self.options = options
        self.ledger = ledger
        self.dataDirectory = instance.dataDirectory
        self.durability = vtable.pointee.durability
        let client = StorageClient(
            vtable: vtable, instance: instance.pointer, ledger: ledger, timeout: options.completionTimeout)
        self.state = Mutex(State(instance: instance, client: client))
    }

    var instance: StandalonePlugin.Instance? { state.withLock { $0.instance } }

    /// The client of the current instance.
    /// - Throws: `Violation` when a restart left no instance.
    func client() throws -> StorageClient {
        try state.withLock { s in
            guard let client = s.client else {
                throw Violation("not run: \(s.restartFailure ?? "the instance is gone")")
            }
            return client
        }
    }

    /// A stream name no other rule or run uses: `conformance-<label>-<8 hex digits>`.
    func uniqueName(_ label: String) -> String {
        "conformance-\(label)-\(String(UInt32.random(in: .min ... .max), radix: 16))"
    }

    /// Opens a new stream for the current rule (closed when the rule ends).
    func stream(_ label: String) throws -> StreamHandle { try open(uniqueName(label)) }

    /// Opens (or reopens) a stream by name for the current rule (closed when the rule ends).
    func open(_ name: String) throws -> StreamHandle {
        let handle = try client().open(name)
        state.withLock { $0.open.append(handle) }
        return handle
    }

    /// Closes one stream the current rule opened.
    func close(_ handle: StreamHandle) {
        let client = state.withLock { s -> StorageClient? in
            s.open.removeAll { $0.raw == handle.raw }
            return s.client
        }
        client?.close(handle)
    }

    /// Closes every stream the current rule left open.
    func closeAll() {
        let (client, handles) = state.withLock { s -> (StorageClient?, [StreamHandle]) in
            defer { s.open = [] }
            return (s.client, s.open)
        }
        for handle in handles { client?.close(handle) }
    }

    /// Stops and destroys the instance, then creates and starts a new one on the same data directory.
    /// - Throws: `Violation` when either step fails; later rules then report that they could not run.
    func restart() throws {
        closeAll()
        guard let old = instance else { throw Violation("not run: the instance is gone") }
        do {
            try old.stop()
        } catch {
            state.withLock {
                $0.instance = nil
                $0.client = nil
                $0.restartFailure = "stopping the instance for a restart failed: \(error)"
            }
            throw Violation(expected: "the instance to stop and be destroyed for a restart", observed: "\(error)")
        }
        do {
            let fresh = try plugin.start(dataDirectory: dataDirectory)
            guard let vtable = plugin.storage else { throw Violation("the plugin has no storage vtable") }
            let client = StorageClient(
                vtable: vtable, instance: fresh.pointer, ledger: ledger, timeout: options.completionTimeout)
            state.withLock {
                $0.instance = fresh
                $0.client = client
            }
        } catch {
            state.withLock {
                $0.instance = nil
                $0.client = nil
                $0.restartFailure = "creating the instance again on the same data directory failed: \(error)"
            }
            throw Violation(
                expected: "a new instance to be created and started on the same data directory", observed: "\(error)")
        }
    }
}
