import Foundation
import Synchronization
import Testing

@testable import EtcdClient

/// The etcd registry's client layer (`Plugins/EtcdRegistry/EtcdClient`) against a real etcd started on
/// 127.0.0.1 by `EtcdCluster`: version-conditioned writes under concurrent writers, and prefix watches that
/// resume after a restart of etcd or resynchronise after a compaction.
@Suite("etcd client against a real etcd", .serialized)
struct EtcdClientTests {
    static func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    /// Collects a watch's updates.
    final class Updates: Sendable {
        private let received = Mutex<[EtcdWatchUpdate]>([])
        private let inside = Atomic<Bool>(false)
        private let overlaps = Atomic<Int>(0)

        func receive(_ update: EtcdWatchUpdate) {
            if inside.exchange(true, ordering: .acquiring) { overlaps.add(1, ordering: .relaxed) }
            received.withLock { $0.append(update) }
            inside.store(false, ordering: .releasing)
        }

        var events: [EtcdEvent] { received.withLock { $0.flatMap(\.events) } }
        var updates: [EtcdWatchUpdate] { received.withLock { $0 } }
        var overlapped: Bool { overlaps.load(ordering: .relaxed) > 0 }

        /// The events once `done` holds for them, or after `seconds`.
        func wait(seconds: Double = 10, until done: ([EtcdEvent]) -> Bool) async -> [EtcdEvent] {
            let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1000))
            while ContinuousClock.now < deadline {
                if done(events) { break }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return events
        }
    }

    final class Counter: Sendable {
        private let count = Atomic<Int>(0)
        func add() { count.add(1, ordering: .relaxed) }
        var value: Int { count.load(ordering: .relaxed) }
    }

    @Test("get, put, conditional put and delete report versions, revisions and conflicts")
    func conditionalWrites() async throws {
        let etcd = try EtcdCluster()
        defer { etcd.stop() }
        let client = try etcd.client()
        let key = Self.bytes("t/kv/a")
        let (absent, _) = try await client.get(key)
        #expect(absent == nil)
        guard case .written(let v1, let r1) = try await client.put(key, Self.bytes("1"), if: .exactly(0)) else {
            Issue.record("create failed")
            return
        }
        #expect(v1 == 1)
        #expect(
            try await client.put(key, Self.bytes("x"), if: .exactly(0)) == .conflict(currentVersion: 1, revision: r1))
        guard case .written(let v2, let r2) = try await client.put(key, Self.bytes("2"), if: .exactly(1)) else {
            Issue.record("compare-and-swap at version 1 failed")
            return
        }
        #expect(v2 == 2 && r2 == r1 + 1)
        let (read, at) = try await client.get(key)
        #expect(read?.value == Self.bytes("2") && read?.version == 2 && read?.modRevision == r2 && at == r2)
        #expect(try await client.delete(key, if: .exactly(1)) == .conflict(currentVersion: 2, revision: r2))
        #expect(try await client.delete(key, if: .exactly(2)) == .written(version: 0, revision: r2 + 1))
        #expect(try await client.delete(key) == .absent(revision: r2 + 1))
        await client.close()
    }

    @Test("concurrent compare-and-swap writers: exactly one create wins, and no increment is lost")
    func casRaces() async throws {
        let etcd = try EtcdCluster()
        defer { etcd.stop() }
        let client = try etcd.client()
        let key = Self.bytes("t/race/counter")
        let writers = 8
        let increments = 15
        let creates = try await withThrowingTaskGroup(of: Bool.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    if case .written = try await client.put(key, Self.bytes("0:\(writer)"), if: .exactly(0)) {
                        return true
                    }
                    return false
                }
            }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(creates == 1, "one create of an absent key succeeds, the others conflict")
        let conflicts = Counter()
        try await withThrowingTaskGroup(of: Void.self) { group in
            for writer in 0..<writers {
                group.addTask {
                    var done = 0
                    var sequence = 0
                    while done < increments {
                        let (current, _) = try await client.get(key)
                        guard let current else { throw EtcdCluster.SetupError(description: "the counter vanished") }
                        let count = Int(String(decoding: current.value, as: UTF8.self).split(separator: ":")[0]) ?? -1
                        sequence += 1
                        let token = "\(count + 1):\(writer):\(sequence)"
                        do {
                            switch try await client.put(key, Self.bytes(token), if: .exactly(current.version)) {
                            case .written: done += 1
                            case .conflict: conflicts.add()
                            case .absent: throw EtcdCluster.SetupError(description: "a put answered absent")
                            }
                        } catch let error as EtcdError where error.code == .unavailable {
                            // The outcome is unknown (a conditional write is not retried): as any careful
                            // writer, read again; the unique token tells whether this write was applied.
                            var (now, _) = try await client.get(key)
                            while now == nil { (now, _) = try await client.get(key) }
                            var applied = now?.value == Self.bytes(token)
                            if !applied {
                                applied = try await Self.history(
                                    client, key, contains: token, after: current.modRevision)
                            }
                            if applied { done += 1 }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let (final, _) = try await client.get(key)
        let total = final.map { String(decoding: $0.value, as: UTF8.self).split(separator: ":").first.map(String.init) }
        #expect(total == "\(writers * increments)")
        #expect(final?.version == Int64(writers * increments + 1))
        #expect(conflicts.value > 0, "the writers did race")
        await client.close()
    }

    /// Whether some version of `key` after `revision` held `token` (read from etcd's history).
    static func history(_ client: EtcdClient, _ key: [UInt8], contains token: String, after revision: Int64)
        async throws -> Bool
    {
        let (now, newest) = try await client.get(key)
        var at = now?.modRevision ?? newest
        while at > revision {
            let (old, _) = try await client.get(key, revision: at)
            if old?.value == bytes(token) { return true }
            guard let old else { return false }
            at = old.modRevision - 1
        }
        return false
    }

    @Test("a watch resumes after etcd is killed and restarted: no change missed or repeated")
    func watchAcrossRestart() async throws {
        let etcd = try EtcdCluster()
        defer { etcd.stop() }
        let client = try etcd.client()
        let writer = try etcd.client()
        let prefix = Self.bytes("t/watch/")
        _ = try await writer.put(prefix + Self.bytes("before"), Self.bytes("0"))
        let updates = Updates()
        let (initial, _, watch) = try await client.watch(prefix: prefix) { updates.receive($0) }
        #expect(initial.map(\.keyString) == ["t/watch/before"])
        var expected: [(String, Bool)] = []
        for i in 0..<5 {
            _ = try await writer.put(prefix + Self.bytes("k\(i)"), Self.bytes("\(i)"))
            expected.append(("t/watch/k\(i)", true))
        }
        _ = await updates.wait { $0.count >= 5 }
        try etcd.restart(0)
        // Written while the watch is still reconnecting (its backoff), then after it is back.
        for i in 0..<10 {
            _ = try await writer.put(prefix + Self.bytes("k\(i % 5)"), Self.bytes("again \(i)"))
            expected.append(("t/watch/k\(i % 5)", true))
        }
        _ = try await writer.delete(prefix + Self.bytes("before"))
        expected.append(("t/watch/before", false))
        let events = await updates.wait { $0.count >= expected.count }
        let seen = events.map { ($0.keyValue.keyString, $0.isPut) }
        #expect(seen.map(\.0) == expected.map(\.0), "every change once, in order")
        #expect(seen.map(\.1) == expected.map(\.1))
        let revisions = events.map(\.revision)
        #expect(revisions == revisions.sorted() && Set(revisions).count == revisions.count, "\(revisions)")
        #expect(watch.reconnects >= 1, "the watch's stream broke with the kill")
        #expect(!updates.overlapped)
        await watch.cancel()
        await client.close()
        await writer.close()
    }

    @Test("a watch whose revision was compacted lists the prefix and delivers the differences")
    func watchResyncAfterCompaction() async throws {
        let etcd = try EtcdCluster()
        defer { etcd.stop() }
        let client = try etcd.client()
        let prefix = Self.bytes("t/resync/")
        _ = try await client.put(prefix + Self.bytes("kept"), Self.bytes("1"))
        let (_, start) = try await client.put(prefix + Self.bytes("gone"), Self.bytes("1")).revisionPair
        let (known, _) = try await client.list(prefix: prefix)
        // Changes the watch never sees as events: the history is compacted before it starts.
        _ = try await client.delete(prefix + Self.bytes("gone"))
        _ = try await client.put(prefix + Self.bytes("new"), Self.bytes("1"))
        let (_, last) = try await client.put(prefix + Self.bytes("new"), Self.bytes("2")).revisionPair
        try await client.compact(revision: last)
        await #expect(throws: EtcdError.self) { _ = try await client.watch(prefix: prefix, from: start + 1) { _ in } }

        let updates = Updates()
        let watch = EtcdWatch(
            connection: client.connection, prefix: prefix, next: start + 1, known: known
        ) { updates.receive($0) }
        watch.start()
        _ = await updates.wait { $0.count >= 2 }
        let resync = try #require(updates.updates.first)
        #expect(resync.resynced)
        #expect(resync.revision == last)
        #expect(
            resync.events.map { $0.keyValue.keyString + ($0.isPut ? "+" : "-") } == [
                "t/resync/new+", "t/resync/gone-",
            ], "the key added is put, the key removed is deleted, the unchanged key is not repeated")
        _ = try await client.put(prefix + Self.bytes("after"), Self.bytes("1"))
        let events = await updates.wait { $0.count >= 3 }
        #expect(events.last?.keyValue.keyString == "t/resync/after", "live changes follow the resync")
        #expect(watch.resyncs == 1)
        await watch.cancel()
        await client.close()
    }
}

extension EtcdWriteResult {
    /// (version, revision) of a successful write; (-1, -1) otherwise.
    var revisionPair: (Int64, Int64) {
        if case .written(let version, let revision) = self { return (version, revision) }
        return (-1, -1)
    }
}
