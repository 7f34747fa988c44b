// The registry benchmark (make bench-registry): lookups per second served in-process by etcd-registry from
// its watched cache, and the time a membership change takes to reach a watch on another instance (p99 over
// the changes), each beside standalone-registry doing the same through the same C vtable.
import Foundation
import Logging
import PlexusABI
import PlexusBench
import PlexusKernel
import Synchronization

struct Options {
    var libraries = ".build/release"
    var seconds = 2.0
    var changes = 100
    var instances = 10

    init(_ arguments: [String]) {
        var i = 1
        while i < arguments.count {
            let value = i + 1 < arguments.count ? arguments[i + 1] : ""
            switch arguments[i] {
            case "--libraries": libraries = value
            case "--seconds": seconds = Double(value) ?? seconds
            case "--changes": changes = Int(value) ?? changes
            case "--instances": instances = Int(value) ?? instances
            default: break
            }
            i += 2
        }
    }
}

struct BenchFailure: Error, CustomStringConvertible {
    var description: String
}

/// Waits for one completion of a registry hook.
final class Completion: @unchecked Sendable {
    // Safe: `status` is written before `done` is signalled and read after.
    let done = DispatchSemaphore(value: 0)
    var status: px_status = PX_OK.status
    var user: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
    static func from(_ user: UnsafeMutableRawPointer?) -> Completion? {
        user.map { Unmanaged<Completion>.fromOpaque($0).takeUnretainedValue() }
    }
}

/// Counts lookups completed (served synchronously from memory).
final class Counter: Sendable {
    let value = Atomic<Int>(0)
}

/// Records when a watch saw each instance id, by the index in its name.
final class Seen: Sendable {
    let times = Mutex<[Int: ContinuousClock.Instant]>([:])
}

/// One registry instance loaded through the kernel's `StandalonePlugin`, driven through its C vtable.
struct Registry {
    let plugin: StandalonePlugin
    let instance: StandalonePlugin.Instance
    let vtable: UnsafePointer<px_registry_vtable>
    var pointer: UnsafeMutableRawPointer { instance.pointer! }

    /// Loads `library` (once per library: a second instance shares the image) and starts an instance.
    init(_ plugin: StandalonePlugin, data: String) throws {
        self.plugin = plugin
        instance = try plugin.start(dataDirectory: data)
        guard let vtable = plugin.registry else { throw BenchFailure(description: "\(plugin.library) has no registry") }
        self.vtable = vtable
    }

    func register(_ service: String, _ id: String) throws {
        let completion = Completion()
        let status = service.withCString { s in
            id.withCString { i in
                "127.0.0.1:9000".withCString { a in
                    var c = px_service_instance()
                    c.struct_size = UInt32(MemoryLayout<px_service_instance>.size)
                    c.service = px_str(ptr: s, len: service.utf8.count)
                    c.instance_id = px_str(ptr: i, len: id.utf8.count)
                    c.address = px_str(ptr: a, len: 14)
                    return StandalonePlugin.withErrorBuffer { err in
                        vtable.pointee.on_register(
                            pointer, &c,
                            { user, status, _ in
                                let completion = Completion.from(user)
                                completion?.status = status
                                completion?.done.signal()
                            }, completion.user, err)
                    }.result
                }
            }
        }
        guard status == PX_OK.status else { throw BenchFailure(description: "register refused: \(status)") }
        completion.done.wait()
        guard completion.status == PX_OK.status else {
            throw BenchFailure(description: "register failed: \(completion.status)")
        }
    }

    /// Lookups of `service` for `seconds`: how many completed per second.
    func lookups(_ service: String, seconds: Double) -> Double {
        let counter = Counter()
        let user = Unmanaged.passUnretained(counter).toOpaque()
        let start = ContinuousClock.now
        let end = start + .milliseconds(Int(seconds * 1000))
        var calls = 0
        service.withCString { s in
            let name = px_str(ptr: s, len: service.utf8.count)
            while ContinuousClock.now < end {
                for _ in 0..<1000 {
                    _ = StandalonePlugin.withErrorBuffer { err in
                        vtable.pointee.on_lookup(
                            pointer, name,
                            { user, _, _, _, _ in
                                guard let user else { return }
                                Unmanaged<Counter>.fromOpaque(user).takeUnretainedValue().value.add(
                                    1, ordering: .relaxed)
                            }, user, err)
                    }
                }
                calls += 1000
            }
        }
        let elapsed = ContinuousClock.now - start
        let done = counter.value.load(ordering: .relaxed)
        return Double(done) / (Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18)
    }

    func watch(_ service: String, _ seen: Seen) throws {
        var id: UInt64 = 0
        let user = Unmanaged.passUnretained(seen).toOpaque()
        let status = service.withCString { s in
            StandalonePlugin.withErrorBuffer { err in
                vtable.pointee.on_watch(
                    pointer, px_str(ptr: s, len: service.utf8.count),
                    { user, kind, instance in
                        guard let user, let instance, kind == PX_WATCH_PUT.rawValue else { return }
                        let name = instance.pointee.instance_id.string
                        guard let index = Int(name.dropFirst(1)) else { return }
                        let now = ContinuousClock.now
                        Unmanaged<Seen>.fromOpaque(user).takeUnretainedValue().times.withLock { $0[index] = now }
                    }, user, &id, err)
            }.result
        }
        guard status == PX_OK.status else { throw BenchFailure(description: "watch refused: \(status)") }
    }

