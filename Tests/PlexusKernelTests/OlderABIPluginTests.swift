import Foundation
import PlexusABI
import PlexusConformance
import Synchronization
import Testing

@testable import PlexusKernel

/// The promise of a minor version: a plugin built against an older minor keeps working. The C fixtures of
/// `Tests/Fixtures/abi-1.0` are compiled from the published 1.0 header (`abi/published/1.0/plexus.h`) and
/// loaded into this kernel: a storage, a source that publishes into it and a subscriber that acknowledges
/// everything, in one node.
@Suite("Plugins built against ABI 1.0")
struct OlderABIPluginTests {
    static let topic = "abi10"
    static let group = "abi10-subscriber"
    /// What abi10-source publishes by default: 24 events in batches of 3.
    static let eventCount = 24
    static let batchSize = 3
    /// What the 1.0 fixtures declare in their manifests, as in their descriptors.
    static let abi = "{major: 1, minor: 0}"

    static let storageManifest = """
        provides:
          - {capability: storage, version: 1.0.0}
        operations:
          - {name: beyond-end-calls, symbol: px_op_abi10_storage_beyond_end_calls, signature: "uint64 (instance)"}
          - {name: committed, symbol: px_op_abi10_storage_committed, signature: "uint64 (instance, string, string)"}
        """

    static let sourceManifest = """
        requires:
          - {capability: storage, version: "^1.0.0"}
        operations:
          - {name: acked, symbol: px_op_abi10_source_acked, signature: "uint64 (instance)"}
          - {name: failed, symbol: px_op_abi10_source_failed, signature: "uint64 (instance)"}
          - {name: anomalies, symbol: px_op_abi10_source_anomalies, signature: "uint64 (instance)"}
          - {name: offsets, symbol: px_op_abi10_source_offsets, signature: "text (instance)"}
        """

    static let subscriberManifest = """
        requires:
          - {capability: storage, version: "^1.0.0"}
        operations:
          - {name: received, symbol: px_op_abi10_sub_received, signature: "uint64 (instance)"}
          - {name: acked, symbol: px_op_abi10_sub_acked, signature: "uint64 (instance)"}
          - {name: ack-failures, symbol: px_op_abi10_sub_ack_failures, signature: "uint64 (instance)"}
          - {name: redelivered, symbol: px_op_abi10_sub_redelivered, signature: "uint64 (instance)"}
          - {name: log, symbol: px_op_abi10_sub_log, signature: "text (instance)"}
        """

    /// The log line abi10-subscriber writes for event `n` of abi10-source (see both files' header comments),
    /// delivered first at `offset`.
    static func expectedLine(_ n: Int, offset: Int) -> String {
        let data: [UInt8] = [0x00, 0xff, UInt8(n & 0xff), UInt8((n >> 8) & 0xff), 0x70, 0x78, 0x0a, 0x7f]
        return [
            "offset=\(offset)", "attempt=1", "id=abi10-\(n)", "source=/fixtures/abi-1.0/source", "specversion=1.0",
            "type=io.plexus.fixture.abi10", "subject=item-\(n)", "datacontenttype=application/octet-stream",
            "dataschema=https://plexus.example/schemas/abi10", "time=2026-01-02T03:04:05Z", "ext.seq=\(n)",
            "ext.partitionkey=k\(n % 3)", "data=" + data.map { String(format: "%02x", $0) }.joined(),
        ].joined(separator: "\t")
    }

