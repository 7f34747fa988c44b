import Foundation
import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusKernel

/// `memory-storage` (`Plugins/MemoryStorage`) loaded by a real kernel from its shipped manifest and driven
/// through its C storage vtable, as the kernel drives any storage plugin.
@Suite("memory-storage through the storage ABI")
struct MemoryStorageTests {
    /// Runs `body` with the plugin active in a fresh kernel (config `values` applied); stops it afterwards and
    /// checks the completion rule for every call made.
    static func withStorage(
        values: [String: String] = [:], _ body: (StorageDriver, Kernel) throws -> Void
    ) throws {
        let node = try ShippedPluginNode("memory-storage", library: "libMemoryStorage.so", values: values)
        defer { node.remove() }
        let kernel = try node.kernel()
        defer { kernel.stop() }
        kernel.start()
        let loaded = try kernel.requireLoaded("memory-storage")
        let vtable = try #require(loaded.descriptor.storage, "a storage plugin hangs a storage vtable")
        let driver = StorageDriver(vtable: vtable, instance: loaded.instance)
        try body(driver, kernel)
        driver.ledger.expectCompletionRule()
    }

    static func events(_ prefix: String, _ count: Int, dataBytes: Int = 3) -> [CloudEvent] {
        (0..<count).map { i in
            CloudEvent(
                id: "\(prefix)-\(i)", source: "/test", type: "io.plexus.test", subject: i % 2 == 0 ? "even" : nil,
                extensions: [(key: "seq", value: "\(i)")], data: Array(repeating: UInt8(i & 0xFF), count: dataBytes))
        }
    }

    @Test("loads as a storage plugin with durability none and no registry table")
    func descriptor() throws {
        try Self.withStorage { driver, kernel in
            let status = try kernel.requireStatus("memory-storage")
            #expect(status.kinds == ["storage"])
            #expect(status.health == "healthy")
            let loaded = try kernel.requireLoaded("memory-storage")
            #expect(loaded.descriptor.registry == nil)
            #expect(driver.vtable.pointee.durability == PX_DURABILITY_NONE.rawValue)
            #expect(driver.vtable.pointee.struct_size == UInt32(MemoryLayout<px_storage_vtable>.size))
        }
    }

    @Test("append assigns dense offsets; read returns events in order, zero records at the end")
    func appendAndRead() throws {
        try Self.withStorage { driver, _ in
            let stream = try driver.open("orders")
            #expect(try driver.info(stream) == .init(first: 0, next: 0, size: 0))
            let first = Self.events("a", 3)
            let second = Self.events("b", 2)
            #expect(try driver.append(stream, first).value() == 0)
            #expect(try driver.append(stream, second).value() == 3)
            #expect(try driver.append(stream, []).value() == 5, "an empty batch answers the next offset")

            let (records, next) = try driver.read(stream, from: 0, maxRecords: 100).value()
            #expect(records.map(\.offset) == [0, 1, 2, 3, 4])
            #expect(records.map(\.event) == first + second)
            #expect(records.allSatisfy { $0.appendTimeNanoseconds > 0 })
            #expect(next == 5)

            let (middle, afterMiddle) = try driver.read(stream, from: 2, maxRecords: 2).value()
            #expect(middle.map(\.offset) == [2, 3] && afterMiddle == 4)

            let (atEnd, nextAtEnd) = try driver.read(stream, from: 5, maxRecords: 10).value()
            #expect(atEnd.isEmpty && nextAtEnd == 5)

            let info = try driver.info(stream)
            #expect(info.first == 0 && info.next == 5 && info.size > 0)
            driver.close(stream)
        }
    }

    @Test("bad arguments and offsets are refused synchronously, without a completion")
    func refusals() throws {
        try Self.withStorage { driver, _ in
            let stream = try driver.open("refusals")
            _ = try driver.append(stream, Self.events("e", 3)).value()

            let past = try #require(driver.read(stream, from: 4, maxRecords: 1).refusal)
            #expect(past.status == PX_ERR_OUT_OF_RANGE.status)
            #expect(past.message.contains("past its end"), "\(past.message)")

            let zero = try #require(driver.read(stream, from: 0, maxRecords: 0).refusal)
            #expect(zero.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(zero.message.contains("max_records"), "\(zero.message)")

            #expect(driver.append(nil, Self.events("x", 1)).refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.read(nil, from: 0, maxRecords: 1).refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.commit(nil, group: "g", offset: 0).refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.fetch(nil, group: "g").refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(driver.trim(nil, before: 0).refusal?.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(throws: (any Error).self) { try driver.info(nil) }
            #expect(throws: (any Error).self) { try driver.open("") }

            let trimPast = try #require(driver.trim(stream, before: 4).refusal)
            #expect(trimPast.status == PX_ERR_OUT_OF_RANGE.status)
            #expect(try driver.info(stream).next == 3, "refused calls changed nothing")
        }
    }

