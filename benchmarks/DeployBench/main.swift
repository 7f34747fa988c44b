// plexus-bench-deploy: acknowledged publish latency while the TCP protocol plugin is replaced on a running node,
// against the same load without replacements, in one run (benchmarks/deploy/README.md).
//
// One client publishes at a steady rate (one event per PUBLISH frame, each awaited for its acknowledgement).
// Phase "steady" measures the latency for --steady-seconds with nothing changing; phase "upgrading" rewrites the
// node's tcp-protocol manifest --upgrades times (a new maxFrameSize each time), waiting each time until the node
// logs the replacement. A publish that fails (its connection went away) is sent again with the same id until it
// is acknowledged; its latency runs from the first attempt. A prober connects once every 5 ms through both phases
// and counts refused connections. Afterwards every acknowledged id is read back from the topic's start.
// --plugin NAME --config-key KEY --config-base N replace another plugin instead (e.g. the topic's storage,
// raft-log, with a new maxWriteBytes `N - round` each time): the manifest given is then that plugin's.
import Foundation
import Histogram
import PlexusClient
import PlexusCore
import Synchronization

struct Options {
    var host = "127.0.0.1"
    var port = 0
    var manifest = ""
    var nodeLog = ""
    var rate = 20_000
    var steadySeconds = 20.0
    var upgrades = 100
    var payloadBytes = 128
    var window = 20_000
    var json: String?
    /// The plugin replaced, and the config value rewritten each time (`base - round`).
    var plugin = "tcp-protocol"
    var configKey = "maxFrameSize"
    var configBase = 16_777_216

    static func parse(_ arguments: [String]) throws -> Options {
        var options = Options()
        var rest = arguments[...]
        func value(_ flag: String) throws -> String {
            guard let next = rest.popFirst() else { throw BenchFailure("\(flag) needs a value") }
            return next
        }
        func number(_ flag: String) throws -> Int {
            let text = try value(flag)
            guard let n = Int(text), n >= 0 else { throw BenchFailure("\(flag): '\(text)' is not a whole number") }
            return n
        }
        while let flag = rest.popFirst() {
            switch flag {
            case "--server":
                let text = try value(flag)
                guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]) else {
                    throw BenchFailure("--server: expected HOST:PORT, got '\(text)'")
                }
                options.host = String(text[..<colon])
                options.port = port
            case "--manifest": options.manifest = try value(flag)
            case "--node-log": options.nodeLog = try value(flag)
            case "--rate": options.rate = try number(flag)
            case "--steady-seconds": options.steadySeconds = Double(try number(flag))
            case "--upgrades": options.upgrades = try number(flag)
            case "--payload-bytes": options.payloadBytes = try number(flag)
            case "--window": options.window = try number(flag)
            case "--json": options.json = try value(flag)
            case "--plugin": options.plugin = try value(flag)
            case "--config-key": options.configKey = try value(flag)
            case "--config-base": options.configBase = try number(flag)
            default: throw BenchFailure("unknown option '\(flag)'")
            }
        }
        guard options.port > 0, !options.manifest.isEmpty, !options.nodeLog.isEmpty else {
            throw BenchFailure(
                "usage: plexus-bench-deploy --server HOST:PORT --manifest TCP_MANIFEST --node-log FILE "
                    + "[--rate N] [--steady-seconds S] [--upgrades N] [--payload-bytes N] [--window N] [--json FILE] "
                    + "[--plugin NAME --config-key KEY --config-base N]")
        }
        guard options.rate > 0, options.window > 0 else { throw BenchFailure("--rate and --window must be positive") }
        return options
    }
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Nanoseconds on the monotonic clock.
func now() -> UInt64 {
    var time = timespec()
    clock_gettime(CLOCK_MONOTONIC, &time)
    return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
}

