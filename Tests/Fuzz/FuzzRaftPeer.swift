import Glibc
import RaftCore

// A libFuzzer target for raft-log's node-to-node path (Plugins/RaftLogStorage/RaftCore): the bytes of one
// peer frame, decoded by `PeerCodec` as a connection's reader does, and every message it accepts stepped into
// a `RaftNode` — a follower holding a short log, as the plugin's stream would hand it over.
//
// The target traps when the codec crashes or throws anything but a `PeerCodecError`, when an accepted frame
// does not come back equal after re-encoding, or when the state machine traps on a message the codec let
// through (a `precondition` reached from a peer's bytes kills the whole node: the defect this target guards).

/// The follower's log before each input: entries 1...4 of term 2, and entries 5...6 of term 3.
let followerEntries: [WireEntry] = (1...6).map { index in
    let body = Array("e\(index)".utf8)
    return WireEntry(
        term: index <= 4 ? 2 : 3, index: UInt64(index), offset: UInt64(index - 1), appendTime: 1, kind: 1,
        bodyCRC: CRC32C.checksum(body), body: body)
}

let members = Membership(members: [
    .init(id: "a", address: "127.0.0.1:1"), .init(id: "b", address: "127.0.0.1:2"),
    .init(id: "c", address: "127.0.0.1:3"),
])

/// A fresh follower `b` in term 3 with `followerEntries`, the first four committed.
func follower() -> RaftNode {
    var log = LogMeta(snapshotIndex: 0, snapshotTerm: 0)
    for entry in followerEntries { log.append(term: entry.term) }
    return RaftNode(
        configuration: .init(id: "b"), hardState: .init(term: 3, votedFor: "a"), log: log, commitIndex: 4,
        baseMembership: members, history: [], nextOffset: 6, seed: 1,
        fetch: { index, count, _ in
            guard index >= 1, index <= 6 else { return nil }
            return Array(followerEntries[Int(index - 1)..<min(6, Int(index - 1) + count)])
        })
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>)
    -> CInt
{
    let entry = { (index: UInt64, term: UInt64) in
        WireEntry(term: term, index: index, offset: index - 1, appendTime: 1, kind: 1, bodyCRC: 0, body: [7])
    }
    let messages: [(String, RaftMessage)] = [
        ("append-next", .append(AppendRequest(term: 3, prevIndex: 6, prevTerm: 3, commit: 6, entries: [entry(7, 3)]))),
        (
            "append-conflict",
            .append(AppendRequest(term: 4, prevIndex: 4, prevTerm: 2, commit: 5, entries: [entry(5, 4), entry(6, 4)]))
        ),
        ("append-heartbeat", .append(AppendRequest(term: 3, prevIndex: 6, prevTerm: 3, commit: 6, entries: []))),
        ("vote", .vote(VoteRequest(term: 4, lastIndex: 9, lastTerm: 3))),
        ("pre-vote", .preVote(VoteRequest(term: 4, lastIndex: 6, lastTerm: 3))),
        ("append-reply", .appendReply(AppendReply(term: 3, success: false, index: 2, rejected: 5))),
        (
            "snapshot",
            .snapshot(
                SnapshotRequest(term: 4, index: 10, indexTerm: 4, nextOffset: 10, chain: 0, membership: members))
        ),
        ("timeout-now", .timeoutNow(term: 3)),
    ]
    writeSeeds(
        messages.map { name, message in
            (name, PeerCodec.encode(Envelope(from: "a", to: "b", stream: "s", message: message)))
        })
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let frame = Array(UnsafeBufferPointer(start: data, count: size))
    let envelope: Envelope
    do {
        envelope = try PeerCodec.decode(frame: frame, maxFrameBytes: 1 << 16)
    } catch let error as PeerCodecError {
        guard !error.message.isEmpty else { finding("a PeerCodecError without a message: \(error.code)") }
        return 0
    } catch {
        finding("not a PeerCodecError: \(error)")
    }
    let again: Envelope
    do {
        again = try PeerCodec.decode(frame: PeerCodec.encode(envelope), maxFrameBytes: 1 << 17)
    } catch {
        finding("\(envelope) re-encoded is refused: \(error)")
    }
    guard again == envelope else { finding("\(envelope) re-encoded decodes as \(again)") }
    // The plugin hands the state machine what the connection's reader accepted, from any member.
    var node = follower()
    node.step(from: envelope.from, envelope.message)
    _ = node.takeReady()
    node.tick()
    _ = node.takeReady()
    return 0
}
