import PlexusClient
import PlexusCore
import Testing

/// The ledger soak's read-back check (`LedgerClusterSoakTests.check`) on made-up reads: it passes a read that
/// keeps every promise and names each broken one, so that a soak reporting no violation means something.
@Suite("ledger soak read-back check")
struct LedgerSoakCheckTests {
    static func event(_ id: String, _ data: String = "x") -> CloudEvent {
        CloudEvent(id: id, source: "/check", type: "t", data: Array(data.utf8))
    }

    static let published = Dictionary(uniqueKeysWithValues: ["a", "b", "c", "d"].map { ($0, event($0)) })
    /// a, b, c acknowledged at 0, 1, 2; d sent, never acknowledged.
    static let snapshot = LedgerSnapshot(published: ["a", "b", "c", "d"], acknowledged: ["a": 0, "b": 1, "c": 2])

    static func check(_ received: [UInt64: CloudEvent]) -> [String] {
        LedgerClusterSoakTests.check(
            "t", received: received, snapshot: snapshot, published: published, probes: ["probe-0"])
    }

    @Test("a read with every acknowledged event at its offset, dense, published, once: no violation")
    func clean() {
        #expect(Self.check([0: Self.event("a"), 1: Self.event("b"), 2: Self.event("c")]).isEmpty)
        // An event sent but never acknowledged may be there (its add became durable before the failure).
        #expect(Self.check([0: Self.event("a"), 1: Self.event("b"), 2: Self.event("c"), 3: Self.event("d")]).isEmpty)
    }

    @Test("each broken promise is a violation that names it")
    func violations() {
        let missing = Self.check([0: Self.event("a"), 1: Self.event("b")])
        #expect(missing.count == 1 && missing[0].contains("c was acknowledged at offset 2, which holds nothing"))

        let moved = Self.check([0: Self.event("a"), 1: Self.event("c"), 2: Self.event("b")])
        #expect(moved.count == 2 && moved[0].contains("b was acknowledged at offset 1, which holds c"))

        let gap = Self.check([0: Self.event("a"), 1: Self.event("b"), 2: Self.event("c"), 4: Self.event("d")])
        #expect(gap == ["t: offset 3 is missing below the last visible offset 4"])

        let changed = Self.check([0: Self.event("a"), 1: Self.event("b"), 2: Self.event("c"), 3: Self.event("d", "y")])
        #expect(changed == ["t: offset 3 holds d, which nobody published as it is"])

        let unknown = Self.check([0: Self.event("a"), 1: Self.event("b"), 2: Self.event("c"), 3: Self.event("z")])
        #expect(unknown == ["t: offset 3 holds z, which nobody published as it is"])

        let probe = Self.check([0: Self.event("a"), 1: Self.event("b"), 2: Self.event("c"), 3: Self.event("probe-0")])
        #expect(probe == ["t: offset 3 holds probe-0, a publish a fenced writer refused"])

        let twice = Self.check([0: Self.event("a"), 1: Self.event("b"), 2: Self.event("c"), 3: Self.event("a")])
        #expect(twice == ["t: a is visible twice, at 0 and 3"])
    }
}
