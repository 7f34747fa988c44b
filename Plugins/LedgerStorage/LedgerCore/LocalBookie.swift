import Foundation
import StorageIO
import Synchronization

/// A bookie in this process: a journal (`Journal`, group-committed), entry logs that interleave the ledgers
/// (`EntryLogger`), an index of where each entry lies, fencing per ledger, checkpoints that let old journal
/// files go, and recovery from the journal after a crash.
///
/// Layout of `directory`: `journal/journal-<n>.jnl`, `ledgers/entrylog-<n>.log`, `ledgers/checkpoint`.
///
/// An add is written to the current entry log (no sync) and indexed under the bookie's lock, and its journal
/// record is enqueued in the same critical section; it completes when the journal has synced it. A fence or a
/// deletion takes effect at once in memory and completes once its journal record is durable.
///
/// A disk fault never acknowledges an add: a failed entry-log write refuses that add (`.io`, with the error)
/// and the next that succeeds takes adds again; a failed journal write, sync or file creation fails every
/// record not yet synced, and from then on the bookie refuses every add before its entry log (and fails every
/// fence and deletion: a retried sync could report pages the kernel already dropped) until it is restarted,
/// when it replays what its journal holds. Both are logged (`Options.log`), once each; reads go on.
///
/// On open the checkpoint (the index as of some journal file) is loaded and every journal file from that one
/// on is replayed into a new entry log. A record torn by a crash at the tail of the last journal file is cut
/// off (`recovery.tornTail` says where); a damaged record anywhere else stops the open with an error naming
/// the file and byte offset.
public final class LocalBookie: Bookie {
    /// Sizes and intervals of a bookie.
    public struct Options: Sendable {
        /// A journal file is closed and the next started past this size.
        public var journalFileBytes = 64 << 20
        /// An entry-log file is closed and the next started past this size.
        public var entryLogFileBytes = 256 << 20
        /// Checkpoint this often (0: only when `checkpoint()` is called).
        public var checkpointIntervalMilliseconds = 0
        /// Receives a line when the bookie starts refusing adds because its disk failed (its journal or an
        /// entry-log write), and when it takes them again. Called on the caller's or the journal's thread,
        /// outside the bookie's lock.
        public var log: @Sendable (LogLevel, String) -> Void = { _, _ in }

        public init() {}
    }

    /// What opening the bookie found in its journal.
    public struct Recovery: Sendable, Equatable {
        /// Journal files replayed.
        public var journalFiles = 0
        /// Records replayed from them.
        public var records = 0
        /// The torn record cut off the last journal file: its path, its byte offset, the bytes cut.
        public var tornTail: (path: String, offset: Int, bytes: Int)?

        public static func == (a: Recovery, b: Recovery) -> Bool {
            a.journalFiles == b.journalFiles && a.records == b.records && a.tornTail?.path == b.tornTail?.path
                && a.tornTail?.offset == b.tornTail?.offset && a.tornTail?.bytes == b.tornTail?.bytes
        }
    }

    private struct State {
        var index = LedgerIndex()
        var entryLogs: EntryLogger
        var stopped = false
        var checkpointing = false
        /// Set while entry-log writes fail (a full or failing disk): adds are refused, and it is logged once.
        var entryLogFailing = false
    }

    public let id: String
    public let directory: String
    public let recovery: Recovery
    private let log: @Sendable (LogLevel, String) -> Void
    private let journal: Journal
    private let state: Mutex<State>
    /// Signalled to end the periodic checkpoints; `checkpointsEnded` once they have.
    private let endCheckpoints = DispatchSemaphore(value: 0)
    private let checkpointsEnded = DispatchSemaphore(value: 0)
    private let checkpointsRunning = Mutex(false)

    var journalDirectory: String { directory + "/journal" }
    var ledgerDirectory: String { directory + "/ledgers" }

