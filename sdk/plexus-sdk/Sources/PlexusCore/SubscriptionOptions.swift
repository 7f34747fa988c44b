import PlexusABI

/// Every option of a subscription (`px_subscription_spec`); zero means the kernel's default for each
/// numeric option. Shared by the plugin SDK and the kernel's in-process client.
public struct SubscriptionOptions: Sendable {
    public enum Start: Sendable, Equatable {
        case latest, earliest
        case offset(UInt64)
    }

    /// The consumer group; empty: the kernel names one for the subscribing plugin.
    public var group = ""
    /// Every member gets every event, instead of one member each.
    public var broadcast = false
    /// Exact matches on attributes or extensions; all must match.
    public var filters: [(key: String, value: String)] = []
    public var retry: UInt32 = 0
    public var linearBackoff = false
    public var backoffDelayMs: UInt64 = 0
    public var backoffMaxMs: UInt64 = 0
    public var timeoutMs: UInt64 = 0
    /// Empty: drop and count after the last attempt.
    public var deadLetterTopic = ""
    /// One delivery in flight per partition key.
    public var ordered = false
    /// The most unacknowledged deliveries to this member.
    public var maxInFlight: UInt32 = 0
    /// Where a new group starts.
    public var start = Start.latest

    public init() {}

    /// Lends the options as a `px_subscription_spec` for `topic`; `body` sets `deliver` and `user`.
    /// - Important: The strings the spec points to are valid only inside `body`.
    public func withSpec<R>(topic: String, _ body: (inout px_subscription_spec) -> R) -> R {
        withPXStr(topic) { topicStr in
            withPXStr(group) { groupStr in
                withPXStr(deadLetterTopic) { deadLetterStr in
                    withKVs(filters) { kvs in
                        var spec = px_subscription_spec()
                        spec.struct_size = UInt32(MemoryLayout<px_subscription_spec>.size)
                        spec.topic = topicStr
                        spec.group = groupStr
                        spec.group_mode = broadcast ? PX_GROUP_BROADCAST.rawValue : PX_GROUP_CLUSTERING.rawValue
                        spec.filters = kvs.baseAddress
                        spec.filter_count = kvs.count
                        spec.retry = retry
                        spec.backoff_policy =
                            linearBackoff ? PX_BACKOFF_LINEAR.rawValue : PX_BACKOFF_EXPONENTIAL.rawValue
                        spec.backoff_delay_ms = backoffDelayMs
                        spec.backoff_max_ms = backoffMaxMs
                        spec.timeout_ms = timeoutMs
                        spec.dead_letter_topic = deadLetterTopic.isEmpty ? px_str(ptr: nil, len: 0) : deadLetterStr
                        spec.ordered = ordered ? 1 : 0
                        spec.max_in_flight = maxInFlight
                        switch start {
                        case .latest: spec.start_position = PX_START_LATEST.rawValue
                        case .earliest: spec.start_position = PX_START_EARLIEST.rawValue
                        case .offset(let offset):
                            spec.start_position = PX_START_OFFSET.rawValue
                            spec.start_offset = offset
                        }
                        return body(&spec)
                    }
                }
            }
        }
    }
}

/// Lends `pairs` as a `px_kv` array for the duration of `body`; every string points into one byte arena.
public func withKVs<R>(_ pairs: [(key: String, value: String)], _ body: (UnsafeBufferPointer<px_kv>) -> R) -> R {
    var arena: [UInt8] = []
    var spans: [(offset: Int, length: Int)] = []
    spans.reserveCapacity(2 * pairs.count)
    for (key, value) in pairs {
        for s in [key, value] {
            spans.append((arena.count, s.utf8.count))
            arena.append(contentsOf: s.utf8)
        }
    }
    // One spare byte, so that an empty string still gets a non-NULL pointer (present, not absent).
    arena.append(0)
    return arena.withUnsafeBufferPointer { bytes in
        let base = UnsafeRawPointer(bytes.baseAddress)
        func str(_ i: Int) -> px_str {
            px_str(ptr: base.map { ($0 + spans[i].offset).assumingMemoryBound(to: CChar.self) }, len: spans[i].length)
        }
        let kvs = (0..<pairs.count).map { px_kv(key: str(2 * $0), value: str(2 * $0 + 1)) }
        return kvs.withUnsafeBufferPointer(body)
    }
}
