import Foundation
import PlexusABI
import PlexusCore
import PlexusKernel
import Synchronization

/// The storage contract of plexus.h (`px_storage_vtable`), one rule per MUST.
///
/// Every rule works on streams of its own (unique names), so rules are independent of each other and of
/// earlier runs on the same data directory. Rules assume nothing the contract does not say: not where a
/// new stream's offsets begin, nor whether an error is returned or reported through the completion.
enum StorageSuite {
    static let lifecycleRule = "storage.lifecycle.stop-destroy"

    static let rules: [Rule<StorageHarness>] = [
        rule(
            "storage.append.dense-offsets",
            "consecutive appends are assigned dense offsets: each batch starts where the previous one ended",
            denseOffsets),
        rule(
            "storage.append.order-within-stream",
            "batches appended without waiting are ordered as the calls were made, and stored as assigned",
            orderWithinStream),
        rule(
            "storage.append.empty-batch",
            "an empty batch succeeds with first_offset = the stream's next offset, and takes no offset",
            emptyBatch),
        rule(
            "storage.append.concurrent-appenders",
            "appends from several threads at once: offsets dense without duplicates, each caller's batches in its call order",
            concurrentAppenders),
        rule(
            "storage.append.large-event",
            "an event of more than 1 MiB is stored and read back byte for byte", largeEvent),
        rule(
            "storage.read.at-end-returns-nothing",
            "reading at the stream's next offset succeeds with zero records", readAtEnd),
        rule(
            "storage.read.past-end-out-of-range",
            "reading beyond the stream's next offset fails with PX_ERR_OUT_OF_RANGE", readPastEnd),
        rule(
            "storage.read.max-bytes-at-least-one",
            "a read returns at least one record even when max_bytes is smaller than any record", readMaxBytes),
        rule(
            "storage.read.max-records",
            "a read returns no more than max_records, from from_offset, with next_offset after the last one",
            readMaxRecords),
        rule(
            "storage.read.round-trip",
            "every attribute, extension and data byte reads back unchanged, at the offset assigned", roundTrip),
        rule(
            "storage.offsets.commit-fetch",
            "a fetch returns the group's latest commit, per stream and per group", commitFetch),
        rule(
            "storage.offsets.none-before-commit",
            "a group that never committed fetches PX_OFFSET_NONE", noneBeforeCommit),
        rule(
            "storage.offsets.survive-reopen",
            "committed offsets survive closing and reopening the stream, and (durability above NONE) a restart of the plugin on the same data directory",
            offsetsSurviveReopen),
        rule(
            "storage.stream.survive-reopen",
            "events and the stream's extent survive closing and reopening it, and (durability above NONE) a restart",
            streamSurvivesReopen),
        rule(
            "storage.trim.keeps-offsets",
            "a trim discards events below before_offset and moves no offset; trimming with nothing below succeeds",
            trimKeepsOffsets),
        rule(
            "storage.trim.read-before-first-out-of-range",
            "after a trim, reading below the first retained offset fails with PX_ERR_OUT_OF_RANGE",
            trimReadBeforeFirst),
        rule(
            "storage.info.extent",
            "on_stream_info reports first_offset … next_offset - 1 as the offsets that exist, and a growing size",
            infoExtent),
        rule(
            "storage.errors.invalid-arguments",
            "a NULL stream, max_records 0, or NULL events with count > 0 fail with PX_ERR_INVALID_ARGUMENT and change nothing",
            invalidArguments),
        rule(
            "storage.read-batch.lends-what-read-returns",
            "on_read_batch (1.1, optional) lends the records on_read returns, which stay unchanged through later appends and trims until the one release",
            readBatchLends),
        rule(
            "storage.open-async.completes-once",
            "on_open_stream_async (1.1, optional) completes once with a stream that takes appends and reads, and reopens the same stream",
            openAsyncCompletes),
        rule(
            "storage.catalog.list-streams",
            "on_list_streams (1.3, optional) lists every stream opened, and (durability above NONE) after a restart",
            listStreams),
        rule(
            "storage.catalog.offsets",
            "on_list_offsets (1.3, optional) lists each group's latest commit; on_delete_offset forgets one group only",
            listAndDeleteOffsets),
        rule(
            "storage.catalog.delete-stream",
            "on_delete_stream (1.3, optional) removes the stream from the listing with its events and offsets; the name opens empty again, also after a restart",
            deleteStream),
        rule(
            "storage.completion.exactly-once",
            "every hook that returned PX_OK called its completion exactly once (checked over every call of the run)",
            completionExactlyOnce),
        rule(
            "storage.completion.never-after-error",
            "no hook that returned an error called its completion (checked over every call of the run)",
            completionNeverAfterError),
    ]

    /// A rule whose streams are closed when it ends.
    static func rule(
        _ name: String, _ summary: String, _ body: @escaping @Sendable (StorageHarness) throws -> Void
    ) -> Rule<StorageHarness> {
        Rule(name: name, summary: summary) { harness in
            defer { harness.closeAll() }
            try body(harness)
        }
    }

