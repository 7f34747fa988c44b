import Foundation
import PlexusABI
import Testing

@testable import PlexusKernel

/// The growth rule as the kernel applies it (`ABIStruct`, sizes per published minor in `ABISizes`), and the
/// header's `PX_HAS_FIELD`, through the C probe `Tests/Fixtures/plugins/has_field.c` (Swift cannot import a
/// function-like macro).
@Suite("ABI struct sizes")
struct ABIStructTests {
    /// This kernel's size of every growable struct and table of plexus.h.
    static let known: [String: Int] = [
        "px_error": MemoryLayout<px_error>.size,
        "px_event": MemoryLayout<px_event>.size,
        "px_record": MemoryLayout<px_record>.size,
        "px_record_batch": MemoryLayout<px_record_batch>.size,
        "px_service_instance": MemoryLayout<px_service_instance>.size,
        "px_delivery": MemoryLayout<px_delivery>.size,
        "px_subscription_spec": MemoryLayout<px_subscription_spec>.size,
        "px_metric_spec": MemoryLayout<px_metric_spec>.size,
        "px_host_api": MemoryLayout<px_host_api>.size,
        "px_plugin_config": MemoryLayout<px_plugin_config>.size,
        "px_stream_options": MemoryLayout<px_stream_options>.size,
        "px_stream_info": MemoryLayout<px_stream_info>.size,
        "px_storage_vtable": MemoryLayout<px_storage_vtable>.size,
        "px_registry_vtable": MemoryLayout<px_registry_vtable>.size,
        "px_plugin_descriptor": MemoryLayout<px_plugin_descriptor>.size,
        "px_group_offset": MemoryLayout<px_group_offset>.size,
        "px_kv_entry": MemoryLayout<px_kv_entry>.size,
    ]

    static let currentMinor = UInt16(PX_ABI_VERSION_MINOR)

    @Test("the generated table's current minor is what this kernel was compiled with, struct for struct")
    func currentSizesMatchTheHeader() {
        #expect(ABISizes.byMinor[Self.currentMinor] == Self.known)
        #expect(ABISizes.byMinor.keys.sorted() == Array(0...Self.currentMinor), "every published minor is listed")
    }

    @Test("the published sizes of ABI 1.0 are those the 1.0 header gave")
    func oneZeroSizes() {
        #expect(ABIStruct.size("px_host_api", minor: 0) == 152)
        #expect(ABIStruct.size("px_storage_vtable", minor: 0) == 72)
        #expect(ABIStruct.size("px_plugin_descriptor", minor: 0) == 96)
        #expect(ABIStruct.size("px_subscription_spec", minor: 0) == 144)
        #expect(ABIStruct.size("px_event", minor: 0) == 168)
        #expect(ABIStruct.size("px_record_batch", minor: 0) == nil, "1.1 added it")
        #expect(ABIStruct.size("px_metric_spec", minor: 0) == nil, "1.1 added it")
        #expect(ABIStruct.size("px_host_api", minor: 1) == 176)
        #expect(ABIStruct.size("px_storage_vtable", minor: 1) == 88)
        #expect(ABIStruct.size("px_storage_vtable", minor: 2) == 88)
        #expect(ABIStruct.size("px_storage_vtable", minor: 3) == 120, "1.3 appended four hooks")
        #expect(ABIStruct.size("px_group_offset", minor: 2) == nil, "1.3 added it")
        #expect(ABIStruct.size("px_registry_vtable", minor: 3) == 48)
        #expect(ABIStruct.size("px_registry_vtable", minor: 4) == 104, "1.4 appended seven hooks")
        #expect(ABIStruct.size("px_host_api", minor: 3) == 184)
        #expect(ABIStruct.size("px_host_api", minor: 4) == 240, "1.4 appended seven host functions")
        #expect(ABIStruct.size("px_kv_entry", minor: 3) == nil, "1.4 added it")
    }

