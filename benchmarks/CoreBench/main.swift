// The event-core benchmark (make bench-core): in-process publish → store → subscriber → ack, into
// memory-storage and into raft-log with `fsync: never`, each against its target and against the raw cost of
// the same number of plugin ABI calls; 10,000 topics with one subscriber each (threads and RSS against
// their limits); and the node's resident memory over a long run with a consumer that keeps up. Medians of
// several runs; ratios from the same run.
import Dispatch
import Foundation
import Logging
import PlexusABI
import PlexusCore
import PlexusKernel
import Synchronization

struct Options {
    var pluginDirectory = ""
    var benchPlugin = ""
    var events = 1_000_000
    var soakEvents = 10_000_000
    var batch = 100
    var size = 100
    var runs = 3
    var topics = 10_000
    var manifestDirectory = "plugin-manifests"
    var jsonPath: String?

    init(_ arguments: [String]) {
        var i = 1
        while i + 1 < arguments.count {
            let value = arguments[i + 1]
            switch arguments[i] {
            case "--plugins": pluginDirectory = value
            case "--bench-plugin": benchPlugin = value
            case "--events": events = Int(value) ?? events
            case "--soak-events": soakEvents = Int(value) ?? soakEvents
            case "--batch": batch = max(1, Int(value) ?? batch)
            case "--size": size = Int(value) ?? size
            case "--runs": runs = max(1, Int(value) ?? runs)
            case "--topics": topics = max(1, Int(value) ?? topics)
            case "--manifests": manifestDirectory = value
            case "--json": jsonPath = value
            default: break
            }
            i += 2
        }
    }
}

let options = Options(CommandLine.arguments)
guard !options.pluginDirectory.isEmpty, !options.benchPlugin.isEmpty else {
    FileHandle.standardError.write(
        Data(
            ("usage: plexus-bench-core --plugins DIR --bench-plugin LIB [--manifests DIR] [--events N] "
                + "[--soak-events N] [--runs N] [--topics N]\n").utf8
        ))
    exit(2)
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

/// Resident memory of this process, in MiB.
@Sendable func residentMiB() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let pages = text.split(separator: " ").dropFirst().first.flatMap { Double($0) } ?? 0
    return pages * Double(sysconf(Int32(_SC_PAGESIZE))) / 1_048_576
}

let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
let root = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-bench-core-\(getpid())")
defer { try? FileManager.default.removeItem(at: root) }

/// The manifest of `storage` for this run: memory-storage's minimal one, or raft-log's shipped one with
/// `fsync: never` (acknowledged once written; the operating system writes back) and 8 MiB segments, so that
/// retention (whole segments) keeps the run's disk use bounded.
func manifest(for storage: String) throws -> String {
    if storage == "memory-storage" {
        return """
            manifest: 1
            name: memory-storage
            version: 1.0.0
            kind: storage
            library: libMemoryStorage.so
            abi: {major: 1, minor: 4}
            toolchain: \(Toolchain.current)
            """
    }
    let path = options.manifestDirectory + "/\(storage).yaml"
    guard var text = try? String(contentsOfFile: path, encoding: .utf8) else {
        throw LocalClient.Failure(status: PX_ERR_UNAVAILABLE.status, message: "cannot read \(path) (--manifests)")
    }
    guard !text.contains("\n  values:"), let operations = text.range(of: "\noperations:") else {
        throw LocalClient.Failure(
            status: PX_ERR_UNAVAILABLE.status,
            message: "\(path): expected a top-level 'operations:' and no config.values to add the benchmark's to")
    }
    text.replaceSubrange(
        operations.lowerBound..<operations.lowerBound, with: "\n  values:\n    fsync: never\n    segmentBytes: 8388608")
    // The toolchain this benchmark was built with, as for memory-storage (the plugins are built with it too).
    return text.split(separator: "\n", omittingEmptySubsequences: false).map {
        $0.hasPrefix("toolchain:") ? "toolchain: \(Toolchain.current)" : String($0)
    }.joined(separator: "\n")
}

/// A node with `storage` bound to every topic, the benchmark topic kept to `retentionBytes`.
func makeNode(storage: String = "memory-storage", retentionBytes: UInt64) throws -> Kernel {
    let manifests = root.appendingPathComponent("manifests-\(storage)")
    try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
    try manifest(for: storage).write(
        to: manifests.appendingPathComponent("\(storage).yaml"), atomically: true, encoding: .utf8)
    var config = NodeConfig()
    config.dataDirectory = root.appendingPathComponent("data-\(UUID().uuidString)").path
    config.manifestDirectories = [manifests.path]
    config.pluginSearchPath = [options.pluginDirectory]
    config.topics.defaultStorage = storage
    config.topics.bindings = [.init(topic: "bench", storage: storage, retentionBytes: retentionBytes)]
    let kernel = Kernel(config: config, logger: quiet)
    kernel.start()
    guard kernel.status(of: storage)?.state == .active else {
        throw LocalClient.Failure(status: PX_ERR_UNAVAILABLE.status, message: "\(storage) did not start")
    }
    return kernel
}

