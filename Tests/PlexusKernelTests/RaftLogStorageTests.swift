import Foundation
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// `raft-log` (`Plugins/RaftLogStorage`) loaded by a real kernel from its shipped manifest, on real files in a
/// temporary node directory, driven through its C storage vtable. Restarts are new kernels (and so new plugin
/// instances) on the same directory; crashes are simulated by editing the segment files between two runs.
@Suite("raft-log storage", .timeLimit(.minutes(2)))
struct RaftLogStorageTests {
    /// A node directory holding the raft-log manifest with `values`; each `run` is one kernel lifetime.
    struct Node {
        let plugin: ShippedPluginNode

        init(values: [String: String] = [:]) throws {
            plugin = try ShippedPluginNode("raft-log", library: "libRaftLogStorage.so", values: values)
        }

        /// Rewrites the manifest's config values (for the next run).
        func configure(_ values: [String: String]) throws {
            try plugin.node.write(try ShippedPlugins.manifest("raft-log", values: values), file: "raft-log.yaml")
        }

        /// Starts a kernel, runs `body` with the active plugin, stops the kernel (the plugin syncs and exits).
        func run<R>(
            sourceLocation: SourceLocation = #_sourceLocation, _ body: (StorageDriver, Kernel) throws -> R
        ) throws -> R {
            let kernel = try plugin.kernel()
            kernel.start()
            defer { kernel.stop() }
            let loaded = try kernel.requireLoaded("raft-log", sourceLocation: sourceLocation)
            let vtable = try #require(loaded.descriptor.storage, sourceLocation: sourceLocation)
            let driver = StorageDriver(vtable: vtable, instance: loaded.instance)
            let result = try body(driver, kernel)
            driver.ledger.expectCompletionRule(sourceLocation: sourceLocation)
            return result
        }

        /// Starts a kernel that must fail to start the plugin; returns the plugin's error.
        func failedStart() throws -> String {
            let kernel = try plugin.kernel()
            kernel.start()
            defer { kernel.stop() }
            let status = try kernel.requireStatus("raft-log")
            #expect(status.state == .failed)
            return status.lastError ?? ""
        }

        /// The directory of a stream (its name needs no escaping here).
        func directory(_ stream: String) -> String { plugin.dataDirectory + "/streams/" + stream }

        /// A stream's segment files, oldest first.
        func segments(_ stream: String) throws -> [String] {
            try FileManager.default.contentsOfDirectory(atPath: directory(stream)).filter { $0.hasSuffix(".seg") }
                .sorted().map { directory(stream) + "/" + $0 }
        }

        func remove() { plugin.remove() }
    }

    static func withNode(values: [String: String] = [:], _ body: (Node) throws -> Void) throws {
        let node = try Node(values: values)
        defer { node.remove() }
        try body(node)
    }

    static func events(_ prefix: String, _ count: Int, dataBytes: Int = 100) -> [CloudEvent] {
        (0..<count).map { i in
            CloudEvent(
                id: "\(prefix)-\(i)", source: "/raft-log/test", type: "io.plexus.test",
                subject: i % 3 == 0 ? "third" : nil, time: i % 2 == 0 ? "2026-01-01T00:00:00Z" : nil,
                extensions: [(key: "seq", value: "\(i)"), (key: "empty", value: "")],
                data: (0..<dataBytes).map { UInt8(truncatingIfNeeded: $0 &+ i) })
        }
    }

    /// Events that all encode to the same size, so that entry `i` starts at `64 + i × entry size`.
    static func uniform(_ prefix: String, _ count: Int) -> [CloudEvent] {
        (0..<count).map { i in
            let number = String(i + 1000)
            return CloudEvent(
                id: "\(prefix)-\(number)", source: "/raft-log/test", type: "io.plexus.test",
                data: Array(repeating: UInt8(i & 0xFF), count: 100))
        }
    }

    /// Every record of a stream, in one read.
    static func all(_ driver: StorageDriver, _ stream: OpaquePointer) throws -> [StoredRecord] {
        let info = try driver.info(stream)
        let (records, next) = try driver.read(stream, from: info.first, maxRecords: 1 << 20, maxBytes: 0).value()
        #expect(next == info.next)
        return records
    }

