import Foundation
import Testing

@testable import PlexusKernel

/// The topic list the dashboard reads every second is written by hand (`AdminTopics.TopicList.text`); it must
/// be the same JSON as the `Encodable` form the other routes use.
@Suite("Admin topic list JSON")
struct AdminTopicsJSONTests {
    static func topic(_ name: String, rate: Double, leader: String?, retention: TopicRetention) -> Kernel.TopicInfo {
        Kernel.TopicInfo(
            name: name, storage: "raft-log", firstOffset: 3, nextOffset: 20, bytes: name.isEmpty ? nil : 4096,
            publishedTotal: 17, publishRate: rate, deliveredRate: rate / 3, retention: retention, leader: leader,
            groups: [])
    }

    static func object(_ text: String) throws -> NSDictionary {
        try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? NSDictionary, "\(text)")
    }

    @Test func handWrittenListEqualsTheEncodedOne() throws {
        let topics = [
            Self.topic("orders", rate: 266, leader: nil, retention: TopicRetention()),
            Self.topic(
                "a/\"b\"\\c\n\u{1}é🚀", rate: 12.5, leader: "node-2",
                retention: TopicRetention(maxEvents: 5, maxBytes: nil, maxAgeMs: 60000)),
            Self.topic(
                "", rate: 1.0 / 3, leader: "", retention: TopicRetention(maxEvents: nil, maxBytes: 1, maxAgeMs: nil)),
        ].map { AdminTopics.TopicJSON($0, detailed: false) }
        for problems in [[], ["storage 'x' cannot list: \"why\""]] {
            let list = AdminTopics.TopicList(topics: topics, problems: problems)
            #expect(try Self.object(list.text) == Self.object(AdminRoutes.encode(list)), "\(list.text)")
        }
        #expect(AdminTopics.TopicList(topics: [], problems: []).text == #"{"topics":[]}"#)
    }
}