    /// Opens (creating if needed) the bookie stored in `directory`, recovering it from its journal.
    /// - Throws: `LedgerError` `.corrupt` naming the file and byte of a damaged checkpoint or journal record,
    ///   `.io` when the disk refuses.
    public init(id: String, directory: String, options: Options = Options()) throws(LedgerError) {
        self.id = id
        self.directory = directory
        let journalDirectory = directory + "/journal"
        let ledgerDirectory = directory + "/ledgers"
        do {
            try Files.makeDirectory(directory)
            try Files.makeDirectory(journalDirectory)
            try Files.makeDirectory(ledgerDirectory)
        } catch {
            throw LedgerError(.io, "bookie \(id): \(error)")
        }
        // The checkpoint: the index, and the first journal file it does not cover.
        var index = LedgerIndex()
        var replayFrom: UInt64 = 0
        let checkpointPath = ledgerDirectory + "/" + LedgerIndex.fileName
        if Files.exists(checkpointPath) {
            let bytes: [UInt8]
            do {
                let file = try OpenFile(path: checkpointPath)
                bytes = try file.read(count: try file.size, at: 0)
            } catch {
                throw LedgerError(.io, "bookie \(id): \(error)")
            }
            (index, replayFrom) = try LedgerIndex.decode(bytes, path: checkpointPath)
        }
        var entryLogs = try EntryLogger(directory: ledgerDirectory, maxFileBytes: options.entryLogFileBytes)

        // Replay the journal files the checkpoint does not cover, into the new entry log.
        let names: [String]
        do {
            names = try Files.list(journalDirectory)
        } catch {
            throw LedgerError(.io, "bookie \(id): \(error)")
        }
        let sequences = names.compactMap(Journal.sequence(of:)).sorted()
        var recovery = Recovery()
        for sequence in sequences where sequence < replayFrom {
            // Left by a checkpoint that crashed before deleting them: covered by the checkpoint.
            try? Files.remove(journalDirectory + "/" + Journal.fileName(sequence))
        }
        let replayed = sequences.filter { $0 >= replayFrom }
        for sequence in replayed {
            let path = journalDirectory + "/" + Journal.fileName(sequence)
            recovery.journalFiles += 1
            try Self.replay(
                path: path, isLast: sequence == replayed.last, index: &index, entryLogs: &entryLogs,
                recovery: &recovery)
        }
        let start = max(replayFrom, (sequences.last ?? 0) + 1)
        let log = options.log
        self.log = log
        journal = try Journal(
            directory: journalDirectory, startSequence: start, maxFileBytes: options.journalFileBytes
        ) { error in
            log(
                .error,
                "ledger-storage: bookie \(id) refuses every add from now on: its journal failed (\(error.message)); "
                    + "nothing it had not synced was acknowledged; it still serves reads and takes adds again once "
                    + "restarted")
        }
        self.recovery = recovery
        state = Mutex(State(index: index, entryLogs: entryLogs))
        if options.checkpointIntervalMilliseconds > 0 {
            startCheckpoints(every: options.checkpointIntervalMilliseconds)
        }
    }

