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

    /// Elections this node started (as a candidate), and leaders it learnt of or became.
    let elections = Atomic<UInt64>(0)
    let leaderChanges = Atomic<UInt64>(0)
    /// Events this node forwarded to a stream's leader.
    let forwardedAppends = Atomic<UInt64>(0)

    init(host: Host?) { self.host = host }

    func electionStarted() {
        elections.add(1, ordering: .relaxed)
        host?.count("elections")
    }

    func leaderChanged(elected: Bool) {
        leaderChanges.add(1, ordering: .relaxed)
        host?.count("leader_changes")
        if elected { host?.count("elections_won") }
    }

    /// Events of forwards resent to this leader that it already held, answered without appending them again.
    let deduplicatedForwards = Atomic<UInt64>(0)

    func deduplicated(count: Int) {
        deduplicatedForwards.add(UInt64(count), ordering: .relaxed)
        host?.count("deduplicated_forwards", by: UInt64(count))
    }

    func forwarded(count: Int) {
        forwardedAppends.add(UInt64(count), ordering: .relaxed)
        host?.count("forwarded_appends", by: UInt64(count))
    }

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