/// A flag the load loops poll: on until `turnOff`.
final class Switch: Sendable {
    private let on = Atomic<Bool>(true)
    var isOn: Bool { on.load(ordering: .relaxed) }
    func turnOff() { on.store(false, ordering: .relaxed) }
}

/// What the publisher measured, per phase.
struct Tally {
    enum Phase: Int { case steady = 0, upgrading = 1, after = 2 }

    var latency = [Phase: Histogram<UInt64>]()
    var acked = [Bool]()
    var ackedCount = 0
    var retries = 0
    var gaveUp = 0
    var skipped = 0
    var errorSamples: [String] = []

    mutating func record(_ phase: Phase, microseconds: UInt64) {
        var histogram =
            latency[phase]
            ?? Histogram<UInt64>(
                lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
        _ = histogram.record(max(1, microseconds))
        latency[phase] = histogram
    }
}

/// Publishes at a steady rate, resending what failed, and keeps the tally.
final class Publisher: Sendable {
    let client: PlexusClient
    let topic: String
    let payload: [UInt8]
    let options: Options
    let tally = Mutex(Tally())
    let phase = Atomic<Int>(Tally.Phase.steady.rawValue)
    let inFlight = Atomic<Int>(0)
    let next = Atomic<Int>(0)
    /// Give up resending an event this long after its first attempt (counted, never a loss: it was not acked).
    static let giveUpNanoseconds: UInt64 = 30_000_000_000

    init(client: PlexusClient, topic: String, options: Options) {
        self.client = client
        self.topic = topic
        self.options = options
        payload = [UInt8](repeating: 0x61, count: options.payloadBytes)
    }

    func send(id: Int, firstAttempt: UInt64, phase: Tally.Phase) {
        let event = CloudEvent(id: String(id), source: "/bench-deploy", type: "bench", data: payload)
        client.publish(topic: topic, [event]) { result in
            switch result {
            case .success:
                let micros = (now() - firstAttempt) / 1000
                self.tally.withLock {
                    $0.record(phase, microseconds: micros)
                    if id < $0.acked.count, !$0.acked[id] {
                        $0.acked[id] = true
                        $0.ackedCount += 1
                    }
                }
                self.inFlight.subtract(1, ordering: .relaxed)
            case .failure(let error):
                let giveUp = now() - firstAttempt > Self.giveUpNanoseconds
                self.tally.withLock {
                    if giveUp { $0.gaveUp += 1 } else { $0.retries += 1 }
                    if $0.errorSamples.count < 5 { $0.errorSamples.append("\(error)") }
                }
                if giveUp {
                    self.inFlight.subtract(1, ordering: .relaxed)
                    return
                }
                // Not connected at this instant (a replacement in progress): try again in a millisecond.
                Task {
                    try? await Task.sleep(for: .milliseconds(1))
                    self.send(id: id, firstAttempt: firstAttempt, phase: phase)
                }
            }
        }
    }

    /// Sends `rate` events a second in ticks of one millisecond until `running` turns false.
    func run(until running: Switch, capacity: Int) async {
        tally.withLock { $0.acked = [Bool](repeating: false, count: capacity) }
        let start = now()
        var sent = 0
        while running.isOn {
            let elapsed = Double(now() - start) / 1e9
            let due = min(Int(elapsed * Double(options.rate)), capacity)
            while sent < due {
                if inFlight.load(ordering: .relaxed) >= options.window {
                    // The node is behind by a whole window: count the send as skipped rather than queue forever.
                    tally.withLock { $0.skipped += 1 }
                    sent += 1
                    continue
                }
                let id = next.add(1, ordering: .relaxed).oldValue
                inFlight.add(1, ordering: .relaxed)
                send(id: id, firstAttempt: now(), phase: Tally.Phase(rawValue: phase.load(ordering: .relaxed))!)
                sent += 1
            }
            if sent >= capacity { break }
            try? await Task.sleep(for: .milliseconds(1))
        }
    }
}

/// Connects to the port every 5 ms and counts refusals (ECONNREFUSED) and other connect failures.
final class Prober: Sendable {
    let host: String
    let port: Int
    let refused = Atomic<Int>(0)
    let attempts = Atomic<Int>(0)

