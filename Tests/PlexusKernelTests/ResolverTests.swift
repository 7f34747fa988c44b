import Testing

@testable import PlexusKernel

@Suite("Resolver")
struct ResolverTests {
    typealias P = ManifestSamples

    static func failure(_ resolution: Resolver.Resolution, _ name: String) -> KernelError? {
        resolution.failures.first { $0.manifest.name == name }?.error
    }

    @Test("providers start before the plugins that require them; ties are broken by name")
    func startOrder() throws {
        let manifests = [
            try P.plugin("app", requires: [("db", "^1.0.0", false), ("cache", "*", false)]),
            try P.plugin("zstore", provides: ["db": "1.4.0"], requires: [("registry", ">=1.0.0 <2.0.0", false)]),
            try P.plugin("memcache", provides: ["cache": "0.1.0"]),
            try P.plugin("etcd", provides: ["registry": "1.2.0"]),
            try P.plugin("lonely"),
        ]
        let expected = ["etcd", "lonely", "memcache", "zstore", "app"]
        for _ in 0..<5 {
            let resolution = Resolver.resolve(manifests.shuffled())
            #expect(resolution.failures.isEmpty)
            #expect(resolution.order.map(\.name) == expected, "the order must not depend on discovery order")
        }
        let resolution = Resolver.resolve(manifests)
        #expect(resolution.dependencies["app"] == [["zstore"], ["memcache"]])
        #expect(resolution.dependencies["zstore"] == [["etcd"]])
        #expect(resolution.dependencies["lonely", default: []].isEmpty)
    }

    @Test("a requirement whose range no provider satisfies fails the requirer, naming what is offered")
    func rangeNotSatisfied() throws {
        let resolution = Resolver.resolve([
            try P.plugin("app", requires: [("db", "^2.0.0", false)]),
            try P.plugin("store", provides: ["db": "1.4.0"]),
            try P.plugin("legacy", provides: ["db": "0.9.0"]),
        ])
        #expect(resolution.order.map(\.name) == ["legacy", "store"])
        let error = try #require(Self.failure(resolution, "app"))
        #expect(error.code == .dependencyMissing)
        #expect(error.subject == "/srv/plexus/manifests/app.yaml")
        #expect(error.field == "requires")
        for phrase in [
            "capability 'db'", "^2.0.0", "store (/srv/plexus/manifests/store.yaml) provides 1.4.0", "legacy", "0.9.0",
        ] {
            #expect(error.description.contains(phrase), "'\(error.description)' should contain '\(phrase)'")
        }
    }

    @Test("a capability nobody provides fails the requirer")
    func capabilityAbsent() throws {
        let resolution = Resolver.resolve([try P.plugin("app", requires: [("db", "*", false)])])
        #expect(resolution.order.isEmpty)
        let error = try #require(Self.failure(resolution, "app"))
        #expect(error.code == .dependencyMissing)
        #expect(error.message.contains("no manifest provides it"))
    }

    @Test("a plugin cannot satisfy its own requirement")
    func selfProvision() throws {
        let resolution = Resolver.resolve([
            try P.plugin("ouroboros", provides: ["db": "1.0.0"], requires: [("db", "*", false)])
        ])
        #expect(resolution.order.isEmpty)
        #expect(Self.failure(resolution, "ouroboros")?.code == .dependencyMissing)
    }