    /// Replays one journal file into the index and entry logs.
    private static func replay(
        path: String, isLast: Bool, index: inout LedgerIndex, entryLogs: inout EntryLogger, recovery: inout Recovery
    ) throws(LedgerError) {
        let file: OpenFile
        do {
            file = try OpenFile(path: path)
        } catch {
            throw LedgerError(.io, "journal: \(error)")
        }
        var records: [JournalRecord] = []
        var cut: (offset: Int, why: String)?
        var length = 0
        do {
            try file.withMapping { raw in
                length = raw.count
                var position = 0
                while position < raw.count {
                    switch JournalRecord.decode(UnsafeRawBufferPointer(rebasing: raw[position...])) {
                    case .record(let record, let size):
                        records.append(record)
                        position += size
                    case .truncated:
                        cut = (position, "the record is cut short at the end of the file")
                        return
                    case .invalid(let why):
                        cut = (position, why)
                        return
                    }
                }
            }
        } catch {
            throw LedgerError(.io, "journal: \(error)")
        }
        if let cut {
            // A torn tail: nothing valid after the damaged record, in the last file. Anything else is corruption.
            let validLater: Bool =
                (try? file.withMapping { raw in
                    var at = cut.offset + 1
                    while at + JournalRecord.headerSize <= raw.count {
                        if raw.loadLittleEndian(UInt32.self, at: at) == JournalRecord.magic,
                            case .record = JournalRecord.decode(UnsafeRawBufferPointer(rebasing: raw[at...]))
                        {
                            return true
                        }
                        at += 1
                    }
                    return false
                }) ?? true
            guard isLast && !validLater else {
                throw LedgerError(
                    .corrupt,
                    "journal \(path) byte \(cut.offset): corrupt record (\(cut.why))"
                        + (isLast ? ", with valid records after it" : ", in a journal file that is not the last"))
            }
            do {
                try file.truncate(to: cut.offset)
                try file.syncData()
            } catch {
                throw LedgerError(.io, "journal: cannot cut the torn tail: \(error)")
            }
            recovery.tornTail = (path, cut.offset, length - cut.offset)
        }
        for record in records {
            recovery.records += 1
            // In place: a copy of the ledger's record written back would copy its entries on every record.
            switch record.kind {
            case .entry:
                guard index.ledgers[record.ledger]?.deleted != true else { continue }
                let location = try entryLogs.add(
                    ledger: record.ledger, entry: record.entry, lastAddConfirmed: record.lastAddConfirmed,
                    payload: record.payload)
                index.ledgers[record.ledger, default: LedgerRecord()].add(
                    record.entry, at: location, lastAddConfirmed: record.lastAddConfirmed)
            case .fence:
                index.ledgers[record.ledger, default: LedgerRecord()].fenced = true
            case .deleteLedger:
                index.ledgers[record.ledger, default: LedgerRecord()].deleted = true
                index.ledgers[record.ledger, default: LedgerRecord()].entries = [:]
            }
        }
    }

    // MARK: Bookie

    public func addEntry(
        ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: [UInt8], recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        var line: (level: LogLevel, text: String)?
        let refusal: LedgerError? = state.withLock { s in
            if s.stopped { return LedgerError(.stopped, "bookie \(id) is stopped") }
            guard entry >= 0 else { return LedgerError(.invalidArgument, "entry id \(entry) is negative") }
            let (deleted, fenced) = s.index.ledgers[ledger].map { ($0.deleted, $0.fenced) } ?? (false, false)
            if deleted { return LedgerError(.deleted, "ledger \(ledger) was deleted on bookie \(id)") }
            if fenced && !recovery {
                return LedgerError(.fenced, "ledger \(ledger) is fenced on bookie \(id): entry \(entry) refused")
            }
            // Before the entry log: a bookie whose journal failed writes nothing more.
            if let failure = journal.failure {
                return LedgerError(
                    failure.code, "bookie \(id) refuses adds since its journal failed: \(failure.message)")
            }
            let location: EntryLocation
            do throws(LedgerError) {
                location = try s.entryLogs.add(
                    ledger: ledger, entry: entry, lastAddConfirmed: lastAddConfirmed, payload: payload)
            } catch {
                if !s.entryLogFailing {
                    s.entryLogFailing = true
                    line = (.error, "ledger-storage: bookie \(id) refuses adds: \(error.message)")
                }
                return LedgerError(error.code, "bookie \(id) refuses adds: \(error.message)")
            }
            if s.entryLogFailing {
                s.entryLogFailing = false
                line = (.info, "ledger-storage: bookie \(id) takes adds again: its entry log is written once more")
            }
            // In place: a copy of the record written back would copy its entries on every add (O(entries)).
            s.index.ledgers[ledger, default: LedgerRecord()].add(
                entry, at: location, lastAddConfirmed: lastAddConfirmed)
            journal.append(
                JournalRecord(
                    kind: .entry, ledger: ledger, entry: entry, lastAddConfirmed: lastAddConfirmed, payload: payload)
            ) { result in completion(result.map { _ in () }) }
            return nil
        }
        if let line { log(line.level, line.text) }
        if let refusal { completion(.failure(refusal)) }
    }

