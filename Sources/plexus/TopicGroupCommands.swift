import ArgumentParser
import Foundation

/// `plexus topic …`: topics on a running node, through its admin endpoint (docs/operations.md, "Topics and
/// consumer groups").
struct TopicCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "topic", abstract: "List, describe, create and delete topics, and set their retention.",
        subcommands: [List.self, Describe.self, Create.self, Delete.self, SetRetention.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the node's topics: storage, offsets, size, rates, retention.")
        @OptionGroup var options: AdminCall

        func run() throws {
            let body = try options.call("GET", "/v1/topics")
            if options.json { return print(body) }
            let list = try AdminCall.decode(AdminTopicList.self, body)
            for problem in list.problems ?? [] { FileHandle.standardError.write(Data("plexus: \(problem)\n".utf8)) }
            print(
                Table(columns: [
                    "TOPIC", "STORAGE", "FIRST", "NEXT", "EVENTS", "BYTES", "PUB/S", "DEL/S", "GROUPS", "RETENTION",
                ]).render(
                    rows: list.topics.map { t in
                        [
                            t.name, t.storage, String(t.firstOffset), String(t.nextOffset), String(t.events),
                            t.bytes.map(String.init) ?? "-", AdminTable.rate(t.publishRate),
                            AdminTable.rate(t.deliveredRate),
                            String(t.groupCount ?? t.groups?.count ?? 0), t.retention.text,
                        ]
                    }))
        }
    }

    struct Describe: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one topic and its consumer groups.")
        @OptionGroup var options: AdminCall
        @Argument(help: "The topic.") var name: String

        func run() throws {
            let body = try options.call("GET", "/v1/topics/\(AdminClient.escape(name))")
            if options.json { return print(body) }
            TopicCommand.show(try AdminCall.decode(AdminTopic.self, body))
        }
    }

    struct Create: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a topic.")
        @OptionGroup var options: AdminCall
        @Argument(help: "The topic.") var name: String
        @Option(help: "The storage plugin to hold it (default: the node's default storage).") var storage: String?
        @OptionGroup var retention: RetentionOptions

        func run() throws {
            struct Body: Encodable {
                var name: String
                var storage: String?
                var retention: AdminRetention?
            }
            let payload = Body(name: name, storage: storage, retention: try retention.value(required: false))
            let body = try options.call("POST", "/v1/topics", body: try AdminCall.encode(payload))
            if options.json { return print(body) }
            TopicCommand.show(try AdminCall.decode(AdminTopic.self, body))
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete a topic: its events and its groups' offsets (refused while a subscriber is connected).")
        @OptionGroup var options: AdminCall
        @Argument(help: "The topic.") var name: String

        func run() throws {
            _ = try options.call("DELETE", "/v1/topics/\(AdminClient.escape(name))")
            if !options.json { print("deleted topic \(name)") }
        }
    }

    struct SetRetention: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "set-retention",
            abstract: "Set a topic's retention (unset limits become unlimited); it applies at once and is kept.")
        @OptionGroup var options: AdminCall
        @Argument(help: "The topic.") var name: String
        @OptionGroup var retention: RetentionOptions

        func run() throws {
            let payload = try retention.value(required: true) ?? AdminRetention()
            let body = try options.call(
                "PUT", "/v1/topics/\(AdminClient.escape(name))/retention", body: try AdminCall.encode(payload))
            if options.json { return print(body) }
            TopicCommand.show(try AdminCall.decode(AdminTopic.self, body))
        }
    }

    static func show(_ t: AdminTopic) {
        print(
            AdminTable.pairs([
                ("topic", t.name), ("storage", t.storage), ("first offset", String(t.firstOffset)),
                ("next offset", String(t.nextOffset)), ("events", String(t.events)),
                ("bytes", t.bytes.map(String.init) ?? "unknown"), ("published", String(t.publishedTotal)),
                ("publish rate", AdminTable.rate(t.publishRate) + "/s"),
                ("delivery rate", AdminTable.rate(t.deliveredRate) + "/s"),
                ("retention", t.retention.text), ("leader", t.leader ?? "-"),
            ]))
        if let groups = t.groups, !groups.isEmpty {
            print("")
            print(GroupCommand.table(groups))
        }
    }
}