    // MARK: Round trips

    @Test("loads as a storage plugin with durability local")
    func descriptor() throws {
        try Self.withNode { node in
            try node.run { driver, kernel throws in
                #expect(driver.vtable.pointee.durability == PX_DURABILITY_LOCAL.rawValue)
                #expect(try kernel.requireStatus("raft-log").health == "healthy")
            }
        }
    }

    @Test("appends read back unchanged across segment rolls, with dense offsets and append times")
    func roundTripAcrossSegments() throws {
        try Self.withNode(values: ["segmentBytes": "4096"]) { node in
            let events = Self.events("r", 300)
            try node.run { driver, _ in
                let stream = try driver.open("orders")
                var expectedFirst: UInt64 = 0
                for batch in stride(from: 0, to: events.count, by: 7) {
                    let slice = Array(events[batch..<min(batch + 7, events.count)])
                    #expect(try driver.append(stream, slice).value() == expectedFirst)
                    expectedFirst += UInt64(slice.count)
                }
                #expect(try driver.append(stream, []).value() == 300, "an empty batch answers the next offset")
                let records = try Self.all(driver, stream)
                #expect(records.map(\.offset) == Array(0..<300))
                #expect(records.map(\.event) == events)
                #expect(records.allSatisfy { $0.appendTimeNanoseconds > 0 })
                // Reads that start and end inside segments, and cross them.
                let (middle, next) = try driver.read(stream, from: 37, maxRecords: 100).value()
                #expect(middle.map(\.offset) == Array(37..<137) && next == 137)
                #expect(middle.map(\.event) == Array(events[37..<137]))
                let (sized, afterSized) = try driver.read(stream, from: 5, maxRecords: 100, maxBytes: 1).value()
                #expect(sized.count == 1 && afterSized == 6, "max_bytes 1 still returns one record")
                #expect(try driver.info(stream).size > 300 * 100)
            }
            let segments = try node.segments("orders")
            #expect(segments.count >= 10, "~170-byte entries in 4 KiB segments: \(segments.count) segments")
            for path in segments.dropLast() {
                let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
                #expect(size <= 4096, "\(path) is \(size) bytes")
            }
        }
    }

    @Test("status (a text operation) shows a single member leading each stream, its term rising per start")
    func singleMemberStatus() throws {
        try Self.withNode(values: [:]) { node in
            func status(_ kernel: Kernel) throws -> [String: Any] {
                let text = try kernel.callOperation(plugin: "raft-log", operation: "status", arguments: [])
                return try #require(
                    try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
            }
            var firstTerm = 0
            try node.run { driver, kernel in
                let stream = try driver.open("st")
                #expect(try driver.append(stream, Self.events("a", 3)).value() == 0)
                let json = try status(kernel)
                #expect(json["node"] as? String == "local")
                let streams = try #require(json["streams"] as? [[String: Any]])
                let st = try #require(streams.first { $0["stream"] as? String == "st" })
                #expect(st["role"] as? String == "leader")
                #expect(st["leader"] as? String == "local")
                #expect(st["commitIndex"] as? Int == 3)
                #expect(st["nextOffset"] as? Int == 3)
                #expect(st["voters"] as? [String] == ["local"])
                firstTerm = try #require(st["term"] as? Int)
                #expect(firstTerm >= 1)
            }
            try node.run { driver, kernel in
                _ = try driver.open("st")
                let streams = try #require(try status(kernel)["streams"] as? [[String: Any]])
                let st = try #require(streams.first { $0["stream"] as? String == "st" })
                #expect(st["term"] as? Int == firstTerm + 1, "a restart is a new election")
                #expect(st["commitIndex"] as? Int == 3, "everything on disk is committed at once")
                #expect(st["nextOffset"] as? Int == 3)
            }
        }
    }