    static func run(
        _ plugin: StandalonePlugin, dataDirectory: String, options: ConformanceOptions, progress: (RuleResult) -> Void
    ) throws -> [RuleResult] {
        try Conformance.runSuite(
            rules, plugin: plugin, dataDirectory: dataDirectory, lifecycleRule: lifecycleRule, options: options,
            makeHarness: { instance, ledger in
                try StorageHarness(plugin: plugin, instance: instance, options: options, ledger: ledger)
            },
            currentInstance: { harness, _ in harness.instance }, beforeStop: { $0.closeAll() }, progress: progress)
    }

    static func durabilityName(_ durability: UInt32) -> String {
        switch durability {
        case UInt32(PX_DURABILITY_NONE.rawValue): return "NONE"
        case UInt32(PX_DURABILITY_LOCAL.rawValue): return "LOCAL"
        case UInt32(PX_DURABILITY_REPLICATED.rawValue): return "REPLICATED"
        default: return "unknown (\(durability))"
        }
    }

    /// `offset 7` or `offsets 7…9`.
    static func span(_ first: UInt64, _ count: Int) -> String {
        count == 1 ? "offset \(first)" : "offsets \(first)…\(first + UInt64(max(count, 1)) - 1)"
    }

    static func show(_ offset: UInt64) -> String { offset == offsetNone ? "PX_OFFSET_NONE" : "\(offset)" }

    static func events(_ prefix: String, _ count: Int, size: Int = 0) -> [CloudEvent] {
        (0..<count).map { TestEvents.simple("\(prefix)\($0)", size: size) }
    }

    /// Checks that `records` are exactly the events `ids` at offsets `first`, `first + 1`, ….
    static func expectStored(_ records: [ReadRecord], ids: [String], from first: UInt64, _ what: String) throws {
        try check(
            records.count == ids.count, expected: "\(ids.count) records \(what)", observed: "\(records.count)")
        for (index, (record, id)) in zip(records, ids).enumerated() {
            let offset = first + UInt64(index)
            try check(
                record.offset == offset && record.event?.id == id,
                expected: "event \(id) at offset \(offset) \(what)",
                observed: record.event.map { "event \($0.id) at offset \(record.offset)" }
                    ?? "a record without an event at offset \(record.offset)")
        }
    }

    // MARK: Append

    static func denseOffsets(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("dense")
        var first: UInt64?
        var previous: (first: UInt64, count: Int)?
        for call in 1...25 {
            let count = 1 + (call - 1) % 3
            let assigned = try c.appendOK(s, events("d\(call)-", count), "append #\(call) (\(count) events)")
            if let previous {
                let expected = previous.first + UInt64(previous.count)
                try check(
                    assigned == expected,
                    expected:
                        "append #\(call) (\(count) events) to be assigned first_offset \(expected), right after append #\(call - 1)'s \(span(previous.first, previous.count))",
                    observed: "first_offset \(assigned)")
            }
            first = first ?? assigned
            previous = (assigned, count)
        }
        guard let first, let previous else { return }
        let end = previous.first + UInt64(previous.count)
        let info = try c.infoOK(s, "after 25 appends")
        try check(
            info.next_offset == end, expected: "next_offset \(end) after the last batch (offsets up to \(end - 1))",
            observed: "next_offset \(info.next_offset)")
        let records = try c.readRange(s, from: first, to: end, "the 25 batches")
        for (index, record) in records.enumerated() where record.offset != first + UInt64(index) {
            throw Violation(
                expected: "the records read back to have offsets \(first)…\(end - 1) without gaps",
                observed: "offset \(record.offset) where \(first + UInt64(index)) belongs")
        }
    }

    static func orderWithinStream(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("order")
        // Nine calls made one after another without waiting for their completions.
        let calls = (0..<9).map { k in c.append(s.raw, events("o\(k)-", 3)) }
        var firsts: [UInt64] = []
        for (k, call) in calls.enumerated() {
            guard case .append(_, let first, _) = try c.completed(call, "append call #\(k + 1)") else { continue }
            firsts.append(first)
        }
        for k in 1..<firsts.count {
            try check(
                firsts[k] >= firsts[k - 1] + 3,
                expected:
                    "append call #\(k + 1), made after call #\(k), to be assigned offsets after call #\(k)'s (\(firsts[k - 1])…\(firsts[k - 1] + 2))",
                observed: "first_offset \(firsts[k])")
        }
        guard let start = firsts.first, let last = firsts.last else { return }
        let records = try c.readRange(s, from: start, to: last + 3, "the nine batches")
        for (a, b) in zip(records, records.dropFirst()) {
            try check(
                b.offset > a.offset, expected: "records in increasing offset order",
                observed: "offset \(b.offset) after offset \(a.offset)")
        }
        let byOffset = Dictionary(records.map { ($0.offset, $0) }, uniquingKeysWith: { a, _ in a })
        for (k, first) in firsts.enumerated() {
            for i in 0..<3 {
                let offset = first + UInt64(i)
                let id = byOffset[offset]?.event?.id
                try check(
                    id == "o\(k)-\(i)",
                    expected: "event o\(k)-\(i) (event \(i + 1) of append call #\(k + 1)) at offset \(offset)",
                    observed: id.map { "event \($0)" } ?? "no record")
            }
        }
    }

