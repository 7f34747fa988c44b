import Foundation
import PlexusClient
import PlexusCore
import Testing

/// `plexus topic …` and `plexus group …` against a real node (raft-log, the default storage), through the built
/// CLI: offsets and lag after publishing N and consuming M, a reset refused while a member is connected and
/// accepted after it left, retention that trims, and a deletion that survives a restart.
@Suite("Topics and consumer groups", .serialized)
struct TopicAdminTests {
    static let published = 20
    static let consumed = 12

    struct Topic: Decodable {
        var name: String
        var storage: String
        var firstOffset: UInt64
        var nextOffset: UInt64
        var events: UInt64
        var groupCount: Int?
        var groups: [Group]?
    }

    struct TopicList: Decodable { var topics: [Topic] }

    struct Group: Decodable {
        struct Member: Decodable {
            var id: String
            var `protocol`: String
        }
        var topic: String
        var group: String
        var members: Int
        var committed: UInt64?
        var lag: UInt64
        var memberList: [Member]?
    }

    static func decode<T: Decodable>(_ type: T.Type, _ result: CommandResult) throws -> T {
        try #require(result.status == 0, "the command failed: \(result.stderr)")
        return try JSONDecoder().decode(type, from: Data(result.stdout.utf8))
    }

    /// Polls `condition` every 50 ms for up to 10 s.
    static func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
        try await PlexusEndToEndTests.eventually(.seconds(10), every: .milliseconds(50), condition)
    }

    @Test("publish N, consume M: list, describe and group describe show N, M and lag N − M; reset, retention, delete")
    func offsetsAndLag() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        let data = try directory.subdirectory("data")
        var node = try await NodeProcess.start(manifests: manifests, data: data, in: directory.url)
        defer { node.kill() }
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: try await node.tcpPort(), name: "test", reconnect: false))

        let n = Self.published
        let m = Self.consumed
        let events = (0..<n).map { CloudEvent(id: "e\($0)", source: "/test", type: "t", data: Array("\($0)".utf8)) }
        #expect(try await client.publish(topic: "orders", events) == 0)

        // A member of "billing" acknowledges the first M events and holds on to the rest.
        let stream = try await client.subscribe(
            topic: "orders", options: SubscribeOptions(group: "billing", start: .earliest, timeoutMs: 60_000))
        var acked = 0
        for await delivery in stream {
            if delivery.offset < UInt64(m) {
                delivery.ack()
                acked += 1
            }
            if delivery.offset == UInt64(n - 1) { break }
        }
        #expect(acked == m)

        let list = try Self.decode(TopicList.self, try await node.cli(["topic", "list", "--json"]))
        let orders = try #require(list.topics.first { $0.name == "orders" }, "\(list.topics.map(\.name))")
        #expect(orders.storage == "raft-log")
        #expect(orders.firstOffset == 0 && orders.nextOffset == UInt64(n) && orders.events == UInt64(n))
        #expect(orders.groupCount == 1)
        let table = try await node.cli(["topic", "list"])
        #expect(table.status == 0 && table.stdout.contains("orders") && table.stdout.contains("raft-log"), "\(table)")

        // The committed offset follows the acks (committed asynchronously by the delivery engine).
        var group: Group?
        let settled = try await Self.eventually {
            group = try Self.decode(
                Group.self, try await node.cli(["group", "describe", "orders", "billing", "--json"]))
            return group?.committed == UInt64(m)
        }
        #expect(settled, "committed \(String(describing: group?.committed)), expected \(m)")
        #expect(group?.lag == UInt64(n - m))
        #expect(group?.members == 1)
        #expect(group?.memberList?.first?.protocol == "tcp-protocol")
        let raw = try await node.cli(["topic", "describe", "orders", "--json"])
        // The contract's nulls are explicit: no leader for a single-member raft-log, unlimited retention.
        #expect(raw.stdout.contains(#""leader":null"#), "\(raw.stdout)")
        #expect(
            raw.stdout.contains(#""retention":{"maxAgeMs":null,"maxBytes":null,"maxEvents":null}"#), "\(raw.stdout)")
        let described = try Self.decode(Topic.self, raw)
        struct GroupList: Decodable { var groups: [Group] }
        let groups = try Self.decode(GroupList.self, try await node.cli(["group", "list", "--json"]))
        #expect(groups.groups.filter { $0.topic == "orders" }.map(\.group) == ["billing"])
        #expect(described.groups?.map(\.group) == ["billing"])
        #expect(described.groups?.first?.lag == UInt64(n - m))
        let groupTable = try await node.cli(["group", "describe", "orders", "billing"])
        #expect(groupTable.status == 0 && groupTable.stdout.contains("lag"), "\(groupTable)")

        // A reset while the member is connected is refused with the node's 409 message.
        let refused = try await node.cli(["group", "reset", "orders", "billing", "--to", "earliest"])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("409") && refused.stderr.contains("connected"), "\(refused.stderr)")

        // After the member leaves, the reset is accepted: the group starts over and lags by N.
        await stream.subscription.cancel()
        let left = try await Self.eventually {
            try Self.decode(Group.self, try await node.cli(["group", "describe", "orders", "billing", "--json"]))
                .members == 0
        }
        #expect(left, "the member did not leave")
        let reset = try Self.decode(
            Group.self, try await node.cli(["group", "reset", "orders", "billing", "--to", "earliest", "--json"]))
        #expect(reset.committed == 0 && reset.lag == UInt64(n), "\(reset)")
        let listed = try Self.decode(
            Group.self, try await node.cli(["group", "describe", "orders", "billing", "--json"]))
        #expect(listed.committed == 0 && listed.lag == UInt64(n))

        // Retention trims to the newest events at once.
        let trimmed = try Self.decode(
            Topic.self, try await node.cli(["topic", "set-retention", "orders", "--max-events", "5", "--json"]))
        #expect(trimmed.firstOffset == UInt64(n - 5) && trimmed.nextOffset == UInt64(n) && trimmed.events == 5)

        // Deleting the topic removes it from the list, and it stays deleted after a restart (kill -9).
        let deleted = try await node.cli(["topic", "delete", "orders"])
        #expect(deleted.status == 0, "\(deleted.stderr)")
        let after = try Self.decode(TopicList.self, try await node.cli(["topic", "list", "--json"]))
        #expect(!after.topics.contains { $0.name == "orders" }, "\(after.topics.map(\.name))")
        let missing = try await node.cli(["topic", "describe", "orders"])
        #expect(missing.status != 0 && missing.stderr.contains("404"), "\(missing.stderr)")
        await client.close()
        node.kill()
        node = try await NodeProcess.start(manifests: manifests, data: data, in: directory.url)
        let restarted = try Self.decode(TopicList.self, try await node.cli(["topic", "list", "--json"]))
        #expect(!restarted.topics.contains { $0.name == "orders" }, "\(restarted.topics.map(\.name))")
    }

    @Test("set-retention is kept in the data directory: after a restart the topic reports it and is trimmed by it")
    func retentionSurvivesRestart() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests(intervalMs: 1000)
        let data = try directory.subdirectory("data")
        var node = try await NodeProcess.start(manifests: manifests, data: data, in: directory.url)
        defer { node.kill() }
        let created = try await node.cli(["topic", "create", "audit", "--max-events", "3"])
        #expect(created.status == 0, "\(created.stderr)")
        let again = try await node.cli(["topic", "create", "audit"])
        #expect(again.status != 0 && again.stderr.contains("409"), "\(again.stderr)")
        node.kill()
        node = try await NodeProcess.start(manifests: manifests, data: data, in: directory.url)
        let client = try await PlexusClient.connect(
            ClientConfiguration(port: try await node.tcpPort(), name: "test", reconnect: false))
        let events = (0..<10).map { CloudEvent(id: "a\($0)", source: "/test", type: "t") }
        _ = try await client.publish(topic: "audit", events)
        struct Retention: Decodable { var maxEvents: UInt64? }
        struct Described: Decodable {
            var firstOffset: UInt64
            var nextOffset: UInt64
            var retention: Retention
        }
        var topic: Described?
        // The kernel applies maxEvents once a second.
        let trimmed = try await Self.eventually {
            let result = try await node.cli(["topic", "describe", "audit", "--json"])
            topic = try JSONDecoder().decode(Described.self, from: Data(result.stdout.utf8))
            return topic?.firstOffset == 7
        }
        #expect(trimmed, "\(String(describing: topic))")
        #expect(topic?.retention.maxEvents == 3 && topic?.nextOffset == 10)

        // Events published while the topic is sampled show in its publish rate (events/s over the last 10 s).
        struct Rates: Decodable {
            var publishRate: Double
            var publishedTotal: UInt64
        }
        _ = try await client.publish(
            topic: "audit", (10..<20).map { CloudEvent(id: "a\($0)", source: "/test", type: "t") })
        await client.close()
        var rates: Rates?
        let measured = try await Self.eventually {
            let result = try await node.cli(["topic", "describe", "audit", "--json"])
            rates = try JSONDecoder().decode(Rates.self, from: Data(result.stdout.utf8))
            return (rates?.publishRate ?? 0) > 0
        }
        #expect(measured, "\(String(describing: rates))")
        #expect(rates?.publishedTotal == 20, "published through this node since it started")
    }
}