/// Publishes `count` events in batches, pipelined, while one subscriber acknowledges each; returns seconds
/// from the first publish to the last acknowledgement. `sample` is called every `sampleEvery` acks.
func run(kernel: Kernel, count: Int, sampleEvery: Int = 0, sample: @escaping @Sendable (Int) -> Void = { _ in }) throws
    -> Double
{
    let client = LocalClient(kernel: kernel, name: "bench-client")
    let acked = Atomic<Int>(0)
    let finished = DispatchSemaphore(value: 0)
    var subscription = LocalClient.Options()
    subscription.maxInFlight = 1000
    subscription.start = .latest
    // The subscriber reads each delivery as the kernel lends it (a protocol plugin encodes it into its socket
    // buffer from there) and acknowledges it.
    let id = try client.subscribeBorrowing(
        topic: "bench", group: "bench-\(UUID().uuidString)", options: subscription
    ) { delivery in
        client.ack(deliveryID: delivery.pointee.delivery_id)
        let n = acked.wrappingAdd(1, ordering: .relaxed).newValue
        if sampleEvery > 0 && n % sampleEvery == 0 { sample(n) }
        if n == count { finished.signal() }
    }
    defer { client.unsubscribe(id) }
    let payload = [UInt8](repeating: 0x61, count: options.size)
    let maxLag = 20_000
    let window = DispatchSemaphore(value: 64)
    // The publisher lays its events out in C once, as a protocol plugin lays them over its receive buffer, and
    // publishes those batches in turn (their ids repeat every `prepared.count` batches).
    let prepared = (0..<64).map { b in
        CEventBatch(
            (0..<options.batch).map {
                CloudEvent(id: "e\(b)-\($0)", source: "/bench", type: "bench.event", data: payload)
            })
    }
    let elapsed = try seconds {
        var sent = 0
        var next = 0
        while sent < count {
            let batch = prepared[next % prepared.count]
            next += 1
            window.wait()
            // The consumer keeps up: the publisher stays at most `maxLag` events ahead of acknowledgements.
            while sent - acked.load(ordering: .relaxed) > maxLag { usleep(50) }
            try client.publish("bench", batch: batch) { _ in window.signal() }
            sent += batch.count
        }
        guard finished.wait(timeout: .now() + 600) == .success else {
            throw LocalClient.Failure(
                status: PX_ERR_TIMEOUT.status,
                message: "only \(acked.load(ordering: .relaxed)) of \(count) acknowledged")
        }
    }
    return elapsed
}

// MARK: Baseline: the same number of ABI crossings into a plugin's no-op.

guard let benchHandle = dlopen(options.benchPlugin, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE),
    let noopSymbol = dlsym(benchHandle, "px_op_bench_noop")
else {
    fatalError("cannot load \(options.benchPlugin)")
}
typealias Noop = @convention(c) (UnsafeMutableRawPointer?, UInt64) -> UInt64
let noop = unsafeBitCast(noopSymbol, to: Noop.self)
/// Per event: one deliver callback and one ack; per batch: one publish and its completion.
let crossings = options.events * 2 + (options.events / options.batch) * 2
var sink: UInt64 = 0

/// One in-process row: a storage, its target, and the medians measured.
struct Row {
    var storage: String
    var label: String
    var target: Double
    var rate: Double = 0
    var rawRate: Double = 0
}
var rows = [
    Row(storage: "memory-storage", label: "memory-storage", target: 1_000_000),
    Row(storage: "raft-log", label: "raft-log, fsync never", target: 500_000),
]
for index in rows.indices {
    var plexusTimes: [Double] = []
    var rawTimes: [Double] = []
    for _ in 0..<options.runs {
        let kernel = try makeNode(storage: rows[index].storage, retentionBytes: 64 << 20)
        plexusTimes.append(try run(kernel: kernel, count: options.events))
        kernel.stop()
        rawTimes.append(
            seconds {
                var x = UInt64(plexusTimes.count)
                for _ in 0..<crossings { x = noop(nil, x) }
                sink &+= x
            })
    }
    rows[index].rate = Double(options.events) / median(plexusTimes)
    rows[index].rawRate = Double(options.events) / median(rawTimes)
}

