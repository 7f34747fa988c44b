/// Turns manifests' `requires`/`provides` into a start order.
///
/// Every required capability must be provided by another manifest with a version in the required range
/// (optional requirements are satisfied when absent). The order is topological and otherwise by name,
/// so that it is the same on every run. Stop order is its reverse.
public enum Resolver {
    /// The outcome: manifests in start order, and the ones that cannot start with the reason.
    public struct Resolution: Sendable {
        public var order: [Manifest]
        public var failures: [(manifest: Manifest, error: KernelError)]
        /// For each plugin, the plugins that provide what it requires (optional requirements excluded):
        /// if one of them cannot start, neither can it.
        public var dependencies: [String: Set<String>]
    }

    public static func resolve(_ manifests: [Manifest]) -> Resolution {
        var failures: [(Manifest, KernelError)] = []
        var byName: [String: Manifest] = [:]
        for manifest in manifests.sorted(by: { $0.path < $1.path }) {
            if let first = byName[manifest.name] {
                failures.append((manifest, KernelError(
                    .duplicatePlugin, subject: manifest.path, field: "name",
                    "plugin '\(manifest.name)' is already declared by \(first.path)")))
            } else {
                byName[manifest.name] = manifest
            }
        }

        // Edges: plugin -> the plugins it depends on. Missing capabilities fail the requirer.
        var dependencies: [String: Set<String>] = [:]
        var required: [String: Set<String>] = [:]
        var missing: [String: KernelError] = [:]
        for manifest in byName.values {
            var deps = Set<String>()
            for requirement in manifest.requires {
                let providers = byName.values.filter { other in
                    other.name != manifest.name
                        && other.provides.contains { $0.capability == requirement.capability && requirement.range.contains($0.version) }
                }
                if providers.isEmpty {
                    if requirement.optional { continue }
                    let offered = byName.values.flatMap { other in
                        other.provides.filter { $0.capability == requirement.capability }.map { "\(other.name) (\(other.path)) provides \($0.version)" }
                    }.sorted()
                    let detail = offered.isEmpty ? "no manifest provides it" : offered.joined(separator: "; ")
                    missing[manifest.name] = KernelError(
                        .dependencyMissing, subject: manifest.path, field: "requires",
                        "needs capability '\(requirement.capability)' \(requirement.range), but \(detail)")
                    break
                }
                deps.formUnion(providers.map(\.name))
                if !requirement.optional { required[manifest.name, default: []].formUnion(providers.map(\.name)) }
            }
            dependencies[manifest.name] = deps
        }

        // Kahn's algorithm; ties broken by name.
        var order: [Manifest] = []
        var remaining = dependencies
        var placed = Set<String>()
        while true {
            let ready = remaining.filter { $0.value.isSubset(of: placed) }.keys.sorted()
            guard let next = ready.first else { break }
            remaining[next] = nil
            placed.insert(next)
            if let manifest = byName[next] { order.append(manifest) }
        }

        // What is left sits on a cycle or depends on one.
        if !remaining.isEmpty {
            let cycle = findCycle(in: remaining)
            let cycleText = cycle.compactMap { byName[$0] }.map { "\($0.name) (\($0.path))" }.joined(separator: " -> ")
            for name in remaining.keys.sorted() {
                guard let manifest = byName[name] else { continue }
                let error = cycle.contains(name)
                    ? KernelError(.dependencyCycle, subject: manifest.path, field: "requires", "dependency cycle: \(cycleText) -> \(cycle.first ?? name)")
                    : KernelError(.dependencyFailed, subject: manifest.path, field: "requires", "depends on a dependency cycle: \(cycleText)")
                failures.append((manifest, error))
            }
        }

        // Missing capabilities, and whatever depends on a plugin that cannot start, fail in order.
        var failed = Set(failures.map(\.0.name))
        var started: [Manifest] = []
        for manifest in order {
            if let error = missing[manifest.name] {
                failures.append((manifest, error))
                failed.insert(manifest.name)
                continue
            }
            if let bad = required[manifest.name]?.sorted().first(where: failed.contains) {
                failures.append((manifest, KernelError(
                    .dependencyFailed, subject: manifest.path, field: "requires",
                    "depends on plugin '\(bad)', which cannot start")))
                failed.insert(manifest.name)
                continue
            }
            started.append(manifest)
        }
        return Resolution(order: started, failures: failures, dependencies: required)
    }

    /// The names on one cycle among `graph`'s nodes (each of which has an unresolved dependency).
    private static func findCycle(in graph: [String: Set<String>]) -> [String] {
        guard let start = graph.keys.sorted().first else { return [] }
        var path: [String] = []
        var current = start
        while !path.contains(current) {
            path.append(current)
            guard let next = graph[current]?.filter({ graph[$0] != nil }).sorted().first else { return path }
            current = next
        }
        return Array(path[(path.firstIndex(of: current) ?? 0)...])
    }
}
