import PlexusPluginSDK
import RaftCore

/// A stream's `raft` file: the Raft term and vote (written, and synced, before any message that depends on
/// them goes out), and the membership in force at the snapshot point (the newest membership entry retention
/// dropped, or the configured one). Rewritten whole and atomically (`Files.replace`).
///
/// ```
/// u32 magic "PXRT"   u16 version (1)   u16 zero   u64 term   u32 vote length, vote (node id; 0 = none)
/// u64 index of the membership below (0 = the configured one)   u32 membership length, membership
/// u32 CRC-32C of everything before it
/// ```
struct RaftState: Equatable {
    static let magic: UInt32 = 0x5452_5850
    static let fileName = "raft"

    var term: UInt64 = 0
    var votedFor: NodeID?
    var membershipIndex: UInt64 = 0
    var membership: Membership?

    func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        put(Self.magic)
        put(UInt16(1))
        put(UInt16(0))
        put(term)
        let vote = Array((votedFor ?? "").utf8)
        put(UInt32(vote.count))
        bytes += vote
        put(membershipIndex)
        let members = membership?.encoded() ?? []
        put(UInt32(members.count))
        bytes += members
        put(CRC32C.checksum(bytes))
        return bytes
    }

    struct Invalid: Error, CustomStringConvertible { var description: String }

    static func decode(_ bytes: [UInt8]) throws -> RaftState {
        guard bytes.count >= 4 + 4 + 8 + 4 + 8 + 4 + 4 else { throw Invalid(description: "too short") }
        let body = bytes[..<(bytes.count - 4)]
        let crc = bytes.withUnsafeBytes { $0.loadLE(UInt32.self, at: bytes.count - 4) }
        guard CRC32C.checksum(Array(body)) == crc else { throw Invalid(description: "its CRC is wrong") }
        return try bytes.withUnsafeBytes { raw in
            guard raw.loadLE(UInt32.self, at: 0) == magic, raw.loadLE(UInt16.self, at: 4) == 1 else {
                throw Invalid(description: "wrong magic or version")
            }
            var position = 8
            func u64() throws -> UInt64 {
                guard position + 8 <= body.count else { throw Invalid(description: "cut short") }
                defer { position += 8 }
                return raw.loadLE(UInt64.self, at: position)
            }
            func blob() throws -> [UInt8] {
                guard position + 4 <= body.count else { throw Invalid(description: "cut short") }
                let length = Int(raw.loadLE(UInt32.self, at: position))
                position += 4
                guard position + length <= body.count else { throw Invalid(description: "cut short") }
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
                    throw Invalid(description: "its membership is unreadable")
                }
                state.membership = membership
            }
            guard position == body.count else { throw Invalid(description: "trailing bytes") }
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
