import CMosquitto
import Foundation
import PlexusBench

/// mosquitto 2.0 (Debian's) on a free loopback port with a generated config: anonymous clients, persistence
/// on with its default autosave (every 1,800 s and at shutdown, never per message), a session queue long enough
/// for a source row's N messages, `$SYS` counters every second (the sink rows' check), and `set_tcp_nodelay`: with
/// Nagle's algorithm on its side (mosquitto's default) the broker's small PUBACKs wait, and QoS 1 with a window of
/// 20 stalls at ~2,200 messages/s whoever publishes (measured: 47k/s without it). Started as root, it
/// would switch to the `mosquitto` account, which cannot write the scratch directory: `user` is this process's.
final class Mosquitto {
    let port: Int
    let server: ServerProcess

    init(directory: String, queued: Int) throws {
        guard
            let executable = which("mosquitto")
                ?? ["/usr/sbin/mosquitto"].first(where: FileManager.default.isExecutableFile)
        else { throw BenchFailure("mosquitto is not installed: run scripts/interop-deps") }
        port = try LoopbackPorts.one()
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let config = directory + "/mosquitto.conf"
        try """
        listener \(port) 127.0.0.1
        allow_anonymous true
        user \(ProcessInfo.processInfo.userName)
        persistence true
        persistence_location \(directory)/
        max_queued_messages \(queued)
        sys_interval 1
        set_tcp_nodelay true
        log_dest stderr
        log_type error
        log_type warning

        """.write(toFile: config, atomically: true, encoding: .utf8)
        // SIGKILL: like redis-server, it may not see SIGTERM with this process's signal mask.
        server = try ServerProcess(
            [executable, "-c", config], log: directory + "/mosquitto.log", stopSignal: SIGKILL)
        guard waitUntil(seconds: 10, { (try? MQTTBenchClient(port: port, id: "probe-\(UUID())")) != nil }) else {
            throw BenchFailure("mosquitto did not start (see \(directory)/mosquitto.log)")
        }
    }

    /// The broker's count of PUBLISH packets received since it started (`$SYS/broker/publish/messages/received`,
    /// refreshed every second), once it reached `atLeast` or after 5 s.
    func publishesReceived(atLeast: Int = 0) throws -> Int {
        var seen = -1
        _ = try waitUntil(seconds: 5) {
            let client = try MQTTBenchClient(port: port, id: "sys-\(UUID())")
            seen = try client.retained("$SYS/broker/publish/messages/received").flatMap { Int($0) } ?? -1
            return seen >= atLeast
        }
        return seen
    }

    deinit { server.stop() }
}

/// What a bench client's callbacks saw; read back on the thread that runs `mosquitto_loop`.
final class MQTTBenchState {
    var connack: Int32?
    var acknowledged = 0
    var subscribed = false
    var messages: [String] = []
}

/// A plain libmosquitto client driven by `mosquitto_loop` on the caller's thread, as the connector drives its
/// own: the baseline publisher (QoS 1, a batch sent then every PUBACK awaited, libmosquitto's default in-flight
/// window of 20 messages on both sides) and the sessions and probes around the rows.
final class MQTTBenchClient {
    let handle: OpaquePointer
    let state = MQTTBenchState()
    private let box: Unmanaged<MQTTBenchState>

    private static let initialized: Int32 = mosquitto_lib_init()

    /// Connects and waits for the CONNACK; `cleanSession: false` keeps a session at the broker under `id`.
    init(port: Int, id: String, cleanSession: Bool = true) throws {
        _ = Self.initialized
        box = Unmanaged.passRetained(state)
        guard let handle = mosquitto_new(id, cleanSession, box.toOpaque()) else {
            box.release()
            throw BenchFailure("mosquitto_new failed for \(id)")
        }
        self.handle = handle
        mosquitto_connect_callback_set(handle) { _, context, rc in
            guard let context else { return }
            Unmanaged<MQTTBenchState>.fromOpaque(context).takeUnretainedValue().connack = rc
        }
        mosquitto_publish_callback_set(handle) { _, context, _ in
            guard let context else { return }
            Unmanaged<MQTTBenchState>.fromOpaque(context).takeUnretainedValue().acknowledged += 1
        }
        mosquitto_subscribe_callback_set(handle) { _, context, _, _, _ in
            guard let context else { return }
            Unmanaged<MQTTBenchState>.fromOpaque(context).takeUnretainedValue().subscribed = true
        }
        mosquitto_message_callback_set(handle) { _, context, message in
            guard let context, let m = message?.pointee else { return }
            let payload = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(m.payloadlen))) } ?? []
            Unmanaged<MQTTBenchState>.fromOpaque(context).takeUnretainedValue().messages.append(
                String(decoding: payload, as: UTF8.self))
        }
        // From here the instance is whole: a throw runs `deinit`.
        guard mosquitto_connect(handle, "127.0.0.1", Int32(port), 30) == MOSQ_ERR_SUCCESS.rawValue else {
            throw BenchFailure("cannot connect to mosquitto :\(port)")
        }
        try loop(seconds: 5, "CONNACK") { state.connack != nil }
        guard state.connack == 0 else { throw BenchFailure("mosquitto :\(port) refused \(id): \(state.connack ?? -1)") }
    }

    deinit {
        mosquitto_disconnect(handle)
        mosquitto_destroy(handle)
        box.release()
    }

    /// Runs the network loop until `done` holds, at most `seconds`.
    func loop(seconds: Double, _ what: String, until done: () -> Bool) throws {
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
        while !done() {
            guard ContinuousClock.now < deadline else {
                throw BenchFailure("mosquitto: no \(what) within \(seconds) s")
            }
            let rc = mosquitto_loop(handle, 100, 1)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw BenchFailure("mosquitto: \(what): \(String(cString: mosquitto_strerror(rc)))")
            }
        }
    }

    /// Subscribes at QoS 1 and waits for the SUBACK.
    func subscribe(_ filter: String) throws {
        state.subscribed = false
        guard mosquitto_subscribe(handle, nil, filter, 1) == MOSQ_ERR_SUCCESS.rawValue else {
            throw BenchFailure("cannot subscribe to \(filter)")
        }
        try loop(seconds: 5, "SUBACK") { state.subscribed }
    }

    /// The retained message of `topic` (the `$SYS` counters are retained), if one comes within 2 s.
    func retained(_ topic: String) throws -> String? {
        try subscribe(topic)
        try? loop(seconds: 2, "retained message of \(topic)") { !state.messages.isEmpty }
        return state.messages.last
    }

    /// Publishes each payload at QoS 1, then runs the loop until the broker acknowledged (PUBACK) every one.
    func publish(_ topic: String, _ payloads: ArraySlice<[UInt8]>) throws {
        let target = state.acknowledged + payloads.count
        for payload in payloads {
            let rc = payload.withUnsafeBytes {
                mosquitto_publish(handle, nil, topic, Int32($0.count), $0.baseAddress, 1, false)
            }
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw BenchFailure("publish to \(topic): \(String(cString: mosquitto_strerror(rc)))")
            }
        }
        try loop(seconds: 30, "PUBACK of \(payloads.count) messages") { state.acknowledged >= target }
    }
}
