import Foundation
import PlexusPluginSDK
import RaftCore

// The manifest operations of raft-log (`plugin-manifests/raft-log.yaml`), each `uint64 (instance)`: callable
// from any thread while the instance exists; they read counters and never block.

/// Operation `appends`: events made durable since the instance was created.
@_cdecl("px_op_raft_log_appends")
public func raftLogAppends(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RaftLogStorage.self, instance)?.statistics.appends.load(ordering: .relaxed) ?? 0
}

/// Operation `append-batches`: append calls made durable.
@_cdecl("px_op_raft_log_append_batches")
public func raftLogAppendBatches(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RaftLogStorage.self, instance)?.statistics.appendBatches.load(ordering: .relaxed) ?? 0
}

/// Operation `fsyncs`: `fdatasync` calls on segment files.
@_cdecl("px_op_raft_log_fsyncs")
public func raftLogFsyncs(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RaftLogStorage.self, instance)?.statistics.fsyncs.load(ordering: .relaxed) ?? 0
}

/// Operation `group-commits`: the `fdatasync`s that completed appends (`fsync: always`).
@_cdecl("px_op_raft_log_group_commits")
public func raftLogGroupCommits(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RaftLogStorage.self, instance)?.statistics.groupCommits.load(ordering: .relaxed) ?? 0
}

/// Operation `group-committed-batches`: append batches those group commits covered.
@_cdecl("px_op_raft_log_group_committed_batches")
public func raftLogGroupCommittedBatches(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RaftLogStorage.self, instance)?.statistics.groupCommittedBatches.load(ordering: .relaxed)
        ?? 0
}

/// Operation `bytes-on-disk`: the size of every stream's segment files.
@_cdecl("px_op_raft_log_bytes_on_disk")
public func raftLogBytesOnDisk(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RaftLogStorage.self, instance)?.bytesOnDisk ?? 0
}

/// Operation `streams`: the streams open or recovered.
@_cdecl("px_op_raft_log_streams")
public func raftLogStreams(_ instance: UnsafeMutableRawPointer?) -> UInt64 {
    PluginExport.instance(RaftLogStorage.self, instance)?.streamCount ?? 0
}

// Replication operations: each returns `text`, a malloc'd NUL-terminated string the kernel frees.

/// Copies `text` into a C string the caller frees.
private func cText(_ text: String) -> UnsafeMutablePointer<CChar>? { strdup(text) }

/// Operation `status`: one JSON object: this node's id and, per stream, its role, term, leader, commit index,
/// log bounds, committed offsets, the chained CRC at the commit index and, on the leader, each peer's match
/// index, lag and flow-control state.
@_cdecl("px_op_raft_log_status")
public func raftLogStatus(_ instance: UnsafeMutableRawPointer?) -> UnsafeMutablePointer<CChar>? {
    guard let plugin = PluginExport.instance(RaftLogStorage.self, instance) else { return cText("{}") }
    let streams = plugin.allStreams.map { $0.status() }
    let s = plugin.statistics
    return cText(
        "{\"node\":\(CloudEventJSON.quote(plugin.context.id)),\"elections\":\(s.elections.load(ordering: .relaxed)),"
            + "\"leaderChanges\":\(s.leaderChanges.load(ordering: .relaxed)),"
            + "\"forwardedAppends\":\(s.forwardedAppends.load(ordering: .relaxed)),"
            + "\"deduplicatedForwards\":\(s.deduplicatedForwards.load(ordering: .relaxed)),"
            + "\"streams\":[\(streams.joined(separator: ","))]}")
}

/// Operation `transfer-leader NODE`: hands leadership of every stream this node leads to NODE.
@_cdecl("px_op_raft_log_transfer_leader")
public func raftLogTransferLeader(_ instance: UnsafeMutableRawPointer?, _ target: UnsafePointer<CChar>?)
    -> UnsafeMutablePointer<CChar>?
{
    guard let plugin = PluginExport.instance(RaftLogStorage.self, instance), let target else { return cText("") }
    let node = String(cString: target)
    guard node != plugin.context.id else { return cText("'\(node)' is this node") }
    let moved = plugin.allStreams.compactMap { $0.transfer(to: node) }
    return cText(
        moved.isEmpty
            ? "this node leads no stream that '\(node)' can take over"
            : "handing \(moved.count) stream(s) to '\(node)': \(moved.joined(separator: ", "))")
}

