import Foundation
import StorageIO
import Synchronization

/// The bookie's write-ahead journal: numbered files of `JournalRecord`s, group-committed by one flusher thread.
///
/// Writers enqueue records (`append`); the flusher takes everything pending, writes it with one gather write,
/// makes it durable with one `fdatasync`, then completes every record of the batch, in order. It blocks on a
/// semaphore while nothing is pending (it never sleeps on a timer) and, while one sync runs, the records that
/// arrive wait for the next batch: under load the batches grow by themselves, idle a record is synced at once.
///
/// A file is closed (synced) and the next one started when it passes `maxFileBytes`, and on `roll`, which a
/// checkpoint uses: every record enqueued before the roll lies in files numbered below the one it returns.
///
/// - Important: `append` and `roll` may be called from any thread; completions run on the flusher thread and
///   must not block.
public final class Journal: Sendable {
    /// One queued item: a record's bytes (empty for a roll) and what to call once it is durable.
    private struct Item {
        var bytes: [UInt8]
        var roll: Bool
        var completion: @Sendable (Result<UInt64, LedgerError>) -> Void
    }

    private struct Queue {
        var pending: [Item] = []
        var flusherIdle = true
        var stopping = false
        var failure: LedgerError?
    }

    /// The flusher's own state: touched only by the flusher thread (and by `init` before it starts).
    private final class FlusherState: @unchecked Sendable {
        // Safe: only the flusher thread uses it after `init` hands it over.
        var file: OpenFile
        var sequence: UInt64
        var offset: Int
        init(file: OpenFile, sequence: UInt64, offset: Int) {
            self.file = file
            self.sequence = sequence
            self.offset = offset
        }
    }

    public let directory: String
    public let maxFileBytes: Int
    /// Called once, on the flusher thread, when a write, sync or file creation fails (the journal refuses
    /// everything from then on).
    private let onFailure: @Sendable (LedgerError) -> Void
    private let queue = Mutex(Queue())
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    private let flusher: FlusherState
    private let statistics = Mutex(Statistics())

    /// Counters of the group commit.
    public struct Statistics: Sendable, Equatable {
        /// `fdatasync` calls that completed records.
        public var syncs: UInt64 = 0
        /// Records made durable.
        public var records: UInt64 = 0
        /// Bytes written.
        public var bytes: UInt64 = 0
    }

    /// The name of journal file `sequence`.
    public static func fileName(_ sequence: UInt64) -> String { "journal-" + hex16(sequence) + ".jnl" }

    /// The sequence number in a journal file's name, `nil` for another name.
    public static func sequence(of name: String) -> UInt64? {
        guard name.hasPrefix("journal-"), name.hasSuffix(".jnl"), name.count == 8 + 16 + 4 else { return nil }
        return UInt64(name.dropFirst(8).prefix(16), radix: 16)
    }

    /// Starts a journal writing a new file `sequence` in `directory` (which must not hold it yet).
    /// - Parameters:
    ///   - onFailure: called once, on the flusher thread, with the first failure of a write, sync or file
    ///     creation; it must not block nor call back into the journal.
    /// - Throws: `LedgerError` (`.io`) when the file cannot be created.
    public init(
        directory: String, startSequence sequence: UInt64, maxFileBytes: Int,
        onFailure: @escaping @Sendable (LedgerError) -> Void = { _ in }
    ) throws(LedgerError) {
        self.directory = directory
        self.maxFileBytes = maxFileBytes
        self.onFailure = onFailure
        flusher = FlusherState(file: try Self.create(directory, sequence), sequence: sequence, offset: 0)
        let thread = Thread { [self] in self.run() }
        thread.name = "ledger-journal"
        thread.start()
    }

    private static func create(_ directory: String, _ sequence: UInt64) throws(LedgerError) -> OpenFile {
        let path = directory + "/" + fileName(sequence)
        do {
            let file = try OpenFile(path: path, create: true)
            try Files.syncDirectory(directory)
            return file
        } catch {
            throw LedgerError(.io, "journal: cannot create \(path): \(error)")
        }
    }

    /// Enqueues a record; `completion` gets the number of the file it went into once it is durable (or the
    /// failure of the write or sync, after which the journal refuses everything).
    public func append(
        _ record: JournalRecord, completion: @escaping @Sendable (Result<UInt64, LedgerError>) -> Void
    ) {
        enqueue(Item(bytes: record.encoded(), roll: false, completion: completion))
    }

