import PlexusABI
import PlexusCore
import Synchronization
import Testing

@testable import PlexusPluginSDK

/// A `LendingStoragePlugin` that keeps each appended batch once (`CopiedEventBatch`) and lends it back, and
/// notes where the events it was handed lived.
final class LendingTestStorage: LendingStoragePlugin {
    static let name = "sdk-test-storage"
    static let version = "1.0.0"
    static let durability = Durability.none

    final class Stream: Sendable {
        let batches = Mutex<[CopiedEventBatch]>([])
    }

    /// The addresses of the `id` bytes of every event `append` saw.
    let seenIDs = Mutex<[UInt]>([])

    init() {}
    init(host: Host, config: PluginConfig) throws {}
    func start() throws {}
    func stop(timeout: Duration) throws {}

    func openStream(name: String, options: StreamOptions) throws -> Stream { Stream() }

    func append(
        _ stream: Stream, _ events: EventBatchView,
        completion: @escaping @Sendable (Result<UInt64, PluginError>) -> Void
    ) throws {
        seenIDs.withLock { seen in
            for event in events { seen.append(UInt(bitPattern: event.id.bytes.baseAddress)) }
        }
        let copied = CopiedEventBatch(copying: events)
        let first = stream.batches.withLock { batches in
            defer { batches.append(copied) }
            return UInt64(batches.reduce(0) { $0 + $1.count })
        }
        completion(.success(first))
    }

    func readBatch(
        _ stream: Stream, from offset: UInt64, maxRecords: Int, maxBytes: Int,
        completion: @escaping @Sendable (Result<LentRecordBatch, PluginError>) -> Void
    ) throws {
        let batches = stream.batches.withLock { $0 }
        let all = batches.flatMap { batch in (0..<batch.count).map { (batch, $0) } }
        guard offset <= UInt64(all.count) else { throw PluginError(PX_ERR_OUT_OF_RANGE, "past the end") }
        let chosen = all[Int(offset)...].prefix(maxRecords)
        completion(
            .success(
                LentRecordBatch(records: chosen.count, nextOffset: offset + UInt64(chosen.count)) { builder in
                    for (number, (batch, index)) in chosen.enumerated() {
                        builder.retain(batch)
                        builder.append(offset: offset + UInt64(number), appendTime: 1, event: batch.event(at: index))
                    }
                }))
    }

    func commitOffset(
        _ stream: Stream, group: String, offset: UInt64,
        completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws { completion(.success(())) }

    func fetchOffset(
        _ stream: Stream, group: String, completion: @escaping @Sendable (Result<UInt64?, PluginError>) -> Void
    ) throws { completion(.success(nil)) }

    func trim(
        _ stream: Stream, before offset: UInt64, completion: @escaping @Sendable (Result<Void, PluginError>) -> Void
    ) throws { completion(.success(())) }

    func streamInfo(_ stream: Stream) throws -> StreamInfo { StreamInfo(firstOffset: 0, nextOffset: 0, sizeBytes: 0) }
}

/// What one C completion was called with; `user` of the calls below.
final class Calls<Value>: @unchecked Sendable {
    // Safe: `values` is only touched under `lock`.
    private let lock = Mutex(())
    private var values: [Value] = []

    func record(_ value: Value) { lock.withLock { _ in values.append(value) } }
    var all: [Value] { lock.withLock { _ in values } }
    var user: UnsafeMutableRawPointer { Unmanaged.passUnretained(self).toOpaque() }
    static func from(_ user: UnsafeMutableRawPointer?) -> Calls { Unmanaged.fromOpaque(user!).takeUnretainedValue() }
}

/// A lent batch pointer carried out of a completion.
struct LentBatchPointer: @unchecked Sendable {
    // Safe: only read on the test's thread after the completion returned.
    let batch: UnsafeMutablePointer<px_record_batch>?
}

/// The SDK's storage vtable driven through C as the kernel drives it: the 1.1 hooks of a lending plugin.
@Suite("Storage export of a lending plugin")
struct StorageExportTests {
    static let table = StorageExport.install(LendingTestStorage.self).pointee