    static func emptyBatch(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("empty")
        let fresh = try c.infoOK(s, "of a new stream")
        let nullBatch = try c.completed(
            c.append(s.raw, [], nullArray: true), "an empty batch (events NULL, count 0) on a new stream")
        if case .append(_, let first, _) = nullBatch {
            try check(
                first == fresh.next_offset,
                expected:
                    "an empty batch on a new stream to complete with first_offset = its next offset \(fresh.next_offset)",
                observed: "first_offset \(first)")
        }
        let first = try c.appendOK(s, events("e", 2), "appending 2 events after an empty batch")
        try check(
            first == fresh.next_offset,
            expected:
                "the first event after an empty batch at offset \(fresh.next_offset) (an empty batch takes no offset)",
            observed: "first_offset \(first)")
        let arrayBatch = try c.completed(c.append(s.raw, []), "an empty batch (a non-NULL array, count 0)")
        if case .append(_, let assigned, _) = arrayBatch {
            try check(
                assigned == first + 2,
                expected: "an empty batch to complete with first_offset = the next offset \(first + 2)",
                observed: "first_offset \(assigned)")
        }
        let info = try c.infoOK(s, "after the empty batches")
        try check(
            info.next_offset == first + 2, expected: "next_offset \(first + 2): empty batches append nothing",
            observed: "next_offset \(info.next_offset)")
    }

    static func concurrentAppenders(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("concurrent")
        let appenders = max(2, h.options.appenders)
        let batches = max(1, h.options.batchesPerAppender)
        let timeout = h.options.completionTimeout
        let assigned = Mutex<[Int: [(first: UInt64, ids: [String])]]>([:])
        try RuleRunner.concurrently(appenders, timeout: timeout * 4 + .seconds(Double(batches) * 0.05)) { t in
            var pending: [(CallRecord, [String])] = []
            for b in 0..<batches {
                let ids = (0..<(1 + (t + b) % 3)).map { "c\(t)-\(b)-\($0)" }
                let batch = ids.map { TestEvents.simple($0) }
                var call = c.append(s.raw, batch)
                // Backpressure is allowed: wait a little and try again.
                var retries = 0
                while let status = call.returnedStatus,
                    status == PX_ERR_RESOURCE_EXHAUSTED.status || status == PX_ERR_UNAVAILABLE.status, retries < 2000
                {
                    Thread.sleep(forTimeInterval: 0.001)
                    retries += 1
                    call = c.append(s.raw, batch)
                }
                pending.append((call, ids))
            }
            var mine: [(first: UInt64, ids: [String])] = []
            for (b, (call, ids)) in pending.enumerated() {
                let payload = try c.completed(call, "batch #\(b + 1) of appender \(t + 1)")
                if case .append(_, let first, _) = payload { mine.append((first, ids)) }
            }
            assigned.withLock { $0[t] = mine }
        }
        let all = assigned.withLock { $0 }
        // Each appender's batches in the order it made the calls.
        for t in all.keys.sorted() {
            let mine = all[t] ?? []
            for b in mine.indices.dropFirst() {
                let before = mine[b - 1]
                try check(
                    mine[b].first >= before.first + UInt64(before.ids.count),
                    expected:
                        "appender \(t + 1)'s batch #\(b + 1), called after its batch #\(b), to be assigned offsets after its \(span(before.first, before.ids.count))",
                    observed: "first_offset \(mine[b].first)")
            }
        }
        // Together: dense, no offset assigned twice.
        let ranges = all.values.flatMap { $0 }.sorted { $0.first < $1.first }
        guard let start = ranges.first?.first else { return }
        var next = start
        var idAt: [String] = []
        for range in ranges {
            try check(
                range.first >= next,
                expected: "no offset assigned twice", observed: "offset \(range.first) assigned to two batches")
            try check(
                range.first == next, expected: "dense offsets across all appenders",
                observed: "a gap: no batch was assigned offset \(next) (the next batch starts at \(range.first))")
            idAt += range.ids
            next = range.first + UInt64(range.ids.count)
        }
        let records = try c.readRange(s, from: start, to: next, "the concurrent batches")
        try expectStored(records, ids: idAt, from: start, "as the completions assigned them")
    }

