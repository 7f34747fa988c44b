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
        /// For each plugin, one set per non-optional requirement: the plugins that provide it. The plugin
        /// can start only if every set has a member that started.
        public var dependencies: [String: [Set<String>]]
    }

    public static func resolve(_ manifests: [Manifest]) -> Resolution {
        var failures: [(Manifest, KernelError)] = []
        var byName: [String: Manifest] = [:]
        for manifest in manifests.sorted(by: { $0.path < $1.path }) {
            if let first = byName[manifest.name] {
                failures.append(
                    (
                        manifest,
                        KernelError(
                            .duplicatePlugin, subject: manifest.path, field: "name",
                            "plugin '\(manifest.name)' is already declared by \(first.path)")
                    ))
            } else {
                byName[manifest.name] = manifest
            }
        }

        // Edges: plugin -> the plugins it depends on. Missing capabilities fail the requirer.
        var dependencies: [String: Set<String>] = [:]
        var required: [String: [Set<String>]] = [:]
        var missing: [String: KernelError] = [:]
        for manifest in byName.values {
            var deps = Set<String>()
            for requirement in manifest.requires {
                let providers = byName.values.filter { other in
                    other.name != manifest.name
                        && other.provides.contains {
                            $0.capability == requirement.capability && requirement.range.contains($0.version)
                        }
                }
                if providers.isEmpty {
                    if requirement.optional { continue }
                    let offered = byName.values.flatMap { other in
                        other.provides.filter { $0.capability == requirement.capability }.map {
                            "\(other.name) (\(other.path)) provides \($0.version)"
                        }
                    }.sorted()
                    let detail = offered.isEmpty ? "no manifest provides it" : offered.joined(separator: "; ")
                    missing[manifest.name] = KernelError(
                        .dependencyMissing, subject: manifest.path, field: "requires",
                        "needs capability '\(requirement.capability)' \(requirement.range), but \(detail)")
                    break
                }
                deps.formUnion(providers.map(\.name))
                if !requirement.optional { required[manifest.name, default: []].append(Set(providers.map(\.name))) }
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
            let components = stronglyConnectedComponents(remaining)
            func describe(_ cycle: [String]) -> String {
                cycle.compactMap { byName[$0] }.map { "\($0.name) (\($0.path))" }.joined(separator: " -> ")
                    + " -> \(cycle.first ?? "")"
            }
            let cycles = components.filter { $0.count > 1 || remaining[$0[0]]?.contains($0[0]) == true }
            for name in remaining.keys.sorted() {
                guard let manifest = byName[name] else { continue }
                if let cycle = cycles.first(where: { $0.contains(name) }) {
                    failures.append(
                        (
                            manifest,
                            KernelError(
                                .dependencyCycle, subject: manifest.path, field: "requires",
                                "dependency cycle: \(describe(cycle))")
                        ))
                } else {
                    let blocked = remaining[name, default: []].filter { remaining[$0] != nil }.sorted()
                    failures.append(
                        (
                            manifest,
                            KernelError(
                                .dependencyFailed, subject: manifest.path, field: "requires",
                                "depends on \(blocked.joined(separator: ", ")), which cannot start: a dependency cycle lies beneath"
                            )
                        ))
                }
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
            if let unmet = required[manifest.name]?.first(where: { $0.isSubset(of: failed) }) {
                failures.append(
                    (
                        manifest,
                        KernelError(
                            .dependencyFailed, subject: manifest.path, field: "requires",
                            "depends on plugin \(unmet.sorted().map { "'\($0)'" }.joined(separator: " or ")), which cannot start"
                        )
                    ))
                failed.insert(manifest.name)
                continue
            }
            started.append(manifest)
        }
        return Resolution(order: started, failures: failures, dependencies: required)
    }

    /// Tarjan's strongly connected components of `graph` (edges to nodes outside it are ignored), each
    /// in a deterministic order starting from its smallest name.
    private static func stronglyConnectedComponents(_ graph: [String: Set<String>]) -> [[String]] {
        var index = 0
        var indices: [String: Int] = [:]
        var lowlink: [String: Int] = [:]
        var stack: [String] = []
        var onStack = Set<String>()
        var components: [[String]] = []
        func visit(_ v: String) {
            indices[v] = index
            lowlink[v] = index
            index += 1
            stack.append(v)
            onStack.insert(v)
            for w in (graph[v] ?? []).filter({ graph[$0] != nil }).sorted() {
                if indices[w] == nil {
                    visit(w)
                    lowlink[v] = min(lowlink[v] ?? 0, lowlink[w] ?? 0)
                } else if onStack.contains(w) {
                    lowlink[v] = min(lowlink[v] ?? 0, indices[w] ?? 0)
                }
            }
            if lowlink[v] == indices[v] {
                var component: [String] = []
                while let w = stack.popLast() {
                    onStack.remove(w)
                    component.append(w)
                    if w == v { break }
                }
                // Start from the smallest name and follow the dependency direction.
                let members = Set(component)
                var ordered: [String] = []
                var current = component.min() ?? v
                while !ordered.contains(current) {
                    ordered.append(current)
                    guard
                        let next = (graph[current] ?? []).filter(members.contains).sorted().first(where: {
                            !ordered.contains($0)
                        })
                            ?? (graph[current] ?? []).filter(members.contains).sorted().first
                    else { break }
                    current = next
                }
                components.append(ordered.count == members.count ? ordered : component.sorted())
            }
        }
        for v in graph.keys.sorted() where indices[v] == nil { visit(v) }
        return components
    }
}
