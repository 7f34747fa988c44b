import Foundation
import PlexusClient
import PlexusCore
import Synchronization
import Testing

/// What the ledger-storage end-to-end suites share (`LedgerBookieClusterTests`, `LedgerWriterFailoverTests`,
/// `LedgerDiskFaultTests`): bookie-only `plexus serve` nodes, acknowledged publishers, and the checker that reads
/// a topic back against what was acknowledged and published.
enum LedgerCluster {
    /// A bookie-only node (`bookieListen`), its port, and where it keeps its files (to restart it on them).
    struct Bookie {
        let id: String
        var node: NodeProcess
        let port: Int
        let data: URL
        let environment: [String: String]

        /// `<data>/plugins/ledger-storage/bookie`: the bookie's journal (`journal/`) and entry logs (`ledgers/`).
        var bookieDirectory: URL { Self.bookieDirectory(data: data) }

        static func bookieDirectory(data: URL) -> URL {
            data.appendingPathComponent("plugins/ledger-storage/bookie")
        }

        /// Records its journal made durable (the `journal-records` operation).
        func journalRecords() async throws -> UInt64 {
            let result = try await node.call("ledger-storage", "journal-records")
            return try #require(UInt64(result.output), "journal-records of \(id): '\(result.stdout)' \(result.stderr)")
        }
    }

    /// Starts bookie-only nodes side by side (`directory/<id>/{manifests,data,run}`), each serving its bookie on a
    /// port of its choice, with `environment(id)` added to its environment (a fault shim); returns them ready.
    static func startBookies(
        _ ids: [String], in directory: TestDirectory, intervalMs: Int,
        environment: (String) -> [String: String] = { _ in [:] }
    ) async throws -> [Bookie] {
        var launched: [(id: String, data: URL, environment: [String: String], pending: NodeProcess.Launched)] = []
        for id in ids {
            let manifests = try directory.shippedManifests(
                intervalMs: intervalMs, ledgerValues: ["bookieId": id, "bookieListen": "127.0.0.1:0"],
                name: "\(id)/manifests")
            let data = try directory.subdirectory("\(id)/data")
            let extra = environment(id)
            launched.append(
                (
                    id, data, extra,
                    try NodeProcess.launch(
                        manifests: manifests, data: data, in: try directory.subdirectory("\(id)/run"),
                        environment: extra)
                ))
        }
        var bookies: [Bookie] = []
        for bookie in launched {
            let node = try await bookie.pending.ready()
            let answer = try await node.call("ledger-storage", "bookie-port")
            let port = try #require(
                Int(answer.output), "bookie-port of \(bookie.id): '\(answer.stdout)' \(answer.stderr)")
            try #require(port > 0, "bookie \(bookie.id) does not listen")
            bookies.append(
                Bookie(id: bookie.id, node: node, port: port, data: bookie.data, environment: bookie.environment))
        }
        return bookies
    }

    /// Starts `bookie` again on its data directory and port (`directory/<id>/<run>` holds its new output), once
    /// its previous process is gone; returns the new node.
    static func restart(_ bookie: Bookie, in directory: TestDirectory, intervalMs: Int, run: String) async throws
        -> NodeProcess
    {
        let manifests = try directory.shippedManifests(
            intervalMs: intervalMs, ledgerValues: ["bookieId": bookie.id, "bookieListen": "127.0.0.1:\(bookie.port)"],
            name: "\(bookie.id)/manifests-\(run)")
        let node = try await NodeProcess.start(
            manifests: manifests, data: bookie.data, in: try directory.subdirectory("\(bookie.id)/\(run)"),
            environment: bookie.environment)
        let answer = try await node.call("ledger-storage", "bookie-port")
        try #require(Int(answer.output) == bookie.port, "\(bookie.id) serves on \(answer.output), not \(bookie.port)")
        return node
    }

    /// The `bookies` setting naming `bookies`.
    static func setting(_ bookies: [Bookie]) -> String {
        bookies.map { "\($0.id)=127.0.0.1:\($0.port)" }.joined(separator: ",")
    }

    /// `publishers` producers publishing batches of 1-3 acknowledged events through `client` until `control`
    /// stops them or a publish fails (recorded in `control`): what was attempted (`attempted`, when given) and
    /// what was acknowledged, by offset.
    static func publish(
        _ client: PlexusClient, topic: String, publishers: Int, source: String, type: String,
        attempted: Published? = nil, acknowledged: Acknowledged, control: PublishControl
    ) -> Task<Void, Never> {
        Task {
            await withTaskGroup(of: Void.self) { group in
                for publisher in 0..<publishers {
                    group.addTask {
                        var sequence = 0
                        while !control.stopped && !Task.isCancelled {
                            let batch = (0..<(1 + sequence % 3)).map { i in
                                CloudEvent(
                                    id: "p\(publisher)-\(sequence)-\(i)", source: source, type: type,
                                    data: Array("event \(publisher)/\(sequence)/\(i)".utf8))
                            }
                            sequence += 1
                            attempted?.add(batch)
                            do {
                                acknowledged.add(batch, first: try await client.publish(topic: topic, batch))
                            } catch {
                                control.fail("\(error)")
                                return
                            }
                        }
                    }
                }
            }
        }
    }

    /// Waits until `acknowledged` holds `count` events, a publish failed, or 60 s passed (bounded by count and
    /// time: a second or two here, longer on a loaded machine).
    static func awaitAcknowledged(_ count: Int, _ acknowledged: Acknowledged, _ control: PublishControl) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while acknowledged.count < count && ContinuousClock.now < deadline && control.failures.isEmpty {
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// Reads `topic` through `reader` and checks it against what was acknowledged and published: every
    /// acknowledged event at its offset, the offsets dense, nothing unpublished, nothing twice. Returns the
    /// visible end (one past the highest offset read) and what was read.
    @discardableResult
    static func check(
        _ reader: PlexusClient, topic: String, acknowledged: [Acknowledged], published: Published,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws -> (end: UInt64, received: [UInt64: CloudEvent]) {
        let all = Acknowledged()
        for part in acknowledged { for (offset, event) in part.events { all.add([event], first: offset) } }
        let highest = try #require(all.events.keys.max(), "nothing was acknowledged", sourceLocation: sourceLocation)
        let received = try await readBack(reader, topic: topic, through: highest, settle: .milliseconds(300))
        let (missing, changed) = all.compare(with: received)
        #expect(missing.isEmpty, "acknowledged offsets missing: \(missing.prefix(20))", sourceLocation: sourceLocation)
        #expect(
            changed.isEmpty, "acknowledged offsets holding another event: \(changed.prefix(20))",
            sourceLocation: sourceLocation)
        let end = (received.keys.max() ?? 0) + 1
        #expect(
            (0..<end).allSatisfy { received[$0] != nil }, "the visible offsets are dense from 0 to \(end)",
            sourceLocation: sourceLocation)
        let known = published.events
        let unpublished = received.filter { known[$0.value.id] != $0.value }.keys.sorted()
        #expect(
            unpublished.isEmpty, "visible events nobody published: offsets \(unpublished.prefix(20))",
            sourceLocation: sourceLocation)
        let ids = received.values.map(\.id)
        #expect(Set(ids).count == ids.count, "an event is visible twice", sourceLocation: sourceLocation)
        return (end, received)
    }
}
