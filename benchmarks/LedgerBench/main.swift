// The ledger bookie benchmark (make bench-ledger): one bookie's journal against a raw pwrite+fdatasync loop
// writing the same bytes per sync, in the same run, on the same disk.
//
// Bookie: C writers each add a SIZE-byte entry and send the next when it completes (a closed loop), for
// SECONDS; the journal group-commits whatever is pending at each fdatasync. Measured: entries/s, syncs,
// bytes per sync.
// Raw: one thread appends exactly the bookie's average bytes per sync with one pwrite, then fdatasyncs, for
// SECONDS: the disk's rate at that grouping with no queueing, copying, entry log or completions. The ratio
// bookie/raw (entries per second, counting the raw loop's bytes as entries of the same size) is what the
// journal's machinery costs at equal grouping.
import Dispatch
import Foundation
import LedgerCore
import StorageIO
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

struct Options {
    var directory = FileManager.default.temporaryDirectory.path
    var seconds = 3.0
    var size = 1024
    var concurrency = [1, 16, 64]

    init(_ arguments: [String]) {
        var i = 1
        while i + 1 < arguments.count {
            let value = arguments[i + 1]
            switch arguments[i] {
            case "--dir": directory = value
            case "--seconds": seconds = Double(value) ?? seconds
            case "--size": size = Int(value) ?? size
            case "--concurrency": concurrency = value.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
            default: break
            }
            i += 2
        }
    }
}

/// A fresh directory under `base`, removed by `remove()`.
struct Scratch {
    let path: String
    init(_ base: String, _ name: String) throws {
        path = base + "/plexus-bench-ledger-\(name)-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }
}

struct BookieRun {
    var entries: UInt64
    var seconds: Double
    var syncs: UInt64
    var bytes: UInt64
    var perSecond: Double { Double(entries) / seconds }
    var bytesPerSync: Double { syncs == 0 ? 0 : Double(bytes) / Double(syncs) }
}

/// C closed-loop writers against one bookie for `seconds`.
func runBookie(_ options: Options, concurrency: Int) throws -> BookieRun {
    let scratch = try Scratch(options.directory, "bookie")
    defer { scratch.remove() }
    let bookie = try LocalBookie(id: "bench", directory: scratch.path)
    let payload = [UInt8](repeating: 0x5A, count: options.size)
    let completed = Atomic<UInt64>(0)
    let stopping = Atomic<Bool>(false)
    let finished = DispatchGroup()
    let before = bookie.journalStatistics
    let start = ContinuousClock.now
    /// One writer: each completion sends its next entry until the run stops.
    final class Writer: Sendable {
        let ledger: UInt64
        let next = Atomic<Int64>(0)
        init(ledger: UInt64) { self.ledger = ledger }
    }
    @Sendable func send(_ writer: Writer) {
        let entry = writer.next.add(1, ordering: .relaxed).oldValue
        bookie.addEntry(
            ledger: writer.ledger, entry: entry, lastAddConfirmed: entry - 1, payload: payload, recovery: false
        ) {
            result in
            if case .success = result { completed.add(1, ordering: .relaxed) }
            if stopping.load(ordering: .relaxed) || (try? result.get()) == nil {
                finished.leave()
            } else {
                send(writer)
            }
        }
    }
    for index in 0..<concurrency {
        finished.enter()
        send(Writer(ledger: UInt64(index + 1)))
    }
    Thread.sleep(forTimeInterval: options.seconds)
    stopping.store(true, ordering: .relaxed)
    finished.wait()
    let elapsed = ContinuousClock.now - start
    let after = bookie.journalStatistics
    bookie.stop(checkpoint: false)
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return BookieRun(
        entries: completed.load(ordering: .relaxed), seconds: seconds, syncs: after.syncs - before.syncs,
        bytes: after.bytes - before.bytes)
}

/// A raw loop: `bytesPerSync` bytes with one pwrite, then fdatasync, for `seconds`. Returns syncs per second.
func runRaw(_ options: Options, bytesPerSync: Int) throws -> (syncsPerSecond: Double, syncs: Int) {
    let scratch = try Scratch(options.directory, "raw")
    defer { scratch.remove() }
    let file = try OpenFile(path: scratch.path + "/raw.log", create: true)
    let buffer = [UInt8](repeating: 0x5A, count: max(1, bytesPerSync))
    var offset = 0
    var syncs = 0
    let start = ContinuousClock.now
    let end = start + .milliseconds(Int(options.seconds * 1000))
    while ContinuousClock.now < end {
        try file.write(buffer, at: offset)
        try file.syncData()
        offset += buffer.count
        syncs += 1
    }
    let elapsed = ContinuousClock.now - start
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return (Double(syncs) / seconds, syncs)
}

let options = Options(CommandLine.arguments)
let recordBytes = JournalRecord.headerSize + options.size
print(
    "ledger bookie journal vs raw pwrite+fdatasync, \(options.size)-byte entries (\(recordBytes) bytes as journal records), \(options.seconds) s per run, in \(options.directory)"
)
print("")
print(
    "writers | bookie entries/s | syncs | entries/sync | bytes/sync | raw syncs/s at same bytes | raw entries/s | ratio bookie/raw"
)
for concurrency in options.concurrency {
    do {
        let bookie = try runBookie(options, concurrency: concurrency)
        let perSync = Int(bookie.bytesPerSync.rounded())
        let raw = try runRaw(options, bytesPerSync: perSync)
        let rawEntries = raw.syncsPerSecond * Double(perSync) / Double(recordBytes)
        let ratio = rawEntries > 0 ? bookie.perSecond / rawEntries : 0
        print(
            String(
                format: "%7d | %16.0f | %5llu | %12.1f | %10d | %25.0f | %13.0f | %.2f", concurrency, bookie.perSecond,
                bookie.syncs, Double(bookie.entries) / Double(max(1, bookie.syncs)), perSync, raw.syncsPerSecond,
                rawEntries, ratio))
    } catch {
        FileHandle.standardError.write(Data("bench-ledger: \(error)\n".utf8))
        exit(1)
    }
}
