// The raft-log local benchmark (make bench-raft-local): a single member, 1 KiB appends through the plugin's
// storage ABI with `fsync: always`, `C` appends in flight (a closed loop: each completion sends the next),
// against the machine's group-commit ceiling measured independently in the same run: a raw pwrite+fdatasync
// loop on the same disk at its best grouping for the same window of C (GroupCommitCeiling.best), not at the
// plugin's own events per fsync, so a plugin that groups poorly shows as a low ratio.
import Dispatch
import Foundation
import Logging
import PlexusABI
import PlexusBench
import PlexusCore
import PlexusKernel
import Synchronization

struct Options {
    var pluginDirectory = ""
    var manifest = ""
    var directory = FileManager.default.temporaryDirectory.path
    var seconds = 2.0
    var size = 1024
    var concurrency = [1, 16, 128]
    var jsonPath: String?
    /// The plugin's fsync policy; `always` is what the ceiling compares with.
    var fsync = "always"
    var rounds = 3

    init(_ arguments: [String]) {
        var i = 1
        while i + 1 < arguments.count {
            let value = arguments[i + 1]
            switch arguments[i] {
            case "--plugins": pluginDirectory = value
            case "--manifest": manifest = value
            case "--dir": directory = value
            case "--seconds": seconds = Double(value) ?? seconds
            case "--size": size = Int(value) ?? size
            case "--concurrency": concurrency = value.split(separator: ",").compactMap { Int($0) }.filter { $0 > 0 }
            case "--json": jsonPath = value
            case "--fsync": fsync = value
            case "--rounds": rounds = max(1, Int(value) ?? rounds)
            default: break
            }
            i += 2
        }
    }
}

let options = Options(CommandLine.arguments)
guard !options.pluginDirectory.isEmpty, !options.manifest.isEmpty, !options.concurrency.isEmpty else {
    FileHandle.standardError.write(
        Data(
            ("usage: plexus-bench-raft-local --plugins DIR --manifest raft-log.yaml [--dir DIR] [--seconds S] "
                + "[--rounds N] [--fsync always|interval|never] [--size BYTES] [--concurrency 1,16,128] [--json FILE]\n")
                .utf8))
    exit(2)
}

let root = URL(fileURLWithPath: options.directory).appendingPathComponent("plexus-bench-raft-\(getpid())")
defer { try? FileManager.default.removeItem(at: root) }

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("bench-raft-local: \(message)\n".utf8))
    try? FileManager.default.removeItem(at: root)
    exit(1)
}

func elapsed(since start: ContinuousClock.Instant) -> Double {
    let d = ContinuousClock.now - start
    return Double(d.components.seconds) + Double(d.components.attoseconds) / 1e18
}

/// `concurrency` chains of appends against one stream until `deadline`; each completion sends the next.
final class ClosedLoop: @unchecked Sendable {
    // Safe: the vtable, instance and stream are only passed back to the plugin, whose hooks are thread-safe
    // by contract; the counters are atomic and the group is thread-safe.
    let vtable: UnsafePointer<px_storage_vtable>
    let instance: UnsafeMutableRawPointer?
    let stream: OpaquePointer
    let event: CloudEvent
    let deadline: ContinuousClock.Instant
    let completed = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let group = DispatchGroup()

    init(
        vtable: UnsafePointer<px_storage_vtable>, instance: UnsafeMutableRawPointer?, stream: OpaquePointer,
        event: CloudEvent, seconds: Double
    ) {
        self.vtable = vtable
        self.instance = instance
        self.stream = stream
        self.event = event
        self.deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
    }

    func run(concurrency: Int) {
        for _ in 0..<concurrency {
            group.enter()
            send()
        }
        group.wait()
    }

    private func send() {
        let batch = CEventBatch([event])
        let user = Unmanaged.passUnretained(self).toOpaque()
        let (status, _) = withExtendedLifetime(batch) {
            StandalonePlugin.withErrorBuffer { err in
                vtable.pointee.on_append(
                    instance, stream, batch.pointers.baseAddress, 1,
                    { user, status, _, _ in
                        guard let user else { return }
                        Unmanaged<ClosedLoop>.fromOpaque(user).takeUnretainedValue().done(status)
                    }, user, err)
            }
        }
        if status != PX_OK.status {
            failed.add(1, ordering: .relaxed)
            group.leave()
        }
    }

