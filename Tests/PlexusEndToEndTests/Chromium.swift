import Foundation
import Testing

/// Debian's `chromium`, driven headless from the tests (`scripts/interop-deps` installs it).
enum Chromium {
    /// The browser binary; runs `scripts/interop-deps` once when it is missing.
    static func executable() async throws -> URL {
        let candidates = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        if let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) {
            return URL(fileURLWithPath: found)
        }
        let script = Repository.root.appendingPathComponent("scripts/interop-deps")
        let result = try await Command.run(script, [], in: Repository.root, timeout: .seconds(900))
        guard result.status == 0,
            let found = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) })
        else {
            throw SetupError(
                description: "chromium is not installed and scripts/interop-deps did not install it: \(result.stderr)")
        }
        return URL(fileURLWithPath: found)
    }

    /// The flags every run takes: headless, no sandbox (root in CI), a profile of its own in `directory`.
    static func flags(profile directory: URL) -> [String] {
        [
            "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
            "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
            "--user-data-dir=\(directory.appendingPathComponent("chromium-profile-\(UUID().uuidString)").path)",
        ]
    }

    /// The DOM of `url` after the page ran for `budget` of virtual time (its timers fire, its fetches answer).
    static func dumpDOM(_ url: String, budget: Duration = .seconds(3), in directory: URL) async throws -> String {
        let ms = budget.components.seconds * 1000 + budget.components.attoseconds / 1_000_000_000_000_000
        let result = try await Command.run(
            try await executable(), flags(profile: directory) + ["--virtual-time-budget=\(ms)", "--dump-dom", url],
            in: directory, timeout: .seconds(60))
        guard result.status == 0, result.stdout.contains("</html>") else {
            throw SetupError(
                description: "chromium --dump-dom \(url) exited \(result.status): \(result.stderr.suffix(2000))")
        }
        return result.stdout
    }

    /// Saves a screenshot of `url` (after `budget` of virtual time) to `file`.
    static func screenshot(
        _ url: String, to file: URL, size: (Int, Int) = (1400, 1000), budget: Duration = .seconds(3), in directory: URL
    ) async throws {
        let ms = budget.components.seconds * 1000 + budget.components.attoseconds / 1_000_000_000_000_000
        try? FileManager.default.createDirectory(
            at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: file)
        let result = try await Command.run(
            try await executable(),
            flags(profile: directory) + [
                "--virtual-time-budget=\(ms)", "--hide-scrollbars", "--window-size=\(size.0),\(size.1)",
                "--screenshot=\(file.path)", url,
            ], in: directory, timeout: .seconds(60))
        guard result.status == 0, FileManager.default.fileExists(atPath: file.path) else {
            throw SetupError(
                description: "chromium --screenshot \(url) exited \(result.status): \(result.stderr.suffix(2000))")
        }
    }

    /// The attributes of the first element whose opening tag contains `marker` (e.g. `data-topic="orders"`).
    static func attributes(in dom: String, of marker: String) -> [String: String]? {
        guard let hit = dom.range(of: marker),
            let open = dom[..<hit.lowerBound].lastIndex(of: "<"),
            let close = dom[hit.upperBound...].firstIndex(of: ">")
        else { return nil }
        let tag = String(dom[open..<close])
        var result: [String: String] = [:]
        for match in tag.matches(of: #/([a-z-]+)="([^"]*)"/#) {
            result[String(match.output.1)] = String(match.output.2)
        }
        return result
    }
}