    @Test("an asynchronous open recovers or creates a stream on the plugin's own thread, never the caller's")
    func asyncOpen() throws {
        try Self.withNode { node in
            try node.run { driver, _ in
                let opened = try driver.openAsync("opened-async").value()
                #expect(!opened.onCaller, "the new stream was created off the calling thread")
                let stream = try #require(opened.stream)
                #expect(try driver.append(stream, Self.events("a", 3)).value() == 0)
                #expect(FileManager.default.fileExists(atPath: node.directory("opened-async")))
                let again = try driver.openAsync("opened-async").value()
                #expect(again.stream == stream, "an open stream is the same stream")
                #expect(try driver.info(stream).next == 3)
                driver.close(stream)
                driver.close(try #require(again.stream))
            }
            try node.run { driver, _ in
                let recovered = try #require(try driver.openAsync("opened-async").value().stream)
                #expect(
                    try driver.read(recovered, from: 0, maxRecords: 10).value().records.map(\.event)
                        == Self.events("a", 3))
            }
        }
    }

    @Test("a new instance on the same directory returns every acknowledged event at its offset; appends continue")
    func restart() throws {
        try Self.withNode(values: ["segmentBytes": "8192"]) { node in
            let events = Self.events("s", 120)
            let before = try node.run { driver, _ in
                let stream = try driver.open("restart")
                for event in events { _ = try driver.append(stream, [event]).value() }
                return try Self.all(driver, stream)
            }
            try node.run { driver, kernel in
                #expect(try kernel.callOperation(plugin: "raft-log", operation: "streams", arguments: []) == "1")
                let stream = try driver.open("restart")
                #expect(try driver.info(stream).next == 120)
                #expect(try Self.all(driver, stream) == before, "offsets, events and append times unchanged")
                #expect(try driver.append(stream, Self.events("after", 2)).value() == 120)
            }
            try node.run { driver, _ in
                let records = try Self.all(driver, try driver.open("restart"))
                #expect(records.map(\.event) == events + Self.events("after", 2))
            }
        }
    }

    @Test("every fsync policy stores and recovers", arguments: ["always", "interval", "never"])
    func policies(policy: String) throws {
        try Self.withNode(values: ["fsync": policy, "fsyncIntervalMs": "5", "segmentBytes": "4096"]) { node in
            let events = Self.events(policy, 50)
            try node.run { driver, _ in
                let stream = try driver.open("p")
                #expect(try driver.append(stream, events).value() == 0)
            }
            try node.run { driver, _ throws in
                #expect(try Self.all(driver, try driver.open("p")).map(\.event) == events)
            }
        }
    }

    @Test("stream names are escaped into directory names and recovered from them")
    func escapedNames() throws {
        try Self.withNode { node in
            let names = ["a/b c", "..", ".hidden", "ünï", "%41"]
            try node.run { driver, _ in
                for (i, name) in names.enumerated() {
                    _ = try driver.append(try driver.open(name), Self.events(name, i + 1)).value()
                }
            }
            let directories = try FileManager.default.contentsOfDirectory(
                atPath: node.plugin.dataDirectory + "/streams")
            #expect(Set(directories) == ["a%2Fb%20c", "%2E.", "%2Ehidden", "%C3%BCn%C3%AF", "%2541"])
            try node.run { driver, kernel throws in
                #expect(try kernel.callOperation(plugin: "raft-log", operation: "streams", arguments: []) == "5")
                for (i, name) in names.enumerated() {
                    #expect(try Self.all(driver, try driver.open(name)).map(\.event) == Self.events(name, i + 1))
                }
            }
        }
    }

    // MARK: Crashes and corruption

    @Test("a torn last entry is cut off at the last whole entry and appends continue densely")
    func tornTail() throws {
        try Self.withNode(values: ["segmentBytes": "4096"]) { node in
            let events = Self.events("t", 60)
            try node.run { driver, _ in _ = try driver.append(try driver.open("torn"), events).value() }
            // A crash in the middle of writing the last entry: the file ends 10 bytes into its body.
            let last = try #require(try node.segments("torn").last)
            let handle = try #require(FileHandle(forUpdatingAtPath: last))
            let size = try handle.seekToEnd()
            try handle.truncate(atOffset: size - 10)
            try handle.close()
            try node.run { driver, _ in
                let stream = try driver.open("torn")
                #expect(try driver.info(stream).next == 59, "the torn 60th event is gone")
                #expect(try Self.all(driver, stream).map(\.event) == Array(events.prefix(59)))
                #expect(try driver.append(stream, Self.events("again", 3)).value() == 59)
            }
            try node.run { driver, _ in
                let records = try Self.all(driver, try driver.open("torn"))
                #expect(records.map(\.offset) == Array(0..<62))
                #expect(records.map(\.event) == Array(events.prefix(59)) + Self.events("again", 3))
            }
        }
    }

