import Foundation
import StorageIO
import Synchronization
import Testing

@testable import LedgerCore

/// The bookie's storage core on a real disk: group commit, index and entry logs, recovery from the journal
/// (torn tails cut, corruption refused with file and byte), fencing through restarts, checkpoints and
/// garbage collection.
@Suite("Local bookie")
struct BookieTests {
    static func payload(_ ledger: UInt64, _ entry: Int64) -> [UInt8] {
        Array("ledger \(ledger) entry \(entry) ".utf8) + [UInt8](repeating: UInt8(truncatingIfNeeded: entry), count: 64)
    }

    static func add(_ bookie: LocalBookie, _ ledger: UInt64, _ entry: Int64, recovery: Bool = false) -> Result<
        Void, LedgerError
    > {
        outcome {
            bookie.addEntry(
                ledger: ledger, entry: entry, lastAddConfirmed: entry - 1, payload: payload(ledger, entry),
                recovery: recovery, completion: $0)
        }
    }

    static func read(_ bookie: LocalBookie, _ ledger: UInt64, _ entry: Int64) -> Result<StoredEntry, LedgerError> {
        outcome { bookie.readEntry(ledger: ledger, entry: entry, completion: $0) }
    }

    static func journalFiles(_ directory: String) throws -> [String] {
        try Files.list(directory + "/journal").filter { Journal.sequence(of: $0) != nil }.sorted()
    }