    init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    func probeOnce() {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        inet_pton(AF_INET, host, &address.sin_addr)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        attempts.add(1, ordering: .relaxed)
        if result != 0 { refused.add(1, ordering: .relaxed) }
    }

    func run(until running: Switch) async {
        while running.isOn {
            probeOnce()
            try? await Task.sleep(for: .milliseconds(5))
        }
    }
}

func upgradeLines(_ log: String, plugin: String) -> Int {
    guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return 0 }
    return text.split(separator: "\n").filter { $0.contains("deploy: upgrade \(plugin): upgraded") }.count
}

/// Rewrites the manifest with the config key at `base - round` (by default maxFrameSize `16 MiB - round`): a new
/// config each time, so the node replaces the plugin.
func rewrite(manifest: String, original: String, round: Int, options: Options) throws {
    let changed = original.replacingOccurrences(
        of: "\n  values:\n", with: "\n  values:\n    \(options.configKey): \(options.configBase - round)\n")
    guard changed != original else { throw BenchFailure("no 'config.values' block in \(manifest) to change") }
    try changed.write(toFile: manifest, atomically: true, encoding: .utf8)
}

func summary(_ histogram: Histogram<UInt64>?) -> [String: Double] {
    guard let histogram, histogram.totalCount > 0 else { return ["count": 0] }
    return [
        "count": Double(histogram.totalCount), "p50Ms": Double(histogram.valueAtPercentile(50)) / 1000,
        "p99Ms": Double(histogram.valueAtPercentile(99)) / 1000,
        "p999Ms": Double(histogram.valueAtPercentile(99.9)) / 1000, "maxMs": Double(histogram.max) / 1000,
    ]
}

