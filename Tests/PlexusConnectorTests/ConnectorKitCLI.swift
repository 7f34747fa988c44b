import Foundation

/// Runs the connector conformance kit the way an operator does: `plexus conformance --kind connector` on a
/// connector's `.so` with its manifest, a configuration and (for a sink) one pointing at an unreachable server.
enum ConnectorKitCLI {
    struct Outcome {
        var status: Int32
        var report: String
    }

    /// - Parameters:
    ///   - values: the instance's configuration; the kit gets it as `--config` and inside a copy of the
    ///     manifest (a manifest whose required keys have no values does not load, even with `--config`).
    ///   - fault: the configuration that points the connector at an unreachable server (`--fault-config`).
    static func run(library: String, manifest: String, values: [String: String], fault: [String: String]? = nil)
        throws -> Outcome
    {
        let products = try Repository.products(holding: library)
        let plexus = try Repository.products(holding: "plexus") + "/plexus"
        let scratch = try Repository.temporaryDirectory("plexus-kit")
        defer { try? FileManager.default.removeItem(at: scratch) }
        var text = try String(contentsOf: Repository.root.appendingPathComponent(manifest), encoding: .utf8)
        let lines = values.sorted { $0.key < $1.key }.map { "    \($0.key): \(ConnectorNode.quoted($0.value))\n" }
        guard let range = text.range(of: "\nconfig:\n") else {
            throw HarnessError(description: "\(manifest) has no config section")
        }
        text.replaceSubrange(range, with: "\nconfig:\n  values:\n\(lines.joined())")
        let copy = scratch.appendingPathComponent("manifest.yaml")
        try text.write(to: copy, atomically: true, encoding: .utf8)
        var arguments = [
            "conformance", "--kind", "connector", products + "/" + library, "--manifest", copy.path, "--config",
            json(values), "--timeout", "5", "--rule-timeout", "60", "--observe", "5",
        ]
        if let fault { arguments += ["--fault-config", json(fault)] }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: plexus)
        process.arguments = arguments
        let log = scratch.appendingPathComponent("report.txt")
        FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        process.waitUntilExit()
        try handle.close()
        let report = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return Outcome(status: process.terminationStatus, report: report)
    }

    /// One JSON object: integers and booleans as they are, everything else as a string.
    static func json(_ values: [String: String]) -> String {
        let members = values.sorted { $0.key < $1.key }.map { key, value in
            let raw =
                Int(value) != nil || value == "true" || value == "false"
                ? value
                : "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                    + "\""
            return "\"\(key)\": \(raw)"
        }
        return "{" + members.joined(separator: ", ") + "}"
    }

    /// Whether every rule of `role` (`sink` or `source`) passed in `report`, and there were some: a connector
    /// of the other role would have them all "N/A".
    static func passedAll(_ role: String, in report: String) -> Bool {
        let lines = report.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter {
            $0.contains("connector.\(role).")
        }
        return !lines.isEmpty && lines.allSatisfy { $0.hasPrefix("PASS ") }
    }

    /// The rules a report says failed (lines starting `FAIL`), for the message of a failed expectation.
    static func failures(_ report: String) -> [String] {
        report.split(separator: "\n").filter { $0.contains("FAIL") }.map(String.init)
    }
}