/// `plexus group …`: consumer groups on a running node, through its admin endpoint.
struct GroupCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group", abstract: "List, describe, reset and delete consumer groups.",
        subcommands: [List.self, Describe.self, Reset.self, Delete.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List every consumer group: members, committed offset, lag, in flight, redeliveries.")
        @OptionGroup var options: AdminCall

        func run() throws {
            let body = try options.call("GET", "/v1/groups")
            if options.json { return print(body) }
            print(GroupCommand.table(try AdminCall.decode(AdminGroupList.self, body).groups))
        }
    }

    struct Describe: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one consumer group and its members.")
        @OptionGroup var options: AdminCall
        @Argument(help: "The topic.") var topic: String
        @Argument(help: "The group.") var group: String

        func run() throws {
            let body = try options.call("GET", GroupCommand.path(topic, group))
            if options.json { return print(body) }
            GroupCommand.show(try AdminCall.decode(AdminGroup.self, body))
        }
    }

    struct Reset: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Move a group's committed offset (refused while a member is connected).")
        @OptionGroup var options: AdminCall
        @Argument(help: "The topic.") var topic: String
        @Argument(help: "The group.") var group: String
        @Option(help: "earliest, latest, an offset, or an RFC 3339 time (the first event stored then or later).")
        var to: String

        func run() throws {
            struct Body: Encodable { var to: String }
            let body = try options.call(
                "POST", GroupCommand.path(topic, group) + "/reset", body: try AdminCall.encode(Body(to: to)))
            if options.json { return print(body) }
            GroupCommand.show(try AdminCall.decode(AdminGroup.self, body))
        }
    }

    struct Delete: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget a group and its committed offset (refused while a member is connected).")
        @OptionGroup var options: AdminCall
        @Argument(help: "The topic.") var topic: String
        @Argument(help: "The group.") var group: String

        func run() throws {
            _ = try options.call("DELETE", GroupCommand.path(topic, group))
            if !options.json { print("deleted group \(group) of topic \(topic)") }
        }
    }

    static func path(_ topic: String, _ group: String) -> String {
        "/v1/groups/\(AdminClient.escape(topic))/\(AdminClient.escape(group))"
    }

    static func table(_ groups: [AdminGroup]) -> String {
        Table(columns: ["TOPIC", "GROUP", "MEMBERS", "COMMITTED", "LAG", "IN FLIGHT", "REDELIVERED", "DEAD-LETTERED"])
            .render(
                rows: groups.map { g in
                    [
                        g.topic, g.group, String(g.members), g.committed.map(String.init) ?? "-", String(g.lag),
                        String(g.inFlight), String(g.redeliveries), String(g.deadLettered),
                    ]
                })
    }

    static func show(_ g: AdminGroup) {
        print(
            AdminTable.pairs([
                ("topic", g.topic), ("group", g.group), ("members", String(g.members)),
                ("committed", g.committed.map(String.init) ?? "none"), ("lag", String(g.lag)),
                ("in flight", String(g.inFlight)), ("redeliveries", String(g.redeliveries)),
                ("dead-lettered", String(g.deadLettered)),
            ]))
        if let members = g.memberList, !members.isEmpty {
            print("")
            print(
                Table(columns: ["MEMBER", "PROTOCOL", "IN FLIGHT"]).render(
                    rows: members.map { [$0.id, $0.protocol, String($0.inFlight)] }))
        }
    }
}

/// The admin endpoint and `--json`, shared by the topic and group commands.
struct AdminCall: ParsableArguments {
    @OptionGroup var endpoint: PluginCommand.AdminOptions

    @Flag(name: .long, help: "Print the node's JSON answer as it is.")
    var json = false

    /// Sends a request; a status other than 2xx throws the node's message (the command exits non-zero).
    func call(_ method: String, _ path: String, body: String = "") throws -> String {
        let (status, text) = try endpoint.client().request(method, path, body: body)
        guard (200..<300).contains(status) else { throw AdminClient.Failure(status: status, body: text) }
        return text
    }

    static func decode<T: Decodable>(_ type: T.Type, _ body: String) throws -> T {
        do {
            return try JSONDecoder().decode(type, from: Data(body.utf8))
        } catch {
            throw AdminClient.ConnectionError(description: "the node's answer is not what this CLI expects: \(error)")
        }
    }

    static func encode<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }
}