/// Runs a membership change on every stream this node leads.
private func changeMembership(
    _ instance: UnsafeMutableRawPointer?, _ what: String, _ change: (Membership) throws -> Membership
) -> UnsafeMutablePointer<CChar>? {
    guard let plugin = PluginExport.instance(RaftLogStorage.self, instance) else { return cText("") }
    var changed: [String] = []
    var failed: [String] = []
    for stream in plugin.allStreams {
        do {
            if try stream.changeMembership(change) { changed.append(stream.name) }
        } catch {
            failed.append("\(stream.name): \(error)")
        }
    }
    var lines = ["\(what): proposed in \(changed.count) stream(s) this node leads"]
    if !changed.isEmpty { lines.append("  " + changed.joined(separator: ", ")) }
    lines += failed.map { "  refused: \($0)" }
    return cText(lines.joined(separator: "\n"))
}

/// Operation `add-member ID HOST:PORT`: adds (or promotes) a voter.
@_cdecl("px_op_raft_log_add_member")
public func raftLogAddMember(
    _ instance: UnsafeMutableRawPointer?, _ id: UnsafePointer<CChar>?, _ address: UnsafePointer<CChar>?
) -> UnsafeMutablePointer<CChar>? {
    membershipAdd(instance, id, address, learner: false)
}

/// Operation `add-learner ID HOST:PORT`: adds a member that receives the log but does not vote.
@_cdecl("px_op_raft_log_add_learner")
public func raftLogAddLearner(
    _ instance: UnsafeMutableRawPointer?, _ id: UnsafePointer<CChar>?, _ address: UnsafePointer<CChar>?
) -> UnsafeMutablePointer<CChar>? {
    membershipAdd(instance, id, address, learner: true)
}

private func membershipAdd(
    _ instance: UnsafeMutableRawPointer?, _ id: UnsafePointer<CChar>?, _ address: UnsafePointer<CChar>?,
    learner: Bool
) -> UnsafeMutablePointer<CChar>? {
    guard let id, let address else { return cText("") }
    let node = String(cString: id)
    let where_ = String(cString: address)
    guard !node.isEmpty, Settings.isAddress(where_) else { return cText("expected a node id and host:port") }
    return changeMembership(instance, "\(learner ? "add-learner" : "add-member") \(node) \(where_)") { current in
        var members = current.members.filter { $0.id != node }
        members.append(.init(id: node, address: where_, learner: learner))
        return Membership(members: members)
    }
}

/// Operation `remove-member ID`: removes a voter or learner.
@_cdecl("px_op_raft_log_remove_member")
public func raftLogRemoveMember(_ instance: UnsafeMutableRawPointer?, _ id: UnsafePointer<CChar>?)
    -> UnsafeMutablePointer<CChar>?
{
    guard let id else { return cText("") }
    let node = String(cString: id)
    return changeMembership(instance, "remove-member \(node)") { current in
        guard current.member(node) != nil else {
            throw PluginError.invalidArgument("'\(node)' is not a member")
        }
        return Membership(members: current.members.filter { $0.id != node })
    }
}

/// Operation `recover STREAM`: lifts the fence a failed write or sync put on STREAM (`*`: on every fenced
/// stream) without a restart, once the operator has cleared the cause: the unsynced tail is discarded, the
/// log recovered from disk and its Raft group rebuilt (`RaftStream.recover`).
@_cdecl("px_op_raft_log_recover")
public func raftLogRecover(_ instance: UnsafeMutableRawPointer?, _ stream: UnsafePointer<CChar>?)
    -> UnsafeMutablePointer<CChar>?
{
    guard let plugin = PluginExport.instance(RaftLogStorage.self, instance), let stream else { return cText("") }
    let name = String(cString: stream)
    guard !name.isEmpty else { return cText("expected a stream name (or * for every fenced stream)") }
    return cText(plugin.recover(name))
}
