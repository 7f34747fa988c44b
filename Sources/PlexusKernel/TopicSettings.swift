import Foundation
import Synchronization

/// A topic's retention as the admin API sets it (`PUT /v1/topics/NAME/retention`); `nil` means unlimited.
public struct TopicRetention: Codable, Sendable, Equatable {
    /// Keep at most this many events: the kernel trims the oldest (`TopicRates`' sweep, once a second).
    public var maxEvents: UInt64?
    /// Keep about this many bytes: the storage applies it (`px_stream_options.retention_bytes`).
    public var maxBytes: UInt64?
    /// Keep events this long: the storage applies it (`px_stream_options.retention_ms`).
    public var maxAgeMs: UInt64?

    public init(maxEvents: UInt64? = nil, maxBytes: UInt64? = nil, maxAgeMs: UInt64? = nil) {
        self.maxEvents = maxEvents
        self.maxBytes = maxBytes
        self.maxAgeMs = maxAgeMs
    }
}

/// Topics created and retention set through the admin API: what the node file's `topics` section does not
/// say. Kept in `<dataDirectory>/topics.json` (written atomically on every change), so that it survives a
/// restart of the node; it applies when a topic's stream is opened, and a change re-opens the stream.
final class TopicSettings: Sendable {
    struct Entry: Codable, Sendable, Equatable {
        /// The storage the topic was created in, when it was created through the admin API.
        var storage: String?
        var retention: TopicRetention?
    }

    private struct State {
        var path: String?
        var topics: [String: Entry] = [:]
    }
    private let state = Mutex(State())

    /// Reads the settings kept in `directory`, if any; an unreadable file is an error the node logs.
    func load(directory: String) throws {
        let path = directory + "/topics.json"
        var topics: [String: Entry] = [:]
        if FileManager.default.fileExists(atPath: path) {
            let data = try Data(contentsOf: URL(fileURLWithPath: path))
            topics = try JSONDecoder().decode([String: Entry].self, from: data)
        }
        state.withLock {
            $0.path = path
            $0.topics = topics
        }
    }

    func storage(for topic: String) -> String? { state.withLock { $0.topics[topic]?.storage } }

    func retention(for topic: String) -> TopicRetention? { state.withLock { $0.topics[topic]?.retention } }

    /// Every topic with settings.
    func all() -> [String: Entry] { state.withLock { $0.topics } }

    /// Changes a topic's settings (`nil`: forgets them) and writes the file.
    /// - Returns: whether they were persisted (`false` when the node has no data directory to write to).
    /// - Throws: when the file cannot be written; the change is then not made.
    @discardableResult
    func update(_ topic: String, _ change: (inout Entry?) -> Void) throws -> Bool {
        try state.withLock { s in
            var topics = s.topics
            var entry = topics[topic]
            change(&entry)
            topics[topic] = entry
            if let path = s.path {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                let data = try encoder.encode(topics)
                try FileManager.default.createDirectory(
                    atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            }
            s.topics = topics
            return s.path != nil
        }
    }
}