// MARK: 10,000 topics, one subscriber each, one event each: threads and memory against their limits.

/// Threads of this process now: the entries of /proc/self/task.
@Sendable func threadCount() -> Int {
    (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").count) ?? 0
}

/// VmRSS of this process, in bytes, from /proc/self/status.
@Sendable func vmRSSBytes() -> Double {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return 0 }
    for line in text.split(separator: "\n") where line.hasPrefix("VmRSS:") {
        let kB = line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first.flatMap { Double($0) }
        return (kB ?? 0) * 1024
    }
    return 0
}

struct ManyTopics {
    var topics = 0
    var delivered = 0
    var seconds = 0.0
    var threadsBefore = 0
    var threadsPeak = 0
    var threadsAfter = 0
    var rssPeak = 0.0
    var rssAfter = 0.0
}

/// `count` topics in memory-storage, one subscriber (group) each; one event published to each; every delivery
/// acknowledged. A sampler thread reads the thread count and VmRSS every 2 ms from the first subscribe until
/// every event is acknowledged ("peak"); "after" is read 1 s after that, with the subscriptions still open.
func manyTopics(count: Int) throws -> ManyTopics {
    var result = ManyTopics(topics: count)
    let kernel = try makeNode(storage: "memory-storage", retentionBytes: 1 << 20)
    defer { kernel.stop() }
    let client = LocalClient(kernel: kernel, name: "bench-topics")
    result.threadsBefore = threadCount()
    let peak = Mutex<(threads: Int, rss: Double)>((threadCount(), vmRSSBytes()))
    let sampling = Atomic<Bool>(true)
    let samplerDone = DispatchSemaphore(value: 0)
    let sampler = Thread {
        while sampling.load(ordering: .relaxed) {
            let threads = threadCount()
            let rss = vmRSSBytes()
            peak.withLock { $0 = (max($0.threads, threads), max($0.rss, rss)) }
            usleep(2000)
        }
        samplerDone.signal()
    }
    sampler.name = "bench-core-sampler"
    sampler.start()
    let acked = Atomic<Int>(0)
    let finished = DispatchSemaphore(value: 0)
    let payload = [UInt8](repeating: 0x61, count: options.size)
    let elapsed = try seconds {
        // Publish first (topics are created on first publish), then subscribe from the earliest offset.
        let window = DispatchSemaphore(value: 256)
        let failures = Atomic<Int>(0)
        for i in 0..<count {
            window.wait()
            try client.publish(
                "topic-\(i)", [CloudEvent(id: "t\(i)", source: "/bench", type: "bench.event", data: payload)]
            ) { outcome in
                if case .failure = outcome { failures.add(1, ordering: .relaxed) }
                window.signal()
            }
        }
        for _ in 0..<256 { window.wait() }
        // Back to its initial value: libdispatch traps when a semaphore is released below it.
        for _ in 0..<256 { window.signal() }
        guard failures.load(ordering: .relaxed) == 0 else {
            throw LocalClient.Failure(
                status: PX_ERR_UNAVAILABLE.status,
                message: "\(failures.load(ordering: .relaxed)) of \(count) publishes to separate topics failed")
        }
        var subscription = LocalClient.Options()
        subscription.maxInFlight = 16
        subscription.start = .earliest
        for i in 0..<count {
            _ = try client.subscribe(topic: "topic-\(i)", group: "g", options: subscription) { delivery in
                client.ack(delivery)
                if acked.wrappingAdd(1, ordering: .relaxed).newValue == count { finished.signal() }
            }
        }
        guard finished.wait(timeout: .now() + 300) == .success else {
            throw LocalClient.Failure(
                status: PX_ERR_TIMEOUT.status,
                message: "only \(acked.load(ordering: .relaxed)) of \(count) events on separate topics acknowledged")
        }
    }
    sampling.store(false, ordering: .relaxed)
    samplerDone.wait()
    result.delivered = acked.load(ordering: .relaxed)
    result.seconds = elapsed
    (result.threadsPeak, result.rssPeak) = peak.withLock { ($0.threads, $0.rss) }
    sleep(1)
    result.threadsAfter = threadCount()
    result.rssAfter = vmRSSBytes()
    return result
}
let many = try manyTopics(count: options.topics)

// MARK: Memory over a long run with a consumer that keeps up.

