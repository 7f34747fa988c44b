import Foundation
import PlexusCore
import PlexusKernel
import PlexusWire
import Synchronization
import Testing

/// Replacing the TCP protocol plugin on a running node while clients keep connecting and publishing: the
/// listening socket is the kernel's (`listen`, ABI 1.2), so no connection is refused, and every publish that
/// was acknowledged is stored.
@Suite("Protocol upgrade")
struct ProtocolUpgradeTests {
    /// What the client loop saw.
    struct Tally: Sendable {
        var refused = 0
        var welcomed = 0
        var goodbyes = 0
        var attempts = 0
        var acked: [String] = []
        var errors: [String] = []
    }

    /// How many replacements of tcp-protocol the node has logged.
    static func upgrades(_ node: NodeProcess) -> Int {
        node.stderr.split(separator: "\n").filter { $0.contains("deploy: upgrade tcp-protocol: upgraded") }.count
    }

    @Test("ten replacements of tcp-protocol under a connect-and-publish loop: no refusal, no acknowledged loss")
    func replaceUnderLoad() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests()
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let port = try await node.tcpPort()
        let tcpFile = manifests.appendingPathComponent("tcp-protocol.yaml")
        let tcpText = try String(contentsOf: tcpFile, encoding: .utf8)

        let tally = Mutex(Tally())
        let running = Atomic<Bool>(true)
        let clients = Task {
            var n = 0
            while running.load(ordering: .relaxed) {
                n += 1
                let id = "u-\(n)"
                let connection: RawConnection
                do {
                    connection = try await RawConnection.connect(port: port)
                } catch {
                    tally.withLock {
                        $0.refused += 1
                        $0.errors.append("connect: \(error)")
                    }
                    continue
                }
                defer { Task { await connection.vanish() } }
                do {
                    try await connection.send(Frame(id: 1, .hello(Hello(client: "upgrade-test", heartbeatMs: 0))))
                    guard case .frame(let first)? = try await connection.next() else { continue }
                    guard case .welcome = first.body else {
                        if case .goodbye = first.body { tally.withLock { $0.goodbyes += 1 } }
                        continue
                    }
                    tally.withLock { $0.welcomed += 1 }
                    let event = CloudEvent(id: id, source: "/upgrade", type: "t")
                    tally.withLock { $0.attempts += 1 }
                    try await connection.send(
                        Frame(id: 2, .publish(Publish(topic: "upgrade", events: try WireEvents([event])))))
                    while case .frame(let frame)? = try await connection.next() {
                        if case .publishAck(let ack) = frame.body, frame.id == 2 {
                            if ack.status == .ok { tally.withLock { $0.acked.append(id) } }
                            break
                        }
                        if case .goodbye = frame.body { break }
                    }
                } catch {
                    tally.withLock { $0.errors.append("\(id): \(error)") }
                }
            }
        }

        for round in 1...10 {
            // Traffic before each replacement: at least five more acknowledged publishes, each on a connection of
            // its own (waiting up to 10 s: a loaded two-core machine can take seconds for five).
            let before = tally.withLock { $0.acked.count }
            let quiet = ContinuousClock.now + .seconds(10)
            while tally.withLock({ $0.acked.count }) < before + 5, ContinuousClock.now < quiet {
                try await Task.sleep(for: .milliseconds(20))
            }
            let changed = tcpText.replacingOccurrences(
                of: "\n  values:\n", with: "\n  values:\n    maxFrameSize: \(16_777_216 - round)\n")
            try #require(changed != tcpText, "could not set maxFrameSize in the copy of tcp-protocol.yaml")
            try changed.write(to: tcpFile, atomically: true, encoding: .utf8)
            // Each replacement is logged once it is done.
            let deadline = ContinuousClock.now + .seconds(30)
            while Self.upgrades(node) < round, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(Self.upgrades(node) == round, "replacement \(round) was not logged")
        }
        try await Task.sleep(for: .milliseconds(300))
        running.store(false, ordering: .relaxed)
        await clients.value
        #expect(try await node.tcpPort() == port, "the port stayed the kernel's")
        let seen = tally.withLock { $0 }
        #expect(seen.refused == 0, "connections refused during the replacements: \(seen.errors.prefix(5))")
        #expect(seen.welcomed >= 50, "too few connections to show anything: \(seen.welcomed)")
        #expect(try await node.list().first { $0.name == "tcp-protocol" }?.state == .active)
        #expect(!node.stderr.contains("stopping 1.0.0 first"), "the new instance started beside the old one")

        // Every acknowledged publish is stored: read the topic back from the start.
        // Read the topic back from the start until every acknowledged id is seen (or 15 s pass); unacknowledged
        // publishes may be stored too, so the reader is stopped rather than told how many to expect.
        let out = directory.url.appendingPathComponent("sub.out")
        let sub = try Command.launch(
            try Repository.plexus(),
            ["sub", "upgrade", "--from", "earliest", "--server", "127.0.0.1:\(port)"], in: directory.url,
            stdout: out, stderr: directory.url.appendingPathComponent("sub.err"))
        defer { if sub.isRunning { sub.terminate() } }
        var stored = Set<String>()
        let deadline = ContinuousClock.now + .seconds(15)
        repeat {
            try await Task.sleep(for: .milliseconds(200))
            let text = (try? String(contentsOf: out, encoding: .utf8)) ?? ""
            stored = Set(
                text.split(separator: "\n").compactMap { line in
                    (try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])?["id"] as? String
                })
        } while !seen.acked.allSatisfy(stored.contains) && ContinuousClock.now < deadline
        let lost = seen.acked.filter { !stored.contains($0) }
        #expect(lost.isEmpty, "acknowledged but not stored: \(lost.prefix(10)) of \(seen.acked.count)")
        #expect(seen.acked.count >= 50, "too few acknowledged publishes to show anything")
    }
}