    @Test("append hands the plugin the kernel's own events; read_batch lends them back; read serves from it")
    func lendingRoundTrip() throws {
        let plugin = LendingTestStorage()
        let instance = Unmanaged<AnyObject>.passRetained(plugin).toOpaque()
        defer { Unmanaged<AnyObject>.fromOpaque(instance).release() }
        #expect(Self.table.on_read_batch != nil, "a lending plugin fills on_read_batch")

        // Open asynchronously: the default completes inline with a stream.
        let opened = Calls<(px_status, UInt)>()
        let status = withPXStr("orders") { name in
            Self.table.on_open_stream_async!(
                instance, name, nil,
                { user, status, stream, _ in
                    Calls<(px_status, UInt)>.from(user).record((status, UInt(bitPattern: stream)))
                }, opened.user, nil)
        }
        #expect(status == PX_OK.status)
        let open = try #require(opened.all.first)
        #expect(opened.all.count == 1 && open.0 == PX_OK.status && open.1 != 0)
        let stream = try #require(OpaquePointer(bitPattern: open.1))
        defer { Self.table.on_close_stream!(instance, stream) }

        let events = (0..<3).map { CloudEvent(id: "id-\($0)", source: "/s", type: "t", data: [UInt8($0)]) }
        let appended = Calls<(px_status, UInt64)>()
        let kernelBatch = CEventBatch(events)
        withExtendedLifetime(kernelBatch) {
            let status = Self.table.on_append!(
                instance, stream, kernelBatch.pointers.baseAddress, 3,
                { user, status, first, _ in Calls<(px_status, UInt64)>.from(user).record((status, first)) },
                appended.user, nil)
            #expect(status == PX_OK.status)
            let kernelIDs = (0..<3).map { UInt(bitPattern: kernelBatch.event(at: $0).pointee.id.ptr) }
            #expect(plugin.seenIDs.withLock { $0 } == kernelIDs, "the plugin read the kernel's bytes, not a copy")
        }
        #expect(appended.all.map(\.1) == [0])

        // on_read_batch: lent records, released once by the kernel.
        let lent = Calls<(px_status, LentBatchPointer)>()
        #expect(
            Self.table.on_read_batch!(
                instance, stream, 1, 10, 0,
                { user, status, batch, _ in
                    Calls<(px_status, LentBatchPointer)>.from(user).record((status, LentBatchPointer(batch: batch)))
                }, lent.user, nil) == PX_OK.status)
        let answer = try #require(lent.all.first)
        #expect(lent.all.count == 1 && answer.0 == PX_OK.status)
        let batch = try #require(answer.1.batch)
        #expect(batch.pointee.count == 2 && batch.pointee.next_offset == 3)
        let records = try #require(batch.pointee.records)
        #expect(records[0]!.pointee.offset == 1 && records[1]!.pointee.offset == 2)
        #expect(CloudEvent(copying: records[1]!.pointee.event!) == events[2])
        batch.pointee.release!(batch)

        // on_read (1.0): the same records, through the callback.
        let read = Calls<(px_status, [StoredRecord], UInt64)>()
        #expect(
            Self.table.on_read!(
                instance, stream, 0, 10, 0,
                { user, status, records, count, next, _ in
                    let copied = (0..<count).compactMap { StoredRecord(copying: records![$0]!) }
                    Calls<(px_status, [StoredRecord], UInt64)>.from(user).record((status, copied, next))
                }, read.user, nil) == PX_OK.status)
        let result = try #require(read.all.first)
        #expect(read.all.count == 1 && result.0 == PX_OK.status && result.2 == 3)
        #expect(result.1.map(\.event) == events && result.1.map(\.offset) == [0, 1, 2])

        // Refusals never complete.
        let refused = Calls<px_status>()
        #expect(
            Self.table.on_read_batch!(
                instance, stream, 9, 10, 0, { user, status, _, _ in Calls<px_status>.from(user).record(status) },
                refused.user, nil) == PX_ERR_OUT_OF_RANGE.status)
        #expect(
            Self.table.on_read_batch!(
                instance, stream, 0, 0, 0, { user, status, _, _ in Calls<px_status>.from(user).record(status) },
                refused.user, nil) == PX_ERR_INVALID_ARGUMENT.status)
        #expect(refused.all.isEmpty)
    }
}
