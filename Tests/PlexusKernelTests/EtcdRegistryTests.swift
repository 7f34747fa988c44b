import EtcdClient
import Foundation
import PlexusABI
import PlexusConformance
import PlexusCore
import Testing

@testable import PlexusKernel

/// `etcd-registry` (`Plugins/EtcdRegistry`) loaded by real kernels from its manifest and driven through the
/// registry vtable, against a real etcd (one member, or three for failover) started by `EtcdCluster`.
@Suite("etcd-registry through the registry ABI", .serialized)
struct EtcdRegistryTests {
    static let manifestPath = "Plugins/EtcdRegistry/etcd-registry.yaml"

    /// A kernel running the plugin against `endpoints`, stopped by `stop()`.
    struct Node {
        let node: ShippedPluginNode
        let kernel: Kernel
        let driver: RegistryDriver

        init(_ endpoints: [String], prefix: String, renewal: String = "plugin") throws {
            // As the manifest parser prints a list back (checked by ShippedPlugins.manifest).
            let list = "[" + endpoints.map { "\"\($0)\"" }.joined(separator: ",") + "]"
            node = try ShippedPluginNode(
                "etcd-registry", library: "libEtcdRegistry.so", manifestPath: EtcdRegistryTests.manifestPath,
                values: [
                    "endpoints": list, "prefix": prefix, "renewal": renewal, "requestTimeoutMs": "2000",
                    "dialTimeoutMs": "500",
                ])
            kernel = try node.kernel()
            kernel.start()
            driver = try RegistryDriver(kernel, plugin: "etcd-registry")
        }

        func stop() {
            kernel.stop()
            node.remove()
        }
    }

    static func instance(_ service: String, _ id: String, address: String = "127.0.0.1:9000", ttlMs: UInt64 = 0)
        -> RegistryDriver.Instance
    {
        .init(service: service, instanceID: id, address: address, metadata: ["zone": "z1"], ttlMs: ttlMs)
    }

    static func prefix() -> String { "t\(UUID().uuidString.prefix(8))" }

    /// Polls `lookup` of `service` on `driver` until `done` holds or `seconds` pass; the last answer.
    static func poll(
        _ driver: RegistryDriver, _ service: String, seconds: Double, until done: ([RegistryDriver.Instance]) -> Bool
    ) throws -> [RegistryDriver.Instance] {
        let deadline = Date().addingTimeInterval(seconds)
        var found = try driver.lookup(service).value()
        while !done(found), Date() < deadline {
            Thread.sleep(forTimeInterval: 0.05)
            found = try driver.lookup(service).value()
        }
        return found
    }

    @Test("register, look up (on this node and another), replace and deregister; unknown instances are not found")
    func registerLookupDeregister() throws {
        let etcd = try EtcdCluster()
        defer { etcd.stop() }
        let prefix = Self.prefix()
        let a = try Node(etcd.endpoints, prefix: prefix)
        defer { a.stop() }
        let b = try Node(etcd.endpoints, prefix: prefix)
        defer { b.stop() }

        #expect(try a.driver.lookup("orders").value().isEmpty)
        let one = Self.instance("orders", "one")
        let two = Self.instance("orders", "two", address: "http://10.0.0.2:8080")
        _ = try a.driver.register(one).value()
        _ = try a.driver.register(two).value()
        #expect(try a.driver.lookup("orders").value() == [one, two], "the writer reads its own writes")
        #expect(
            try Self.poll(b.driver, "orders", seconds: 5) { $0 == [one, two] } == [one, two], "another node sees them")

        let moved = Self.instance("orders", "one", address: "127.0.0.1:9999")
        _ = try b.driver.register(moved).value()
        #expect(try b.driver.lookup("orders").value() == [moved, two])
        _ = try a.driver.deregister("orders", "two").value()
        #expect(try a.driver.lookup("orders").value() == [moved])
        #expect(try Self.poll(b.driver, "orders", seconds: 5) { $0 == [moved] } == [moved])

        let unknown = a.driver.deregister("orders", "ghost")
        if case .completed(let status, _, let message) = unknown {
            #expect(status == PX_ERR_NOT_FOUND.status && message.contains("ghost"), "\(message)")
        } else {
            #expect(unknown.refusal?.status == PX_ERR_NOT_FOUND.status)
        }
        #expect(a.driver.register(Self.instance("", "x")).refusal?.status == PX_ERR_INVALID_ARGUMENT.status)