    /// Polls `condition` every few milliseconds for up to `seconds`; returns whether it became true.
    static func eventually(seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if try condition() { return true }
            Thread.sleep(forTimeInterval: 0.005)
        }
        return try condition()
    }

    // MARK: Loading

    @Test("each 1.0 fixture declares ABI 1.0 with the 1.0 descriptor size, and the loader accepts it")
    func descriptorsAreOneZero() throws {
        let sets = try FixtureLibraries.sourceSets()
        let set = try #require(sets.first { $0.sources.lastPathComponent == "abi-1.0" })
        #expect(set.include.path.hasSuffix("abi/published/1.0"), "built against the published 1.0 header")
        for stem in ["abi10_storage", "abi10_source", "abi10_subscriber"] {
            let library = try FixtureLibraries.library(stem)
            let (_, descriptor) = try PluginLoader.open(
                library, subject: library, library: library, entryName: stem, deadline: .seconds(5))
            #expect(descriptor.abi_major == 1 && descriptor.abi_minor == 0, "\(stem)")
            #expect(Int(descriptor.struct_size) == ABIStruct.size("px_plugin_descriptor", minor: 0), "\(stem)")
            #expect(String(cString: descriptor.name) == FixtureNode.name(stem))
        }
    }

    @Test("the loader accepts the 72-byte 1.0 storage vtable and reads its 1.1 hooks as absent, not past its end")
    func storageVtableOneZero() throws {
        let library = try FixtureLibraries.library("abi10_storage")
        let (handle, descriptor) = try PluginLoader.open(
            library, subject: library, library: library, entryName: "abi10-storage", deadline: .seconds(5))
        let table = try #require(descriptor.storage, "the storage kind has its vtable")
        #expect(table.pointee.struct_size == 72)
        #expect(ABIStruct.size("px_storage_vtable", minor: 0) == 72)
        #expect(MemoryLayout<px_storage_vtable>.size > 72, "this kernel's table is larger (1.1 appended hooks)")
        #expect(table.pointee.on_open_stream_async == nil, "1.1's on_open_stream_async is absent in a 1.0 table")
        #expect(table.pointee.on_read_batch == nil, "1.1's on_read_batch is absent in a 1.0 table")
        #expect(
            table.pointee.on_list_streams == nil && table.pointee.on_delete_stream == nil
                && table.pointee.on_list_offsets == nil && table.pointee.on_delete_offset == nil,
            "1.3's listing and deletion hooks are absent in a 1.0 table")
        let t = table.pointee
        #expect(
            t.on_open_stream != nil && t.on_close_stream != nil && t.on_append != nil && t.on_read != nil
                && t.on_commit_offset != nil && t.on_fetch_offset != nil && t.on_trim != nil
                && t.on_stream_info != nil, "every 1.0 hook is kept")
        try PluginLoader.check(descriptor, against: try Self.manifest(stem: "abi10_storage", kind: "storage"))

        // The plugin's own table, in its image, is followed by non-zero words where 1.1 put the new hooks: the
        // kernel's nil above comes from reading only the 72 bytes the plugin declared.
        let entry = unsafeBitCast(try #require(dlsym(handle, PX_PLUGIN_ENTRY_SYMBOL)), to: px_plugin_entry_fn.self)
        var raw: UnsafePointer<px_plugin_descriptor>?
        #expect(entry(HostServices.api, &raw, nil) == PX_OK.status)
        let ownDescriptor = try #require(raw)
        let own = UnsafeRawPointer(try #require(ownDescriptor.pointee.storage))
        #expect(own != UnsafeRawPointer(table), "the kernel reads a copy of the table")
        let asyncOffset = try #require(MemoryLayout<px_storage_vtable>.offset(of: \.on_open_stream_async))
        let batchOffset = try #require(MemoryLayout<px_storage_vtable>.offset(of: \.on_read_batch))
        #expect(asyncOffset == 72)
        #expect(own.load(fromByteOffset: asyncOffset, as: UInt.self) != 0)
        #expect(own.load(fromByteOffset: batchOffset, as: UInt.self) != 0)
    }

    /// A manifest for one of the 1.0 fixtures, parsed as the kernel parses it.
    static func manifest(stem: String, kind: String) throws -> Manifest {
        let node = try FixtureNode()
        defer { node.remove() }
        let path = try node.writeManifest(fixture: stem, kind: kind, abi: abi)
        return try ManifestParser.load(path: path)
    }

    // MARK: One node

    @Test("a 1.0 storage, source and subscriber run together in a 1.1 node: every event arrives intact and settles")
    func endToEnd() throws {
        let node = try FixtureNode()
        defer { node.remove() }
        try node.writeManifest(fixture: "abi10_storage", kind: "storage", abi: Self.abi, extra: Self.storageManifest)
        try node.writeManifest(fixture: "abi10_source", abi: Self.abi, extra: Self.sourceManifest)
        try node.writeManifest(fixture: "abi10_subscriber", abi: Self.abi, extra: Self.subscriberManifest)
        let kernel = try node.kernel { $0.topics.defaultStorage = "abi10-storage" }
        defer { kernel.stop() }
        kernel.start()

        #expect(kernel.statuses().map(\.name) == ["abi10-storage", "abi10-source", "abi10-subscriber"])
        for status in kernel.statuses() {
            #expect(status.state == .active, "\(status.name): \(status.lastError ?? "")")
        }
        func call(_ plugin: String, _ operation: String, _ arguments: [String] = []) throws -> String {
            try kernel.callOperation(plugin: plugin, operation: operation, arguments: arguments)
        }
        func count(_ plugin: String, _ operation: String) throws -> Int { Int(try call(plugin, operation)) ?? -1 }
        let total = Self.eventCount

        // The source's publishes all completed, once each, in dense offsets in publish order.
        #expect(try Self.eventually { try count("abi10-source", "acked") == total }, "source acked")
        #expect(try count("abi10-source", "failed") == 0)
        #expect(try count("abi10-source", "anomalies") == 0, "no completion came twice")
        let batchOffsets = stride(from: 0, to: total, by: Self.batchSize).map(String.init)
        #expect(try call("abi10-source", "offsets") == batchOffsets.joined(separator: ","))

        // The subscriber received and acknowledged every event.
        #expect(try Self.eventually { try count("abi10-subscriber", "acked") == total }, "subscriber acked")
        #expect(try count("abi10-subscriber", "ack-failures") == 0)

        // Acks settle: the group's committed offset (kept by the 1.0 storage) reaches the end.
        func committedOffset() throws -> UInt64? {
            UInt64(try call("abi10-storage", "committed", [Self.topic, Self.group]))
        }
        let committed = try Self.eventually { try committedOffset() == UInt64(total) }
        let last = try committedOffset()
        #expect(committed, "the committed offset is \(last.map(String.init) ?? "none"), not \(total)")

        // Nothing is redelivered: no second delivery after a pause.
        Thread.sleep(forTimeInterval: 0.3)
        #expect(try count("abi10-subscriber", "received") == total)
        #expect(try count("abi10-subscriber", "redelivered") == 0)

        // Every event arrived with its attributes, extensions and data intact, at the offset it was stored at.
        let lines = try call("abi10-subscriber", "log").split(separator: "\n").map(String.init)
        #expect(lines.count == total)
        let byOffset = lines.sorted { Self.offset(of: $0) < Self.offset(of: $1) }
        let expected = (1...total).map { Self.expectedLine($0, offset: $0 - 1) }
        #expect(byOffset == expected)

        // What the 1.0 storage holds reads back the same through the kernel's binding.
        let target = try kernel.services.router.stream(for: Self.topic, create: false)
        #expect(target.binding.name == "abi10-storage")
        let extent = try target.binding.info(target.stream)
        #expect(extent.first == 0 && extent.next == UInt64(total))
        // A 1.0 storage has no on_read_batch: the kernel copies its records once, as they were.
        let read = Mutex<[(offset: UInt64, id: String, appendTime: UInt64)]?>(nil)
        let done = DispatchSemaphore(value: 0)
        target.binding.read(target.stream, from: 0, maxRecords: 100, maxBytes: 1 << 20) { result in
            read.withLock { records in
                records = (try? result.get()).map { batch in
                    (0..<batch.count).map { index in
                        let record = batch.record(at: index).pointee
                        return (record.offset, record.event!.pointee.id.string, record.append_time_ns)
                    }
                }
            }
            done.signal()
        }
        #expect(done.wait(timeout: .now() + 5) == .success)
        let records = try #require(read.withLock { $0 })
        #expect(records.map(\.offset) == (0..<UInt64(total)).map { $0 })
        #expect(records.map(\.id) == (1...total).map { "abi10-\($0)" })
        #expect(records.allSatisfy { $0.appendTime > 0 })

        // The topic admin API (ABI 1.3 hooks) on a storage that has none: the kernel lists the topic it has open,
        // says the storage cannot list or delete, and never calls past the 72-byte table.
        let (topics, problems) = try kernel.listTopics()
        #expect(topics.map(\.name) == [Self.topic])
        #expect(topics.first?.nextOffset == UInt64(total))
        #expect(
            problems.contains { $0.contains("listing topics is not supported by storage 'abi10-storage'") },
            "the list says why it may be incomplete: \(problems)")
        let group = try kernel.group(topic: Self.topic, group: Self.group)
        #expect(group.committed == UInt64(total) && group.lag == 0 && group.members.count == 1)
        do {
            try kernel.deleteTopic(Self.topic)
            Issue.record("deleting a topic of a 1.0 storage succeeded")
        } catch let error as Kernel.TopicAdminError {
            #expect(error.kind == .unavailable)
            #expect(error.message.contains("deleting a topic is not supported by storage 'abi10-storage'"), "\(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }

        #expect(try count("abi10-storage", "beyond-end-calls") == 0, "nothing past the 1.0 table was called")

        kernel.stop()
        for status in kernel.statuses() {
            #expect(status.state == .stopped, "\(status.name): \(status.lastError ?? "")")
            #expect(status.lastError == nil)
        }
    }

    static func offset(of line: String) -> Int {
        guard let field = line.split(separator: "\t").first, field.hasPrefix("offset=") else { return -1 }
        return Int(field.dropFirst("offset=".count)) ?? -1
    }

    // MARK: Conformance

    @Test("the 1.0 C storage passes every rule of the conformance kit's storage suite")
    func conformance() throws {
        let report = try ConformanceTests.run(.storage, library: try FixtureLibraries.library("abi10_storage"))
        #expect(report.failed == 0, "\n\(report.text)")
        #expect(report.results.map(\.rule) == Conformance.rules(for: .storage).map(\.name))
        #expect(report.plugin == "abi10-storage" && report.durability == "NONE")
    }
}