    @Test("maxBytes bounds a read, but at least one record comes back")
    func maxBytes() throws {
        try Self.withStorage { driver, _ in
            let stream = try driver.open("sized")
            let events = Self.events("s", 6, dataBytes: 1000)
            _ = try driver.append(stream, events).value()
            let one = try driver.read(stream, from: 0, maxRecords: 10, maxBytes: 1).value()
            #expect(one.records.count == 1 && one.next == 1, "at least one record, even over maxBytes")
            let two = try driver.read(stream, from: 1, maxRecords: 10, maxBytes: 2500).value()
            #expect(two.records.map(\.offset) == [1, 2] && two.next == 3)
            let unlimited = try driver.read(stream, from: 0, maxRecords: 10, maxBytes: 0).value()
            #expect(unlimited.records.count == 6, "maxBytes 0 sets no byte limit")
        }
    }

    @Test("committed offsets are kept per stream and group; none is PX_OFFSET_NONE")
    func offsets() throws {
        try Self.withStorage { driver, _ in
            let orders = try driver.open("orders")
            let audit = try driver.open("audit")
            #expect(try driver.fetch(orders, group: "billing").value() == offsetNone)
            _ = try driver.commit(orders, group: "billing", offset: 3).value()
            _ = try driver.commit(orders, group: "", offset: 1).value()
            #expect(try driver.fetch(orders, group: "billing").value() == 3)
            #expect(try driver.fetch(orders, group: "").value() == 1)
            #expect(try driver.fetch(orders, group: "shipping").value() == offsetNone)
            #expect(try driver.fetch(audit, group: "billing").value() == offsetNone)
            _ = try driver.commit(orders, group: "billing", offset: 7).value()
            #expect(try driver.fetch(orders, group: "billing").value() == 7)
            #expect(
                driver.commit(orders, group: "billing", offset: offsetNone).refusal?.status
                    == PX_ERR_INVALID_ARGUMENT.status)
        }
    }

    @Test("trim moves the first offset but never the offsets; reading before it is out of range")
    func trim() throws {
        try Self.withStorage { driver, _ in
            let stream = try driver.open("trimmed")
            _ = try driver.append(stream, Self.events("t", 10)).value()
            _ = try driver.trim(stream, before: 4).value()
            let info = try driver.info(stream)
            #expect(info.first == 4 && info.next == 10)
            let before = try #require(driver.read(stream, from: 3, maxRecords: 1).refusal)
            #expect(before.status == PX_ERR_OUT_OF_RANGE.status)
            #expect(before.message.contains("before its first retained offset 4"), "\(before.message)")
            let (records, _) = try driver.read(stream, from: 4, maxRecords: 100).value()
            #expect(records.map(\.offset) == Array(4..<10))
            #expect(records.first?.event.id == "t-4")
            _ = try driver.trim(stream, before: 2).value()
            #expect(try driver.info(stream).first == 4, "trimming below the first offset changes nothing")
            #expect(try driver.append(stream, Self.events("u", 1)).value() == 10)
            _ = try driver.trim(stream, before: 11).value()
            let empty = try driver.info(stream)
            #expect(empty.first == 11 && empty.next == 11 && empty.size == 0)
            #expect(try driver.read(stream, from: 11, maxRecords: 5).value().records.isEmpty)
        }
    }

    @Test("a lent read batch outlives the trim that drops the stored batches it points into, unchanged until release")
    func lentBatchOutlivesTrim() throws {
        try Self.withStorage { driver, _ in
            #expect(driver.vtable.pointee.on_read_batch != nil, "memory-storage lends its reads")
            let stream = try driver.open("lent")
            let events = Self.events("l", 2000)
            _ = try driver.append(stream, Array(events[..<1000])).value()
            _ = try driver.append(stream, Array(events[1000...])).value()
            // Records from both stored batches.
            let lent = try #require(try driver.readBatch(stream, from: 998, maxRecords: 4).value().pointer)
            let before = StorageDriver.copies(lent)
            #expect(before.map(\.offset) == [998, 999, 1000, 1001] && lent.pointee.next_offset == 1002)
            #expect(before.map(\.event) == Array(events[998..<1002]))
            let eventAddresses = (0..<4).map { lent.pointee.records![$0]!.pointee.event }
            // Everything goes: the stream lets go of both stored batches (more than 1024 records dropped).
            _ = try driver.trim(stream, before: 2000).value()
            _ = try driver.append(stream, Self.events("m", 1000, dataBytes: 64)).value()
            #expect(StorageDriver.copies(lent) == before, "the lent batch still reads the same")
            #expect((0..<4).map { lent.pointee.records![$0]!.pointee.event } == eventAddresses)
            lent.pointee.release?(lent)
            // on_read serves the same records, laid out nowhere new: pointers into the stored batch.
            let (records, next) = try driver.read(stream, from: 2000, maxRecords: 2).value()
            #expect(records.map(\.event.id) == ["m-0", "m-1"] && next == 2002)
        }
    }

    @Test("streams of one name share their events; handles close independently")
    func sharedStreams() throws {
        try Self.withStorage { driver, _ in
            let one = try driver.open("shared")
            let two = try driver.open("shared")
            _ = try driver.append(one, Self.events("x", 2)).value()
            #expect(try driver.info(two).next == 2)
            driver.close(one)
            #expect(try driver.append(two, Self.events("y", 1)).value() == 2)
            driver.close(two)
            let again = try driver.open("shared")
            #expect(try driver.info(again).next == 3, "closing handles keeps the stream")
        }
    }

    @Test("retention by bytes and by age drops the oldest events on append")
    func retention() throws {
        try Self.withStorage { driver, _ in
            let eventSize =
                1000 + "r-0".utf8.count + "/test".utf8.count + "1.0".utf8.count
                + "io.plexus.test".utf8.count + "even".utf8.count + "seq0".utf8.count
            let bytes = try driver.open("by-bytes", retentionBytes: UInt64(3 * eventSize + 10))
            for i in 0..<10 {
                _ = try driver.append(bytes, [Self.events("r", 10, dataBytes: 1000)[i]]).value()
            }
            let info = try driver.info(bytes)
            #expect(info.next == 10)
            #expect(info.first == 7, "three events fit the retention")
            #expect(info.size <= UInt64(3 * eventSize + 10))

            let aged = try driver.open("by-age", retentionMs: 40)
            _ = try driver.append(aged, Self.events("old", 3)).value()
            Thread.sleep(forTimeInterval: 0.08)
            #expect(try driver.info(aged).first == 0, "retention is enforced on append")
            _ = try driver.append(aged, Self.events("new", 1)).value()
            let after = try driver.info(aged)
            #expect(after.first == 3 && after.next == 4)
        }
    }

    @Test("maxEventBytes and maxStreamBytes from the manifest are enforced with errors naming them")
    func limits() throws {
        try Self.withStorage(values: ["maxEventBytes": "1024", "maxStreamBytes": "4096"]) { driver, _ in
            let stream = try driver.open("limited")
            let big = try #require(driver.append(stream, Self.events("big", 1, dataBytes: 2000)).refusal)
            #expect(big.status == PX_ERR_INVALID_ARGUMENT.status)
            #expect(big.message.contains("maxEventBytes (1024)"), "\(big.message)")

            var appended = 0
            var exhausted: (status: px_status, message: String)?
            for i in 0..<10 {
                switch driver.append(stream, [Self.events("fill\(i)", 1, dataBytes: 900)[0]]) {
                case .completed(let status, _, _) where status == PX_OK.status: appended += 1
                case .completed(let status, _, let message), .refused(let status, let message):
                    exhausted = (status, message)
                }
                if exhausted != nil { break }
            }
            #expect(appended == 4, "four ~930-byte events fit in 4096 bytes")
            #expect(exhausted?.status == PX_ERR_RESOURCE_EXHAUSTED.status)
            #expect(exhausted?.message.contains("maxStreamBytes (4096)") == true, "\(exhausted?.message ?? "")")
            _ = try driver.trim(stream, before: 2).value()
            #expect(try driver.append(stream, Self.events("room", 1, dataBytes: 900)).value() == 4)
        }
    }

    @Test("concurrent appenders get dense, disjoint offset ranges; each batch stays contiguous")
    func concurrentAppends() throws {
        try Self.withStorage { driver, _ in
            let stream = StreamRef(pointer: try driver.open("busy"))
            let writers = 8
            let batches = 100
            let batchSize = 5
            let firsts = Mutex<[String: UInt64]>([:])
            let failures = Atomic<Int>(0)
            DispatchQueue.concurrentPerform(iterations: writers) { writer in
                for batch in 0..<batches {
                    let events = Self.events("w\(writer)-b\(batch)", batchSize)
                    guard case .completed(let status, let first, _) = driver.append(stream.pointer, events),
                        status == PX_OK.status
                    else {
                        failures.add(1, ordering: .relaxed)
                        continue
                    }
                    firsts.withLock { $0["w\(writer)-b\(batch)"] = first }
                }
            }
            #expect(failures.load(ordering: .relaxed) == 0)
            let total = writers * batches * batchSize
            #expect(try driver.info(stream.pointer).next == UInt64(total))
            let (records, next) = try driver.read(stream.pointer, from: 0, maxRecords: total).value()
            #expect(records.count == total && next == UInt64(total))
            let byBatch = firsts.withLock { $0 }
            #expect(byBatch.count == writers * batches)
            #expect(Set(byBatch.values).count == byBatch.count, "no two batches share a first offset")
            for (batch, first) in byBatch {
                let slice = records[Int(first)..<Int(first) + batchSize]
                #expect(slice.map(\.event.id) == (0..<batchSize).map { "\(batch)-\($0)" }, "batch \(batch)")
            }
            for writer in 0..<writers {
                let mine = (0..<batches).compactMap { byBatch["w\(writer)-b\($0)"] }
                #expect(mine == mine.sorted(), "one writer's batches are stored in the order it made them")
            }
        }
    }
}

