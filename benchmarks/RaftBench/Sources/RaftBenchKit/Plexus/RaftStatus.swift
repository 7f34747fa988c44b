import Foundation

/// The answer of `plexus plugin call raft-log status` (issue 6, stage 2): one node's view of every stream's
/// Raft group.
///
/// Fields the benchmark does not need are optional, and unknown fields are ignored, so that the status may
/// grow without breaking the benchmark.
public struct RaftStatus: Decodable, Sendable, Equatable {
    /// One stream's group as this node sees it.
    public struct Stream: Decodable, Sendable, Equatable {
        /// A follower as the leader sees it (only on the leader).
        public struct Peer: Decodable, Sendable, Equatable {
            public var id: String
            public var match: UInt64?
            public var next: UInt64?
            public var lag: UInt64?
            public var inflight: UInt64?
            public var learner: Bool?
            public var active: Bool?
        }

        public var stream: String
        /// leader, follower, candidate, precandidate or learner.
        public var role: String
        public var term: UInt64?
        /// The leader's node id; empty when this node does not know one.
        public var leader: String
        public var commitIndex: UInt64
        public var lastIndex: UInt64?
        public var firstIndex: UInt64?
        /// The offset after the last committed event.
        public var nextOffset: UInt64?
        /// The chained CRC of the entry at `commitIndex`.
        public var commitChain: UInt64?
        public var peers: [Peer]?
    }

    /// This node's member id.
    public var node: String
    public var streams: [Stream]

    /// Parses the JSON text the operation returns.
    ///
    /// - Throws: ``HarnessError`` quoting the text when it is not a status object.
    public init(json text: String) throws {
        do {
            self = try JSONDecoder().decode(RaftStatus.self, from: Data(text.utf8))
        } catch {
            let shown = text.count > 300 ? String(text.prefix(300)) + "…" : text
            throw HarnessError("raft-log status is not the JSON the contract describes (\(error)): \(shown)")
        }
    }

    /// The group of `name`, if this node has it.
    public func stream(_ name: String) -> Stream? { streams.first { $0.stream == name } }
}