/// The same promise one minor later: `Tests/Fixtures/abi-1.1/abi11_source.c`, compiled from the published 1.1
/// header (`abi/published/1.1/plexus.h`), runs in this kernel and uses what 1.1 added to the host table (work
/// items on the kernel's pool, metric handles), beside the 1.0 storage.
@Suite("Plugins built against ABI 1.1")
struct OneOnePluginTests {
    @Test("a 1.1 source declares 1.1, its work items run, its publishes are acknowledged and its counter counts")
    func source() throws {
        let sets = try FixtureLibraries.sourceSets()
        let set = try #require(sets.first { $0.sources.lastPathComponent == "abi-1.1" })
        #expect(set.include.path.hasSuffix("abi/published/1.1"), "built against the published 1.1 header")
        let library = try FixtureLibraries.library("abi11_source")
        let (_, descriptor) = try PluginLoader.open(
            library, subject: library, library: library, entryName: "abi11_source", deadline: .seconds(5))
        #expect(descriptor.abi_major == 1 && descriptor.abi_minor == 1)
        #expect(Int(descriptor.struct_size) == ABIStruct.size("px_plugin_descriptor", minor: 1))

        let node = try FixtureNode()
        defer { node.remove() }
        try node.writeManifest(
            fixture: "abi10_storage", kind: "storage", abi: OlderABIPluginTests.abi,
            extra: OlderABIPluginTests.storageManifest)
        try node.writeManifest(
            fixture: "abi11_source", abi: "{major: 1, minor: 1}",
            extra: """
                requires:
                  - {capability: storage, version: "^1.0.0"}
                operations:
                  - {name: ran, symbol: px_op_abi11_source_ran, signature: "uint64 (instance)"}
                  - {name: acked, symbol: px_op_abi11_source_acked, signature: "uint64 (instance)"}
                  - {name: failed, symbol: px_op_abi11_source_failed, signature: "uint64 (instance)"}
                """)
        let kernel = try node.kernel { $0.topics.defaultStorage = "abi10-storage" }
        defer { kernel.stop() }
        kernel.start()
        for status in kernel.statuses() {
            #expect(status.state == .active, "\(status.name): \(status.lastError ?? "")")
        }
        func count(_ operation: String) throws -> Int {
            Int(try kernel.callOperation(plugin: "abi11-source", operation: operation, arguments: [])) ?? -1
        }
        #expect(try OlderABIPluginTests.eventually { try count("acked") == 20 }, "every publish acknowledged")
        #expect(try count("ran") == 20)
        #expect(try count("failed") == 0)
        let text = kernel.services.metrics.prometheusText()
        #expect(
            text.contains(#"plexus_abi11_published_total{plugin="abi11-source"} 20"#),
            "the 1.1 metric handle counted: \(text.split(separator: "\n").filter { $0.contains("abi11") })")
    }
}