/// The thread that made the last `openAsync` call (a C completion captures nothing).
enum OpenCaller {
    static let current = Mutex<UInt>(0)
}

/// `PX_OFFSET_NONE` (`UINT64_MAX`, a macro Swift does not import).
let offsetNone = UInt64.max

/// A stream handle carried to other threads; only ever passed back to the plugin that made it.
struct StreamRef: @unchecked Sendable {
    let pointer: OpaquePointer
}

/// Drives a storage plugin's C vtable as the kernel does, recording every completion.
struct StorageDriver: @unchecked Sendable {
    // Safe: the vtable is static in a mapped image and the instance is only passed back to its own hooks,
    // which the ABI makes callable from any thread; `ledger` is thread-safe.
    let vtable: UnsafePointer<px_storage_vtable>
    let instance: UnsafeMutableRawPointer
    let ledger = ProbeLedger()

    struct Info: Equatable {
        var first: UInt64
        var next: UInt64
        var size: UInt64
    }

    struct Failure: Error, CustomStringConvertible {
        var status: px_status
        var message: String
        var description: String { "status \(status): \(message)" }
    }

    func open(_ name: String, retentionBytes: UInt64 = 0, retentionMs: UInt64 = 0) throws -> OpaquePointer {
        var options = px_stream_options(
            struct_size: UInt32(MemoryLayout<px_stream_options>.size), reserved: 0, retention_bytes: retentionBytes,
            retention_ms: retentionMs)
        var stream: OpaquePointer?
        let (status, message) = withErrorBuffer { err in
            withPXStr(name) { vtable.pointee.on_open_stream(instance, $0, &options, &stream, err) }
        }
        guard status == PX_OK.status, let stream else { throw Failure(status: status, message: message) }
        return stream
    }

