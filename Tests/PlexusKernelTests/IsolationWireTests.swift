import PlexusABI
import PlexusCore
import Testing

@testable import PlexusKernel

/// The framing between the kernel and a plugin-host child: frames survive any split of the byte stream, and
/// malformed input is refused with an error, never a trap.
@Suite("isolation wire")
struct IsolationWireTests {
    static let event = CloudEvent(
        id: "e1", source: "/s", type: "t", datacontenttype: "text/plain", subject: "", extensions: [("k", "v")],
        data: Array("payload".utf8))

    static func appendFrame() -> IsolationFrame {
        let batch = CEventBatch([event, CloudEvent(id: "e2", source: "/s", type: "t")])
        var w = WireWriter()
        w.u64(7)
        w.events(batch.pointers.baseAddress, batch.pointers.count)
        withExtendedLifetime(batch) {}
        return IsolationFrame(kind: .request, op: .append, id: 42, payload: w.bytes)
    }

    @Test("an append request decodes to the events it encoded, split at every byte boundary")
    func splitAtEveryBoundary() throws {
        let frames = [
            Self.appendFrame(), IsolationFrame(kind: .reply, op: .append, id: 42, payload: [0, 0, 0, 0, 0, 0, 0, 0]),
            IsolationFrame(kind: .notice, op: .log, id: 0, payload: []),
        ]
        let bytes = frames.flatMap { $0.encoded() }
        for split in 0...bytes.count {
            var decoder = IsolationFrameDecoder()
            var decoded: [IsolationFrame] = []
            decoder.append(Array(bytes[..<split]))
            while let frame = try decoder.next() { decoded.append(frame) }
            decoder.append(Array(bytes[split...]))
            while let frame = try decoder.next() { decoded.append(frame) }
            #expect(decoded == frames, "split at \(split)")
        }
        var reader = WireReader(frames[0].payload)
        #expect(try reader.u64() == 7)
        let events = try reader.events()
        try reader.finish()
        #expect(events == [Self.event, CloudEvent(id: "e2", source: "/s", type: "t")])
    }

    @Test("records and optional text keep absent apart from empty")
    func records() throws {
        let batch = CRecordBatch([StoredRecord(offset: 9, appendTimeNanoseconds: 5, event: Self.event)])
        var w = WireWriter()
        w.records(batch.pointers.baseAddress, batch.pointers.count)
        withExtendedLifetime(batch) {}
        var reader = WireReader(w.bytes)
        let records = try reader.records()
        try reader.finish()
        #expect(records == [StoredRecord(offset: 9, appendTimeNanoseconds: 5, event: Self.event)])
        #expect(records.first?.event.subject == "")
        #expect(records.first?.event.dataschema == nil)
    }

    @Test(
        "malformed frames are refused with an error",
        arguments: [
            ([0, 0, 0, 0] as [UInt8], "outside"),  // length below the header
            ([12, 0, 0, 0] + [UInt8](repeating: 0, count: 12), "outside"),
            ([0xFF, 0xFF, 0xFF, 0x7F], "outside"),  // length above the bound
            ([13, 0, 0, 0, 9, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "kind"),  // unknown kind
            ([13, 0, 0, 0, 1, 0xEE, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "op"),  // unknown op
        ])
    func malformedFrames(_ bytes: [UInt8], _ expected: String) {
        var decoder = IsolationFrameDecoder()
        decoder.append(bytes)
        do {
            let frame = try decoder.next()
            Issue.record("decoded \(String(describing: frame)) from \(bytes)")
        } catch {
            #expect("\(error)".contains(expected), "\(error)")
        }
    }

    @Test("metadata entries (ABI 1.4) round-trip, every truncation refused")
    func kvEntries() throws {
        let entries = [
            KVEntryWire(key: "cfg/a", value: [0, 255, 7], version: 3, createRevision: 1, modRevision: 9),
            KVEntryWire(key: "cfg/b", value: [], version: 1, createRevision: 4, modRevision: 4),
        ]
        var w = WireWriter()
        KVEntryWire.withC(entries) { w.kvEntries($0.baseAddress, $0.count) }
        var reader = WireReader(w.bytes)
        #expect(try reader.kvEntries() == entries)
        try reader.finish()
        for end in 0..<w.bytes.count {
            var truncated = WireReader(Array(w.bytes[..<end]))
            #expect(throws: IsolationWireError.self, "truncated at \(end)") { _ = try truncated.kvEntries() }
        }
    }

    @Test("payload fields running past the end, impossible counts, bad flags and leftovers are refused")
    func malformedPayloads() throws {
        func refuses(_ bytes: [UInt8], _ read: (inout WireReader) throws -> Void) -> Bool {
            var reader = WireReader(bytes)
            do {
                try read(&reader)
                try reader.finish()
                return false
            } catch {
                return error is IsolationWireError
            }
        }
        #expect(refuses([1, 2, 3]) { _ = try $0.u64() })
        #expect(refuses([5, 0, 0, 0, 1]) { _ = try $0.data() })
        #expect(refuses([0xFF, 0xFF, 0xFF, 0xFF]) { _ = try $0.events() })
        #expect(refuses([0xFF, 0xFF, 0xFF, 0x0F]) { _ = try $0.records() })
        #expect(refuses([2]) { _ = try $0.optionalText() })
        #expect(refuses([0, 0, 0, 0, 9]) { _ = try $0.u32() })
        // Every truncation of a valid append payload is refused.
        let payload = Self.appendFrame().payload
        for end in 0..<payload.count {
            #expect(
                refuses(Array(payload[..<end])) { r in
                    _ = try r.u64()
                    _ = try r.events()
                }, "truncated at \(end)")
        }
    }
}

/// The manifest keys of process isolation.
@Suite("isolation manifest keys")
struct IsolationManifestTests {
    @Test("isolation: process is read with its restart policy; defaults without one")
    func restartPolicy() throws {
        let isolated = try ManifestSamples.parse(
            ManifestSamples.minimal(
                appending:
                    "isolation: process\nrestart: {maxFailures: 3, windowSeconds: 10, backoffMs: 50, maxBackoffMs: 400}"
            ))
        #expect(isolated.isolation == .process)
        #expect(isolated.restart.maxFailures == 3)
        #expect(isolated.restart.windowSeconds == 10)
        #expect(isolated.restart.backoffMs == 50)
        #expect(isolated.restart.maxBackoffMs == 400)
        let plain = try ManifestSamples.parse(ManifestSamples.minimal(appending: "isolation: process"))
        #expect(plain.restart == Manifest.RestartPolicy())
    }

    @Test("a registry under process isolation is refused when the manifest is read")
    func registryRefused() {
        do {
            _ = try ManifestSamples.parse(
                ManifestSamples.minimal(setting: "kind", to: "registry") + "\nisolation: process")
            Issue.record("a process-isolated registry was accepted")
        } catch {
            #expect("\(error)".contains("does not proxy the registry kind"), "\(error)")
        }
    }
}
