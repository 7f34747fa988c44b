import PlexusPluginSDK
import Synchronization

/// The counters of one raft-log instance, read by its operations and mirrored to the kernel's metrics.
final class Statistics: Sendable {
    let host: Host?
    /// Events made durable.
    let appends = Atomic<UInt64>(0)
    /// Append batches (calls) made durable.
    let appendBatches = Atomic<UInt64>(0)
    /// `fdatasync` calls on segment files (group commits, interval flushes and segment seals).
    let fsyncs = Atomic<UInt64>(0)
    /// Append batches covered by group-commit `fdatasync`s: divided by `groupCommits`, the batches per fsync.
    let groupCommittedBatches = Atomic<UInt64>(0)
    let groupCommits = Atomic<UInt64>(0)
    /// Segments dropped by trim or retention.
    let segmentsDropped = Atomic<UInt64>(0)

    init(host: Host?) { self.host = host }

    func appended(events: Int, batches: Int) {
        appends.add(UInt64(events), ordering: .relaxed)
        appendBatches.add(UInt64(batches), ordering: .relaxed)
        host?.count("appends", by: UInt64(events))
        host?.count("append_batches", by: UInt64(batches))
    }

    func synced(groupCommitOf batches: Int? = nil) {
        fsyncs.add(1, ordering: .relaxed)
        host?.count("fsyncs")
        if let batches {
            groupCommits.add(1, ordering: .relaxed)
            groupCommittedBatches.add(UInt64(batches), ordering: .relaxed)
            host?.count("group_commits")
            host?.count("group_committed_batches", by: UInt64(batches))
        }
    }

    func dropped(segments: Int) {
        segmentsDropped.add(UInt64(segments), ordering: .relaxed)
        host?.count("segments_dropped", by: UInt64(segments))
    }
}