    @Test("a zero-filled tail (a write the disk never finished) and a partial header are cut off")
    func zeroTail() throws {
        try Self.withNode { node in
            let events = Self.events("z", 10)
            try node.run { driver, _ in _ = try driver.append(try driver.open("zeros"), events).value() }
            let last = try #require(try node.segments("zeros").last)
            let handle = try #require(FileHandle(forUpdatingAtPath: last))
            try handle.seekToEnd()
            try handle.write(contentsOf: Data(count: 5000))
            try handle.close()
            try node.run { driver, _ in
                let stream = try driver.open("zeros")
                #expect(try Self.all(driver, stream).map(\.event) == events)
                #expect(try driver.append(stream, Self.events("more", 1)).value() == 10)
            }
            let handle2 = try #require(FileHandle(forUpdatingAtPath: last))
            try handle2.seekToEnd()
            try handle2.write(contentsOf: Data([0x50, 0x58, 0x52, 0x45, 1, 2, 3]))  // 7 bytes of a header
            try handle2.close()
            try node.run { driver, _ throws in
                #expect(try driver.info(try driver.open("zeros")).next == 11)
            }
        }
    }

    @Test("a flipped byte in the middle of a segment refuses the start, naming the file, the byte and the repair")
    func corruptionRefusesStart() throws {
        try Self.withNode { node in
            let events = Self.uniform("c", 20)
            try node.run { driver, _ in _ = try driver.append(try driver.open("corrupt"), events).value() }
            let path = try #require(try node.segments("corrupt").first)
            var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
            // Equal-sized events: entry 10 starts at 64 + 10 × entry size; flip a byte of its body.
            let entrySize = (bytes.count - 64) / 20
            let entry10 = 64 + 10 * entrySize
            bytes[entry10 + 56 + 20] ^= 0x01
            try bytes.write(to: URL(fileURLWithPath: path))

            let error = try node.failedStart()
            #expect(error.contains(path), "names the file: \(error)")
            #expect(error.contains("byte \(entry10)"), "names the byte: \(error)")
            #expect(error.contains("CRC"), "says what is wrong: \(error)")
            #expect(error.contains("last good offset is 9"), "\(error)")
            #expect(error.contains("repairOnStart: truncate"), "says how to repair: \(error)")
            #expect(try Data(contentsOf: URL(fileURLWithPath: path)) == bytes, "a refused start changes nothing")

            try node.configure(["repairOnStart": "truncate"])
            try node.run { driver, _ in
                let stream = try driver.open("corrupt")
                #expect(try Self.all(driver, stream).map(\.event) == Array(events.prefix(10)))
                #expect(try driver.append(stream, Self.events("after", 1)).value() == 10)
            }
            try node.configure([:])
            try node.run { driver, _ throws in
                #expect(try driver.info(try driver.open("corrupt")).next == 11, "the repaired log starts as is")
            }
        }
    }

