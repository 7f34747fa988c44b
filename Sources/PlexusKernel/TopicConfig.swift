/// Where each topic is stored (`topics` in the node file).
public struct TopicConfig: Sendable, Equatable {
    public struct Binding: Sendable, Equatable {
        public var topic: String
        public var storage: String
        public var retentionBytes: UInt64 = 0
        public var retentionMs: UInt64 = 0

        public init(topic: String, storage: String, retentionBytes: UInt64 = 0, retentionMs: UInt64 = 0) {
            self.topic = topic
            self.storage = storage
            self.retentionBytes = retentionBytes
            self.retentionMs = retentionMs
        }
    }

    /// The storage plugin for topics without a binding; `nil`: the node chooses one once its plugins are
    /// known (`raft-log`, else `memory-storage`, see `DefaultStorage`), and refuses such topics if it has neither.
    public var defaultStorage: String?
    /// Whether a publish to a topic without a binding creates it in the default storage.
    public var autoCreate = true
    public var bindings: [Binding] = []
    /// Retention of topics without a binding (0: unlimited).
    public var defaultRetentionBytes: UInt64 = 0
    public var defaultRetentionMs: UInt64 = 0

    /// Whether the node file has a `topics` section (for the start-up log only).
    public var isDeclared = false

    public init() {}
}