    public func readEntry(
        ledger: UInt64, entry: Int64, completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void
    ) {
        completion(
            state.withLock { s -> Result<StoredEntry, LedgerError> in
                if s.stopped { return .failure(LedgerError(.stopped, "bookie \(id) is stopped")) }
                guard let record = s.index.ledgers[ledger], !record.deleted else {
                    return .failure(LedgerError(.noSuchEntry, "bookie \(id) holds no ledger \(ledger)"))
                }
                guard let location = record.entries[entry] else {
                    return .failure(
                        LedgerError(.noSuchEntry, "bookie \(id) holds no entry \(entry) of ledger \(ledger)"))
                }
                do throws(LedgerError) {
                    let (payload, lac) = try s.entryLogs.read(location, ledger: ledger, entry: entry)
                    return .success(StoredEntry(entry: entry, lastAddConfirmed: lac, payload: payload))
                } catch {
                    return .failure(error)
                }
            })
    }

    public func readTail(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
        completion(.success(tail(ledger)))
    }

    /// The tail of `ledger` now (-1, -1 for an unknown ledger).
    public func tail(_ ledger: UInt64) -> LedgerTail {
        state.withLock { s in
            let record = s.index.ledgers[ledger] ?? LedgerRecord()
            return LedgerTail(lastEntry: record.lastEntry, lastAddConfirmed: record.lastAddConfirmed)
        }
    }

    /// Whether `ledger` is fenced.
    public func isFenced(_ ledger: UInt64) -> Bool { state.withLock { $0.index.ledgers[ledger]?.fenced ?? false } }

    public func fence(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
        let refusal: LedgerError? = state.withLock { s in
            if s.stopped { return LedgerError(.stopped, "bookie \(id) is stopped") }
            var record = s.index.ledgers[ledger] ?? LedgerRecord()
            if record.deleted { return LedgerError(.deleted, "ledger \(ledger) was deleted on bookie \(id)") }
            record.fenced = true
            s.index.ledgers[ledger] = record
            let tail = LedgerTail(lastEntry: record.lastEntry, lastAddConfirmed: record.lastAddConfirmed)
            journal.append(JournalRecord(kind: .fence, ledger: ledger)) { result in
                completion(result.map { _ in tail })
            }
            return nil
        }
        if let refusal { completion(.failure(refusal)) }
    }

    public func deleteLedger(ledger: UInt64, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void) {
        let refusal: LedgerError? = state.withLock { s in
            if s.stopped { return LedgerError(.stopped, "bookie \(id) is stopped") }
            var record = s.index.ledgers[ledger] ?? LedgerRecord()
            record.deleted = true
            record.entries = [:]
            s.index.ledgers[ledger] = record
            journal.append(JournalRecord(kind: .deleteLedger, ledger: ledger)) { result in
                completion(result.map { _ in () })
            }
            return nil
        }
        if let refusal { completion(.failure(refusal)) }
    }

    // MARK: Checkpoints, garbage collection, statistics

    /// What a checkpoint did.
    public struct CheckpointResult: Sendable, Equatable {
        /// The first journal file the new checkpoint does not cover.
        public var journalFile: UInt64
        /// Journal files deleted.
        public var journalFilesDeleted: Int
        /// Entry-log files deleted because no live ledger has entries in them.
        public var entryLogsDeleted: Int
    }