    func stop() { try? instance.stop() }
}

/// Registers `changes` instances one after another on `writer` and returns, per change, the time until
/// `reader`'s watch saw it.
func changeLatencies(writer: Registry, reader: Registry, changes: Int) throws -> [Duration] {
    let seen = Seen()
    let service = "bench-changes-\(UUID().uuidString.prefix(6))"
    try reader.watch(service, seen)
    var latencies: [Duration] = []
    for index in 0..<changes {
        let start = ContinuousClock.now
        try writer.register(service, "i\(index)")
        var at: ContinuousClock.Instant?
        while at == nil, ContinuousClock.now - start < .seconds(5) {
            at = seen.times.withLock { $0[index] }
            if at == nil { usleep(50) }
        }
        guard let at else { throw BenchFailure(description: "change \(index) not seen within 5 s") }
        latencies.append(at - start)
    }
    return latencies
}

func p99(_ values: [Duration]) -> Double {
    let sorted = values.sorted()
    let d = sorted[min(sorted.count - 1, Int(Double(sorted.count) * 0.99))]
    return Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15
}

/// One etcd member on free loopback ports with a temporary data directory.
func startEtcd(root: String) throws -> (Process, String) {
    let ports = try LoopbackPorts.free(2)
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/etcd")
    process.arguments = [
        "--name", "bench", "--data-dir", root + "/etcd",
        "--listen-client-urls", "http://127.0.0.1:\(ports[0])", "--advertise-client-urls",
        "http://127.0.0.1:\(ports[0])",
        "--listen-peer-urls", "http://127.0.0.1:\(ports[1])",
        "--initial-advertise-peer-urls", "http://127.0.0.1:\(ports[1])",
        "--initial-cluster", "bench=http://127.0.0.1:\(ports[1])", "--log-level", "error",
    ]
    process.standardError = FileHandle(forWritingAtPath: "/dev/null")
    try process.run()
    Thread.sleep(forTimeInterval: 1.5)
    return (process, "127.0.0.1:\(ports[0])")
}

let options = Options(CommandLine.arguments)
let root = FileManager.default.temporaryDirectory.appendingPathComponent("plexus-bench-registry-\(UUID())").path
defer { try? FileManager.default.removeItem(atPath: root) }
do {
    let (etcd, endpoint) = try startEtcd(root: root)
    defer {
        etcd.terminate()
        etcd.waitUntilExit()
    }
    let etcdLibrary = options.libraries + "/libEtcdRegistry.so"
    let standaloneLibrary = options.libraries + "/libStandaloneRegistry.so"
    let etcdConfig = #"{"endpoints": ["\#(endpoint)"], "prefix": "bench"}"#
    let logger = Logger(label: "bench", factory: { _ in SwiftLogNoOpLogHandler() })
    let etcdPlugin = try StandalonePlugin(
        library: etcdLibrary, manifest: nil, configJSON: etcdConfig, cacheDirectory: root + "/cache", logger: logger)
    let standalonePlugin = try StandalonePlugin(
        library: standaloneLibrary, manifest: nil, configJSON: "{}", cacheDirectory: root + "/cache", logger: logger)
    let a = try Registry(etcdPlugin, data: root + "/a")
    let b = try Registry(etcdPlugin, data: root + "/b")
    let s = try Registry(standalonePlugin, data: root + "/s")
    defer {
        a.stop()
        b.stop()
        s.stop()
    }
    for registry in [a, s] {
        for i in 0..<options.instances { try registry.register("bench-lookups", "l\(i)") }
    }
    _ = a.lookups("bench-lookups", seconds: 0.2)  // the cache's first fill
    let etcdLookups = a.lookups("bench-lookups", seconds: options.seconds)
    let standaloneLookups = s.lookups("bench-lookups", seconds: options.seconds)
    let etcdChange = p99(try changeLatencies(writer: a, reader: b, changes: options.changes))
    let standaloneChange = p99(try changeLatencies(writer: s, reader: s, changes: options.changes))
    func row(_ name: String, _ plexus: Double, _ baseline: Double, digits: Int) -> String {
        func cell(_ value: Double) -> String {
            let text = String(format: "%.\(digits)f", value)
            return String(repeating: " ", count: max(0, 14 - text.count)) + text
        }
        let ratio = String(format: "%.2f", plexus / baseline)
        return name.padding(toLength: 36, withPad: " ", startingAt: 0) + cell(plexus) + cell(baseline) + "  " + ratio
    }
    print("registry benchmark (\(options.instances) instances per lookup, \(options.changes) changes)")
    print("measure".padding(toLength: 36, withPad: " ", startingAt: 0) + "  etcd-registry    standalone  ratio")
    print(row("lookups/s (in process, C vtable)", etcdLookups, standaloneLookups, digits: 0))
    print(row("membership change seen, p99 ms", etcdChange, standaloneChange, digits: 2))
    print("targets: lookups >= 1,000,000/s from the cache; change p99 is reported, not judged")
} catch {
    FileHandle.standardError.write(Data("bench-registry: \(error)\n".utf8))
    exit(1)
}