    @Test("corruption in an older segment or a missing segment refuses the start; truncate drops what follows")
    func corruptionInSealedSegment() throws {
        try Self.withNode(values: ["segmentBytes": "4096"]) { node in
            let events = Self.events("o", 100)
            try node.run { driver, _ in _ = try driver.append(try driver.open("old"), events).value() }
            let segments = try node.segments("old")
            try #require(segments.count >= 4)
            // A flipped byte in a header of the second segment's entries.
            var bytes = try Data(contentsOf: URL(fileURLWithPath: segments[1]))
            bytes[64 + 20] ^= 0x80
            try bytes.write(to: URL(fileURLWithPath: segments[1]))
            let error = try node.failedStart()
            #expect(error.contains(segments[1]) && error.contains("byte 64"), "\(error)")
            #expect(error.contains("\(segments.count - 2) later segment(s)"), "\(error)")

            try node.configure(["repairOnStart": "truncate", "segmentBytes": "4096"])
            let kept = try node.run { driver, _ in
                let records = try Self.all(driver, try driver.open("old"))
                #expect(records.map(\.event) == Array(events.prefix(records.count)))
                return records.count
            }
            #expect(kept > 0 && kept < 100)
            #expect(try node.segments("old").count == 2, "the segments after the damage are gone")

            // A segment that goes missing from the middle breaks the chain of base indexes.
            try node.run { driver, _ in _ = try driver.append(try driver.open("old"), events).value() }
            try node.configure(["segmentBytes": "4096"])
            let now = try node.segments("old")
            try FileManager.default.removeItem(atPath: now[now.count / 2])
            let missing = try node.failedStart()
            #expect(missing.contains("a segment is missing"), "\(missing)")
        }
    }

    // MARK: Group commit

    @Test("group commit: many concurrent appends share few fdatasyncs, and all are durable")
    func groupCommit() throws {
        try Self.withNode { node in
            let total = 400
            try node.run { driver, kernel in
                let stream = StreamRef(pointer: try driver.open("busy"))
                let waiter = AppendWaiter()
                DispatchQueue.concurrentPerform(iterations: 4) { thread in
                    for i in 0..<(total / 4) {
                        waiter.append(driver, stream.pointer, Self.events("g\(thread)-\(i)", 1))
                    }
                }
                #expect(waiter.wait(), "every append completed within 20 s")
                #expect(waiter.failures == 0)
                #expect(Set(waiter.firsts) == Set(0..<UInt64(total)), "dense, none twice")
                func op(_ name: String) throws -> Int {
                    try #require(Int(try kernel.callOperation(plugin: "raft-log", operation: name, arguments: [])))
                }
                let fsyncs = try op("fsyncs")
                let commits = try op("group-commits")
                #expect(try op("appends") == total)
                #expect(try op("append-batches") == total)
                #expect(try op("group-committed-batches") == total, "every batch was covered by a group commit")
                #expect(commits == fsyncs, "one segment: every fsync was a group commit")
                #expect(fsyncs * 4 <= total, "\(total) appends took \(fsyncs) fdatasyncs; group commit batches them")
                #expect(try op("bytes-on-disk") > total * 100)
            }
        }
    }

    // MARK: Offsets, trim, retention

