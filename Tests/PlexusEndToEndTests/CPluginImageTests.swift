import Foundation
import Testing

/// The shipped C plugin is a C plugin: built by the system C compiler (`scripts/build-c-plugins`), it needs
/// libc (and libpthread) only, not the Swift runtime or libstdc++ that a SwiftPM dynamic product links, and it
/// stays small. It shows an outside author what a C plugin costs.
@Suite("C plugin images")
struct CPluginImageTests {
    @Test("libHeartbeatSource.so needs only libc and libpthread, and is at most 64 KiB")
    func heartbeatIsPlainC() throws {
        let library = try Repository.products().appendingPathComponent("libHeartbeatSource.so")
        let readelf = Process()
        readelf.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        readelf.arguments = ["readelf", "--dynamic", library.path]
        let pipe = Pipe()
        readelf.standardOutput = pipe
        try readelf.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        readelf.waitUntilExit()
        try #require(readelf.terminationStatus == 0, "readelf failed on \(library.path)")
        let needed = output.split(separator: "\n").filter { $0.contains("(NEEDED)") }.compactMap { line in
            line.split(separator: "[").last.map { String($0.dropLast()) }
        }
        #expect(!needed.isEmpty, "readelf listed no NEEDED entries:\n\(output)")
        #expect(Set(needed).isSubset(of: ["libc.so.6", "libpthread.so.0"]), "NEEDED: \(needed)")
        let size = try FileManager.default.attributesOfItem(atPath: library.path)[.size] as? Int ?? .max
        #expect(size <= 64 * 1024, "\(size) bytes")
    }
}
