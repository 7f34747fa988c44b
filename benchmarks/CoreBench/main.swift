// The event-core benchmark (make bench-core): in-process publish → memory storage → subscriber → ack,
// against the raw cost of the same number of plugin ABI calls; and the node's resident memory over a long
// run with a consumer that keeps up. Medians of several runs; ratios from the same run.
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
            "usage: plexus-bench-core --plugins DIR --bench-plugin LIB [--events N] [--soak-events N] [--runs N]\n".utf8
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

/// A node with memory-storage bound to every topic, the benchmark topic kept to `retentionBytes`.
func makeNode(retentionBytes: UInt64) throws -> Kernel {
    let manifests = root.appendingPathComponent("manifests")
    try FileManager.default.createDirectory(at: manifests, withIntermediateDirectories: true)
    let manifest = """
        manifest: 1
        name: memory-storage
        version: 1.0.0
        kind: storage
        library: libMemoryStorage.so
        abi: {major: 1, minor: 1}
        toolchain: \(Toolchain.current)
        """
    try manifest.write(to: manifests.appendingPathComponent("memory-storage.yaml"), atomically: true, encoding: .utf8)
    var config = NodeConfig()
    config.dataDirectory = root.appendingPathComponent("data-\(UUID().uuidString)").path
    config.manifestDirectories = [manifests.path]
    config.pluginSearchPath = [options.pluginDirectory]
    config.topics.defaultStorage = "memory-storage"
    config.topics.bindings = [.init(topic: "bench", storage: "memory-storage", retentionBytes: retentionBytes)]
    let kernel = Kernel(config: config, logger: quiet)
    kernel.start()
    guard kernel.status(of: "memory-storage")?.state == .active else {
        throw LocalClient.Failure(status: PX_ERR_UNAVAILABLE.status, message: "memory-storage did not start")
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
    let id = try client.subscribe(topic: "bench", group: "bench-\(UUID().uuidString)", options: subscription) {
        delivery in
        client.ack(delivery)
        let n = acked.wrappingAdd(1, ordering: .relaxed).newValue
        if sampleEvery > 0 && n % sampleEvery == 0 { sample(n) }
        if n == count { finished.signal() }
    }
    defer { client.unsubscribe(id) }
    let payload = [UInt8](repeating: 0x61, count: options.size)
    let maxLag = 20_000
    let window = DispatchSemaphore(value: 64)
    let elapsed = try seconds {
        var sent = 0
        while sent < count {
            let n = min(options.batch, count - sent)
            let events = (sent..<sent + n).map {
                CloudEvent(id: "e\($0)", source: "/bench", type: "bench.event", data: payload)
            }
            window.wait()
            // The consumer keeps up: the publisher stays at most `maxLag` events ahead of acknowledgements.
            while sent - acked.load(ordering: .relaxed) > maxLag { usleep(50) }
            try client.publish("bench", events) { _ in window.signal() }
            sent += n
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

var plexusTimes: [Double] = []
var rawTimes: [Double] = []
for _ in 0..<options.runs {
    let kernel = try makeNode(retentionBytes: 64 << 20)
    plexusTimes.append(try run(kernel: kernel, count: options.events))
    kernel.stop()
    rawTimes.append(
        seconds {
            var x = UInt64(plexusTimes.count)
            for _ in 0..<crossings { x = noop(nil, x) }
            sink &+= x
        })
}
let rate = Double(options.events) / median(plexusTimes)

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

print("Plexus event-core benchmark: in-process publish → memory-storage → subscriber → ack")
print("\(options.events) events of \(options.size) bytes, batches of \(options.batch); median of \(options.runs) runs")
print(
    "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
)
let rawRate = Double(options.events) / median(rawTimes)
print(String(format: "%-44@ %14.0f events/s", "plexus (publish, store, deliver, ack)" as NSString, rate))
print(
    String(
        format: "%-44@ %14.0f events/s", "baseline: \(crossings / options.events) raw ABI calls per event" as NSString,
        rawRate))
print(
    String(
        format: "%-44@ %14.5fx  (each event costs %.0f raw ABI calls; target 1,000,000 events/s: %.2fx of it)",
        "ratio plexus / baseline" as NSString, rate / rawRate, rawRate / rate * Double(crossings / options.events),
        rate / 1_000_000))
print(
    String(
        format: "soak: %d events in %.1f s (storage retention %d MiB); RSS at 10%%: %.1f MiB, at 100%%: %.1f MiB, "
            + "growth %.1f%% (target ≤ 10%%)",
        options.soakEvents, soakSeconds, Int(soakRetention >> 20), early, late, early > 0 ? (late / early - 1) * 100 : 0
    ))
if let jsonPath = options.jsonPath {
    let report: [String: Double] = [
        "events": Double(options.events), "eventsPerSecond": rate, "baselineEventsPerSecond": rawRate,
        "ratio": rate / rawRate, "soakEvents": Double(options.soakEvents), "rssEarlyMiB": early, "rssLateMiB": late,
    ]
    if let data = try? JSONSerialization.data(withJSONObject: report, options: [.prettyPrinted, .sortedKeys]) {
        try? data.write(to: URL(fileURLWithPath: jsonPath))
    }
}
if sink == 42 { print("") }
