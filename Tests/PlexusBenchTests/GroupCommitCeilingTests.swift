import Foundation
import Testing

@testable import PlexusBench

/// The raw group-commit loop that `make bench-raft-local` and `make bench-raft` compare raft-log with.
@Suite("Group-commit ceiling")
struct GroupCommitCeilingTests {
    @Test("syncs for the time given, counts eventsPerSync per sync, removes its file")
    func measures() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("ceiling-\(getpid()).log").path
        let ceiling = GroupCommitCeiling(eventsPerSync: 4, entryBytes: 1100)
        let start = MonotonicClock.nanoseconds()
        let measured = try ceiling.measure(path: path, seconds: 0.2)
        let elapsed = Double(MonotonicClock.nanoseconds() - start) / 1e9
        #expect(measured.syncs > 0)
        #expect(elapsed >= 0.2)
        // events per second = syncs × 4 over the elapsed time (within the loop's last iteration).
        let expected = Double(measured.syncs * 4) / elapsed
        #expect(abs(measured.eventsPerSecond - expected) <= expected * 0.5, "\(measured)")
        #expect(measured.fsyncMicros > 0)
        #expect(!FileManager.default.fileExists(atPath: path))
    }

    @Test("at least one event per sync; an unwritable path is an error naming it")
    func limits() {
        #expect(GroupCommitCeiling(eventsPerSync: 0, entryBytes: 0).eventsPerSync == 1)
        #expect {
            _ = try GroupCommitCeiling(eventsPerSync: 1, entryBytes: 10).measure(
                path: "/nonexistent-dir/x", seconds: 0.01)
        } throws: { error in
            "\(error)".contains("/nonexistent-dir/x")
        }
    }

    @Test("the groupings tried for a window: the window, then powers of two below it, largest first")
    func groupings() {
        #expect(GroupCommitCeiling.groupings(window: 1) == [1])
        #expect(GroupCommitCeiling.groupings(window: 0) == [1])
        #expect(GroupCommitCeiling.groupings(window: 16) == [16, 8, 4, 2])
        #expect(GroupCommitCeiling.groupings(window: 128) == [128, 64, 32, 16])
        #expect(GroupCommitCeiling.groupings(window: 100) == [100, 64, 32, 16])
        #expect(GroupCommitCeiling.groupings(window: 3, limit: 8) == [3, 2, 1])
    }

    @Test("the best grouping is measured independently and is one of those tried")
    func best() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("best-\(getpid()).log").path
        let best = try GroupCommitCeiling.best(window: 8, entryBytes: 1100, path: path, seconds: 0.4)
        #expect(GroupCommitCeiling.groupings(window: 8).contains(best.grouping))
        #expect(best.measurement.syncs > 0)
        #expect(best.measurement.eventsPerSecond > 0)
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
