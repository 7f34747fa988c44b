import Foundation
import NIOHTTP1
import PlexusCore

/// The admin API's topic and consumer-group routes (docs/operations.md, "Topics and consumer groups"):
///
/// - `GET /v1/topics`, `GET /v1/topics/NAME`, `POST /v1/topics`, `DELETE /v1/topics/NAME`,
///   `PUT /v1/topics/NAME/retention`;
/// - `GET /v1/groups`, `GET /v1/groups/TOPIC/GROUP`, `POST /v1/groups/TOPIC/GROUP/reset`,
///   `DELETE /v1/groups/TOPIC/GROUP`.
///
/// Errors are the admin API's `{"error": …}` with 400 (bad input), 404 (unknown topic or group), 409 (a
/// member is connected, the topic exists) and 503 (a storage cannot answer or does not support the call).
enum AdminTopics {
    typealias Answer = (HTTPResponseStatus, String, String)

    /// The answer to a topic or group request; `nil` when the path is not one of these routes.
    static func respond(kernel: Kernel, method: HTTPMethod, parts: [String], body: String) -> Answer? {
        guard parts.count >= 2, parts[0] == "v1", parts[1] == "topics" || parts[1] == "groups" else { return nil }
        do throws(Kernel.TopicAdminError) {
            switch (method, parts[1], parts.count) {
            case (.GET, "topics", 2):
                let (topics, problems) = try kernel.listTopics()
                return (
                    .ok, json, TopicList(topics: topics.map { TopicJSON($0, detailed: false) }, problems: problems).text
                )
            case (.GET, "topics", 3):
                return ok(TopicJSON(try kernel.topic(parts[2]), detailed: true))
            case (.POST, "topics", 2):
                guard let request = try? JSONDecoder().decode(CreateTopic.self, from: Data(body.utf8)) else {
                    return bad(#"expected a JSON body {"name": "…", "storage": "…", "retention": {…}}"#)
                }
                let topic = try kernel.createTopic(
                    request.name, storage: request.storage, retention: request.retention?.value)
                return (.created, json, AdminRoutes.encode(TopicJSON(topic, detailed: true)))
            case (.DELETE, "topics", 3):
                try kernel.deleteTopic(parts[2])
                return (.noContent, json, "")
            case (.PUT, "topics", 4) where parts[3] == "retention":
                guard let request = try? JSONDecoder().decode(RetentionJSON.self, from: Data(body.utf8)) else {
                    return bad(#"expected a JSON body {"maxEvents": N|null, "maxBytes": N|null, "maxAgeMs": N|null}"#)
                }
                return ok(TopicJSON(try kernel.setRetention(parts[2], request.value), detailed: true))
            case (.GET, "groups", 2):
                return ok(GroupList(groups: try kernel.listGroups().map { GroupJSON($0, detailed: false) }))
            case (.GET, "groups", 4):
                return ok(GroupJSON(try kernel.group(topic: parts[2], group: parts[3]), detailed: true))
            case (.POST, "groups", 5) where parts[4] == "reset":
                guard let request = try? JSONDecoder().decode(ResetRequest.self, from: Data(body.utf8)) else {
                    return bad(#"expected a JSON body {"to": "earliest" | "latest" | "<offset>" | "<RFC 3339 time>"}"#)
                }
                return ok(
                    GroupJSON(try kernel.resetGroup(topic: parts[2], group: parts[3], to: request.to), detailed: true))
            case (.DELETE, "groups", 4):
                try kernel.deleteGroup(topic: parts[2], group: parts[3])
                return (.noContent, json, "")
            case (_, "topics", 2), (_, "topics", 3), (_, "groups", 2), (_, "groups", 4):
                return (
                    .methodNotAllowed, json,
                    AdminRoutes.problem("method \(method) is not allowed on /\(parts.joined(separator: "/"))")
                )
            default:
                return nil
            }
        } catch {
            let status: HTTPResponseStatus =
                switch error.kind {
                case .badRequest: .badRequest
                case .notFound: .notFound
                case .conflict: .conflict
                case .unavailable: .serviceUnavailable
                }
            return (status, json, AdminRoutes.problem(error.message))
        }
    }

    private static let json = "application/json"

    private static func ok<T: Encodable>(_ value: T) -> Answer { (.ok, json, AdminRoutes.encode(value)) }

    private static func bad(_ text: String) -> Answer { (.badRequest, json, AdminRoutes.problem(text)) }

    struct CreateTopic: Decodable {
        var name: String
        var storage: String?
        var retention: RetentionJSON?
    }

    struct ResetRequest: Decodable { var to: String }

    /// `Retention`: every key present, `null` when unlimited.
    struct RetentionJSON: Codable {
        var maxEvents: UInt64?
        var maxBytes: UInt64?
        var maxAgeMs: UInt64?

        enum CodingKeys: String, CodingKey { case maxEvents, maxBytes, maxAgeMs }

        init(_ retention: TopicRetention) {
            maxEvents = retention.maxEvents
            maxBytes = retention.maxBytes
            maxAgeMs = retention.maxAgeMs
        }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            maxEvents = try c.decodeIfPresent(UInt64.self, forKey: .maxEvents)
            maxBytes = try c.decodeIfPresent(UInt64.self, forKey: .maxBytes)
            maxAgeMs = try c.decodeIfPresent(UInt64.self, forKey: .maxAgeMs)
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(maxEvents, forKey: .maxEvents)
            try c.encode(maxBytes, forKey: .maxBytes)
            try c.encode(maxAgeMs, forKey: .maxAgeMs)
        }

        /// Zero means unlimited too.
        var value: TopicRetention {
            TopicRetention(
                maxEvents: maxEvents == 0 ? nil : maxEvents, maxBytes: maxBytes == 0 ? nil : maxBytes,
                maxAgeMs: maxAgeMs == 0 ? nil : maxAgeMs)
        }
    }

    struct TopicList: Encodable {
        var topics: [TopicJSON]
        /// Storages that could not list their streams (for example a plugin built against ABI 1.2 or older).
        var problems: [String]

        enum CodingKeys: String, CodingKey { case topics, problems }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(topics, forKey: .topics)
            if !problems.isEmpty { try c.encode(problems, forKey: .problems) }
        }

        /// What `encode(to:)` gives, keys sorted, written directly.
        var text: String {
            var out = ""
            out.reserveCapacity(topics.count * 256 + 32)
            if !problems.isEmpty {
                out += #"{"problems":["# + problems.map(CloudEventJSON.quote).joined(separator: ",") + #"],"topics":["#
            } else {
                out += #"{"topics":["#
            }
            for (index, topic) in topics.enumerated() {
                if index > 0 { out += "," }
                topic.write(into: &out)
            }
            return out + "]}"
        }
    }

    struct GroupList: Encodable { var groups: [GroupJSON] }

    /// JSON written by hand for the list a dashboard reads every second (1,000 topics: 240 KB, where
    /// `JSONEncoder` cost more than building the list itself), with the keys and values `encode(to:)` gives.
    static func number(_ value: UInt64?) -> String { value.map { String($0) } ?? "null" }
    static func rate(_ value: Double) -> String {
        let rounded = (value * 100).rounded() / 100
        return rounded == rounded.rounded() && abs(rounded) < 1e15 ? String(Int64(rounded)) : String(rounded)
    }

    /// `Topic` of the contract: `groups` when described alone, `groupCount` in the list.
    struct TopicJSON: Encodable {
        var topic: Kernel.TopicInfo
        var detailed: Bool

        init(_ topic: Kernel.TopicInfo, detailed: Bool) {
            self.topic = topic
            self.detailed = detailed
        }

        enum CodingKeys: String, CodingKey {
            case name, storage, firstOffset, nextOffset, events, bytes, publishedTotal, publishRate, deliveredRate
            case retention, leader, groups, groupCount
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(topic.name, forKey: .name)
            try c.encode(topic.storage, forKey: .storage)
            try c.encode(topic.firstOffset, forKey: .firstOffset)
            try c.encode(topic.nextOffset, forKey: .nextOffset)
            try c.encode(topic.nextOffset - min(topic.firstOffset, topic.nextOffset), forKey: .events)
            try c.encode(topic.bytes, forKey: .bytes)
            try c.encode(topic.publishedTotal, forKey: .publishedTotal)
            try c.encode((topic.publishRate * 100).rounded() / 100, forKey: .publishRate)
            try c.encode((topic.deliveredRate * 100).rounded() / 100, forKey: .deliveredRate)
            try c.encode(RetentionJSON(topic.retention), forKey: .retention)
            try c.encode(topic.leader, forKey: .leader)
            if detailed {
                try c.encode(topic.groups.map { GroupJSON($0, detailed: false) }, forKey: .groups)
            } else {
                try c.encode(topic.groups.count, forKey: .groupCount)
            }
        }

        /// The list form (`groupCount`), keys sorted as `AdminRoutes.encode` sorts them.
        func write(into out: inout String) {
            let t = topic
            let r = t.retention
            out += #"{"bytes":"# + number(t.bytes)
            out += #","deliveredRate":"# + rate(t.deliveredRate)
            out += #","events":"# + String(t.nextOffset - min(t.firstOffset, t.nextOffset))
            out += #","firstOffset":"# + String(t.firstOffset)
            out += #","groupCount":"# + String(t.groups.count)
            out += #","leader":"# + (t.leader.map(CloudEventJSON.quote) ?? "null")
            out += #","name":"# + CloudEventJSON.quote(t.name)
            out += #","nextOffset":"# + String(t.nextOffset)
            out += #","publishRate":"# + rate(t.publishRate)
            out += #","publishedTotal":"# + String(t.publishedTotal)
            out += #","retention":{"maxAgeMs":"# + number(r.maxAgeMs) + #","maxBytes":"# + number(r.maxBytes)
            out += #","maxEvents":"# + number(r.maxEvents) + "}"
            out += #","storage":"# + CloudEventJSON.quote(t.storage) + "}"
        }
    }

    /// `GroupSummary`, or `Group` (with `memberList`) when described alone.
    struct GroupJSON: Encodable {
        var group: Kernel.GroupInfo
        var detailed: Bool

        init(_ group: Kernel.GroupInfo, detailed: Bool) {
            self.group = group
            self.detailed = detailed
        }

        enum CodingKeys: String, CodingKey {
            case topic, group, members, committed, lag, inFlight, redeliveries, deadLettered, memberList
        }

        struct Member: Encodable {
            var id: String
            var `protocol`: String
            var inFlight: Int
        }

        func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(group.topic, forKey: .topic)
            try c.encode(group.group, forKey: .group)
            try c.encode(group.members.count, forKey: .members)
            try c.encode(group.committed, forKey: .committed)
            try c.encode(group.lag, forKey: .lag)
            try c.encode(group.inFlight, forKey: .inFlight)
            try c.encode(group.redeliveries, forKey: .redeliveries)
            try c.encode(group.deadLettered, forKey: .deadLettered)
            if detailed {
                try c.encode(
                    group.members.map { Member(id: $0.id, protocol: $0.plugin, inFlight: $0.inFlight) },
                    forKey: .memberList)
            }
        }
    }
}