    @Test("committed offsets and trims survive a restart")
    func offsetsAndTrimSurviveRestart() throws {
        try Self.withNode(values: ["segmentBytes": "4096"]) { node in
            try node.run { driver, _ in
                let stream = try driver.open("offsets")
                _ = try driver.append(stream, Self.events("o", 100)).value()
                #expect(try driver.fetch(stream, group: "billing").value() == offsetNone)
                _ = try driver.commit(stream, group: "billing", offset: 42).value()
                _ = try driver.commit(stream, group: "", offset: 7).value()
                _ = try driver.commit(stream, group: "billing", offset: 43).value()
                _ = try driver.trim(stream, before: 30).value()
                #expect(try driver.info(stream).first == 30)
                #expect(driver.trim(stream, before: 101).refusal?.status == PX_ERR_OUT_OF_RANGE.status)
                #expect(
                    driver.commit(stream, group: "x", offset: offsetNone).refusal?.status
                        == PX_ERR_INVALID_ARGUMENT.status)
            }
            #expect(
                FileManager.default.fileExists(atPath: node.directory("offsets") + "/00000000000000000001.seg")
                    == false, "the first segment is wholly below 30 and was dropped")
            try node.run { driver, _ in
                let stream = try driver.open("offsets")
                #expect(try driver.fetch(stream, group: "billing").value() == 43)
                #expect(try driver.fetch(stream, group: "").value() == 7)
                #expect(try driver.fetch(stream, group: "shipping").value() == offsetNone)
                let info = try driver.info(stream)
                #expect(info.first == 30 && info.next == 100)
                #expect(driver.read(stream, from: 29, maxRecords: 1).refusal?.status == PX_ERR_OUT_OF_RANGE.status)
                #expect(try Self.all(driver, stream).map(\.event) == Array(Self.events("o", 100)[30...]))
                // Trimming everything leaves an empty log that keeps its offsets.
                _ = try driver.trim(stream, before: 100).value()
                let empty = try driver.info(stream)
                #expect(empty.first == 100 && empty.next == 100 && empty.size == 64)
                #expect(try driver.append(stream, Self.events("n", 1)).value() == 100)
            }
            try node.run { driver, _ in
                let stream = try driver.open("offsets")
                #expect(try driver.info(stream).first == 100)
                #expect(try Self.all(driver, stream).map(\.offset) == [100])
                #expect(try node.segments("offsets").count == 1)
            }
        }
    }

    @Test("retention by size and by age drops whole old segments; offsets never move")
    func retention() throws {
        try Self.withNode(values: ["segmentBytes": "4096"]) { node in
            try node.run { driver, _ in
                let sized = try driver.open("by-bytes", retentionBytes: 10_000)
                for batch in 0..<20 { _ = try driver.append(sized, Self.events("b\(batch)", 10)).value() }
                let info = try driver.info(sized)
                #expect(info.next == 200)
                #expect(info.first > 0, "old segments went")
                #expect(info.size <= 10_000 + 4096, "about retentionBytes remain: \(info.size)")
                let records = try Self.all(driver, sized)
                #expect(records.first?.offset == info.first && records.last?.offset == 199)
                #expect(
                    driver.read(sized, from: info.first - 1, maxRecords: 1).refusal?.status
                        == PX_ERR_OUT_OF_RANGE.status)
                #expect(try node.segments("by-bytes").count <= 4)

                let aged = try driver.open("by-age", retentionMs: 400)
                _ = try driver.append(aged, Self.events("old", 60)).value()
                let oldSegments = try node.segments("by-age").count
                #expect(oldSegments >= 3)
                Thread.sleep(forTimeInterval: 0.6)
                #expect(try driver.info(aged).first == 0, "retention is enforced on append")
                _ = try driver.append(aged, Self.events("new", 1)).value()
                let after = try driver.info(aged)
                #expect(after.first > 0 && after.next == 61)
                #expect(try node.segments("by-age").count == 1, "only the active segment is left")
            }
        }
    }

    @Test("maxEventBytes refuses larger events, naming the limit")
    func maxEventBytes() throws {
        try Self.withNode(values: ["maxEventBytes": "1024"]) { node in
            try node.run { driver, _ in
                let stream = try driver.open("limited")
                let big = try #require(driver.append(stream, Self.events("big", 1, dataBytes: 2000)).refusal)
                #expect(big.status == PX_ERR_INVALID_ARGUMENT.status)
                #expect(big.message.contains("maxEventBytes (1024)"), "\(big.message)")
                #expect(try driver.append(stream, Self.events("small", 1)).value() == 0)
            }
        }
    }

    // MARK: The on-disk format

    @Test("segment and entry headers are laid out as the README says, with CRC-32C checksums")
    func onDiskFormat() throws {
        try Self.withNode { node in
            let events = Self.events("f", 3)
            try node.run { driver, _ in _ = try driver.append(try driver.open("format"), events).value() }
            let path = try #require(try node.segments("format").first)
            #expect(path.hasSuffix("/00000000000000000001.seg"), "named by the base index, 20 digits")
            let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
            func u16(_ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
            func u32(_ at: Int) -> UInt32 { (0..<4).reduce(0) { $0 | UInt32(bytes[at + $1]) << (8 * $1) } }
            func u64(_ at: Int) -> UInt64 { (0..<8).reduce(0) { $0 | UInt64(bytes[at + $1]) << (8 * $1) } }

            #expect(referenceCRC32C(Array("123456789".utf8)) == 0xE306_9283)
            #expect(Array(bytes[0..<4]) == Array("PXRL".utf8))
            #expect(u16(4) == 1 && u16(6) == 64)
            #expect(u64(8) == 1 && u64(16) == 0 && u32(24) == 0, "base index 1, base offset 0, base chain 0")
            #expect(u32(60) == referenceCRC32C(Array(bytes[0..<60])))

            var position = 64
            var chain: UInt32 = 0
            for (i, event) in events.enumerated() {
                let header = Array(bytes[position..<(position + 56)])
                #expect(Array(header[0..<4]) == Array("PXRE".utf8))
                let length = Int(u32(position + 4))
                #expect(u64(position + 8) == 1, "term 1")
                #expect(u64(position + 16) == UInt64(i + 1), "index")
                #expect(u64(position + 24) == UInt64(i), "offset")
                #expect(u64(position + 32) > 0, "append time")
                #expect(u16(position + 40) == 1 && u16(position + 42) == 0, "kind event, no flags")
                let body = Array(bytes[(position + 56)..<(position + 56 + length)])
                #expect(u32(position + 44) == referenceCRC32C(body))
                chain = referenceCRC32C(Array(header[0..<48]), seed: chain)
                #expect(u32(position + 48) == chain, "chained CRC of entry \(i)")
                #expect(u32(position + 52) == referenceCRC32C(Array(header[0..<52])))
                #expect(body[0] == 1, "event codec version 1")
                #expect(body.suffix(event.data.count) == event.data[...], "the data ends the body")
                #expect(body == referenceBody(event), "the body is the README's layout, byte for byte")
                position += 56 + length
            }
            #expect(position == bytes.count)
        }
    }
}

