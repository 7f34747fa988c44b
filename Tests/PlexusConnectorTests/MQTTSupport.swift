import CMosquitto
import Foundation
import PlexusBench
import PlexusCore
import Synchronization

/// A real mosquitto broker on a free loopback port, with persistence on in a temporary directory, saved after
/// every change (`autosave_on_changes`), so that a restart (even a kill) keeps sessions and queued QoS 1
/// messages.
final class MosquittoBroker: @unchecked Sendable {
    // Safe: used from the one test that owns it.
    let port: Int
    let directory: URL
    private let server: ServerProcess

    init() throws {
        guard
            let executable = which("mosquitto") ?? ["/usr/sbin/mosquitto"].first(where: FileManager.default.fileExists)
        else {
            throw HarnessError(description: "mosquitto is not installed: run scripts/interop-deps")
        }
        port = try LoopbackPorts.free(1)[0]
        directory = try Repository.temporaryDirectory("plexus-mosquitto")
        let config = directory.appendingPathComponent("mosquitto.conf")
        // `user`: started as root, mosquitto would switch to the `mosquitto` user, which cannot write here.
        try """
        listener \(port) 127.0.0.1
        allow_anonymous true
        persistence true
        user \(ProcessInfo.processInfo.userName)
        persistence_location \(directory.path)/
        autosave_interval 1
        autosave_on_changes true
        max_queued_messages 100000
        log_dest stderr
        log_type error
        log_type warning

        """.write(to: config, atomically: true, encoding: .utf8)
        // The test process blocks some signals in its children (see `ServerProcess.stopSignal`): SIGKILL is a
        // crash, which the per-change autosave above survives.
        server = ServerProcess(
            executable: executable, arguments: ["-c", config.path],
            log: directory.appendingPathComponent("mosquitto.log"), stopSignal: SIGKILL)
        try start()
    }

    func start() throws {
        try server.start()
        let ready = Wait.until(seconds: 10) { (try? MQTTTestClient(port: port, id: "probe-\(UUID())")) != nil }
        guard ready else { throw HarnessError(description: "mosquitto did not start:\n\(server.output)") }
    }

    func stop() { server.stop() }

    /// What the broker logged.
    var output: String { server.output }

    func restart() throws {
        stop()
        try start()
    }

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

/// What a test client's callbacks saw (on libmosquitto's own thread).
final class MQTTTestState: Sendable {
    let connected = Mutex(false)
    let acknowledged = Mutex<Set<Int32>>([])
    let subscribed = Mutex<Set<Int32>>([])
    let messages = Mutex<[(topic: String, payload: [UInt8])]>([])
}

/// A plain libmosquitto client for the tests, with its network loop on libmosquitto's thread
/// (`mosquitto_loop_start`), reconnecting by itself after the broker restarts.
final class MQTTTestClient: @unchecked Sendable {
    // Safe: libmosquitto's functions used here are thread-safe with the threaded loop; `state` is locked.
    let handle: OpaquePointer
    let state = MQTTTestState()
    private let box: Unmanaged<MQTTTestState>

    static let initialized: Int32 = mosquitto_lib_init()

    /// Connects (waiting for the CONNACK); `cleanSession: false` keeps the session at the broker under `id`.
    init(port: Int, id: String, cleanSession: Bool = true) throws {
        _ = Self.initialized
        box = Unmanaged.passRetained(state)
        guard let handle = mosquitto_new(id, cleanSession, box.toOpaque()) else {
            box.release()
            throw HarnessError(description: "mosquitto_new failed")
        }
        self.handle = handle
        mosquitto_connect_callback_set(handle) { _, context, rc in
            guard let context, rc == 0 else { return }
            Unmanaged<MQTTTestState>.fromOpaque(context).takeUnretainedValue().connected.withLock { $0 = true }
        }
        mosquitto_publish_callback_set(handle) { _, context, mid in
            guard let context else { return }
            _ = Unmanaged<MQTTTestState>.fromOpaque(context).takeUnretainedValue().acknowledged.withLock {
                $0.insert(mid)
            }
        }
        mosquitto_subscribe_callback_set(handle) { _, context, mid, _, _ in
            guard let context else { return }
            _ = Unmanaged<MQTTTestState>.fromOpaque(context).takeUnretainedValue().subscribed.withLock {
                $0.insert(mid)
            }
        }
        mosquitto_message_callback_set(handle) { _, context, message in
            guard let context, let m = message?.pointee else { return }
            let topic = m.topic.map { String(cString: $0) } ?? ""
            let payload = m.payload.map { Array(UnsafeRawBufferPointer(start: $0, count: Int(m.payloadlen))) } ?? []
            Unmanaged<MQTTTestState>.fromOpaque(context).takeUnretainedValue().messages.withLock {
                $0.append((topic, payload))
            }
        }
        mosquitto_reconnect_delay_set(handle, 1, 1, false)
        guard mosquitto_connect(handle, "127.0.0.1", Int32(port), 30) == MOSQ_ERR_SUCCESS.rawValue,
            mosquitto_loop_start(handle) == MOSQ_ERR_SUCCESS.rawValue
        else {
            // The instance is whole: `deinit` (through `close`) frees the handle and the box.
            throw HarnessError(description: "cannot connect to mosquitto :\(port)")
        }
        guard Wait.until(seconds: 5, { self.state.connected.withLock { $0 } }) else {
            throw HarnessError(description: "no CONNACK from mosquitto :\(port)")
        }
    }

    private var closed = false

    func close() {
        guard !closed else { return }
        closed = true
        mosquitto_disconnect(handle)
        mosquitto_loop_stop(handle, true)
        mosquitto_destroy(handle)
        box.release()
    }

    deinit { close() }

    func subscribe(_ filter: String) throws {
        var mid: Int32 = 0
        guard mosquitto_subscribe(handle, &mid, filter, 1) == MOSQ_ERR_SUCCESS.rawValue,
            Wait.until(seconds: 5, { self.state.subscribed.withLock { $0.contains(mid) } })
        else { throw HarnessError(description: "cannot subscribe to \(filter)") }
    }

    /// Publishes each payload at QoS 1 and waits (bounded) for every PUBACK.
    func publish(_ topic: String, _ payloads: [[UInt8]]) throws {
        var mids: [Int32] = []
        for payload in payloads {
            var mid: Int32 = 0
            let rc = payload.withUnsafeBytes {
                mosquitto_publish(handle, &mid, topic, Int32($0.count), $0.baseAddress, 1, false)
            }
            guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw HarnessError(description: "publish failed: \(rc)") }
            mids.append(mid)
        }
        guard Wait.until(seconds: 10, { self.state.acknowledged.withLock { Set(mids).isSubset(of: $0) } }) else {
            throw HarnessError(description: "no PUBACK for every one of \(mids.count) messages")
        }
    }

    /// The events received so far, decoded from their CloudEvents JSON payloads.
    var events: [CloudEvent] {
        state.messages.withLock { $0 }.compactMap { try? CloudEventJSON.decode($0.payload) }
    }
}
