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
}