    func close(_ stream: OpaquePointer) { vtable.pointee.on_close_stream(instance, stream) }

    func append(_ stream: OpaquePointer?, _ events: [CloudEvent]) -> HookOutcome<UInt64> {
        let batch = CEventBatch(events)
        return withExtendedLifetime(batch) {
            ledger.call("append") { user, err in
                vtable.pointee.on_append(
                    instance, stream, batch.pointers.baseAddress, batch.count,
                    { user, status, first, error in
                        CompletionProbe<UInt64>.from(user)?.record(status, first, error.string)
                    }, user, err)
            }
        }
    }

    func read(_ stream: OpaquePointer?, from offset: UInt64, maxRecords: Int, maxBytes: Int = 1 << 20)
        -> HookOutcome<(records: [StoredRecord], next: UInt64)>
    {
        ledger.call("read") { user, err in
            vtable.pointee.on_read(
                instance, stream, offset, maxRecords, maxBytes,
                { user, status, records, count, next, error in
                    // Records are borrowed for the callback: copy them now.
                    var copied: [StoredRecord] = []
                    for i in 0..<count {
                        if let record = records?[i], let stored = StoredRecord(copying: record) {
                            copied.append(stored)
                        }
                    }
                    CompletionProbe<(records: [StoredRecord], next: UInt64)>.from(user)?.record(
                        status, (copied, next), error.string)
                }, user, err)
        }
    }

