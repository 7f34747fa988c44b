import Foundation

/// The bookies of a cluster as its metadata store lists them: each node whose bookie runs writes
/// `<prefix>/bookies/<id>` (JSON `{"address": "host:port", "heartbeatMilliseconds": …}`) and rewrites it every
/// heartbeat; a bookie whose heartbeat is older than `staleAfterMilliseconds` is not available.
///
/// The registry's metadata store has no leases on keys (only service instances have TTLs), so liveness is a
/// timestamp: the nodes' clocks must agree to well within the staleness window (NTP). A stopped node's key stays
/// and goes stale; a bookie that comes back refreshes it. `address` is where other nodes reach the bookie
/// (empty: in-process only, not reachable from other nodes).
public struct BookieMembership: Sendable {
    /// One registered bookie.
    public struct Member: Sendable, Equatable, Codable {
        public var id: String
        public var address: String
        /// Unix time in milliseconds of its latest heartbeat.
        public var heartbeatMilliseconds: UInt64

        public init(id: String, address: String, heartbeatMilliseconds: UInt64) {
            self.id = id
            self.address = address
            self.heartbeatMilliseconds = heartbeatMilliseconds
        }
    }

    public let store: any MetadataStore
    public let prefix: String
    public let staleAfterMilliseconds: UInt64

    public init(store: any MetadataStore, prefix: String, staleAfterMilliseconds: UInt64) {
        self.store = store
        self.prefix = prefix
        self.staleAfterMilliseconds = staleAfterMilliseconds
    }

    var keyPrefix: String { prefix + "/bookies/" }

    public func key(_ id: String) -> String { keyPrefix + MetadataKey.escape(id) }

    /// Writes (or refreshes) the bookie's key with `now` as its heartbeat.
    public func heartbeat(id: String, address: String, now: UInt64 = MetadataKey.nowMilliseconds())
        throws(LedgerError)
    {
        let member = Member(id: id, address: address, heartbeatMilliseconds: now)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = Array((try? encoder.encode(member)) ?? Data())
        _ = try store.wait { store.put(key(id), bytes, expected: .any, completion: $0) }
    }

    /// Removes the bookie's key (a bookie retired for good).
    public func remove(id: String) throws(LedgerError) {
        try store.wait { store.delete(key(id), expected: .any, completion: $0) }
    }

    /// Every registered bookie, fresh or stale, by id. A value that is not a member is skipped.
    public func members() throws(LedgerError) -> [Member] {
        let entries = try store.wait { store.list(prefix: keyPrefix, completion: $0) }
        return entries.compactMap { try? JSONDecoder().decode(Member.self, from: Data($0.value.value)) }
            .sorted { $0.id < $1.id }
    }

    /// The bookies whose latest heartbeat is at most `staleAfterMilliseconds` old at `now`.
    public func available(now: UInt64 = MetadataKey.nowMilliseconds()) throws(LedgerError) -> [Member] {
        try members().filter { $0.heartbeatMilliseconds + staleAfterMilliseconds >= now }
    }
}

/// Helpers for metadata keys written by `LedgerCore` itself.
public enum MetadataKey {
    /// A name as one key segment: bytes other than letters, digits, `-`, `_` and `.` as `%XX` (the plugin's
    /// stream and group names are escaped the same way).
    public static func escape(_ name: String) -> String {
        var out = ""
        for byte in name.utf8 {
            let scalar = Unicode.Scalar(byte)
            let plain =
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2D || byte == 0x5F || byte == 0x2E
            if plain {
                out.unicodeScalars.append(scalar)
            } else {
                out +=
                    "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 15, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// Unix time in milliseconds.
    public static func nowMilliseconds() -> UInt64 { UInt64(Date().timeIntervalSince1970 * 1000) }
}