    @Test("concurrent adds are group-committed: every one completes, with fewer syncs than records under load")
    func groupCommit() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        let bookie = try LocalBookie(id: "b", directory: scratch.path)
        let done = Recorder<Result<Void, LedgerError>>()
        let group = DispatchGroup()
        // Four writers, 100 adds each, all in flight at once.
        for writer in 0..<4 {
            for entry in 0..<100 {
                group.enter()
                bookie.addEntry(
                    ledger: UInt64(writer), entry: Int64(entry), lastAddConfirmed: -1,
                    payload: Self.payload(UInt64(writer), Int64(entry)), recovery: false
                ) {
                    done.record($0)
                    group.leave()
                }
            }
        }
        group.wait()
        #expect(done.values.count == 400)
        #expect(done.values.allSatisfy { (try? $0.get()) != nil })
        let statistics = bookie.journalStatistics
        #expect(statistics.records == 400)
        // 400 adds were enqueued faster than one fdatasync: batches formed.
        #expect(statistics.syncs < 400, "\(statistics)")
        for writer in 0..<4 {
            #expect(try Self.read(bookie, UInt64(writer), 99).get().payload == Self.payload(UInt64(writer), 99))
        }
        bookie.stop(checkpoint: false)
    }

    @Test("after a stop without checkpoint (what kill -9 leaves) the journal is replayed into the index")
    func replayAfterCrash() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        do {
            let bookie = try LocalBookie(id: "b", directory: scratch.path)
            for entry in 0..<50 { try Self.add(bookie, 1, Int64(entry)).get() }
            for entry in 0..<20 { try Self.add(bookie, 2, Int64(entry)).get() }
            bookie.stop(checkpoint: false)
        }
        let reopened = try LocalBookie(id: "b", directory: scratch.path)
        #expect(reopened.recovery.records == 70)
        #expect(reopened.recovery.tornTail == nil)
        for entry in 0..<50 {
            #expect(try Self.read(reopened, 1, Int64(entry)).get().payload == Self.payload(1, Int64(entry)))
        }
        #expect(reopened.tail(1) == LedgerTail(lastEntry: 49, lastAddConfirmed: 48))
        #expect(reopened.tail(2).lastEntry == 19)
        guard case .failure(let missing) = Self.read(reopened, 1, 50) else {
            Issue.record("an entry never added was read")
            return
        }
        #expect(missing.code == .noSuchEntry)
        reopened.stop(checkpoint: false)
    }

    @Test("a torn record at the journal's tail is cut off and reported; the records before it survive")
    func tornTail() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        do {
            let bookie = try LocalBookie(id: "b", directory: scratch.path)
            for entry in 0..<10 { try Self.add(bookie, 1, Int64(entry)).get() }
            bookie.stop(checkpoint: false)
        }
        // A crash in the middle of writing entry 10: half its record reached the file.
        let name = try #require(try Self.journalFiles(scratch.path).last)
        let path = scratch.path + "/journal/" + name
        let file = try OpenFile(path: path)
        let size = try file.size
        let record = JournalRecord(
            kind: .entry, ledger: 1, entry: 10, lastAddConfirmed: 9, payload: Self.payload(1, 10)
        )
        .encoded()
        try file.write(Array(record.prefix(record.count / 2)), at: size)

        let reopened = try LocalBookie(id: "b", directory: scratch.path)
        let torn = try #require(reopened.recovery.tornTail)
        #expect(torn.path == path && torn.offset == size && torn.bytes == record.count / 2)
        #expect(try file.size == size, "the torn bytes were cut off the file")
        #expect(reopened.tail(1).lastEntry == 9)
        #expect(try Self.read(reopened, 1, 9).get().payload == Self.payload(1, 9))
        // The bookie takes adds again, and they survive the next restart.
        try Self.add(reopened, 1, 10).get()
        reopened.stop(checkpoint: false)
        let again = try LocalBookie(id: "b", directory: scratch.path)
        #expect(again.recovery.tornTail == nil)
        #expect(again.tail(1).lastEntry == 10)
        again.stop(checkpoint: false)
    }

    @Test("a damaged journal record with valid records after it is refused, naming the file and byte offset")
    func corruptJournal() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        do {
            let bookie = try LocalBookie(id: "b", directory: scratch.path)
            for entry in 0..<5 { try Self.add(bookie, 1, Int64(entry)).get() }
            bookie.stop(checkpoint: false)
        }
        let name = try #require(try Self.journalFiles(scratch.path).last)
        let path = scratch.path + "/journal/" + name
        let file = try OpenFile(path: path)
        let recordSize = JournalRecord.headerSize + Self.payload(1, 1).count
        // Flip a payload byte of the second record.
        let at = recordSize + JournalRecord.headerSize + 3
        let byte = try file.read(count: 1, at: at)
        try file.write([byte[0] ^ 0xFF], at: at)
        #expect {
            try LocalBookie(id: "b", directory: scratch.path)
        } throws: { error in
            guard let error = error as? LedgerError else { return false }
            return error.code == .corrupt && error.message.contains(path)
                && error.message.contains("byte \(recordSize)")
        }
    }

    @Test("the entry log's write buffer: entries read back before and after it is written, across file rolls")
    func entryLogBuffer() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        // A 3,000-byte buffer and 10,000-byte files: 1 KiB entries fill the buffer every third add, roll the
        // file every ninth.
        let logs = try EntryLogger(directory: scratch.path, maxFileBytes: 10_000, writeBufferBytes: 3_000)
        var locations: [EntryLocation] = []
        for entry in 0..<40 {
            let payload = [UInt8](repeating: UInt8(entry), count: 1024)
            locations.append(
                try logs.add(ledger: 7, entry: Int64(entry), lastAddConfirmed: Int64(entry) - 1, payload: payload))
            for (earlier, location) in locations.enumerated() {
                let read = try logs.read(location, ledger: 7, entry: Int64(earlier))
                #expect(
                    read.payload == [UInt8](repeating: UInt8(earlier), count: 1024)
                        && read.lastAddConfirmed == Int64(earlier) - 1)
            }
        }
        #expect(Set(locations.map(\.log)).count == 5, "40 entries of 1,060 bytes in files of at most 10,000")
        // On disk only what was written: the last file holds less than its entries until the sync writes the rest.
        let last = try #require(locations.last)
        let lastFile = scratch.path + "/" + EntryLogger.fileName(last.log)
        let expected = Int(last.offset) + EntryLogger.headerSize + 1024
        #expect(try OpenFile(path: lastFile).size < expected)
        try logs.syncAll()
        #expect(try OpenFile(path: lastFile).size == expected)
        for (entry, location) in locations.enumerated() {
            #expect(try logs.read(location, ledger: 7, entry: Int64(entry)).payload.first == UInt8(entry))
        }
    }

    @Test("a damaged entry in an entry log is refused on read, naming the file and byte offset")
    func corruptEntry() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        // Written, then stopped with a checkpoint: the entries are in the entry log on disk (a running bookie may
        // still hold its newest entries in the entry log's write buffer), and the reopened bookie reads them there.
        let first = try LocalBookie(id: "b", directory: scratch.path)
        for entry in 0..<3 { try Self.add(first, 5, Int64(entry)).get() }
        first.stop()
        let logs = try Files.list(scratch.path + "/ledgers").filter { EntryLogger.number(of: $0) != nil }.sorted()
        let log = scratch.path + "/ledgers/" + (try #require(logs.first))
        let recordSize = EntryLogger.headerSize + Self.payload(5, 0).count
        let file = try OpenFile(path: log)
        let at = recordSize + EntryLogger.headerSize + 1  // inside entry 1's payload
        let byte = try file.read(count: 1, at: at)
        try file.write([byte[0] ^ 0x01], at: at)
        let bookie = try LocalBookie(id: "b", directory: scratch.path)
        guard case .failure(let error) = Self.read(bookie, 5, 1) else {
            Issue.record("a corrupt entry was returned")
            return
        }
        #expect(error.code == .corrupt && error.message.contains(log) && error.message.contains("byte \(recordSize)"))
        #expect((try? Self.read(bookie, 5, 0).get()) != nil && (try? Self.read(bookie, 5, 2).get()) != nil)
        bookie.stop(checkpoint: false)
    }

    @Test("a fenced ledger refuses adds with 'fenced' (recovery adds excepted), and stays fenced after a restart")
    func fencing() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        do {
            let bookie = try LocalBookie(id: "b", directory: scratch.path)
            for entry in 0..<3 { try Self.add(bookie, 1, Int64(entry)).get() }
            let tail = try waitFor { bookie.fence(ledger: 1, completion: $0) }
            #expect(tail == LedgerTail(lastEntry: 2, lastAddConfirmed: 1))
            guard case .failure(let error) = Self.add(bookie, 1, 3) else {
                Issue.record("an add to a fenced ledger succeeded")
                return
            }
            #expect(error.code == .fenced && error.message.contains("fenced"))
            try Self.add(bookie, 1, 3, recovery: true).get()
            try Self.add(bookie, 2, 0).get()  // other ledgers are not affected
            bookie.stop(checkpoint: false)
        }
        let reopened = try LocalBookie(id: "b", directory: scratch.path)
        #expect(reopened.isFenced(1) && !reopened.isFenced(2))
        guard case .failure(let error) = Self.add(reopened, 1, 4) else {
            Issue.record("the fence was lost in the restart")
            return
        }
        #expect(error.code == .fenced)
        // And through a checkpoint too.
        try reopened.checkpoint()
        reopened.stop(checkpoint: false)
        let third = try LocalBookie(id: "b", directory: scratch.path)
        #expect(third.recovery.records == 0, "the checkpoint covered the journal")
        #expect(third.isFenced(1))
        third.stop(checkpoint: false)
    }

    @Test("a checkpoint deletes the journal files it covers; a restart from it replays only what came after")
    func checkpoints() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        var options = LocalBookie.Options()
        options.journalFileBytes = 4096  // a few records per file
        do {
            let bookie = try LocalBookie(id: "b", directory: scratch.path, options: options)
            for entry in 0..<200 { try Self.add(bookie, 1, Int64(entry)).get() }
            #expect(try Self.journalFiles(scratch.path).count > 3)
            let result = try #require(try bookie.checkpoint())
            #expect(result.journalFilesDeleted > 3)
            #expect(
                try Self.journalFiles(scratch.path).map { Journal.sequence(of: $0)! }.allSatisfy {
                    $0 >= result.journalFile
                })
            for entry in 200..<210 { try Self.add(bookie, 1, Int64(entry)).get() }
            bookie.stop(checkpoint: false)
        }
        let reopened = try LocalBookie(id: "b", directory: scratch.path, options: options)
        #expect(reopened.recovery.records == 10)
        for entry in [0, 57, 199, 200, 209] {
            #expect(try Self.read(reopened, 1, Int64(entry)).get().payload == Self.payload(1, Int64(entry)))
        }
        reopened.stop(checkpoint: false)
    }

    @Test("garbage collection deletes the entry logs whose ledgers are all deleted, and only those")
    func garbageCollection() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        var options = LocalBookie.Options()
        options.entryLogFileBytes = 2048
        let bookie = try LocalBookie(id: "b", directory: scratch.path, options: options)
        func logs() throws -> Set<UInt64> {
            Set(try Files.list(scratch.path + "/ledgers").compactMap(EntryLogger.number(of:)))
        }
        // Ledger 1 fills the first logs alone, then ledgers 1 and 2 interleave.
        for entry in 0..<60 { try Self.add(bookie, 1, Int64(entry)).get() }
        let onlyLedger1 = try logs()
        for entry in 60..<70 {
            try Self.add(bookie, 1, Int64(entry)).get()
            try Self.add(bookie, 2, Int64(entry - 60)).get()
        }
        let all = try logs()
        #expect(onlyLedger1.count >= 3 && all.count > onlyLedger1.count)
        try waitFor { bookie.deleteLedger(ledger: 1, completion: $0) }
        let result = try #require(try bookie.checkpoint())
        let left = try logs()
        // Every log that held only ledger 1 is gone, except the one being written; ledger 2's logs remain.
        #expect(result.entryLogsDeleted >= onlyLedger1.count - 1)
        #expect(left.isDisjoint(with: onlyLedger1.subtracting([onlyLedger1.max()!])))
        for entry in 0..<10 {
            #expect(try Self.read(bookie, 2, Int64(entry)).get().payload == Self.payload(2, Int64(entry)))
        }
        guard case .failure(let error) = Self.read(bookie, 1, 0) else {
            Issue.record("a deleted ledger's entry was read")
            return
        }
        #expect(error.code == .noSuchEntry)
        guard case .failure(let refused) = Self.add(bookie, 1, 70) else {
            Issue.record("a deleted ledger took an add")
            return
        }
        #expect(refused.code == .deleted)
        bookie.stop(checkpoint: false)
        // The deletion survives a restart.
        let reopened = try LocalBookie(id: "b", directory: scratch.path, options: options)
        #expect((try? Self.read(reopened, 1, 5).get()) == nil)
        #expect(try Self.read(reopened, 2, 9).get().payload == Self.payload(2, 9))
        reopened.stop(checkpoint: false)
    }

    @Test(
        "a zombie writer: after another client's recovery fenced the ledger, its adds fail and the ledger's end is fixed"
    )
    func zombieWriter() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        let bookie = try LocalBookie(id: "b", directory: scratch.path)
        let store = try FileMetadataStore(path: scratch.path + "/metadata")
        let manager = LedgerManager(store: store, prefix: "ledgers") { $0 == "b" ? bookie : nil }
        let (metadata, writer) = try manager.create(
            ensemble: ["b"], quorum: try QuorumConfig(ensembleSize: 1, writeQuorum: 1, ackQuorum: 1))
        for entry in 0..<5 {
            _ = try waitFor { writer.append(Self.payload(metadata.id, Int64(entry)), completion: $0) }
        }
        // Another client takes the ledger over (the writer looked dead to it).
        let recovered = try manager.recover(metadata.id)
        #expect(recovered.state == .closed && recovered.lastEntry == 4)
        // The zombie keeps writing: refused, with 'fenced'.
        let late = outcome { writer.append(Self.payload(metadata.id, 5), completion: $0) }
        guard case .failure(let error) = late else {
            Issue.record("the zombie's add succeeded after the fence")
            return
        }
        #expect(error.code == .fenced && error.message.contains("fenced"))
        // Nor can it close the ledger with its own idea of the end.
        #expect(throws: LedgerError.self) { try manager.close(metadata.id, lastEntry: 5) }
        #expect(try manager.read(metadata.id).0.lastEntry == 4)
        #expect(bookie.tail(metadata.id).lastEntry == 4)
        bookie.stop(checkpoint: false)
    }
}