/// `--max-events`, `--max-bytes`, `--max-age`.
struct RetentionOptions: ParsableArguments {
    @Option(name: .long, help: "Keep at most this many events (0: unlimited).") var maxEvents: UInt64?
    @Option(name: .long, help: "Keep about this many bytes (0: unlimited).") var maxBytes: UInt64?
    @Option(name: .long, help: "Keep events this long: 500ms, 30s, 15m, 12h, 7d (0: unlimited).") var maxAge: String?

    /// The retention asked for; `nil` when no option was given (and `required` is false).
    func value(required: Bool) throws -> AdminRetention? {
        guard maxEvents != nil || maxBytes != nil || maxAge != nil else {
            if required { throw ValidationError("give at least one of --max-events, --max-bytes, --max-age") }
            return nil
        }
        var ms: UInt64?
        if let maxAge {
            guard let parsed = Self.milliseconds(maxAge) else {
                throw ValidationError("--max-age '\(maxAge)' is not a duration such as 500ms, 30s, 15m, 12h or 7d")
            }
            ms = parsed
        }
        return AdminRetention(
            maxEvents: maxEvents == 0 ? nil : maxEvents, maxBytes: maxBytes == 0 ? nil : maxBytes,
            maxAgeMs: ms == 0 ? nil : ms)
    }

    /// A duration in milliseconds: a number with ms, s, m, h or d (a bare number is milliseconds).
    static func milliseconds(_ text: String) -> UInt64? {
        let units: [(String, UInt64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000), ("d", 86_400_000)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            guard let number = UInt64(text.dropLast(suffix.count)) else { continue }
            let (product, overflow) = number.multipliedReportingOverflow(by: factor)
            return overflow ? nil : product
        }
        return UInt64(text)
    }
}

// MARK: The admin API's JSON (docs/operations.md)

struct AdminRetention: Codable {
    var maxEvents: UInt64?
    var maxBytes: UInt64?
    var maxAgeMs: UInt64?

    enum CodingKeys: String, CodingKey { case maxEvents, maxBytes, maxAgeMs }

    init(maxEvents: UInt64? = nil, maxBytes: UInt64? = nil, maxAgeMs: UInt64? = nil) {
        self.maxEvents = maxEvents
        self.maxBytes = maxBytes
        self.maxAgeMs = maxAgeMs
    }

    /// Every key is sent; `null` is unlimited.
    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(maxEvents, forKey: .maxEvents)
        try c.encode(maxBytes, forKey: .maxBytes)
        try c.encode(maxAgeMs, forKey: .maxAgeMs)
    }

    var text: String {
        var parts: [String] = []
        if let maxEvents { parts.append("\(maxEvents) events") }
        if let maxBytes { parts.append("\(maxBytes) bytes") }
        if let maxAgeMs { parts.append("\(maxAgeMs) ms") }
        return parts.isEmpty ? "unlimited" : parts.joined(separator: ", ")
    }
}

struct AdminTopic: Decodable {
    var name: String
    var storage: String
    var firstOffset: UInt64
    var nextOffset: UInt64
    var events: UInt64
    var bytes: UInt64?
    var publishedTotal: UInt64
    var publishRate: Double
    var deliveredRate: Double
    var retention: AdminRetention
    var leader: String?
    var groups: [AdminGroup]?
    var groupCount: Int?
}

struct AdminTopicList: Decodable {
    var topics: [AdminTopic]
    var problems: [String]?
}

struct AdminGroup: Decodable {
    struct Member: Decodable {
        var id: String
        var `protocol`: String
        var inFlight: Int
    }
    var topic: String
    var group: String
    var members: Int
    var committed: UInt64?
    var lag: UInt64
    var inFlight: Int
    var redeliveries: UInt64
    var deadLettered: UInt64
    var memberList: [Member]?
}

struct AdminGroupList: Decodable { var groups: [AdminGroup] }

/// Key–value listings for `describe`: values on one line, cut with `…` (tables use ``Table``).
enum AdminTable {
    static func pairs(_ pairs: [(String, String)]) -> String {
        let width = pairs.map(\.0.count).max() ?? 0
        return pairs.map { key, value in
            let flat = Table.singleLine(value)
            let shown = flat.count <= 80 ? flat : Table.cut(flat, to: 80)
            return "\(key + String(repeating: " ", count: width - key.count))  \(shown)"
        }.joined(separator: "\n")
    }

    static func rate(_ value: Double) -> String { String(format: "%.1f", value) }
}