    /// Closes the current file once everything enqueued so far is durable and starts the next one;
    /// `completion` gets the new file's number: every record enqueued before this call is in a lower one.
    public func roll(completion: @escaping @Sendable (Result<UInt64, LedgerError>) -> Void) {
        enqueue(Item(bytes: [], roll: true, completion: completion))
    }

    public var currentStatistics: Statistics { statistics.withLock { $0 } }

    /// The failure after which the journal refuses everything (nil while it works).
    public var failure: LedgerError? { queue.withLock { $0.failure } }

    private func enqueue(_ item: Item) {
        let refusal: LedgerError? = queue.withLock { q in
            if let failure = q.failure { return failure }
            if q.stopping { return LedgerError(.stopped, "journal: \(directory) is stopped") }
            q.pending.append(item)
            if q.flusherIdle {
                q.flusherIdle = false
                wake.signal()
            }
            return nil
        }
        if let refusal { item.completion(.failure(refusal)) }
    }

    /// Stops the flusher after it has made everything enqueued durable; later appends fail with `.stopped`.
    public func stop() {
        let wasRunning = queue.withLock { q in
            if q.stopping { return false }
            q.stopping = true
            if q.flusherIdle {
                q.flusherIdle = false
                wake.signal()
            }
            return true
        }
        if wasRunning { finished.wait() }
    }

    private func run() {
        while true {
            wake.wait()
            while true {
                let (batch, stopping) = queue.withLock { q -> ([Item], Bool) in
                    let batch = q.pending
                    q.pending = []
                    if batch.isEmpty { q.flusherIdle = true }
                    return (batch, q.stopping)
                }
                if batch.isEmpty {
                    if stopping {
                        finished.signal()
                        return
                    }
                    break
                }
                flush(batch)
            }
        }
    }

    /// Writes a batch, syncs it once, completes it.
    private func flush(_ batch: [Item]) {
        var results: [Result<UInt64, LedgerError>] = []
        results.reserveCapacity(batch.count)
        var syncs: UInt64 = 0
        var written = 0
        var failed = false
        do throws(LedgerError) {
            var run: [UInt8] = []
            var runItems = 0
            func writeRun() throws(LedgerError) {
                guard !run.isEmpty else { return }
                do {
                    try flusher.file.write(run, at: flusher.offset)
                } catch {
                    throw LedgerError(.io, "journal: \(error)")
                }
                flusher.offset += run.count
                written += run.count
                run.removeAll(keepingCapacity: true)
                for _ in 0..<runItems { results.append(.success(flusher.sequence)) }
                runItems = 0
            }
            for item in batch {
                if item.roll || flusher.offset + run.count >= maxFileBytes {
                    try writeRun()
                    try sync()
                    syncs += 1
                    let next = flusher.sequence + 1
                    flusher.file = try Self.create(directory, next)
                    flusher.sequence = next
                    flusher.offset = 0
                }
                if item.roll {
                    // Completed only after the batch's final sync, like every other item.
                    results.append(.success(flusher.sequence))
                    continue
                }
                run.append(contentsOf: item.bytes)
                runItems += 1
            }
            try writeRun()
            try sync()
            syncs += 1
        } catch {
            let first = queue.withLock { q in
                defer { q.failure = q.failure ?? error }
                return q.failure == nil
            }
            failed = true
            if first { onFailure(error) }
            while results.count < batch.count { results.append(.failure(error)) }
            // Earlier items of the batch were written but the sync covering them may not have run: fail them all.
            results = results.map { _ in .failure(error) }
        }
        statistics.withLock { s in
            s.syncs += syncs
            // Only records made durable: a failed batch completed none.
            s.records += failed ? 0 : UInt64(batch.count)
            s.bytes += UInt64(written)
        }
        for (item, result) in zip(batch, results) { item.completion(result) }
    }

    private func sync() throws(LedgerError) {
        do {
            try flusher.file.syncData()
        } catch {
            throw LedgerError(.io, "journal: \(error)")
        }
    }
}

/// `value` as 16 lowercase hexadecimal digits.
func hex16(_ value: UInt64) -> String {
    let digits = String(value, radix: 16)
    return String(repeating: "0", count: max(0, 16 - digits.count)) + digits
}
