// The ABI benchmark (make bench-abi): the cost of crossing the plugin ABI, against direct Swift calls,
// and the time to verify, load and start 1, 10 and 50 plugins, against raw dlopen+dlsym of the same files.
// Every figure is the median of several runs; ratios come from the same run.
import Foundation
import Logging
import PlexusABI
import PlexusKernel

struct Options {
    var pluginDirectory = ""
    var jsonPath: String?
    var runs = 5
    var calls = 20_000_000

    init(_ arguments: [String]) {
        var i = 1
        while i < arguments.count {
            let value = i + 1 < arguments.count ? arguments[i + 1] : ""
            switch arguments[i] {
            case "--plugins": pluginDirectory = value
            case "--json": jsonPath = value
            case "--runs": runs = Int(value) ?? runs
            case "--calls": calls = Int(value) ?? calls
            default: break
            }
            i += 2
        }
    }
}

let options = Options(CommandLine.arguments)
guard !options.pluginDirectory.isEmpty else {
    FileHandle.standardError.write(
        Data("usage: plexus-bench-abi --plugins DIR [--runs N] [--calls N] [--json FILE]\n".utf8))
    exit(2)
}

func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.count % 2 == 1
        ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
}

func seconds(_ body: () -> Void) -> Double {
    let start = ContinuousClock.now
    body()
    let elapsed = ContinuousClock.now - start
    return Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
}

struct Row: Encodable {
    var name: String
    var plexus: Double
    var baseline: Double
    var unit: String
    var baselineName: String
    var ratio: Double { plexus / baseline }

    enum CodingKeys: String, CodingKey { case name, plexus, baseline, unit, baselineName, ratio }
    func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(name, forKey: .name)
        try c.encode(plexus, forKey: .plexus)
        try c.encode(baseline, forKey: .baseline)
        try c.encode(unit, forKey: .unit)
        try c.encode(baselineName, forKey: .baselineName)
        try c.encode(ratio, forKey: .ratio)
    }
}

var rows: [Row] = []

// MARK: A direct, non-inlined Swift call: the baseline for a call across the ABI.

@inline(never)
func directNoop(_ x: UInt64) -> UInt64 { x &+ 1 }

/// The same work a plugin's counter_add asks of the host (its counter looked up by name in the plugin's
/// cache, then incremented), called directly from Swift.
@inline(never)
func directCounterAdd(_ metrics: PluginMetrics, _ name: String) {
    metrics.counter(name).increment()
}

// MARK: Kernel → plugin: a call through the plugin's exported C function pointer.

let library = options.pluginDirectory + "/libbench0.so"
guard let handle = dlopen(library, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE),
    let symbol = dlsym(handle, "px_op_bench_noop")
else {
    fatalError("cannot load \(library)")
}
typealias NoopFunction = @convention(c) (UnsafeMutableRawPointer?, UInt64) -> UInt64
let pluginNoop = unsafeBitCast(symbol, to: NoopFunction.self)

var sink: UInt64 = 0
var abiTimes: [Double] = []
var directTimes: [Double] = []
for run in 0..<options.runs {
    let seed = UInt64(run)
    abiTimes.append(
        seconds {
            var x = seed
            for _ in 0..<options.calls { x = pluginNoop(nil, x) }
            sink &+= x
        })
    directTimes.append(
        seconds {
            var x = seed
            for _ in 0..<options.calls { x = directNoop(x) }
            sink &+= x
        })
}
rows.append(
    Row(
        name: "kernel -> plugin call", plexus: median(abiTimes) / Double(options.calls) * 1e9,
        baseline: median(directTimes) / Double(options.calls) * 1e9, unit: "ns/call",
        baselineName: "direct non-inlined Swift call"))

// MARK: Plugin → host: the plugin calls host->counter_add in a loop; baseline: the same work from Swift.

let quiet = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
let dataDirectory = FileManager.default.temporaryDirectory.path + "/plexus-bench-\(getpid())"
defer { try? FileManager.default.removeItem(atPath: dataDirectory) }

func manifestDirectory(count: Int) -> String {
    let directory = dataDirectory + "/manifests-\(count)"
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    for i in 0..<count {
        let text = """
            manifest: 1
            name: bench-\(i)
            version: 1.0.0
            kind: connector
            library: \(options.pluginDirectory)/libbench\(i).so
            abi: {major: 1, minor: 4}
            operations:
              - {name: host-loop, symbol: px_op_bench_host_loop, signature: "uint64 (instance, uint64)"}
            """
        try? text.write(toFile: "\(directory)/bench-\(i).yaml", atomically: true, encoding: .utf8)
    }
    return directory
}