@Suite("Ledger metadata")
struct MetadataTests {
    @Test("the file store's versions and compare-and-swap, durable across reopening")
    func fileStore() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        let path = scratch.path + "/metadata"
        let store = try FileMetadataStore(path: path)
        #expect(try waitFor { store.put("a/1", [1], expected: .absent, completion: $0) } == 1)
        #expect(try waitFor { store.put("a/1", [2], expected: .exactly(1), completion: $0) } == 2)
        for expected in [ExpectedVersion.absent, .exactly(1), .exactly(3)] {
            guard case .failure(let error) = outcome({ store.put("a/1", [9], expected: expected, completion: $0) })
            else {
                Issue.record("a put with \(expected) succeeded on version 2")
                continue
            }
            #expect(error.code == .conflict && error.message.contains("version is now 2"))
        }
        _ = try waitFor { store.put("a/2", [3], expected: .any, completion: $0) }
        _ = try waitFor { store.put("b/1", [4], expected: .any, completion: $0) }
        try waitFor { store.delete("a/2", expected: .exactly(1), completion: $0) }
        let reopened = try FileMetadataStore(path: path)
        let listed = try waitFor { reopened.list(prefix: "a/", completion: $0) }
        #expect(listed.map(\.key) == ["a/1"])
        #expect(listed.first?.value == VersionedValue(value: [2], version: 2))
        #expect(try waitFor { reopened.get("b/1", completion: $0) }?.value == [4])
    }

    @Test("ledger ids are allocated once each; a recovered ledger cannot be closed by its writer")
    func manager() throws {
        let scratch = TemporaryDirectory()
        defer { scratch.remove() }
        let bookies = (0..<3).map { FakeBookie("b\($0)") }
        let store = try FileMetadataStore(path: scratch.path + "/metadata")
        let manager = LedgerManager(store: store, prefix: "ledgers") { id in bookies.first { $0.id == id } }
        let quorum = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        let (first, writer) = try manager.create(ensemble: ["b0", "b1", "b2"], quorum: quorum)
        let (second, _) = try manager.create(ensemble: ["b0", "b1", "b2"], quorum: quorum)
        #expect(first.id != second.id)
        for entry in 0..<4 { _ = try waitFor { writer.append([UInt8(entry)], completion: $0) } }
        let closed = try manager.close(first.id, lastEntry: writer.lastAddConfirmed)
        #expect(closed.state == .closed && closed.lastEntry == 3)
        #expect(try manager.recover(first.id) == closed, "recovering a closed ledger changes nothing")
        let recovered = try manager.recover(second.id)
        #expect(recovered.state == .closed && recovered.lastEntry == -1)
        #expect(throws: LedgerError.self) { try manager.close(second.id, lastEntry: 0) }
        #expect(throws: LedgerError.self) { try manager.create(ensemble: ["b0", "nobody", "b2"], quorum: quorum) }
    }
}
