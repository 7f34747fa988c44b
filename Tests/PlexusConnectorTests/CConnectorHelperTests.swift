import Foundation
import Testing

/// `Plugins/include/px_connector.h`, compiled by the system C compiler as a C connector would use it.
@Suite("C connector helpers")
struct CConnectorHelperTests {
    static let program = #"""
        #include <stdio.h>
        #include <string.h>
        #include "plexus.h"
        #include "px_connector.h"

        int main(int argc, char **argv) {
            if (argc != 2) return 2;
            char buf[64];
            if (px_conn_position_load(argv[1], buf, sizeof buf) != 0) return 3;      /* none saved yet */
            if (px_conn_position_save(argv[1], "7:100", 5) != 0) return 4;
            if (px_conn_position_save(argv[1], "7:250", 5) != 0) return 5;
            ssize_t n = px_conn_position_load(argv[1], buf, sizeof buf);
            if (n != 5 || memcmp(buf, "7:250", 5) != 0) return 6;
            if (px_conn_position_load(argv[1], buf, 3) != -1) return 7;               /* does not fit */
            if (px_conn_backoff_ms(1, 1000) != 50 || px_conn_backoff_ms(3, 1000) != 200) return 8;
            if (px_conn_backoff_ms(30, 1000) != 1000) return 9;
            puts("ok");
            return 0;
        }
        """#

    @Test("position save and load through a real file, and the backoff")
    func positionFile() throws {
        let directory = try Repository.temporaryDirectory("plexus-c-helper")
        defer { try? FileManager.default.removeItem(at: directory) }
        let source = directory.appendingPathComponent("t.c")
        try Self.program.write(to: source, atomically: true, encoding: .utf8)
        let binary = directory.appendingPathComponent("t").path
        let cc = try #require(which("cc") ?? which("gcc"), "no C compiler: run scripts/bootstrap")
        let compile = try run(
            cc,
            [
                "-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra", "-Werror",
                "-I", Repository.root.appendingPathComponent("sdk/plexus-sdk/Sources/PlexusABI/include").path,
                "-I", Repository.root.appendingPathComponent("Plugins/include").path, "-o", binary, source.path,
                "-lpthread",
            ])
        try #require(compile.status == 0, "cc failed: \(compile.output)")
        let data = directory.appendingPathComponent("data").path
        try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: true)
        let result = try run(binary, [data])
        #expect(result.status == 0, "exit \(result.status): \(result.output)")
        #expect(try String(contentsOfFile: data + "/position", encoding: .utf8) == "7:250")
        #expect(!FileManager.default.fileExists(atPath: data + "/position.tmp"))
    }

    func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        let pipe = Pipe()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, output)
    }
}
