import PlexusPluginSDK

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