/// An entry body laid out from the README's description (independently of the plugin's encoder, which now
/// encodes from the kernel's borrowed events): a log written before that change reads the same.
func referenceBody(_ event: CloudEvent) -> [UInt8] {
    var body: [UInt8] = [1, 0]
    func length(_ n: Int) { body += (0..<4).map { UInt8(truncatingIfNeeded: n >> (8 * $0)) } }
    func text(_ s: String) {
        length(s.utf8.count)
        body += Array(s.utf8)
    }
    for (bit, attribute) in [event.datacontenttype, event.dataschema, event.subject, event.time].enumerated()
    where attribute != nil {
        body[1] |= 1 << UInt8(bit)
    }
    for attribute in [event.id, event.source, event.specversion, event.type] { text(attribute) }
    for attribute in [event.datacontenttype, event.dataschema, event.subject, event.time] {
        if let attribute { text(attribute) }
    }
    length(event.extensions.count)
    for (key, value) in event.extensions {
        text(key)
        text(value)
    }
    length(event.data.count)
    return body + event.data
}

/// CRC-32C computed bit by bit (independently of the plugin's table-driven code), continuing from `seed`.
func referenceCRC32C(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
    var crc = ~seed
    for byte in bytes {
        crc ^= UInt32(byte)
        for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
    }
    return ~crc
}

/// Fires appends without waiting for each, and collects their completions.
final class AppendWaiter: @unchecked Sendable {
    // Safe: `firstsStorage` and `failureCount` are guarded by `lock`; the group is thread-safe.
    private let group = DispatchGroup()
    private let lock = NSLock()
    private var firstsStorage: [UInt64] = []
    private var failureCount = 0

    var firsts: [UInt64] { lock.withLock { firstsStorage } }
    var failures: Int { lock.withLock { failureCount } }

    func append(_ driver: StorageDriver, _ stream: OpaquePointer, _ events: [CloudEvent]) {
        let batch = CEventBatch(events)
        group.enter()
        let user = Unmanaged.passUnretained(self).toOpaque()
        let (status, _) = withExtendedLifetime(batch) {
            withErrorBuffer { err in
                driver.vtable.pointee.on_append(
                    driver.instance, stream, batch.pointers.baseAddress, batch.count,
                    { user, status, first, _ in
                        guard let user else { return }
                        Unmanaged<AppendWaiter>.fromOpaque(user).takeUnretainedValue().done(status, first)
                    }, user, err)
            }
        }
        if status != PX_OK.status { done(status, 0) }
    }

    private func done(_ status: px_status, _ first: UInt64) {
        lock.withLock {
            if status == PX_OK.status { firstsStorage.append(first) } else { failureCount += 1 }
        }
        group.leave()
    }

    func wait() -> Bool { group.wait(timeout: .now() + 20) == .success }
}
