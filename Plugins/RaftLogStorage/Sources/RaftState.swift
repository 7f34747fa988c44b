import PlexusPluginSDK
import RaftCore

/// A stream's `raft` file: the Raft term and vote (written, and synced, before any message that depends on
/// them goes out), and the membership in force at the snapshot point (the newest membership entry retention
/// dropped, or the configured one). Rewritten whole and atomically (`Files.replace`).
///
/// A `SealedRecord` with magic "PXRT" whose body is:
///
/// ```
/// u64 term   u32 vote length, vote (node id; 0 = none)
/// u64 index of the membership below (0 = the configured one)   u32 membership length, membership
/// ```
struct RaftState: Equatable {
    static let magic: UInt32 = 0x5452_5850
    static let fileName = "raft"

    var term: UInt64 = 0
    var votedFor: NodeID?
    var membershipIndex: UInt64 = 0
    var membership: Membership?

    func encoded() -> [UInt8] {
        var body: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { body += $0 } }
        put(term)
        let vote = Array((votedFor ?? "").utf8)
        put(UInt32(vote.count))
        body += vote
        put(membershipIndex)
        let members = membership?.encoded() ?? []
        put(UInt32(members.count))
        body += members
        return SealedRecord.seal(magic: Self.magic, body)
    }

    static func decode(_ bytes: [UInt8]) throws -> RaftState {
        let body = try SealedRecord.open(bytes, magic: magic, what: "the raft file")
        return try body.withUnsafeBytes { raw in
            var position = 0
            func u64() throws -> UInt64 {
                guard position + 8 <= raw.count else { throw LogFormatError("the raft file is cut short") }
                defer { position += 8 }
                return raw.loadLE(UInt64.self, at: position)
            }
            func blob() throws -> [UInt8] {
                guard position + 4 <= raw.count else { throw LogFormatError("the raft file is cut short") }
                let length = Int(raw.loadLE(UInt32.self, at: position))
                position += 4
                guard position + length <= raw.count else { throw LogFormatError("the raft file is cut short") }
                defer { position += length }
                return Array(raw[position..<(position + length)])
            }
            var state = RaftState()
            state.term = try u64()
            let vote = try blob()
            state.votedFor = vote.isEmpty ? nil : String(decoding: vote, as: UTF8.self)
            state.membershipIndex = try u64()
            let members = try blob()
            if !members.isEmpty {
                guard let membership = Membership(decoding: members) else {
                    throw LogFormatError("the raft file's membership is unreadable")
                }
                state.membership = membership
            }
            guard position == raw.count else { throw LogFormatError("the raft file has trailing bytes") }
            return state
        }
    }

    /// Reads the file of the stream in `directory`; a missing file is a stream that never voted.
    /// - Throws: `PluginError` with `PX_ERR_CORRUPTION` for a damaged file, `PX_ERR_IO` when unreadable.
    static func load(directory: String, stream: String) throws -> RaftState {
        let path = directory + "/" + fileName
        guard Files.exists(path) else { return RaftState() }
        do {
            let file = try OpenFile(path: path)
            return try decode(try file.read(count: try file.size, at: 0))
        } catch let failure as IOFailure {
            throw PluginError(PX_ERR_IO, "raft-log: stream '\(stream)': cannot read \(path): \(failure)")
        } catch {
            throw PluginError(
                PX_ERR_CORRUPTION,
                "raft-log: stream '\(stream)': its Raft state \(path) (term and vote) is corrupt: \(error). It is only "
                    + "ever replaced whole, so this is damage on disk. Removing it can make this member vote twice "
                    + "in a term; do so only with the other members' logs intact.")
        }
    }
}
