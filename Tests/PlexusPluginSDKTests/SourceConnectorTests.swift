import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusPluginSDK

#if canImport(Glibc)
    import Glibc
#endif

/// What the fake host's publish does and saw (a C function pointer cannot capture, so this is global).
private let fakeHost = Mutex<FakeHostState>(FakeHostState())

private struct FakeHostState {
    /// Statuses the next publishes complete with, in order; PX_OK once used up.
    var refusals: [px_status_code] = []
    var attempts = 0
    /// The ids of every event a publish completed with PX_OK for.
    var published: [String] = []
}

/// A host API table whose publish completes with the scripted refusals first, then with PX_OK.
private func fakeAPI() -> UnsafeMutablePointer<px_host_api> {
    let api = UnsafeMutablePointer<px_host_api>.allocate(capacity: 1)
    api.initialize(to: px_host_api())
    api.pointee.struct_size = UInt32(MemoryLayout<px_host_api>.size)
    api.pointee.log = { _, _, _ in }
    api.pointee.counter_add = { _, _, _ in }
    api.pointee.gauge_set = { _, _, _ in }
    api.pointee.publish = { _, _, events, count, done, user, _ in
        let ids = (0..<count).map { CloudEvent(copying: events![$0]!).id }
        let status = fakeHost.withLock { state -> px_status_code in
            state.attempts += 1
            guard state.refusals.isEmpty else { return state.refusals.removeFirst() }
            state.published += ids
            return PX_OK
        }
        // Completes on another thread, as the kernel may.
        let userBits = Int(bitPattern: user)
        let thread = try? ConnectorThread(name: "done") {
            withPXStr(status == PX_OK ? "" : "refused") {
                done?(UnsafeMutableRawPointer(bitPattern: userBits), status.status, 0, $0)
            }
        }
        _ = thread
        return PX_OK.status
    }
    return api
}

/// A source of `batches` batches of three events, positions "1", "2", …
private final class ScriptedSource: SourceDriver, @unchecked Sendable {
    // Safe: the connector calls a driver from its one thread only.
    var next = 0
    let batches: Int
    var released: [String] = []

    init(batches: Int) { self.batches = batches }

    func connect(position: [UInt8]?) throws {
        next = position.flatMap { Int(String(decoding: $0, as: UTF8.self)) } ?? 0
    }

    func read(max: Int, wait: Duration) throws -> SourceBatch {
        guard next < batches else { return SourceBatch(events: [], position: nil) }
        next += 1
        let events = (0..<3).map { CloudEvent(id: "e\(next)-\($0)", source: "/s", type: "t") }
        return SourceBatch(events: events, position: Array(String(next).utf8), handles: ["h\(next)"])
    }

    func published(_ batch: SourceBatch) throws { released += batch.handles }
    func disconnect() {}
}

/// A position store that checks, at each save, that the node acknowledged every event before the position.
private final class CheckingStore: PositionStore, @unchecked Sendable {
    let saved = Mutex<[String]>([])
    let early = Atomic<Int>(0)
    var location: String { "checking" }
    func load() throws -> [UInt8]? { nil }
    func save(_ position: [UInt8]) throws {
        let batch = Int(String(decoding: position, as: UTF8.self)) ?? 0
        let acknowledged = fakeHost.withLock { $0.published }
        if !acknowledged.contains("e\(batch)-2") { early.add(1, ordering: .relaxed) }
        saved.withLock { $0.append(String(batch)) }
    }
}

@Suite("Source connector", .serialized)
struct SourceConnectorTests {
    @Test("refused publishes are retried with backoff, never dropped; the position follows only acknowledged batches")
    func retriesRefusedPublishes() throws {
        fakeHost.withLock {
            $0 = FakeHostState()
            $0.refusals = [PX_ERR_UNAVAILABLE, PX_ERR_RESOURCE_EXHAUSTED, PX_ERR_UNAVAILABLE, PX_ERR_TIMEOUT]
        }
        let api = fakeAPI()
        defer { api.deallocate() }
        let host = Host(api: api, handle: nil)
        let settings = try ConnectorSettings(entries: ["topic": "t", "reconnectMaxMs": "20"], instanceName: "src")
        let driver = ScriptedSource(batches: 4)
        let store = CheckingStore()
        let source = SourceConnector(name: "src", host: host, settings: settings, driver: driver, positions: store)
        try source.start()
        var done = false
        for _ in 0..<500 where !done {
            done = store.saved.withLock { $0.count } == 4
            if !done { usleep(10_000) }
        }
        try source.stop(timeout: .seconds(5))
        let state = fakeHost.withLock { $0 }
        let expected = (1...4).flatMap { batch in (0..<3).map { "e\(batch)-\($0)" } }
        #expect(state.published == expected, "every event once, in order, despite four refusals")
        #expect(state.attempts == 8, "four refused attempts, then one per batch")
        #expect(store.saved.withLock { $0 } == ["1", "2", "3", "4"])
        #expect(store.early.load(ordering: .relaxed) == 0, "no position saved before its batch was acknowledged")
        #expect(driver.released == ["h1", "h2", "h3", "h4"])
        #expect(source.publishedCount == 12)
    }
}