func makeKernel(count: Int) -> Kernel {
    var config = NodeConfig()
    config.dataDirectory = dataDirectory + "/data"
    config.manifestDirectories = [manifestDirectory(count: count)]
    config.adminPort = 0
    return Kernel(config: config, logger: quiet)
}

let hostKernel = makeKernel(count: 1)
hostKernel.start()
let hostCalls = options.calls / 4
var hostABI: [Double] = []
var hostDirect: [Double] = []
for _ in 0..<options.runs {
    hostABI.append(
        seconds {
            _ = try? hostKernel.callOperation(plugin: "bench-0", operation: "host-loop", arguments: [String(hostCalls)])
        })
    let metrics = hostKernel.services.metrics.plugin("bench-0")
    hostDirect.append(
        seconds {
            for _ in 0..<hostCalls { directCounterAdd(metrics, "bench_calls") }
        })
}
let counted = hostKernel.services.metrics.counter("bench_calls", plugin: "bench-0")
precondition(counted == UInt64(hostCalls * options.runs * 2), "the host calls did not all arrive (\(counted))")
hostKernel.stop()
rows.append(
    Row(
        name: "plugin -> host call (counter_add)", plexus: median(hostABI) / Double(hostCalls) * 1e9,
        baseline: median(hostDirect) / Double(hostCalls) * 1e9, unit: "ns/call",
        baselineName: "the same host work called from Swift"))

// MARK: Verify + load + create + start N plugins, against raw dlopen+dlsym+entry of the same files.

for count in [1, 10, 50] {
    var kernelTimes: [Double] = []
    var rawTimes: [Double] = []
    for run in 0..<options.runs {
        // Fresh copies per run: dlopen of a path already mapped would return the old image.
        let runDirectory = dataDirectory + "/raw-\(count)-\(run)"
        try? FileManager.default.createDirectory(atPath: runDirectory, withIntermediateDirectories: true)
        for i in 0..<count {
            try? FileManager.default.copyItem(
                atPath: "\(options.pluginDirectory)/libbench\(i).so", toPath: "\(runDirectory)/libbench\(i).so")
        }
        rawTimes.append(
            seconds {
                for i in 0..<count {
                    guard let h = dlopen("\(runDirectory)/libbench\(i).so", RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE),
                        let entry = dlsym(h, PX_PLUGIN_ENTRY_SYMBOL)
                    else { fatalError("raw dlopen failed") }
                    var descriptor: UnsafePointer<px_plugin_descriptor>?
                    _ = unsafeBitCast(entry, to: px_plugin_entry_fn.self)(nil, &descriptor, nil)
                }
            })
        var config = NodeConfig()
        config.dataDirectory = dataDirectory + "/load-\(count)-\(run)"
        config.manifestDirectories = [manifestDirectory(count: count)]
        let kernel = Kernel(config: config, logger: quiet)
        kernelTimes.append(seconds { kernel.start() })
        let active = kernel.statuses().filter { $0.state == .active }.count
        precondition(active == count, "only \(active) of \(count) plugins became active")
        kernel.stop()
    }
    rows.append(
        Row(
            name: "verify+load+start \(count) plugin(s)", plexus: median(kernelTimes) * 1e3,
            baseline: median(rawTimes) * 1e3,
            unit: "ms", baselineName: "raw dlopen+dlsym+entry"))
}

// MARK: Report.

func format(_ v: Double) -> String { String(format: v < 10 ? "%.2f" : "%.1f", v) }
print("Plexus ABI benchmark: median of \(options.runs) runs; \(options.calls) calls per call run")
print(
    "machine: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(ProcessInfo.processInfo.physicalMemory >> 30) GiB"
)
let header = ["measurement", "plexus", "baseline", "unit", "ratio", "baseline is"]
let table = rows.map {
    [$0.name, format($0.plexus), format($0.baseline), $0.unit, String(format: "%.2fx", $0.ratio), $0.baselineName]
}
let widths = header.indices.map { c in ([header] + table).map { $0[c].count }.max() ?? 0 }
for line in [header] + table {
    print(
        line.enumerated().map { $1.padding(toLength: widths[$0], withPad: " ", startingAt: 0) }.joined(separator: "  "))
}
if let jsonPath = options.jsonPath {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    if let data = try? encoder.encode(rows) { try? data.write(to: URL(fileURLWithPath: jsonPath)) }
}
if sink == 42 { print("") }  // keeps the call loops' results alive