    static func largeEvent(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("large")
        let size = max(h.options.largeEventBytes, 1 << 20)
        let data = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let large = CloudEvent(
            id: "large-1", source: TestEvents.source, type: TestEvents.type,
            datacontenttype: "application/octet-stream",
            data: data)
        let first = try c.appendOK(s, [large], "appending a \(size)-byte event")
        let (records, _) = try c.readOK(
            s, from: first, maxRecords: 1, maxBytes: 1, "reading the \(size)-byte event back")
        try check(
            records.count == 1, expected: "the \(size)-byte event read back", observed: "\(records.count) records")
        guard let event = records[0].event else {
            throw Violation(expected: "the \(size)-byte event read back", observed: "a record without an event")
        }
        if let difference = TestEvents.difference(large, event) {
            throw Violation(expected: "the \(size)-byte event to read back unchanged", observed: difference)
        }
    }

    // MARK: Read

    static func readAtEnd(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("at-end")
        let fresh = try c.infoOK(s, "of a new stream")
        let (none, next) = try c.readOK(
            s, from: fresh.next_offset, "a read at the end of a new stream (offset \(fresh.next_offset))")
        try check(none.isEmpty, expected: "zero records at the end of a new stream", observed: "\(none.count) records")
        try check(
            next == fresh.next_offset, expected: "next_offset \(fresh.next_offset) from a read at the end",
            observed: "next_offset \(next)")
        let first = try c.appendOK(s, events("a", 3), "appending 3 events")
        let end = first + 3
        let (records, after) = try c.readOK(s, from: end, "a read at the end (offset \(end)) after appending 3 events")
        try check(records.isEmpty, expected: "zero records at the end", observed: "\(records.count) records")
        try check(
            after == end, expected: "next_offset \(end) from a read at the end", observed: "next_offset \(after)")
    }

    static func readPastEnd(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("past-end")
        let first = try c.appendOK(s, events("p", 3), "appending 3 events")
        for offset in [first + 4, first + 1000] {
            try c.expectFailure(
                c.read(s.raw, from: offset), PX_ERR_OUT_OF_RANGE.status,
                "reading from offset \(offset), past the end (next offset \(first + 3))")
        }
    }

    static func readMaxBytes(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("max-bytes")
        let first = try c.appendOK(s, events("m", 3, size: 4096), "appending 3 events of 4 KiB")
        let (records, next) = try c.readOK(s, from: first, maxRecords: 10, maxBytes: 1, "a read with max_bytes 1")
        guard let head = records.first, let last = records.last else {
            throw Violation(
                expected: "at least one record from a read whose max_bytes (1) is smaller than any record",
                observed: "zero records")
        }
        try check(
            head.offset == first, expected: "the first record at offset \(first)", observed: "offset \(head.offset)")
        try check(
            next == last.offset + 1, expected: "next_offset \(last.offset + 1), after the last record returned",
            observed: "next_offset \(next)")
    }

    static func readMaxRecords(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("max-records")
        let first = try c.appendOK(s, events("r", 5), "appending 5 events")
        let (two, next) = try c.readOK(s, from: first, maxRecords: 2, "a read with max_records 2")
        try check(
            (1...2).contains(two.count), expected: "1 or 2 records from a read with max_records 2 (5 exist)",
            observed: "\(two.count) records")
        try expectStored(two, ids: (0..<two.count).map { "r\($0)" }, from: first, "from a read with max_records 2")
        try check(
            next == first + UInt64(two.count), expected: "next_offset \(first + UInt64(two.count))",
            observed: "next_offset \(next)")
        let (one, _) = try c.readOK(s, from: first + 2, maxRecords: 1, "a read of one record from offset \(first + 2)")
        try expectStored(one, ids: ["r2"], from: first + 2, "from a read with max_records 1")
    }

    static func roundTrip(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("round-trip")
        let sent = TestEvents.roundTrip
        let before = Date().timeIntervalSince1970
        let first = try c.appendOK(s, sent, "appending \(sent.count) events with every attribute")
        let after = Date().timeIntervalSince1970
        let records = try c.readRange(s, from: first, to: first + UInt64(sent.count), "the events")
        try check(records.count == sent.count, expected: "\(sent.count) records", observed: "\(records.count)")
        let earliest = UInt64(max(0, before - 1) * 1e9)
        let latest = UInt64((after + 1) * 1e9)
        for (index, (expected, record)) in zip(sent, records).enumerated() {
            let offset = first + UInt64(index)
            try check(
                record.offset == offset, expected: "event \(expected.id) at offset \(offset)",
                observed: "offset \(record.offset)")
            guard let event = record.event else {
                throw Violation(
                    expected: "the record at offset \(offset) to carry its event", observed: "a NULL event")
            }
            if let difference = TestEvents.difference(expected, event) {
                throw Violation(expected: "event \(expected.id) to read back unchanged", observed: difference)
            }
            let time = record.appendTimeNanoseconds
            try check(
                time == 0 || (earliest...latest).contains(time),
                expected: "append_time_ns 0 (unknown) or the Unix time of the append, \(earliest)…\(latest)",
                observed: "\(time)")
        }
    }

    // MARK: Offsets

