import Foundation
import Synchronization
import Testing

@testable import LedgerCore

/// The ledger client's quorum logic against in-memory bookies: striping, completion order under
/// out-of-order acknowledgements, failing bookies, fencing and recovery.
@Suite("Ledger client")
struct LedgerClientTests {
    static func payload(_ entry: Int) -> [UInt8] { Array("entry-\(entry)".utf8) }

    @Test("E >= Qw >= Qa >= 1 is enforced")
    func quorumConfig() throws {
        #expect(throws: LedgerError.self) { try QuorumConfig(ensembleSize: 2, writeQuorum: 3, ackQuorum: 1) }
        #expect(throws: LedgerError.self) { try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 3) }
        #expect(throws: LedgerError.self) { try QuorumConfig(ensembleSize: 1, writeQuorum: 1, ackQuorum: 0) }
        let config = try QuorumConfig(ensembleSize: 5, writeQuorum: 3, ackQuorum: 2)
        #expect(config.writeSet(0) == [0, 1, 2])
        #expect(config.writeSet(4) == [4, 0, 1])
        #expect(config.writeSet(7) == [2, 3, 4])
    }

    @Test("entry e is striped to the Qw bookies from e mod E, and each carries the LAC")
    func striping() throws {
        let bookies = (0..<3).map { FakeBookie("b\($0)") }
        let writer = try LedgerWriter(
            ledger: 7, ensemble: bookies, config: try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2))
        let completed = Recorder<Int64>()
        for entry in 0..<6 {
            writer.append(Self.payload(entry)) { if case .success(let id) = $0 { completed.record(id) } }
        }
        #expect(completed.values == [0, 1, 2, 3, 4, 5])
        #expect(bookies[0].stored(7) == [0, 2, 3, 5])
        #expect(bookies[1].stored(7) == [0, 1, 3, 4])
        #expect(bookies[2].stored(7) == [1, 2, 4, 5])
        // With synchronous acknowledgements entry e is sent when e - 1 has completed: LAC e - 1.
        let entry4 = bookies[1].state.withLock { $0.entries[7]![4]! }
        #expect(entry4.lastAddConfirmed == 3)
        #expect(writer.lastAddConfirmed == 5)
    }

    @Test("an add completes only with Qa acknowledgements and after every earlier entry, whatever the ack order")
    func outOfOrderAcknowledgements() throws {
        let bookies = (0..<3).map { FakeBookie("b\($0)") }
        for bookie in bookies { bookie.hold = true }
        let writer = try LedgerWriter(
            ledger: 1, ensemble: bookies, config: try QuorumConfig(ensembleSize: 3, writeQuorum: 3, ackQuorum: 2))
        let completed = Recorder<Int64>()
        for entry in 0..<3 {
            writer.append(Self.payload(entry)) { if case .success(let id) = $0 { completed.record(id) } }
        }
        // Every entry was sent with LAC -1 (nothing had completed).
        #expect(bookies[0].state.withLock { $0.entries[1]!.values.map(\.lastAddConfirmed) } == [-1, -1, -1])
        // Entry 2 reaches its quorum first: nothing completes.
        bookies[0].release(2)
        bookies[1].release(2)
        #expect(completed.values.isEmpty)
        // Entry 1 too: still nothing, entry 0 is missing.
        bookies[2].release(1)
        bookies[0].release(1)
        #expect(completed.values.isEmpty)
        #expect(writer.lastAddConfirmed == -1)
        // One ack for entry 0 is not a quorum.
        bookies[1].release(0)
        #expect(completed.values.isEmpty)
        // The second: 0, 1 and 2 complete, in order.
        bookies[2].release(0)
        #expect(completed.values == [0, 1, 2])
        #expect(writer.lastAddConfirmed == 2)
        #expect(writer.pendingCount == 0)
    }

    @Test("a failing bookie: ignored while Qa can still be reached, fatal for the entry and its successors after")
    func failingBookie() throws {
        // E 3, Qw 3, Qa 2: one broken bookie leaves two acknowledgements per entry.
        let tolerant = (0..<3).map { FakeBookie("b\($0)") }
        tolerant[1].failAdds = true
        let writer = try LedgerWriter(
            ledger: 2, ensemble: tolerant, config: try QuorumConfig(ensembleSize: 3, writeQuorum: 3, ackQuorum: 2))
        let completed = Recorder<Result<Int64, LedgerError>>()
        for entry in 0..<4 { writer.append(Self.payload(entry)) { completed.record($0) } }
        #expect(completed.values.compactMap { try? $0.get() } == [0, 1, 2, 3])

        // E 3, Qw 2, Qa 2: entries striped onto the broken bookie cannot be acknowledged.
        let strict = (0..<3).map { FakeBookie("s\($0)") }
        for bookie in strict { bookie.hold = true }
        let strictWriter = try LedgerWriter(
            ledger: 3, ensemble: strict, config: try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2))
        let results = Recorder<Result<Int64, LedgerError>>()
        // Entry 0 → b0, b1; entry 1 → b1, b2; entry 2 → b2, b0.
        strictWriter.append(Self.payload(0)) { results.record($0) }
        strict[2].failAdds = true
        strictWriter.append(Self.payload(1)) { results.record($0) }
        strictWriter.append(Self.payload(2)) { results.record($0) }
        // Entry 1 failed on s2, so the writer refused entry 2 at once; entry 0 waits for its acknowledgements.
        #expect(results.values.count == 1)
        strict[0].release(0)
        strict[1].release(0)
        let values = results.values
        #expect(values.count == 3)
        #expect(values.compactMap { try? $0.get() } == [0], "entry 0 precedes the failed entry: it completes")
        let failures = values.compactMap { result -> LedgerError? in
            if case .failure(let error) = result { return error }
            return nil
        }
        #expect(failures.count == 2)
        for error in failures { #expect(error.code == .io && error.message.contains("bookie s2"), "\(error)") }
        // The writer takes no more adds.
        let later = outcome { strictWriter.append(Self.payload(3), completion: $0) }
        #expect(throws: LedgerError.self) { try later.get() }
        #expect(strictWriter.lastAddConfirmed == 0)
    }

    @Test("ensemble change: a failed bookie's acknowledgements are withdrawn, its entries re-sent to a replacement")
    func ensembleChange() throws {
        let bookies = (0..<4).map { FakeBookie("b\($0)") }
        for bookie in bookies { bookie.hold = true }
        let config = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        let requests = Recorder<EnsembleChangeRequest>()
        let writer = try LedgerWriter(
            ledger: 1, ensemble: Array(bookies[0..<3]), config: config,
            ensembleChange: { request, completion in
                requests.record(request)
                var ensemble: [any Bookie] = Array(bookies[0..<3])
                for position in request.failed.keys { ensemble[position] = bookies[3] }
                completion(.success(ensemble))
            })
        let completed = Recorder<Result<Int64, LedgerError>>()
        // Entry 0 → b0, b1; entry 1 → b1, b2; entry 2 → b2, b0; entry 3 → b0, b1.
        for entry in 0..<3 { writer.append(Self.payload(entry)) { completed.record($0) } }
        bookies[0].release(0)
        bookies[1].release(0)
        #expect(completed.values.compactMap { try? $0.get() } == [0])
        bookies[1].release(1)  // b1 acknowledges entry 1, then breaks
        bookies[1].failAdds = true
        writer.append(Self.payload(3)) { completed.record($0) }
        let deadline = ContinuousClock.now + .seconds(10)
        while writer.ensembleChanges == 0 && ContinuousClock.now < deadline { usleep(1000) }
        #expect(writer.ensembleChanges == 1)
        #expect(requests.values.map(\.firstEntry) == [1], "the new fragment starts after the LAC")
        #expect(requests.values.map { Array($0.failed.keys) } == [[1]])
        #expect(writer.fragments.map(\.firstEntry) == [0, 1])
        #expect(writer.ensemble.map(\.id) == ["b0", "b3", "b2"])
        // b1's acknowledgement of entry 1 was withdrawn: b2's alone is not a quorum.
        bookies[2].release(1)
        #expect(completed.values.count == 1)
        // Entries 1 and 3, not completed and striped to position 1, were re-sent to b3.
        #expect(bookies[3].heldEntries.sorted() == [1, 3])
        bookies[3].release(1)
        bookies[2].release(2)
        bookies[0].release(2)
        bookies[0].release(3)
        bookies[3].release(3)
        #expect(completed.values.compactMap { try? $0.get() } == [0, 1, 2, 3])
        // Later entries go to the replacement, never to b1.
        for bookie in bookies { bookie.hold = false }
        writer.append(Self.payload(4)) { completed.record($0) }
        #expect(completed.values.compactMap { try? $0.get() } == [0, 1, 2, 3, 4])
        #expect(bookies[3].stored(1).contains(4) && !bookies[1].adds.contains { $0.entry == 4 })
    }

    @Test("ensemble change without a replacement: entries not completed fail, completed ones stay")
    func ensembleChangeWithoutReplacement() throws {
        let bookies = (0..<3).map { FakeBookie("b\($0)") }
        let config = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        let writer = try LedgerWriter(
            ledger: 1, ensemble: bookies, config: config,
            ensembleChange: { request, completion in
                completion(.failure(LedgerError(.notEnoughBookies, "no bookie outside the ensemble")))
            })
        let completed = Recorder<Result<Int64, LedgerError>>()
        writer.append(Self.payload(0)) { completed.record($0) }
        bookies[2].failAdds = true
        writer.append(Self.payload(1)) { completed.record($0) }
        let deadline = ContinuousClock.now + .seconds(10)
        while completed.values.count < 2 && ContinuousClock.now < deadline { usleep(1000) }
        #expect(completed.values.compactMap { try? $0.get() } == [0])
        guard case .failure(let error) = completed.values.last else {
            Issue.record("entry 1 completed without its quorum")
            return
        }
        #expect(error.code == .notEnoughBookies && error.message.contains("b2"), "\(error)")
        #expect(writer.lastAddConfirmed == 0)
        #expect(writer.failure != nil)
    }

    @Test("recovery fences, keeps every entry some bookie has (re-replicating it to Qa) and ends at the first missing")
    func recovery() throws {
        let bookies = (0..<3).map { FakeBookie("b\($0)") }
        let config = try QuorumConfig(ensembleSize: 3, writeQuorum: 3, ackQuorum: 2)
        // Entries 0-2 on every bookie (acknowledged, LAC 1 carried by entry 2); entry 3 reached only b2 before
        // the writer died.
        for entry in 0..<3 {
            for bookie in bookies { bookie.put(9, Int64(entry), lac: Int64(entry) - 1, Self.payload(entry)) }
        }
        bookies[2].put(9, 3, lac: 2, Self.payload(3))
        let last = try waitFor { LedgerRecovery.recover(ledger: 9, ensemble: bookies, config: config, completion: $0) }
        #expect(last == 3)
        // Entry 3 was written again, as a recovery add, to the bookies that lacked it.
        #expect(bookies[0].stored(9).contains(3) && bookies[1].stored(9).contains(3))
        #expect(bookies[0].adds.contains { $0.entry == 3 && $0.recovery })
        // Every bookie is fenced: the old writer's adds fail.
        let zombie = try LedgerWriter(ledger: 9, ensemble: bookies, config: config, lastAddConfirmed: 3)
        let refused = outcome { zombie.append(Self.payload(4), completion: $0) }
        guard case .failure(let error) = refused else {
            Issue.record("an add to a fenced ledger succeeded")
            return
        }
        #expect(error.code == .fenced)
    }

    @Test("recovery replaces a bookie that fails its recovery adds; without a replacement it cannot close")
    func recoveryReplacesBookie() throws {
        let bookies = (0..<3).map { FakeBookie("b\($0)") }
        let spare = FakeBookie("b3")
        let config = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 2)
        // Entries 0-5 were acknowledged (entry e on b(e mod 3) and b(e+1 mod 3)); b2 then lost its disk with
        // the writer: it answers fences but holds nothing and refuses every add. Entry 5 carries LAC 3.
        for entry in 0..<6 {
            for position in config.writeSet(Int64(entry)) where position != 2 {
                bookies[position].put(9, Int64(entry), lac: Int64(entry) - 2, Self.payload(entry))
            }
        }
        bookies[2].failAdds = true
        let without = outcome { LedgerRecovery.recover(ledger: 9, ensemble: bookies, config: config, completion: $0) }
        guard case .failure(let error) = without else {
            Issue.record("recovery closed with entry 4 on one bookie, below Qa")
            return
        }
        #expect(error.code == .notEnoughBookies && error.message.contains("entry 4"), "\(error)")

        let excludedSeen = Mutex<Set<String>>([])
        let recovered = try waitFor {
            LedgerRecovery.recover(
                ledger: 9, ensemble: bookies, config: config,
                replacement: { excluded in
                    excludedSeen.withLock { $0 = excluded }
                    return excluded.contains("b3") ? nil : spare
                }, completion: $0)
        }
        #expect(recovered.lastEntry == 5)
        #expect(excludedSeen.withLock { $0 } == ["b0", "b1", "b2"])
        // From entry 4 (the first whose add to b2 failed) the tail is on b0, b1 and the spare in b2's place.
        let fragment = try #require(recovered.fragment)
        #expect(fragment.firstEntry == 4 && fragment.ensemble.map(\.id) == ["b0", "b1", "b3"])
        // Entries 4 and 5 (write sets {b1, b2} and {b2, b0}) are on the spare as recovery adds: full write quorum.
        #expect(spare.stored(9) == [4, 5])
        let spareAdds = spare.adds
        #expect(spareAdds.allSatisfy { $0.recovery })
        let reader = LedgerReader(
            ledger: 9,
            fragments: [
                BookieFragment(firstEntry: 0, ensemble: bookies),
                BookieFragment(firstEntry: 4, ensemble: [bookies[0], bookies[1], spare]),
            ], config: config)
        for entry in 0..<6 {
            #expect(try waitFor { reader.read(Int64(entry), completion: $0) }.payload == Self.payload(entry))
        }
    }

    @Test("recovery refuses when too few bookies can be fenced")
    func recoveryNeedsFences() throws {
        final class Unreachable: Bookie {
            let id = "down"
            func addEntry(
                ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: [UInt8], recovery: Bool,
                completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
            ) { completion(.failure(LedgerError(.io, "down"))) }
            func readEntry(
                ledger: UInt64, entry: Int64, completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void
            ) { completion(.failure(LedgerError(.io, "down"))) }
            func readTail(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
                completion(.failure(LedgerError(.io, "down")))
            }
            func fence(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
                completion(.failure(LedgerError(.io, "down")))
            }
            func deleteLedger(ledger: UInt64, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void) {
                completion(.failure(LedgerError(.io, "down")))
            }
        }
        // E 3, Qw 3, Qa 2: fencing needs 2 of every write set; one bookie up is not enough.
        let ensemble: [any Bookie] = [FakeBookie("up"), Unreachable(), Unreachable()]
        let config = try QuorumConfig(ensembleSize: 3, writeQuorum: 3, ackQuorum: 2)
        let result = outcome { LedgerRecovery.recover(ledger: 1, ensemble: ensemble, config: config, completion: $0) }
        guard case .failure(let error) = result else {
            Issue.record("recovery succeeded with one bookie of three")
            return
        }
        #expect(error.code == .notEnoughBookies)
        // Two of three fenced is enough.
        let enough: [any Bookie] = [FakeBookie("a"), FakeBookie("b"), Unreachable()]
        #expect(
            (try? outcome { LedgerRecovery.recover(ledger: 1, ensemble: enough, config: config, completion: $0) }.get())
                == -1)
    }

    @Test("a reader reads each entry from its write set, falling back past a bookie without it")
    func reader() throws {
        let bookies = (0..<3).map { FakeBookie("b\($0)") }
        let config = try QuorumConfig(ensembleSize: 3, writeQuorum: 2, ackQuorum: 1)
        bookies[2].put(4, 1, lac: 0, Self.payload(1))  // entry 1's write set is b1, b2: only b2 has it
        bookies[0].put(4, 0, lac: -1, Self.payload(0))
        let reader = LedgerReader(ledger: 4, ensemble: bookies, config: config)
        #expect(try waitFor { reader.read(1, completion: $0) }.payload == Self.payload(1))
        #expect(try waitFor { reader.read(0, completion: $0) }.payload == Self.payload(0))
        let missing = outcome { reader.read(2, completion: $0) }
        #expect(throws: LedgerError.self) { try missing.get() }
        #expect(try waitFor { reader.readLastAddConfirmed(completion: $0) } == 0)
    }
}