    /// What `on_open_stream_async` completed with: the stream, and whether it completed on the calling thread.
    struct Opened: @unchecked Sendable {
        // Safe: the handle is opaque and only passed back to the plugin.
        let stream: OpaquePointer?
        let onCaller: Bool
    }

    /// `on_open_stream_async`, from a thread that notes its identity for the completion to compare.
    func openAsync(_ name: String) -> HookOutcome<Opened> {
        let caller = UInt(bitPattern: Int(bitPattern: pthread_self()))
        return ledger.call("open_stream_async") { user, err in
            OpenCaller.current.withLock { $0 = caller }
            return withPXStr(name) {
                vtable.pointee.on_open_stream_async!(
                    instance, $0, nil,
                    { user, status, stream, error in
                        let here = UInt(bitPattern: Int(bitPattern: pthread_self()))
                        let onCaller = OpenCaller.current.withLock { $0 } == here
                        CompletionProbe<Opened>.from(user)?.record(
                            status, Opened(stream: stream, onCaller: onCaller), error.string)
                    }, user, err)
            }
        }
    }

    /// A batch lent by `on_read_batch`, read by the test until it releases it.
    struct Lent: @unchecked Sendable {
        // Safe: the ABI lets the kernel (here, the test) read a lent batch from any thread until its release.
        let pointer: UnsafeMutablePointer<px_record_batch>?
    }

    func readBatch(_ stream: OpaquePointer?, from offset: UInt64, maxRecords: Int, maxBytes: Int = 1 << 20)
        -> HookOutcome<Lent>
    {
        ledger.call("read_batch") { user, err in
            vtable.pointee.on_read_batch!(
                instance, stream, offset, maxRecords, maxBytes,
                { user, status, batch, error in
                    CompletionProbe<Lent>.from(user)?.record(status, Lent(pointer: batch), error.string)
                }, user, err)
        }
    }

    /// Copies of a lent batch's records.
    static func copies(_ batch: UnsafeMutablePointer<px_record_batch>) -> [StoredRecord] {
        (0..<batch.pointee.count).compactMap { batch.pointee.records?[$0].flatMap(StoredRecord.init(copying:)) }
    }

    func commit(_ stream: OpaquePointer?, group: String, offset: UInt64) -> HookOutcome<Void> {
        ledger.call("commit_offset") { user, err in
            withPXStr(group) {
                vtable.pointee.on_commit_offset(
                    instance, stream, $0, offset,
                    { user, status, error in CompletionProbe<Void>.from(user)?.record(status, (), error.string) },
                    user, err)
            }
        }
    }

    func fetch(_ stream: OpaquePointer?, group: String) -> HookOutcome<UInt64> {
        ledger.call("fetch_offset") { user, err in
            withPXStr(group) {
                vtable.pointee.on_fetch_offset(
                    instance, stream, $0,
                    { user, status, offset, error in
                        CompletionProbe<UInt64>.from(user)?.record(status, offset, error.string)
                    }, user, err)
            }
        }
    }

    func trim(_ stream: OpaquePointer?, before offset: UInt64) -> HookOutcome<Void> {
        ledger.call("trim") { user, err in
            vtable.pointee.on_trim(
                instance, stream, offset,
                { user, status, error in CompletionProbe<Void>.from(user)?.record(status, (), error.string) }, user,
                err)
        }
    }

    func info(_ stream: OpaquePointer?) throws -> Info {
        var out = px_stream_info()
        out.struct_size = UInt32(MemoryLayout<px_stream_info>.size)
        let (status, message) = withErrorBuffer { vtable.pointee.on_stream_info(instance, stream, &out, $0) }
        guard status == PX_OK.status else { throw Failure(status: status, message: message) }
        #expect(out.struct_size == UInt32(MemoryLayout<px_stream_info>.size), "the caller's struct_size is kept")
        return Info(first: out.first_offset, next: out.next_offset, size: out.size_bytes)
    }
}