    static func commitFetch(_ h: StorageHarness) throws {
        let c = try h.client()
        let a = try h.stream("offsets-a")
        let b = try h.stream("offsets-b")
        let fa = try c.appendOK(a, events("a", 10), "appending 10 events to stream a")
        let fb = try c.appendOK(b, events("b", 3), "appending 3 events to stream b")
        func expect(_ stream: StreamHandle, _ label: String, _ group: String, _ offset: UInt64, _ after: String)
            throws
        {
            let got = try c.fetchOK(stream, group: group)
            try check(
                got == offset, expected: "group \(group) on stream \(label) to fetch \(offset) \(after)",
                observed: show(got))
        }
        try c.commitOK(a, group: "group-a", offset: fa + 3)
        try expect(a, "a", "group-a", fa + 3, "after committing it")
        try c.commitOK(a, group: "group-a", offset: fa + 7)
        try expect(a, "a", "group-a", fa + 7, "(its latest commit)")
        try c.commitOK(a, group: "group-b", offset: fa + 1)
        try expect(a, "a", "group-b", fa + 1, "after committing it")
        try expect(a, "a", "group-a", fa + 7, "(another group's commit changes nothing)")
        try c.commitOK(b, group: "group-a", offset: fb + 2)
        try expect(b, "b", "group-a", fb + 2, "after committing it")
        try expect(a, "a", "group-a", fa + 7, "(the same group on another stream is another offset)")
        try c.commitOK(a, group: "group-a", offset: fa + 2)
        try expect(a, "a", "group-a", fa + 2, "(a commit may move an offset back)")
    }

    static func noneBeforeCommit(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("none")
        let fresh = try c.fetchOK(s, group: "never-committed")
        try check(
            fresh == offsetNone,
            expected: "PX_OFFSET_NONE for a group that never committed on a new stream", observed: show(fresh))
        let first = try c.appendOK(s, events("n", 3), "appending 3 events")
        try c.commitOK(s, group: "group-a", offset: first + 1)
        let other = try c.fetchOK(s, group: "group-b")
        try check(
            other == offsetNone,
            expected: "PX_OFFSET_NONE for group-b, which never committed (group-a did)", observed: show(other))
    }

    static func offsetsSurviveReopen(_ h: StorageHarness) throws {
        let name = h.uniqueName("reopen-offsets")
        var s = try h.open(name)
        let first = try h.client().appendOK(s, events("k", 5), "appending 5 events")
        try h.client().commitOK(s, group: "group-r", offset: first + 3)
        h.close(s)
        s = try h.open(name)
        let reopened = try h.client().fetchOK(s, group: "group-r")
        try check(
            reopened == first + 3,
            expected: "the committed offset \(first + 3) after closing and reopening the stream",
            observed: show(reopened))
        guard h.durability > UInt32(PX_DURABILITY_NONE.rawValue) else { return }
        try h.restart()
        s = try h.open(name)
        let restarted = try h.client().fetchOK(s, group: "group-r")
        try check(
            restarted == first + 3,
            expected:
                "the committed offset \(first + 3) after stopping, destroying and creating the plugin again on the same data directory (durability \(durabilityName(h.durability)))",
            observed: show(restarted))
    }

    static func streamSurvivesReopen(_ h: StorageHarness) throws {
        let name = h.uniqueName("reopen-stream")
        var s = try h.open(name)
        let first = try h.client().appendOK(s, events("v", 5), "appending 5 events")
        let ids = (0..<5).map { "v\($0)" }
        func expectIntact(_ after: String) throws {
            let c = try h.client()
            let info = try c.infoOK(s, after)
            try check(
                info.first_offset <= first && info.next_offset == first + 5,
                expected: "offsets \(first)…\(first + 4) to exist \(after)",
                observed: "first_offset \(info.first_offset), next_offset \(info.next_offset)")
            let records = try c.readRange(s, from: first, to: first + 5, "the events \(after)")
            try expectStored(records, ids: ids, from: first, after)
        }
        h.close(s)
        s = try h.open(name)
        try expectIntact("after closing and reopening the stream")
        guard h.durability > UInt32(PX_DURABILITY_NONE.rawValue) else { return }
        try h.restart()
        s = try h.open(name)
        try expectIntact(
            "after a restart of the plugin on the same data directory (durability \(durabilityName(h.durability)))")
    }

    // MARK: 1.3 hooks

    static func listStreams(_ h: StorageHarness) throws {
        let c = try h.client()
        guard c.vtable.on_list_streams != nil else { return }  // optional: the kernel says it cannot list
        let name = h.uniqueName("listed")
        let s = try h.open(name)
        _ = try c.appendOK(s, events("l", 1), "appending an event")
        let listed = try c.listStreamsOK("listing the streams")
        try check(
            listed.contains(name), expected: "'\(name)' among the \(listed.count) streams listed",
            observed: show(listed))
        guard h.durability > UInt32(PX_DURABILITY_NONE.rawValue) else { return }
        try h.restart()
        let after = try h.client().listStreamsOK("listing the streams after a restart")
        try check(
            after.contains(name),
            expected: "'\(name)' listed after a restart of the plugin (durability \(durabilityName(h.durability)))",
            observed: show(after))
    }

