import PlexusABI

/// How a node whose node file names no `topics.defaultStorage` picks the storage for topics without a
/// binding. There is one delivery path: every topic is stored, so the node takes the durable `raft-log` when
/// it runs, else `memory-storage` (with a warning: not durable), else it has none and refuses such
/// publishes rather than acknowledging events it cannot store.
enum DefaultStorage {
    /// The durable storage a node prefers.
    static let durable = "raft-log"
    /// The storage a node falls back to, which keeps events in memory only.
    static let volatile = "memory-storage"

    /// A storage plugin the node runs (or is about to start).
    struct Candidate: Sendable {
        var name: String
        /// The capabilities its manifest provides.
        var provides: [String]

        init(name: String, provides: [String]) {
            self.name = name
            self.provides = provides
        }

        init(_ manifest: Manifest) {
            self.init(name: manifest.name, provides: manifest.provides.map(\.capability))
        }

        /// Whether this plugin is `storage`, by its name or by a capability of that name.
        func isNamed(_ storage: String) -> Bool { name == storage || provides.contains(storage) }
    }

    /// The plugin to store unbound topics in: one that is (or provides) `raft-log`, else `memory-storage`,
    /// else `nil`. Several of one kind: the first by name, so that the choice does not depend on file order.
    static func choose(among candidates: [Candidate]) -> String? {
        let sorted = candidates.sorted { $0.name < $1.name }
        for preferred in [durable, volatile] {
            if let exact = sorted.first(where: { $0.name == preferred }) { return exact.name }
            if let provider = sorted.first(where: { $0.isNamed(preferred) }) { return provider.name }
        }
        return nil
    }

    /// Whether a storage's declared durability (`px_durability`) keeps events across a restart.
    static func isDurable(_ durability: UInt32) -> Bool { durability >= UInt32(PX_DURABILITY_LOCAL.rawValue) }
}