/// And one minor later again: `Tests/Fixtures/abi-1.2/abi12_source.c`, compiled from the published 1.2 header
/// (`abi/published/1.2/plexus.h`), runs in this kernel and uses what 1.2 added: a listening socket the kernel
/// owns (`listen`) and `PX_DEGRADED` from `on_health`.
@Suite("Plugins built against ABI 1.2")
struct OneTwoPluginTests {
    @Test("a 1.2 source declares 1.2, takes the kernel's socket, publishes, and is degraded while the node is ready")
    func source() throws {
        let sets = try FixtureLibraries.sourceSets()
        let set = try #require(sets.first { $0.sources.lastPathComponent == "abi-1.2" })
        #expect(set.include.path.hasSuffix("abi/published/1.2"), "built against the published 1.2 header")
        let library = try FixtureLibraries.library("abi12_source")
        let (_, descriptor) = try PluginLoader.open(
            library, subject: library, library: library, entryName: "abi12_source", deadline: .seconds(5))
        #expect(descriptor.abi_major == 1 && descriptor.abi_minor == 2)

        let node = try FixtureNode()
        defer { node.remove() }
        try node.writeManifest(
            fixture: "abi10_storage", kind: "storage", abi: OlderABIPluginTests.abi,
            extra: OlderABIPluginTests.storageManifest)
        try node.writeManifest(
            fixture: "abi12_source", abi: "{major: 1, minor: 2}",
            extra: """
                requires:
                  - {capability: storage, version: "^1.0.0"}
                operations:
                  - {name: port, symbol: px_op_abi12_source_port, signature: "uint64 (instance)"}
                  - {name: acked, symbol: px_op_abi12_source_acked, signature: "uint64 (instance)"}
                  - {name: failed, symbol: px_op_abi12_source_failed, signature: "uint64 (instance)"}
                """)
        let kernel = try node.kernel { $0.topics.defaultStorage = "abi10-storage" }
        defer { kernel.stop() }
        kernel.start()
        for status in kernel.statuses() {
            #expect(status.state == .active, "\(status.name): \(status.lastError ?? "")")
        }
        func count(_ operation: String) throws -> Int {
            Int(try kernel.callOperation(plugin: "abi12-source", operation: operation, arguments: [])) ?? -1
        }
        #expect(try OlderABIPluginTests.eventually { try count("acked") == 20 }, "every publish acknowledged")
        #expect(try count("failed") == 0)

        // The socket came from the kernel (listen, 1.2): a client connects to it.
        let port = try count("port")
        #expect(port > 0 && port < 65_536, "bound to a port: \(port)")
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(clamping: port)).bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        #expect(connected == 0, "the kernel's socket accepts connections (errno \(errno))")

        // PX_DEGRADED (1.2) from on_health: reported with the reason, and the node stays ready.
        #expect(
            try OlderABIPluginTests.eventually {
                kernel.statuses().first { $0.name == "abi12-source" }?.health?.hasPrefix("degraded") == true
            }, "\(kernel.statuses().map { "\($0.name): \($0.health ?? "-")" })")
        let health = kernel.statuses().first { $0.name == "abi12-source" }?.health ?? ""
        #expect(health.contains("impaired on purpose"), "\(health)")
        #expect(kernel.readiness().ready, "\(kernel.readiness().reasons)")
    }
}