    static func listAndDeleteOffsets(_ h: StorageHarness) throws {
        let c = try h.client()
        guard c.vtable.on_list_offsets != nil else { return }
        let s = try h.stream("list-offsets")
        let first = try c.appendOK(s, events("o", 4), "appending 4 events")
        try c.commitOK(s, group: "g1", offset: first + 1)
        try c.commitOK(s, group: "g2", offset: first + 2)
        try c.commitOK(s, group: "g1", offset: first + 3)
        let listed = try c.listOffsetsOK(s, "listing the offsets")
        try check(
            listed == ["g1": first + 3, "g2": first + 2],
            expected: "g1 at \(first + 3) and g2 at \(first + 2), nothing else", observed: "\(listed)")
        guard c.vtable.on_delete_offset != nil else { return }
        _ = try c.completed(c.deleteOffset(s.raw, group: "g1"), "deleting the offset of g1")
        _ = try c.completed(c.deleteOffset(s.raw, group: "never-committed"), "deleting a group with no offset")
        let fetched = try c.fetchOK(s, group: "g1")
        try check(
            fetched == offsetNone, expected: "PX_OFFSET_NONE for g1 after on_delete_offset",
            observed: "offset \(fetched)")
        let remaining = try c.listOffsetsOK(s, "listing the offsets after deleting g1")
        try check(remaining == ["g2": first + 2], expected: "only g2 at \(first + 2)", observed: "\(remaining)")
    }

    static func deleteStream(_ h: StorageHarness) throws {
        let c = try h.client()
        guard c.vtable.on_delete_stream != nil else { return }
        let name = h.uniqueName("deleted")
        let s = try h.open(name)
        _ = try c.appendOK(s, events("d", 3), "appending 3 events")
        try c.commitOK(s, group: "g", offset: 1)
        _ = try c.completed(c.deleteStream(s.raw), "deleting the stream")
        h.close(s)
        func expectGone(_ after: String) throws {
            let c = try h.client()
            if c.vtable.on_list_streams != nil {
                let listed = try c.listStreamsOK("listing the streams \(after)")
                try check(!listed.contains(name), expected: "'\(name)' not listed \(after)", observed: show(listed))
            }
            let again = try h.open(name)
            let info = try c.infoOK(again, "of the stream opened again \(after)")
            try check(
                info.next_offset == info.first_offset,
                expected: "the name to open an empty stream \(after)",
                observed: "first_offset \(info.first_offset), next_offset \(info.next_offset)")
            let offset = try c.fetchOK(again, group: "g")
            try check(
                offset == offsetNone, expected: "no committed offset for g \(after)", observed: "offset \(offset)")
            h.close(again)
        }
        if h.durability > UInt32(PX_DURABILITY_NONE.rawValue) {
            try h.restart()
            try expectGone("after the deletion and a restart (durability \(durabilityName(h.durability)))")
        } else {
            try expectGone("after the deletion")
        }
    }

    static func show(_ names: [String]) -> String {
        names.count <= 8 ? "\(names.sorted())" : "\(names.count) names, e.g. \(names.sorted().prefix(8))"
    }

    // MARK: 1.1 hooks

    /// The records of a lent batch, checked for the header's shape.
    static func lentRecords(_ call: CallRecord, _ c: StorageClient, _ what: String) throws -> (
        batch: UnsafeMutablePointer<px_record_batch>, records: [ReadRecord]
    ) {
        let payload = try c.completed(call, what)
        guard case .lent(_, let lent, _) = payload, let batch = lent.pointer else {
            throw Violation(expected: "on_read_batch to complete PX_OK with a batch", observed: "\(payload)")
        }
        try check(
            Int(batch.pointee.struct_size) >= MemoryLayout<px_record_batch>.size,
            expected:
                "a px_record_batch whose struct_size covers every 1.1 field (\(MemoryLayout<px_record_batch>.size))",
            observed: "struct_size \(batch.pointee.struct_size)")
        try check(
            batch.pointee.release != nil, expected: "the lent batch to have a release function",
            observed: "release NULL")
        try check(
            batch.pointee.count == 0 || batch.pointee.records != nil,
            expected: "records for a batch of \(batch.pointee.count)", observed: "records NULL")
        return (batch, ReadRecord.copies(batch.pointee.records, batch.pointee.count))
    }