func main() async throws {
    let options = try Options.parse(Array(CommandLine.arguments.dropFirst()))
    let original = try String(contentsOfFile: options.manifest, encoding: .utf8)
    defer { try? original.write(toFile: options.manifest, atomically: true, encoding: .utf8) }
    let topic = "deploy-\(getpid())"

    var configuration = ClientConfiguration(host: options.host, port: options.port, name: "bench-deploy")
    // Back on a new instance quickly: the first reconnection after a lost connection is made after 2 ms.
    configuration.reconnectDelay = .milliseconds(2)
    configuration.reconnectMaxDelay = .milliseconds(200)
    configuration.maxBatchEvents = 1
    let client = try await PlexusClient.connect(configuration)
    let publisher = Publisher(client: client, topic: topic, options: options)
    let prober = Prober(host: options.host, port: options.port)

    // Room for the steady phase, the upgrades (2 s each at most, generously) and a tail.
    let capacity = Int(Double(options.rate) * (options.steadySeconds + Double(options.upgrades) * 2 + 30))
    let running = Switch()
    let load = Task { await publisher.run(until: running, capacity: capacity) }
    let probing = Task { await prober.run(until: running) }

    FileHandle.standardError.write(Data("bench-deploy: steady phase, \(options.steadySeconds) s\n".utf8))
    try await Task.sleep(for: .seconds(options.steadySeconds))

    publisher.phase.store(Tally.Phase.upgrading.rawValue, ordering: .relaxed)
    let refusedBefore = prober.refused.load(ordering: .relaxed)
    let baseline = upgradeLines(options.nodeLog, plugin: options.plugin)
    var upgradeSeconds: [Double] = []
    let upgradeStart = now()
    for round in 1...max(options.upgrades, 1) where options.upgrades > 0 {
        let began = now()
        try rewrite(manifest: options.manifest, original: original, round: round, options: options)
        let deadline = now() + 30_000_000_000
        while upgradeLines(options.nodeLog, plugin: options.plugin) < baseline + round {
            guard now() < deadline else { throw BenchFailure("replacement \(round) was not logged within 30 s") }
            try await Task.sleep(for: .milliseconds(10))
        }
        upgradeSeconds.append(Double(now() - began) / 1e9)
        if round % 10 == 0 {
            FileHandle.standardError.write(Data("bench-deploy: \(round) replacements\n".utf8))
        }
    }
    let upgradingSeconds = Double(now() - upgradeStart) / 1e9
    let refusedDuring = prober.refused.load(ordering: .relaxed) - refusedBefore
    publisher.phase.store(Tally.Phase.after.rawValue, ordering: .relaxed)
    try await Task.sleep(for: .seconds(2))
    running.turnOff()
    await load.value
    await probing.value
    // Wait for what is still in flight (resends included).
    let drain = now() + 40_000_000_000
    while publisher.inFlight.load(ordering: .relaxed) > 0, now() < drain {
        try await Task.sleep(for: .milliseconds(20))
    }
    let tally = publisher.tally.withLock { $0 }

    // Read the topic back from its start and check every acknowledged id is there.
    FileHandle.standardError.write(Data("bench-deploy: reading \(tally.ackedCount) acknowledged events back\n".utf8))
    let reader = try await PlexusClient.connect(
        ClientConfiguration(host: options.host, port: options.port, name: "bench-deploy-reader"))
    let seen = Mutex([Bool](repeating: false, count: tally.acked.count))
    let seenCount = Atomic<Int>(0)
    let subscription = try await reader.subscribe(
        topic: topic, options: SubscribeOptions(start: .earliest, credits: 5000)
    ) { received in
        if let id = Int(received.event.id), id >= 0 {
            let new = seen.withLock { flags -> Bool in
                guard id < flags.count, !flags[id] else { return false }
                flags[id] = true
                return true
            }
            if new { seenCount.add(1, ordering: .relaxed) }
        }
        received.ack()
    }
    let readDeadline = now() + 120_000_000_000
    var lastCount = -1
    while now() < readDeadline {
        let count = seenCount.load(ordering: .relaxed)
        if count >= tally.ackedCount && count == lastCount { break }
        lastCount = count
        try await Task.sleep(for: .milliseconds(500))
    }
    await subscription.cancel()
    await reader.close()
    await client.close()
    let lost = seen.withLock { flags in zip(tally.acked, flags).filter { $0.0 && !$0.1 }.count }

    let steady = summary(tally.latency[.steady])
    let upgrading = summary(tally.latency[.upgrading])
    let ratio = (upgrading["p99Ms"] ?? 0) / max(steady["p99Ms"] ?? 0, 0.001)
    let sortedUpgrades = upgradeSeconds.sorted()
    let report: [String: Any] = [
        "rate": options.rate, "payloadBytes": options.payloadBytes, "upgrades": upgradeSeconds.count,
        "upgradingSeconds": upgradingSeconds,
        "upgradeSecondsMedian": sortedUpgrades.isEmpty ? 0 : sortedUpgrades[sortedUpgrades.count / 2],
        "steady": steady, "upgrading": upgrading, "p99Ratio": ratio, "acked": tally.ackedCount, "lost": lost,
        "refusedDuringUpgrades": refusedDuring, "probes": prober.attempts.load(ordering: .relaxed),
        "refusedTotal": prober.refused.load(ordering: .relaxed), "resends": tally.retries, "gaveUp": tally.gaveUp,
        "skipped": tally.skipped, "errorSamples": tally.errorSamples,
    ]
    let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys, .prettyPrinted])
    if let path = options.json { try data.write(to: URL(fileURLWithPath: path)) }
    print(String(decoding: data, as: UTF8.self))
}

do {
    try await main()
} catch {
    FileHandle.standardError.write(Data("plexus-bench-deploy: \(error)\n".utf8))
    exit(1)
}