        let keys = try etcdSync {
            let client = try etcd.client()
            let keys = try await client.list(prefix: Array("\(prefix)/services/".utf8)).0.map(\.keyString)
            await client.close()
            return keys
        }
        #expect(keys == ["\(prefix)/services/orders/one"], "one key per instance under <prefix>/services/<service>/")
        a.driver.ledger.expectCompletionRule()
        b.driver.ledger.expectCompletionRule()
    }

    @Test("an instance with a TTL lives while its node keeps the lease alive and disappears within the TTL after")
    func ttlExpiryAfterNodeStops() throws {
        let etcd = try EtcdCluster()
        defer { etcd.stop() }
        let prefix = Self.prefix()
        let owner = try Node(etcd.endpoints, prefix: prefix)
        let observer = try Node(etcd.endpoints, prefix: prefix)
        defer { observer.stop() }
        let ephemeral = Self.instance("jobs", "ephemeral", ttlMs: 1000)
        let lasting = Self.instance("jobs", "lasting")
        _ = try owner.driver.register(ephemeral).value()
        _ = try owner.driver.register(lasting).value()
        let watcher = try observer.driver.watch("jobs")
        // Three TTLs: renewed by the owner's keep-alive stream, so still there.
        Thread.sleep(forTimeInterval: 3)
        #expect(try observer.driver.lookup("jobs").value() == [ephemeral, lasting])

        owner.stop()
        let stopped = Date()
        let left = try Self.poll(observer.driver, "jobs", seconds: 6) { $0 == [lasting] }
        let took = Date().timeIntervalSince(stopped)
        #expect(left == [lasting], "the instance of the stopped node expired; the one without TTL stays")
        #expect(took < 1 + 3, "gone within its TTL (1 s) plus etcd's expiry check and the watch: \(took) s")
        let events = watcher.wait(count: 3)
        #expect(events.last == .delete(ephemeral), "the expiry reaches watches as a DELETE: \(events)")
        observer.driver.ledger.expectCompletionRule()
    }

    @Test("the registry conformance suite passes against a real etcd (renewal: caller)")
    func conformance() throws {
        let etcd = try EtcdCluster()
        defer { etcd.stop() }
        let library = try ConformanceTests.builtLibrary("libEtcdRegistry.so")
        let manifest = ShippedPlugins.root.appendingPathComponent(Self.manifestPath).path
        var options = ConformanceOptions()
        options.completionTimeout = .seconds(3)
        options.ttlMilliseconds = 1000
        options.ttlSlack = .seconds(4)
        let scratch = ConformanceTests.Scratch()
        defer { scratch.remove() }
        let endpoints = etcd.endpoints.map { "\"\($0)\"" }.joined(separator: ",")
        let report = try Conformance.run(
            .registry, library: library, manifest: manifest,
            configJSON: #"{"endpoints": [\#(endpoints)], "prefix": "\#(Self.prefix())", "renewal": "caller"}"#,
            dataDirectory: scratch.data, cacheDirectory: scratch.cache, options: options)
        #expect(report.results.count == Conformance.rules(for: .registry).count)
        let casRace = "registry.kv.cas-race"
        let failed = report.results.filter { !$0.passed }.map(\.rule)
        #expect(failed.filter { $0 != casRace }.isEmpty, "\n\(report.text)")
        // grpc-swift now and then reports a unary call to etcd as "Stream unexpectedly closed" although etcd
        // answered it; a compare-and-swap so interrupted completes with PX_ERR_UNAVAILABLE (outcome unknown),
        // which this rule does not allow.
        withKnownIssue("etcd responses lost by the gRPC client: a CAS completes UNAVAILABLE", isIntermittent: true) {
            #expect(!failed.contains(casRace), "\(ConformanceTests.reason(casRace, in: report))")
        }
    }

    @Test("killing the member the plugin talks to fails over to another without losing a registration")
    func failover() throws {
        let etcd = try EtcdCluster(size: 3)
        defer { etcd.stop() }
        let prefix = Self.prefix()
        let node = try Node(etcd.endpoints, prefix: prefix)
        defer { node.stop() }
        let kept = Self.instance("api", "kept", ttlMs: 1000)
        _ = try node.driver.register(kept).value()
        let watcher = try node.driver.watch("api")
        #expect(watcher.wait(count: 1) == [.put(kept)])

        etcd.kill(0)
        // Several TTLs with the first member dead: the lease is renewed through another member.
        Thread.sleep(forTimeInterval: 4)
        let added = Self.instance("api", "added")
        _ = try node.driver.register(added).value()
        #expect(try node.driver.lookup("api").value() == [added, kept])
        let stored = try etcdSync {
            var configuration = EtcdConfiguration(
                endpoints: try etcd.endpoints.dropFirst().map { try .init(parsing: $0) })
            configuration.requestTimeout = .seconds(2)
            let client = try EtcdClient(configuration)
            let keys = try await client.list(prefix: Array("\(prefix)/services/api/".utf8)).0.map(\.keyString)
            await client.close()
            return keys
        }
        #expect(stored == ["\(prefix)/services/api/added", "\(prefix)/services/api/kept"])
        #expect(watcher.events == [.put(kept), .put(added)], "the watch moved too, with nothing lost or repeated")
        node.driver.ledger.expectCompletionRule()
    }
}