    @Test("every published size of every struct is accepted")
    func acceptsEveryPublishedSize() {
        for (minor, sizes) in ABISizes.byMinor {
            for (name, size) in sizes {
                let known = Self.known[name] ?? 0
                let problem = ABIStruct.sizeProblem(UInt32(size), of: name, known: known, what: name)
                #expect(problem == nil, "\(name) of ABI 1.\(minor) (\(size) bytes): \(problem ?? "")")
            }
        }
    }

    @Test("a struct larger than this kernel knows is refused, naming both sizes and the newer ABI")
    func refusesLarger() throws {
        for (name, known) in Self.known {
            let problem = try #require(
                ABIStruct.sizeProblem(UInt32(known + 8), of: name, known: known, what: "the \(name)"))
            #expect(
                problem
                    == "the \(name) has struct_size \(known + 8), larger than the \(known) bytes this kernel knows "
                    + "(ABI 1.\(Self.currentMinor)); the plugin was built against a newer ABI")
            #expect(ABIStruct.sizeProblem(UInt32(known + 1), of: name, known: known, what: name) != nil)
            #expect(ABIStruct.sizeProblem(UInt32.max, of: name, known: known, what: name) != nil)
        }
    }

    @Test("a struct smaller than its first published size is refused, naming the smallest")
    func refusesSmaller() throws {
        let host = try #require(
            ABIStruct.sizeProblem(151, of: "px_host_api", known: Self.known["px_host_api"] ?? 0, what: "the host table")
        )
        #expect(host == "the host table has struct_size 151; the smallest published px_host_api is 152 bytes")
        let batch = try #require(
            ABIStruct.sizeProblem(40, of: "px_record_batch", known: 48, what: "the batch"))
        #expect(batch.contains("the smallest published px_record_batch is 48 bytes"), "first published in 1.1")
        for (name, known) in Self.known {
            let first = ABIStruct.minimumSize(name, known: known)
            #expect(first == ABISizes.byMinor.values.compactMap { $0[name] }.min())
            #expect(ABIStruct.sizeProblem(UInt32(first), of: name, known: known, what: name) == nil)
            #expect(ABIStruct.sizeProblem(UInt32(first - 1), of: name, known: known, what: name) != nil, "\(name)")
            #expect(ABIStruct.sizeProblem(0, of: name, known: known, what: name) != nil, "\(name)")
        }
        #expect(ABIStruct.minimumSize("px_no_such_struct", known: 40) == 40, "an unpublished struct: its size only")
    }

    @Test("a smaller table is copied into a full-size one, the fields it lacks zero, its struct_size kept")
    func tableCopyZeroFills() throws {
        // A 1.0 storage table followed by bytes that are not zero, as in a plugin image.
        let full = MemoryLayout<px_storage_vtable>.size
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: full, alignment: 8)
        defer { buffer.deallocate() }
        buffer.initializeMemory(as: UInt8.self, repeating: 0xa5, count: full)
        buffer.storeBytes(of: UInt32(72), as: UInt32.self)
        buffer.storeBytes(of: PX_DURABILITY_LOCAL.rawValue, toByteOffset: 4, as: UInt32.self)
        let copy = try #require(
            ABIStruct.tableCopy(buffer.assumingMemoryBound(to: px_storage_vtable.self), zero: px_storage_vtable()))
        defer { UnsafeMutablePointer(mutating: copy).deallocate() }
        #expect(copy.pointee.struct_size == 72, "its own size stays, so checks still see it")
        #expect(copy.pointee.durability == PX_DURABILITY_LOCAL.rawValue)
        #expect(copy.pointee.on_open_stream_async == nil)
        #expect(copy.pointee.on_read_batch == nil)
        let bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(copy), count: full)
        #expect(bytes[8..<72].allSatisfy { $0 == 0xa5 }, "the 1.0 part is copied as it was")
        #expect(bytes[72...].allSatisfy { $0 == 0 }, "the 1.1 part is zero")

        #expect(ABIStruct.tableCopy(UnsafePointer<px_storage_vtable>?.none, zero: px_storage_vtable()) == nil)
    }

    @Test("a descriptor smaller than 1.0's is invalid and a larger one an ABI mismatch, each saying why")
    func descriptorSizes() throws {
        for (size, code, phrase) in [
            (95, KernelError.Code.descriptorInvalid, "the smallest published px_plugin_descriptor is 96 bytes"),
            (200, KernelError.Code.abiMismatch, "larger than the 96 bytes this kernel knows"),
        ] {
            var descriptor = px_plugin_descriptor()
            descriptor.struct_size = UInt32(size)
            let error = try #require(throws: KernelError.self) {
                _ = try withUnsafePointer(to: &descriptor) { try PluginLoader.copyDescriptor($0, subject: "test") }
            }
            #expect(error.code == code)
            #expect(error.message.contains(phrase), "\(error.message)")
        }
    }

    // MARK: PX_HAS_FIELD

    typealias HostProbe = @convention(c) (UnsafePointer<px_host_api>?) -> Int32
    typealias TableProbe = @convention(c) (UnsafePointer<px_storage_vtable>?) -> Int32

    /// A function of the compiled `has_field.c`.
    static func probe<F>(_ symbol: String, as type: F.Type) throws -> F {
        let path = try FixtureLibraries.library("has_field")
        let handle = try #require(dlopen(path, RTLD_NOW | RTLD_LOCAL), "dlopen \(path)")
        return unsafeBitCast(try #require(dlsym(handle, symbol), "\(symbol) in \(path)"), to: type)
    }

    @Test("PX_HAS_FIELD: a 1.0 host table (152 bytes) lacks run and the metric handles; a 1.1 one (176) has them")
    func hasFieldHostTable() throws {
        let hasRun = try Self.probe("px_fixture_host_has_run", as: HostProbe.self)
        let hasCreate = try Self.probe("px_fixture_host_has_metric_create", as: HostProbe.self)
        let hasRecord = try Self.probe("px_fixture_host_has_metric_record", as: HostProbe.self)
        let hasStorageRead = try Self.probe("px_fixture_host_has_storage_read", as: HostProbe.self)
        func answers(_ size: Int) -> [Int32] {
            var api = px_host_api()
            api.struct_size = UInt32(size)
            return withUnsafePointer(to: &api) { [hasRun($0), hasCreate($0), hasRecord($0), hasStorageRead($0)] }
        }
        let oneZero = try #require(ABIStruct.size("px_host_api", minor: 0))
        let oneOne = try #require(ABIStruct.size("px_host_api", minor: 1))
        #expect(answers(oneZero) == [0, 0, 0, 1], "1.0: storage_read, none of 1.1's")
        #expect(answers(oneOne) == [1, 1, 1, 1], "1.1: all")
        let runEnd = try #require(MemoryLayout<px_host_api>.offset(of: \.run)) + MemoryLayout<px_host_run?>.size
        #expect(answers(runEnd - 1) == [0, 0, 0, 1], "one byte short of run")
        #expect(answers(runEnd) == [1, 0, 0, 1], "exactly up to run")
        #expect(hasRun(nil) == 0 && hasStorageRead(nil) == 0, "NULL has no fields")
        #expect(hasRun(HostServices.api) == 1, "this kernel's own table has run")
    }

    @Test("PX_HAS_FIELD: a 1.0 storage vtable (72 bytes) lacks the 1.1 hooks; a 1.1 one (88) has them")
    func hasFieldStorageTable() throws {
        let hasBatch = try Self.probe("px_fixture_storage_has_read_batch", as: TableProbe.self)
        let hasAsync = try Self.probe("px_fixture_storage_has_open_stream_async", as: TableProbe.self)
        func answers(_ size: Int) -> [Int32] {
            var table = px_storage_vtable()
            table.struct_size = UInt32(size)
            return withUnsafePointer(to: &table) { [hasAsync($0), hasBatch($0)] }
        }
        #expect(answers(72) == [0, 0])
        #expect(answers(80) == [1, 0])
        #expect(answers(88) == [1, 1])
    }
}