    /// Makes the entry logs durable, writes the index as of a journal roll to the checkpoint file, deletes the
    /// journal files it covers, then deletes entry-log files in which no live (undeleted) ledger has an entry.
    /// Adds keep flowing meanwhile. At most one checkpoint runs at a time (a second call returns `nil`).
    @discardableResult
    public func checkpoint() throws(LedgerError) -> CheckpointResult? {
        let rolled = DispatchSemaphore(value: 0)
        let rollResult = Mutex<Result<UInt64, LedgerError>?>(nil)
        let taken: (index: LedgerIndex, log: UInt64)? = state.withLock { s in
            guard !s.stopped, !s.checkpointing else { return nil }
            s.checkpointing = true
            // Same critical section as the adds: what the snapshot holds went to journal files below the roll,
            // and every later add goes to the current entry log or a later one.
            journal.roll { result in
                rollResult.withLock { $0 = result }
                rolled.signal()
            }
            return (s.index, s.entryLogs.current)
        }
        guard let (snapshot, currentLog) = taken else { return nil }
        defer { state.withLock { $0.checkpointing = false } }
        rolled.wait()
        let replayFrom = try rollResult.withLock { $0! }.get()
        // The entry logs' buffer is written under the lock, their fdatasync runs outside it: a sync of seconds
        // of adds can take hundreds of milliseconds, and adds must not wait for it.
        let written = try state.withLock { s throws(LedgerError) in try s.entryLogs.takeUnsynced() }
        do throws(LedgerError) {
            try EntryLogger.sync(written)
        } catch {
            state.withLock { $0.entryLogs.markUnsynced(written.map(\.number)) }
            throw error
        }
        do {
            try Files.replace(
                ledgerDirectory + "/" + LedgerIndex.fileName, with: snapshot.encoded(replayFrom: replayFrom),
                directory: ledgerDirectory, sync: true)
        } catch {
            throw LedgerError(.io, "bookie \(id): cannot write the checkpoint: \(error)")
        }
        var result = CheckpointResult(journalFile: replayFrom, journalFilesDeleted: 0, entryLogsDeleted: 0)
        do {
            for name in try Files.list(journalDirectory) {
                guard let sequence = Journal.sequence(of: name), sequence < replayFrom else { continue }
                try Files.remove(journalDirectory + "/" + name)
                result.journalFilesDeleted += 1
            }
        } catch {
            throw LedgerError(.io, "bookie \(id): \(error)")
        }
        // Garbage: entry logs older than the one current at the snapshot that no entry of the snapshot names
        // (later adds went to that one or later ones). Found outside the lock: the index may be large.
        let kept = snapshot.referencedLogs
        let garbage = try state.withLock { s throws(LedgerError) in try s.entryLogs.existingNumbers() }
            .filter { $0 < currentLog && !kept.contains($0) }
        result.entryLogsDeleted = try state.withLock { s throws(LedgerError) in
            for number in garbage { try s.entryLogs.remove(number) }
            return garbage.count
        }
        return result
    }

    private func startCheckpoints(every milliseconds: Int) {
        checkpointsRunning.withLock { $0 = true }
        let thread = Thread { [self] in
            while endCheckpoints.wait(timeout: .now() + .milliseconds(milliseconds)) == .timedOut {
                _ = try? checkpoint()
            }
            checkpointsEnded.signal()
        }
        thread.name = "ledger-checkpoint"
        thread.start()
    }

    /// The journal's group-commit counters.
    public var journalStatistics: Journal.Statistics { journal.currentStatistics }

    /// Stops the bookie: the periodic checkpoints end, everything already enqueued is made durable, later
    /// calls fail with `.stopped`. With `checkpoint`, a last checkpoint first (the next open replays nothing).
    public func stop(checkpoint: Bool = true) {
        let running = checkpointsRunning.withLock { running in
            defer { running = false }
            return running
        }
        if running {
            endCheckpoints.signal()
            checkpointsEnded.wait()
        }
        if checkpoint { _ = try? self.checkpoint() }
        state.withLock { $0.stopped = true }
        journal.stop()
    }
}
