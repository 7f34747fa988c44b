import Foundation
import PlexusKernel
import Testing

/// Plugin files that are not whole shared objects for this machine: `plexus plugin inspect` and `plexus serve`
/// refuse them with the reason before `dlopen` (which raises SIGBUS on a truncated image), and never die.
@Suite("Broken plugin images")
struct BrokenImageTests {
    /// A damaged copy of a real plugin and the words its refusal must contain.
    struct Damage: CustomStringConvertible, Sendable {
        var name: String
        var reason: String
        var make: @Sendable (Data) -> Data
        var description: String { name }
    }

    static let damages: [Damage] = [
        Damage(name: "truncated to 20000 bytes", reason: "past the end of the", make: { $0.prefix(20000) }),
        Damage(
            name: "truncated one byte short of its last loaded byte", reason: "past the end of the",
            make: { $0.prefix(loadedBytes($0) - 1) }),
        Damage(name: "truncated to 40 bytes", reason: "shorter than an ELF header", make: { $0.prefix(40) }),
        Damage(name: "empty", reason: "shorter than an ELF header", make: { _ in Data() }),
        Damage(
            name: "not ELF", reason: "no ELF magic number",
            make: { _ in Data(String(repeating: "#!/bin/sh\necho not a plugin\n", count: 8).utf8) }),
        Damage(name: "32-bit class", reason: "not 64-bit", make: { patched($0, at: 4, to: [1]) }),
        Damage(name: "big-endian", reason: "not little-endian", make: { patched($0, at: 5, to: [2]) }),
        Damage(name: "an executable", reason: "not a shared object", make: { patched($0, at: 16, to: [2, 0]) }),
        Damage(
            name: "another machine", reason: "built for ELF machine 40", make: { patched($0, at: 18, to: [40, 0]) }),
        Damage(
            name: "program headers beyond the file", reason: "program headers end",
            make: { patched($0, at: 32, to: [0, 0, 0, 0x40, 0, 0, 0, 0]) }),
    ]

    /// Where the image's last `PT_LOAD` ends in the file (what `dlopen` maps); the rest is debug data.
    static func loadedBytes(_ image: Data) -> Int {
        let bytes = [UInt8](image)
        func u(_ at: Int, _ width: Int) -> Int { (0..<width).reduce(0) { $0 | Int(bytes[at + $1]) << (8 * $1) } }
        let (offset, count) = (u(32, 8), u(56, 2))
        return (0..<count).map { offset + $0 * 56 }.filter { u($0, 4) == 1 }.map { u($0 + 8, 8) + u($0 + 32, 8) }.max()
            ?? 0
    }

    static func patched(_ data: Data, at offset: Int, to bytes: [UInt8]) -> Data {
        var copy = data
        copy.replaceSubrange(offset..<(offset + bytes.count), with: bytes)
        return copy
    }

    static func damagedCopy(_ damage: Damage, in directory: TestDirectory) throws -> URL {
        let original = try Data(contentsOf: try Repository.products().appendingPathComponent("libConsoleSink.so"))
        try #require(original.count > 100_000, "libConsoleSink.so is unexpectedly small (\(original.count) bytes)")
        let file = directory.url.appendingPathComponent("libConsoleSink.so")
        try damage.make(original).write(to: file)
        return file
    }

    @Test("inspect refuses a damaged image with the reason and exits 2, never by a signal", arguments: damages)
    func inspect(_ damage: Damage) async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let file = try Self.damagedCopy(damage, in: directory)
        let result = try await Command.run(
            try Repository.plexus(), ["plugin", "inspect", file.path], in: directory.url)
        #expect(result.status == 2, "inspect exited \(result.status):\n\(result.stdout)\(result.stderr)")
        let verdict = try #require(InspectTests.value("verdict", in: result.stdout), "no verdict:\n\(result.stdout)")
        #expect(verdict.contains("load-failed"), "\(verdict)")
        #expect(verdict.contains("not a loadable plugin image"), "\(verdict)")
        #expect(verdict.contains(damage.reason), "\(verdict)")
    }

    @Test("serve reports a plugin whose library is truncated as failed, and the other plugins run")
    func serve() async throws {
        let directory = try TestDirectory()
        defer { directory.remove() }
        let manifests = try directory.shippedManifests()
        let library = try Self.damagedCopy(Self.damages[0], in: directory)
        let sink = manifests.appendingPathComponent("console-sink.yaml")
        let text = try String(contentsOf: sink, encoding: .utf8)
            .replacingOccurrences(of: "library: libConsoleSink.so", with: "library: \(library.path)")
        try text.write(to: sink, atomically: true, encoding: .utf8)
        let node = try await NodeProcess.start(
            manifests: manifests, data: try directory.subdirectory("data"), in: directory.url)
        defer { node.kill() }
        let plugins = try await node.list()
        let failed = try #require(plugins.first { $0.name == "console-sink" }, "\(plugins.map(\.name))")
        #expect(failed.state == .failed)
        #expect(failed.errorCode == "load-failed")
        #expect(failed.lastError?.contains("not a loadable plugin image") == true, "\(failed.lastError ?? "none")")
        #expect(failed.lastError?.contains("past the end of the") == true, "\(failed.lastError ?? "none")")
        #expect(plugins.first { $0.name == "heartbeat-source" }?.state == .active)
        #expect(node.process.isRunning)
    }
}