    private func done(_ status: px_status) {
        if status == PX_OK.status { completed.add(1, ordering: .relaxed) } else { failed.add(1, ordering: .relaxed) }
        // The next append comes from another thread, as a client's next publish would, not from the
        // plugin's writer thread that runs this completion.
        if status == PX_OK.status && ContinuousClock.now < deadline {
            DispatchQueue.global().async { self.send() }
        } else {
            group.leave()
        }
    }
}

struct Result {
    var concurrency: Int
    var plexusRate: Double
    var fsyncRate: Double
    var eventsPerFsync: Double
    var entryBytes: Int
    var rawRate: Double
    /// The raw loop's best grouping (events per fdatasync) for the window.
    var rawGrouping: Int
    var rawFsyncMicros: Double
    /// Plugin over ceiling, per round (then the median).
    var ratio: Double
}

/// The plugin under a closed loop of `concurrency` appends.
func measurePlugin(concurrency: Int) -> (rate: Double, fsyncs: Double, eventsPerFsync: Double, entryBytes: Int) {
    let run = root.appendingPathComponent("plugin-\(concurrency)")
    let plugin: StandalonePlugin
    let instance: StandalonePlugin.Instance
    do {
        plugin = try StandalonePlugin(
            library: options.pluginDirectory + "/libRaftLogStorage.so", manifest: options.manifest,
            configJSON: #"{"fsync": "\#(options.fsync)"}"#, cacheDirectory: root.appendingPathComponent("cache").path)
        instance = try plugin.start(dataDirectory: run.appendingPathComponent("data").path)
    } catch {
        fail("cannot start raft-log: \(error)")
    }
    guard let vtable = plugin.storage else { fail("raft-log has no storage vtable") }
    let mapped = root.appendingPathComponent("cache/\(plugin.sha256)/libRaftLogStorage.so").path
    guard let handle = dlopen(mapped, RTLD_NOW | RTLD_NOLOAD) else { fail("\(mapped) is not mapped") }
    func operation(_ symbol: String) -> UInt64 {
        guard let address = dlsym(handle, symbol) else { fail("no \(symbol)") }
        typealias Op = @convention(c) (UnsafeMutableRawPointer?) -> UInt64
        return unsafeBitCast(address, to: Op.self)(instance.pointer)
    }
    var stream: OpaquePointer?
    let (status, message) = StandalonePlugin.withErrorBuffer { err in
        withPXStr("bench") { vtable.pointee.on_open_stream(instance.pointer, $0, nil, &stream, err) }
    }
    guard status == PX_OK.status, let stream else { fail("on_open_stream: \(message)") }
    let event = CloudEvent(
        id: "bench-event-0001", source: "/bench/raft-local", type: "io.plexus.bench",
        data: (0..<options.size).map { UInt8(truncatingIfNeeded: $0) })
    let loop = ClosedLoop(
        vtable: vtable, instance: instance.pointer, stream: stream, event: event, seconds: options.seconds)
    let start = ContinuousClock.now
    loop.run(concurrency: concurrency)
    let seconds = elapsed(since: start)
    let appends = operation("px_op_raft_log_appends")
    let commits = operation("px_op_raft_log_group_commits")
    let batches = operation("px_op_raft_log_group_committed_batches")
    let bytes = operation("px_op_raft_log_bytes_on_disk")
    vtable.pointee.on_close_stream(instance.pointer, stream)
    do { try instance.stop() } catch { fail("stop: \(error)") }
    if loop.failed.load(ordering: .relaxed) > 0 { fail("\(loop.failed.load(ordering: .relaxed)) appends failed") }
    try? FileManager.default.removeItem(at: run)
    let entryBytes = appends > 0 ? Int((bytes - 64) / appends) : 0
    return (
        Double(loop.completed.load(ordering: .relaxed)) / seconds, Double(commits) / seconds,
        commits > 0 ? Double(batches) / Double(commits) : 0, entryBytes
    )
}

/// The ceiling (`GroupCommitCeiling.best`, shared with `make bench-raft`): the raw pwrite+fdatasync loop at its
/// best grouping for a window of `concurrency` events in flight, `entryBytes` per event, for the same time.
func measureRaw(concurrency: Int, entryBytes: Int) -> (rate: Double, grouping: Int, fsyncMicros: Double) {
    let path = root.appendingPathComponent("raw-\(concurrency).log").path
    do {
        let best = try GroupCommitCeiling.best(
            window: concurrency, entryBytes: entryBytes, path: path, seconds: options.seconds)
        return (best.measurement.eventsPerSecond, best.grouping, best.measurement.fsyncMicros)
    } catch {
        fail("\(error)")
    }
}

do {
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
} catch {
    fail("cannot create \(root.path): \(error)")
}

print(
    "Plexus raft-log local benchmark: single member, fsync \(options.fsync), \(options.size)-byte events, one per "
        + "append")
print(
    "closed loop of C appends in flight for \(options.seconds) s, then the ceiling as long; median of "
        + "\(options.rounds) alternating rounds; data under \(options.directory)")
print(
    "baseline: raw pwrite + fdatasync on the same disk, measured on its own at its best grouping for the same "
        + "window of C (at most C events per fdatasync), not at the plugin's events per fsync")
func column(_ text: String, _ width: Int) -> String {
    String(repeating: " ", count: max(0, width - text.count)) + text
}
print(
    [
        column("C", 5), column("plexus ev/s", 14), column("fsyncs/s", 10), column("events/fsync", 13),
        column("ceiling ev/s", 14), column("ceil ev/sync", 13), column("raw fsync µs", 13), column("ratio", 8),
    ].joined(separator: " "))
func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    guard !sorted.isEmpty else { return 0 }
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

var results: [Result] = []
for concurrency in options.concurrency {
    // Plugin and ceiling alternate, so that both see the same disk weather; medians over the rounds.
    var rounds: [Result] = []
    for _ in 0..<options.rounds {
        let plugin = measurePlugin(concurrency: concurrency)
        let raw = measureRaw(concurrency: concurrency, entryBytes: plugin.entryBytes)
        rounds.append(
            Result(
                concurrency: concurrency, plexusRate: plugin.rate, fsyncRate: plugin.fsyncs,
                eventsPerFsync: plugin.eventsPerFsync, entryBytes: plugin.entryBytes, rawRate: raw.rate,
                rawGrouping: raw.grouping, rawFsyncMicros: raw.fsyncMicros, ratio: plugin.rate / raw.rate))
    }
    let result = Result(
        concurrency: concurrency, plexusRate: median(rounds.map(\.plexusRate)),
        fsyncRate: median(rounds.map(\.fsyncRate)), eventsPerFsync: median(rounds.map(\.eventsPerFsync)),
        entryBytes: rounds[0].entryBytes, rawRate: median(rounds.map(\.rawRate)),
        rawGrouping: rounds.sorted { $0.rawRate < $1.rawRate }[(rounds.count - 1) / 2].rawGrouping,
        rawFsyncMicros: median(rounds.map(\.rawFsyncMicros)), ratio: median(rounds.map(\.ratio)))
    results.append(result)
    print(
        String(
            format: "%5d %14.0f %10.0f %13.1f %14.0f %13d %13.0f %7.2fx", concurrency, result.plexusRate,
            result.fsyncRate, result.eventsPerFsync, result.rawRate, result.rawGrouping, result.rawFsyncMicros,
            result.ratio))
}
print("entry size on disk: \(results.first?.entryBytes ?? 0) bytes (56-byte header + encoded event)")

if let jsonPath = options.jsonPath {
    let report = results.map { r -> [String: Double] in
        [
            "concurrency": Double(r.concurrency), "eventsPerSecond": r.plexusRate, "fsyncsPerSecond": r.fsyncRate,
            "eventsPerFsync": r.eventsPerFsync, "entryBytes": Double(r.entryBytes),
            "ceilingEventsPerSecond": r.rawRate, "ceilingEventsPerFsync": Double(r.rawGrouping),
            "rawFsyncMicroseconds": r.rawFsyncMicros,
            "ratio": r.ratio,
        ]
    }
    if let data = try? JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]) {
        try? data.write(to: URL(fileURLWithPath: jsonPath))
    }
}