// A small retention, so that the storage's own data reaches its steady size early and what is measured from
// 10% on is the rest of the node.
let soakRetention: UInt64 = 8 << 20
let soakKernel = try makeNode(retentionBytes: soakRetention)
let samples = Mutex<[(Int, Double)]>([])
let soakSeconds = try run(kernel: soakKernel, count: options.soakEvents, sampleEvery: max(1, options.soakEvents / 20)) {
    n in
    let rss = residentMiB()
    samples.withLock { $0.append((n, rss)) }
}
soakKernel.stop()
let curve = samples.withLock { $0 }.sorted { $0.0 < $1.0 }
let early = curve.first { $0.0 >= options.soakEvents / 10 }?.1 ?? 0
let late = curve.last?.1 ?? 0

// MARK: Report.

let cores = ProcessInfo.processInfo.activeProcessorCount
print("Plexus event-core benchmark: in-process publish → store → subscriber → ack (LocalClient, no network)")
print(
    "\(options.events) events of \(options.size) bytes, \(options.batch) events per publish call, up to 64 publish "
        + "calls in flight, one subscriber (window 1,000), each event acknowledged; median of \(options.runs) runs")
print("machine: \(cores) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB")
print(
    "baseline: \(crossings / options.events) raw ABI calls per event (a C plugin's no-op through a function pointer)"
)
func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: width, withPad: " ", startingAt: 0) }
func right(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
print(
    pad("row", 34) + right("events/s", 14) + right("target", 15) + right("/ target", 11) + right("raw ABI ev/s", 15)
        + right("/ raw ABI", 13))
for row in rows {
    print(
        pad(row.label, 34)
            + String(
                format: "%14.0f %14.0f %9.2fx %14.0f %11.5fx", row.rate, row.target, row.rate / row.target,
                row.rawRate, row.rate / row.rawRate))
}
print(
    "fsync: memory-storage never (memory); raft-log `fsync: never` acknowledges once written to the page cache "
        + "(survives kill -9, not power loss)")
let threadLimit = 4 * cores + 16
let rssLimit = 400e6
func verdict(_ ok: Bool) -> String { ok ? "PASS" : "FAIL" }
print(
    "\(many.topics) topics × 1 subscriber, 1 event each (memory-storage): \(many.delivered) delivered and acknowledged "
        + String(format: "in %.2f s", many.seconds))
print(
    "  threads (/proc/self/task, this whole process incl. the benchmark's main and sampler threads): before "
        + "\(many.threadsBefore), peak \(many.threadsPeak), after \(many.threadsAfter); limit 4 × \(cores) cores + 16 = "
        + "\(threadLimit): peak \(verdict(many.threadsPeak <= threadLimit)), after \(verdict(many.threadsAfter <= threadLimit))"
)
print(
    String(
        format: "  RSS (VmRSS): peak %.1f MB, after %.1f MB; limit 400 MB: peak %@, after %@", many.rssPeak / 1e6,
        many.rssAfter / 1e6, verdict(many.rssPeak <= rssLimit) as NSString,
        verdict(many.rssAfter <= rssLimit) as NSString))
print(
    String(
        format: "soak: %d events in %.1f s (storage retention %d MiB); RSS at 10%%: %.1f MiB, at 100%%: %.1f MiB, "
            + "growth %.1f%% (target ≤ 10%%)",
        options.soakEvents, soakSeconds, Int(soakRetention >> 20), early, late, early > 0 ? (late / early - 1) * 100 : 0
    ))
if let jsonPath = options.jsonPath {
    var report: [String: Double] = [
        "events": Double(options.events), "soakEvents": Double(options.soakEvents), "rssEarlyMiB": early,
        "rssLateMiB": late, "topics": Double(many.topics), "topicsDelivered": Double(many.delivered),
        "topicsSeconds": many.seconds, "topicsThreadsPeak": Double(many.threadsPeak),
        "topicsThreadsAfter": Double(many.threadsAfter), "topicsThreadLimit": Double(threadLimit),
        "topicsRSSPeakBytes": many.rssPeak, "topicsRSSAfterBytes": many.rssAfter, "topicsRSSLimitBytes": rssLimit,
    ]
    for row in rows {
        let key = row.storage == "memory-storage" ? "memory" : "raftLogFsyncNever"
        report["\(key)EventsPerSecond"] = row.rate
        report["\(key)Target"] = row.target
        report["\(key)BaselineEventsPerSecond"] = row.rawRate
        report["\(key)Ratio"] = row.rate / row.rawRate
    }
    if let data = try? JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]) {
        try? data.write(to: URL(fileURLWithPath: jsonPath))
    }
}
if sink == 42 { print("") }