    @Test("a cycle fails every manifest on it with dependency-cycle, naming them all")
    func cycle() throws {
        let resolution = Resolver.resolve([
            try P.plugin("alpha", provides: ["a": "1.0.0"], requires: [("c", "*", false)]),
            try P.plugin("beta", provides: ["b": "1.0.0"], requires: [("a", "*", false)]),
            try P.plugin("gamma", provides: ["c": "1.0.0"], requires: [("b", "*", false)]),
            try P.plugin("downstream", requires: [("a", "*", false)]),
            try P.plugin("bystander", provides: ["x": "1.0.0"]),
        ])
        #expect(resolution.order.map(\.name) == ["bystander"])
        for name in ["alpha", "beta", "gamma"] {
            let error = try #require(Self.failure(resolution, name), "\(name) must fail")
            #expect(error.code == .dependencyCycle)
            #expect(error.subject == "/srv/plexus/manifests/\(name).yaml")
            #expect(error.field == "requires")
            for member in ["alpha", "beta", "gamma"] {
                #expect(
                    error.message.contains("\(member) (/srv/plexus/manifests/\(member).yaml)"),
                    "'\(error.message)' should name \(member)")
            }
        }
        let downstream = try #require(Self.failure(resolution, "downstream"))
        #expect(downstream.code == .dependencyFailed)
        #expect(downstream.message.contains("dependency cycle"))
        #expect(resolution.failures.count == 4)
    }

    @Test("two separate cycles are each reported as a cycle, each naming its own members")
    func twoCycles() throws {
        let resolution = Resolver.resolve([
            try P.plugin("a1", provides: ["a1": "1.0.0"], requires: [("a2", "*", false)]),
            try P.plugin("a2", provides: ["a2": "1.0.0"], requires: [("a1", "*", false)]),
            try P.plugin("b1", provides: ["b1": "1.0.0"], requires: [("b2", "*", false)]),
            try P.plugin("b2", provides: ["b2": "1.0.0"], requires: [("b1", "*", false)]),
        ])
        #expect(resolution.order.isEmpty)
        for (name, partner) in [("a1", "a2"), ("a2", "a1"), ("b1", "b2"), ("b2", "b1")] {
            let error = try #require(Self.failure(resolution, name))
            #expect(error.code == .dependencyCycle, "\(name) is on a cycle: \(error)")
            #expect(error.message.contains("\(partner) ("), "\(name)'s error should name \(partner): \(error)")
        }
    }

    @Test("a missing optional requirement is fine; a present one only orders")
    func optionalRequirements() throws {
        let alone = Resolver.resolve([try P.plugin("sink", requires: [("heartbeat", "^1.0.0", true)])])
        #expect(alone.failures.isEmpty)
        #expect(alone.order.map(\.name) == ["sink"])

        let wrongVersion = Resolver.resolve([
            try P.plugin("sink", requires: [("heartbeat", "^2.0.0", true)]),
            try P.plugin("beat", provides: ["heartbeat": "1.0.0"]),
        ])
        #expect(wrongVersion.failures.isEmpty)

        let together = Resolver.resolve([
            try P.plugin("a-sink", requires: [("heartbeat", "^1.0.0", true)]),
            try P.plugin("z-beat", provides: ["heartbeat": "1.0.0"]),
        ])
        #expect(together.failures.isEmpty)
        #expect(
            together.order.map(\.name) == ["z-beat", "a-sink"], "an optional provider that is present starts first")
        #expect(
            together.dependencies["a-sink"] == nil || together.dependencies["a-sink"] == [],
            "optional: its failure does not fail the sink")
    }

    @Test("the dependents of a plugin that cannot start fail too, transitively, naming it")
    func dependentsFail() throws {
        let resolution = Resolver.resolve([
            try P.plugin("base", provides: ["base": "1.0.0"], requires: [("missing", "*", false)]),
            try P.plugin("middle", provides: ["middle": "1.0.0"], requires: [("base", "*", false)]),
            try P.plugin("top", requires: [("middle", "*", false)]),
            try P.plugin("soft", requires: [("base", "*", true)]),
        ])
        #expect(resolution.order.map(\.name) == ["soft"], "an optional dependent still starts")
        #expect(Self.failure(resolution, "base")?.code == .dependencyMissing)
        let middle = try #require(Self.failure(resolution, "middle"))
        #expect(middle.code == .dependencyFailed)
        #expect(middle.message.contains("'base'"))
        let top = try #require(Self.failure(resolution, "top"))
        #expect(top.code == .dependencyFailed)
        #expect(top.message.contains("'middle'"))
        #expect(resolution.dependencies["top"] == [["middle"]])
    }

    @Test("a requirement with two providers is met while one of them can start")
    func alternativeProviders() throws {
        let resolution = Resolver.resolve([
            try P.plugin("app", requires: [("db", "^1.0.0", false)]),
            try P.plugin("db-good", provides: ["db": "1.0.0"]),
            try P.plugin("db-bad", provides: ["db": "1.1.0"], requires: [("nothing", "*", false)]),
        ])
        #expect(Self.failure(resolution, "db-bad")?.code == .dependencyMissing)
        #expect(Self.failure(resolution, "app") == nil, "db-good still provides db")
        #expect(resolution.order.map(\.name).contains("app"))
        #expect(resolution.dependencies["app"] == [["db-bad", "db-good"]])
    }

    @Test("a duplicate name fails the later file, naming the first")
    func duplicates() throws {
        let resolution = Resolver.resolve([
            try P.plugin("dup", path: "/m/b.yaml"),
            try P.plugin("dup", path: "/m/a.yaml"),
        ])
        #expect(resolution.order.map(\.path) == ["/m/a.yaml"])
        #expect(resolution.failures.count == 1)
        let failure = try #require(resolution.failures.first)
        #expect(failure.manifest.path == "/m/b.yaml")
        #expect(failure.error.code == .duplicatePlugin)
        #expect(failure.error.field == "name")
        #expect(failure.error.description.contains("/m/b.yaml"))
        #expect(failure.error.message.contains("already declared by /m/a.yaml"))
    }

    @Test("nothing to resolve is not an error")
    func empty() {
        let resolution = Resolver.resolve([])
        #expect(resolution.order.isEmpty && resolution.failures.isEmpty)
    }
}
