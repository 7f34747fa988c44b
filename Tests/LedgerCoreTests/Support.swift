import Foundation
import Synchronization
import Testing

@testable import LedgerCore

/// A fresh temporary directory, removed by `remove()`.
struct TemporaryDirectory {
    let path: String

    init() {
        path = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-core-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }

    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// Waits for a completion-style call's result without throwing it.
func outcome<T: Sendable>(_ call: (@escaping @Sendable (Result<T, LedgerError>) -> Void) -> Void) -> Result<
    T, LedgerError
> {
    do {
        return .success(try waitFor(call))
    } catch {
        return .failure(error)
    }
}

/// Collects results delivered to completions, in the order they came.
final class Recorder<T: Sendable>: Sendable {
    private let results = Mutex<[T]>([])

    func record(_ value: T) { results.withLock { $0.append(value) } }

    var values: [T] { results.withLock { $0 } }
}

/// An in-memory bookie for the client's unit tests: entries in a dictionary, fencing like a real bookie, and
/// two knobs: `hold` keeps add acknowledgements until `release` sends them (in any order the test chooses);
/// `failAdds` fails every add with an I/O error (a broken bookie).
final class FakeBookie: Bookie {
    struct State {
        var entries: [UInt64: [Int64: StoredEntry]] = [:]
        var fenced: Set<UInt64> = []
        var held: [(ledger: UInt64, entry: Int64, completion: @Sendable (Result<Void, LedgerError>) -> Void)] = []
        var hold = false
        var failAdds = false
        var adds: [(ledger: UInt64, entry: Int64, recovery: Bool)] = []
    }

    let id: String
    let state = Mutex(State())

    init(_ id: String) { self.id = id }

    var hold: Bool {
        get { state.withLock { $0.hold } }
        set { state.withLock { $0.hold = newValue } }
    }

    var failAdds: Bool {
        get { state.withLock { $0.failAdds } }
        set { state.withLock { $0.failAdds = newValue } }
    }

    /// The entries of `ledger` this bookie stores.
    func stored(_ ledger: UInt64) -> [Int64] { state.withLock { ($0.entries[ledger] ?? [:]).keys.sorted() } }

    /// Every add it received: (ledger, entry, recovery).
    var adds: [(ledger: UInt64, entry: Int64, recovery: Bool)] { state.withLock { $0.adds } }

    /// Stores an entry directly (a test's setup of what survived a crash).
    func put(_ ledger: UInt64, _ entry: Int64, lac: Int64, _ payload: [UInt8]) {
        state.withLock {
            $0.entries[ledger, default: [:]][entry] = StoredEntry(entry: entry, lastAddConfirmed: lac, payload: payload)
        }
    }

    /// Acknowledges the held add of `entry` (success).
    func release(_ entry: Int64) {
        let completion = state.withLock { s -> (@Sendable (Result<Void, LedgerError>) -> Void)? in
            guard let index = s.held.firstIndex(where: { $0.entry == entry }) else { return nil }
            return s.held.remove(at: index).completion
        }
        completion?(.success(()))
    }

    var heldEntries: [Int64] { state.withLock { $0.held.map(\.entry) } }

    func addEntry(
        ledger: UInt64, entry: Int64, lastAddConfirmed: Int64, payload: [UInt8], recovery: Bool,
        completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void
    ) {
        let immediate: Result<Void, LedgerError>? = state.withLock { s in
            s.adds.append((ledger, entry, recovery))
            if s.failAdds { return .failure(LedgerError(.io, "bookie \(id) is broken")) }
            if s.fenced.contains(ledger) && !recovery {
                return .failure(LedgerError(.fenced, "ledger \(ledger) is fenced on \(id)"))
            }
            s.entries[ledger, default: [:]][entry] = StoredEntry(
                entry: entry, lastAddConfirmed: lastAddConfirmed, payload: payload)
            if s.hold {
                s.held.append((ledger, entry, completion))
                return nil
            }
            return .success(())
        }
        if let immediate { completion(immediate) }
    }

    func readEntry(
        ledger: UInt64, entry: Int64, completion: @escaping @Sendable (Result<StoredEntry, LedgerError>) -> Void
    ) {
        let found = state.withLock { $0.entries[ledger]?[entry] }
        completion(found.map { .success($0) } ?? .failure(LedgerError(.noSuchEntry, "\(id) has no \(ledger)/\(entry)")))
    }

    func readTail(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
        completion(.success(tail(ledger)))
    }

    func tail(_ ledger: UInt64) -> LedgerTail {
        state.withLock { s in
            let entries = s.entries[ledger] ?? [:]
            return LedgerTail(
                lastEntry: entries.keys.max() ?? -1,
                lastAddConfirmed: entries.values.map(\.lastAddConfirmed).max() ?? -1)
        }
    }

    func fence(ledger: UInt64, completion: @escaping @Sendable (Result<LedgerTail, LedgerError>) -> Void) {
        state.withLock { _ = $0.fenced.insert(ledger) }
        completion(.success(tail(ledger)))
    }

    func deleteLedger(ledger: UInt64, completion: @escaping @Sendable (Result<Void, LedgerError>) -> Void) {
        state.withLock { $0.entries[ledger] = nil }
        completion(.success(()))
    }
}