    static func readBatchLends(_ h: StorageHarness) throws {
        let c = try h.client()
        guard c.vtable.on_read_batch != nil else { return }  // optional: the kernel falls back to on_read
        let s = try h.stream("read-batch")
        let first = try c.appendOK(s, events("lend", 6), "appending 6 events")
        let (read, next) = try c.readOK(s, from: first, maxRecords: 4, "reading 4 records with on_read")
        let (batch, lent) = try lentRecords(
            c.readBatch(s.raw, from: first, maxRecords: 4), c, "reading 4 records with on_read_batch")
        func same(_ records: [ReadRecord], _ what: String) throws {
            try check(
                records.count == read.count && batch.pointee.next_offset == next,
                expected: "\(read.count) records and next_offset \(next) \(what), as on_read returned",
                observed: "\(records.count) records, next_offset \(batch.pointee.next_offset)")
            for (got, want) in zip(records, read) {
                try check(
                    got.offset == want.offset && got.event != nil && got.event == want.event,
                    expected: "event \(want.event?.id ?? "?") at offset \(want.offset) \(what)",
                    observed: "\(got.event?.id ?? "no event") at offset \(got.offset)")
            }
        }
        try same(lent, "in the lent batch")
        // The batch outlives what the storage does next: it must not change or go away before release.
        _ = try c.appendOK(s, events("after", 3), "appending 3 more events while a batch is lent")
        try c.trimOK(s, before: first + 6)
        try same(ReadRecord.copies(batch.pointee.records, batch.pointee.count), "after an append and a trim")
        batch.pointee.release?(batch)
        // A read at the end lends an empty batch, released all the same.
        let end = try c.infoOK(s, "after the trim").next_offset
        let (empty, records) = try lentRecords(c.readBatch(s.raw, from: end), c, "reading at the end")
        try check(
            records.isEmpty && empty.pointee.next_offset == end,
            expected: "zero records and next_offset \(end) at the end",
            observed: "\(records.count) records, next_offset \(empty.pointee.next_offset)")
        empty.pointee.release?(empty)
        let past = c.readBatch(s.raw, from: end + 1)
        try c.expectFailure(past, PX_ERR_OUT_OF_RANGE.status, "on_read_batch past the end")
    }

    static func openAsyncCompletes(_ h: StorageHarness) throws {
        let c = try h.client()
        guard c.vtable.on_open_stream_async != nil else { return }  // optional: the kernel uses on_open_stream
        let name = h.uniqueName("open-async")
        func open(_ what: String) throws -> StreamHandle {
            let payload = try c.completed(c.openAsync(name), what)
            guard case .opened(_, let address, _) = payload, let raw = OpaquePointer(bitPattern: address) else {
                throw Violation(
                    expected: "on_open_stream_async to complete PX_OK with a stream", observed: "\(payload)")
            }
            return StreamHandle(raw: raw, name: name)
        }
        let stream = try open("opening a new stream asynchronously")
        let first = try c.appendOK(stream, events("async", 3), "appending to a stream opened asynchronously")
        let records = try c.readRange(stream, from: first, to: first + 3, "the events")
        try expectStored(records, ids: ["async0", "async1", "async2"], from: first, "through the async handle")
        c.close(stream)
        let again = try open("reopening the stream asynchronously")
        defer { c.close(again) }
        let info = try c.infoOK(again, "after reopening")
        try check(
            info.next_offset == first + 3, expected: "the reopened stream to keep next_offset \(first + 3)",
            observed: "next_offset \(info.next_offset)")
    }

    // MARK: Trim and extent

    static func trimKeepsOffsets(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("trim")
        let first = try c.appendOK(s, events("t", 10), "appending 10 events")
        let cut = first + 4
        try c.trimOK(s, before: cut)
        let info = try c.infoOK(s, "after a trim")
        try check(
            info.first_offset == cut,
            expected: "first_offset \(cut) after trimming before \(cut) (events below it are discarded)",
            observed: "first_offset \(info.first_offset)")
        try check(
            info.next_offset == first + 10, expected: "next_offset \(first + 10), unchanged by a trim",
            observed: "next_offset \(info.next_offset)")
        let records = try c.readRange(s, from: cut, to: first + 10, "the events kept by the trim")
        try expectStored(records, ids: (4..<10).map { "t\($0)" }, from: cut, "after the trim (offsets never move)")
        let next = try c.appendOK(s, [TestEvents.simple("t10")], "appending after a trim")
        try check(
            next == first + 10, expected: "an append after a trim at offset \(first + 10) (offsets never move)",
            observed: "first_offset \(next)")
        try c.trimOK(s, before: cut)
        let again = try c.infoOK(s, "after a trim with nothing to discard")
        try check(
            again.first_offset == cut && again.next_offset == first + 11,
            expected: "first_offset \(cut), next_offset \(first + 11) after a trim with nothing to discard",
            observed: "first_offset \(again.first_offset), next_offset \(again.next_offset)")
    }

    static func trimReadBeforeFirst(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("trim-read")
        let first = try c.appendOK(s, events("f", 10), "appending 10 events")
        let cut = first + 5
        try c.trimOK(s, before: cut)
        try c.expectFailure(
            c.read(s.raw, from: cut - 1), PX_ERR_OUT_OF_RANGE.status,
            "reading from offset \(cut - 1), just below the first retained offset \(cut)")
        try c.expectFailure(
            c.read(s.raw, from: first), PX_ERR_OUT_OF_RANGE.status,
            "reading from the trimmed stream's old first offset \(first)")
        let (records, _) = try c.readOK(s, from: cut, maxRecords: 1, "a read at the first retained offset \(cut)")
        try expectStored(records, ids: ["f5"], from: cut, "at the first retained offset")
    }

