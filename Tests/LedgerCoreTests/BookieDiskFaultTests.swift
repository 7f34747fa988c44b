import Foundation
import StorageIO
import Testing

@testable import LedgerCore

/// The bookie when its disk fails, on a real disk: the fault is a file the bookie must create (the next journal
/// or entry-log file) that already exists, so the `open` fails as a full or broken disk makes it fail. No add is
/// acknowledged that the journal did not sync, a failed journal stops every later add before it touches the entry
/// log, a failed entry-log write refuses only its add, and each is logged once.
@Suite("Local bookie disk faults")
struct BookieDiskFaultTests {
    @Test("a failed journal: the add refused, every later add refused before the entry log, logged once")
    func journalFails() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        let lines = Recorder<String>()
        var options = LocalBookie.Options()
        // Every record after the first starts a new journal file.
        options.journalFileBytes = 1
        options.log = { _, line in lines.record(line) }
        do {
            let bookie = try LocalBookie(id: "b", directory: scratch.path, options: options)
            try BookieTests.add(bookie, 1, 0).get()
            let files = try BookieTests.journalFiles(scratch.path)
            let next = try #require(files.last.flatMap(Journal.sequence(of:))) + 1
            // The journal cannot create its next file.
            let blocker = scratch.path + "/journal/" + Journal.fileName(next)
            try Data().write(to: URL(fileURLWithPath: blocker))

            guard case .failure(let failed) = BookieTests.add(bookie, 1, 1) else {
                Issue.record("an add whose journal file could not be created was acknowledged")
                return
            }
            #expect(failed.code == .io && failed.message.contains(blocker), "\(failed)")
            guard case .failure(let refused) = BookieTests.add(bookie, 1, 2) else {
                Issue.record("an add after the journal failed was acknowledged")
                return
            }
            #expect(refused.code == .io, "\(refused)")
            #expect(refused.message.contains("refuses adds since its journal failed"), "\(refused)")
            // Refused before the entry log: the bookie does not hold it.
            guard case .failure(let missing) = BookieTests.read(bookie, 1, 2) else {
                Issue.record("the bookie serves an entry it refused")
                return
            }
            #expect(missing.code == .noSuchEntry)
            #expect(try BookieTests.read(bookie, 1, 0).get().payload == BookieTests.payload(1, 0), "reads go on")
            #expect(BookieTests.add(bookie, 2, 0).failure?.code == .io, "other ledgers are refused too")
            #expect(lines.values.count == 1, "logged once: \(lines.values)")
            #expect(lines.values.first?.contains("bookie b refuses every add") == true, "\(lines.values)")
            #expect(lines.values.first?.contains(blocker) == true, "the line says why: \(lines.values)")
            bookie.stop(checkpoint: true)
            try Files.remove(blocker)
        }
        // A restart takes adds again; only what was synced is there.
        let reopened = try LocalBookie(id: "b", directory: scratch.path, options: options)
        #expect(reopened.recovery.tornTail == nil)
        #expect(try BookieTests.read(reopened, 1, 0).get().payload == BookieTests.payload(1, 0))
        #expect(BookieTests.read(reopened, 1, 1).failure?.code == .noSuchEntry, "a refused add is not durable")
        try BookieTests.add(reopened, 1, 1).get()
        reopened.stop(checkpoint: false)
    }

    @Test("a failed entry-log write refuses that add with the reason; the bookie takes adds once the disk works")
    func entryLogFails() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        let lines = Recorder<String>()
        var options = LocalBookie.Options()
        // Every entry after the first starts a new entry-log file.
        options.entryLogFileBytes = 1
        options.log = { _, line in lines.record(line) }
        let bookie = try LocalBookie(id: "b", directory: scratch.path, options: options)
        try BookieTests.add(bookie, 1, 0).get()
        let logs = try Files.list(scratch.path + "/ledgers").compactMap(EntryLogger.number(of:))
        let blocker = scratch.path + "/ledgers/" + EntryLogger.fileName(try #require(logs.max()) + 1)
        try Data().write(to: URL(fileURLWithPath: blocker))

        for entry in Int64(1)...3 {
            guard case .failure(let refused) = BookieTests.add(bookie, 1, entry) else {
                Issue.record("entry \(entry) was acknowledged though its entry-log file could not be created")
                return
            }
            #expect(refused.code == .io && refused.message.contains("bookie b refuses adds"), "\(refused)")
            #expect(refused.message.contains(blocker), "the refusal names the file: \(refused)")
        }
        #expect(bookie.tail(1).lastEntry == 0, "no refused entry is indexed")
        #expect(lines.values.count == 1 && lines.values[0].contains(blocker), "logged once: \(lines.values)")

        try Files.remove(blocker)
        try BookieTests.add(bookie, 1, 1).get()
        #expect(try BookieTests.read(bookie, 1, 1).get().payload == BookieTests.payload(1, 1))
        #expect(lines.values.count == 2 && lines.values[1].contains("takes adds again"), "\(lines.values)")
        bookie.stop(checkpoint: false)
    }
}
