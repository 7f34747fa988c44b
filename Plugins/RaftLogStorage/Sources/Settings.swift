import PlexusPluginSDK

/// The manifest's `config` for raft-log, decoded and checked (defaults repeated here for a bare `on_create`).
struct Settings: Decodable, Sendable {
    /// When an append counts as durable.
    enum FsyncPolicy: String, Decodable, Sendable {
        /// Group commit: one `fdatasync` covers every batch written since the previous one; completions
        /// follow it.
        case always
        /// Completions at write time; `fdatasync` every `fsyncIntervalMs`.
        case interval
        /// Completions at write time; the operating system decides when to write back.
        case never
    }

    /// What start does with a log that is corrupt before its last entry.
    enum Repair: String, Decodable, Sendable {
        /// Refuse to start, naming the file, the byte and this key.
        case refuse
        /// Cut the log after the last good entry (losing every later one) and start.
        case truncate
    }

    var segmentBytes = 64 << 20
    var fsync = FsyncPolicy.always
    var fsyncIntervalMs = 10
    var maxEventBytes = 4 << 20
    var maxWriteBytes = 4 << 20
    var repairOnStart = Repair.refuse

    enum CodingKeys: String, CodingKey {
        case segmentBytes, fsync, fsyncIntervalMs, maxEventBytes, maxWriteBytes, repairOnStart
    }

    init() {}

    init(from decoder: any Decoder) throws {
        let keys = try decoder.container(keyedBy: CodingKeys.self)
        segmentBytes = try keys.decodeIfPresent(Int.self, forKey: .segmentBytes) ?? segmentBytes
        fsync = try keys.decodeIfPresent(FsyncPolicy.self, forKey: .fsync) ?? fsync
        fsyncIntervalMs = try keys.decodeIfPresent(Int.self, forKey: .fsyncIntervalMs) ?? fsyncIntervalMs
        maxEventBytes = try keys.decodeIfPresent(Int.self, forKey: .maxEventBytes) ?? maxEventBytes
        maxWriteBytes = try keys.decodeIfPresent(Int.self, forKey: .maxWriteBytes) ?? maxWriteBytes
        repairOnStart = try keys.decodeIfPresent(Repair.self, forKey: .repairOnStart) ?? repairOnStart
    }

    /// Decodes and range-checks a configuration.
    /// - Throws: `PluginError` with `PX_ERR_INVALID_ARGUMENT` naming the key at fault.
    static func from(_ config: PluginConfig) throws -> Settings {
        let settings = config.json.isEmpty ? Settings() : try config.decode(Settings.self)
        func check(_ ok: Bool, _ key: String, _ rule: String) throws {
            guard ok else { throw PluginError.invalidArgument("raft-log: \(key) \(rule)") }
        }
        try check(settings.segmentBytes >= 4096, "segmentBytes", "must be at least 4096")
        try check(settings.segmentBytes <= Int(UInt32.max), "segmentBytes", "must be at most 4294967295")
        try check(settings.fsyncIntervalMs >= 1, "fsyncIntervalMs", "must be at least 1")
        try check(settings.maxEventBytes >= 1, "maxEventBytes", "must be positive")
        try check(
            settings.maxEventBytes <= Int(UInt32.max) - LogFormat.entryHeaderSize - LogFormat.segmentHeaderSize,
            "maxEventBytes", "must fit a 32-bit entry length")
        try check(settings.maxWriteBytes >= 4096, "maxWriteBytes", "must be at least 4096")
        return settings
    }
}