    static func infoExtent(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("info")
        let fresh = try c.infoOK(s, "of a new stream")
        try check(
            fresh.first_offset == fresh.next_offset, expected: "a new stream to be empty (first_offset == next_offset)",
            observed: "first_offset \(fresh.first_offset), next_offset \(fresh.next_offset)")
        let first = try c.appendOK(s, events("i", 4, size: 1024), "appending 4 events of 1 KiB")
        try check(
            first == fresh.next_offset,
            expected:
                "the first append to a new stream at the next_offset on_stream_info reported (\(fresh.next_offset))",
            observed: "first_offset \(first)")
        let info = try c.infoOK(s, "after appending 4 events")
        try check(
            info.first_offset == fresh.first_offset && info.next_offset == first + 4,
            expected: "first_offset \(fresh.first_offset), next_offset \(first + 4) after appending 4 events",
            observed: "first_offset \(info.first_offset), next_offset \(info.next_offset)")
        try check(
            info.size_bytes > fresh.size_bytes,
            expected: "size_bytes to grow from \(fresh.size_bytes) after appending 4 KiB",
            observed: "size_bytes \(info.size_bytes)")
    }

    // MARK: Errors

    static func invalidArguments(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("invalid")
        let first = try c.appendOK(s, events("x", 2), "appending 2 events")
        let before = try c.infoOK(s, "before the invalid calls")
        let invalid = PX_ERR_INVALID_ARGUMENT.status
        try c.expectFailure(c.append(nil, events("y", 1)), invalid, "on_append with a NULL stream")
        try c.expectFailure(c.read(nil, from: first), invalid, "on_read with a NULL stream")
        try c.expectFailure(
            c.commit(nil, group: "group-x", offset: first), invalid, "on_commit_offset with a NULL stream")
        try c.expectFailure(c.fetch(nil, group: "group-x"), invalid, "on_fetch_offset with a NULL stream")
        try c.expectFailure(c.trim(nil, before: first), invalid, "on_trim with a NULL stream")
        let (status, message, _) = c.info(nil)
        try check(
            status == invalid, expected: "on_stream_info with a NULL stream to fail with PX_ERR_INVALID_ARGUMENT",
            observed: "\(statusName(status))\(StorageClient.reason(message))")
        try c.expectFailure(
            c.read(s.raw, from: first, maxRecords: 0), invalid, "on_read with max_records 0")
        try c.expectFailure(
            c.append(s.raw, [], nullArray: true, count: 2), invalid, "on_append with events NULL and count 2")
        let after = try c.infoOK(s, "after the invalid calls")
        try check(
            after.first_offset == before.first_offset && after.next_offset == before.next_offset,
            expected:
                "the refused calls to leave the stream as it was (offsets \(before.first_offset)…\(before.next_offset))",
            observed: "offsets \(after.first_offset)…\(after.next_offset)")
    }

    // MARK: Completions

    static func completionExactlyOnce(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("exactly-once")
        // One call of each asynchronous hook, on top of every call the earlier rules made.
        let append = c.append(s.raw, events("o", 2))
        var first: UInt64 = 0
        if case .append(_, let assigned, _)? = append.wait(h.options.completionTimeout) { first = assigned }
        for call in [
            c.read(s.raw, from: first), c.commit(s.raw, group: "group-o", offset: first + 1),
            c.fetch(s.raw, group: "group-o"), c.trim(s.raw, before: first + 1),
        ] where call.returnedStatus == PX_OK.status {
            _ = call.wait(h.options.completionTimeout)
        }
        Thread.sleep(forTimeInterval: Double(h.options.grace.nanoseconds) / 1e9)
        if let problems = CompletionAudit.exactlyOnce(h.ledger.records) { throw problems }
    }

    static func completionNeverAfterError(_ h: StorageHarness) throws {
        let c = try h.client()
        let s = try h.stream("after-error")
        let first = try c.appendOK(s, events("z", 1), "appending an event")
        // Calls that fail, on top of every failed call the earlier rules made.
        for call in [
            c.read(s.raw, from: first + 100), c.read(nil, from: first), c.append(nil, events("z", 1)),
            c.read(s.raw, from: first, maxRecords: 0), c.append(s.raw, [], nullArray: true, count: 2),
            c.commit(nil, group: "group-z", offset: 0), c.fetch(nil, group: "group-z"), c.trim(nil, before: first),
        ] where call.returnedStatus == PX_OK.status {
            _ = call.wait(h.options.completionTimeout)
        }
        Thread.sleep(forTimeInterval: Double(h.options.grace.nanoseconds) / 1e9)
        if let problems = CompletionAudit.neverAfterError(h.ledger.records) { throw problems }
    }
}
