import Foundation
import Testing

@testable import plexus

@Suite("The CLI's table renderer")
struct TableTests {
    /// The rendered lines.
    static func lines(_ text: String) -> [String] {
        text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    }

    @Test("columns are as wide as their widest cell, two spaces apart, every line the same width")
    func naturalWidths() {
        let text = Table(columns: ["NAME", "STATE"], width: 120).render(rows: [
            ["raft-log", "active"], ["a", "failed"],
        ])
        #expect(Self.lines(text) == ["NAME      STATE ", "raft-log  active", "a         failed"])
    }

    @Test("a multi-line cell stays on one line, with ⏎ for each line break; indentation and tabs do not matter")
    func multiLineCells() {
        let text = Table(columns: ["NAME", "LAST ERROR", "X"], width: 200).render(rows: [
            ["tcp", "bind failed:\n  address in use\r\nretrying\tlater\n", "y"]
        ])
        let lines = Self.lines(text)
        #expect(lines.count == 2)
        #expect(lines[1] == "tcp   bind failed: ⏎ address in use ⏎ retrying later  y")
        #expect(lines[0].count == lines[1].count)
        #expect(Table.singleLine("a\u{7}b\u{1b}[31m") == "a b [31m")
    }

    @Test("a table wider than the terminal narrows its widest column and cuts its cells with …")
    func truncation() {
        let long = String(repeating: "x", count: 200)
        func spaces(_ n: Int) -> String { String(repeating: " ", count: n) }
        let text = Table(columns: ["NAME", "STATE", "LAST ERROR"], width: 50).render(rows: [
            ["heartbeat-source", "active", ""], ["raft-log", "degraded", long],
        ])
        let lines = Self.lines(text)
        #expect(lines.allSatisfy { $0.count == 50 }, "\(lines.map(\.count))")
        // The narrow columns keep their width (16 and 8): only the widest gave up space, down to 22.
        #expect(lines[0] == "NAME" + spaces(14) + "STATE" + spaces(5) + "LAST ERROR" + spaces(12))
        #expect(lines[2] == "raft-log" + spaces(10) + "degraded" + spaces(2) + String(repeating: "x", count: 21) + "…")
    }

    @Test("several wide columns share the width; no column is cut below four characters")
    func sharing() {
        let a = String(repeating: "a", count: 50)
        let b = String(repeating: "b", count: 30)
        #expect(Table.fit([50, 30, 5], into: 45) == [20, 20, 5])
        #expect(Table.fit([50, 30, 5], into: 6) == [4, 4, 4])
        #expect(Table.fit([3, 2], into: 1) == [3, 2])
        let text = Table(columns: ["A", "B", "C"], width: 49).render(rows: [[a, b, "ccccc"]])
        let lines = Self.lines(text)
        #expect(lines.allSatisfy { $0.count == 49 })
        #expect(lines[1] == String(repeating: "a", count: 19) + "…  " + String(repeating: "b", count: 19) + "…  ccccc")
    }

    @Test("missing cells are empty, extra cells are dropped, so every row has every column")
    func raggedRows() {
        let text = Table(columns: ["A", "B"], width: 80).render(rows: [["1"], ["1", "2", "3"]])
        #expect(Self.lines(text) == ["A  B", "1   ", "1  2"])
    }

    @Test("cut pads or cuts to exactly the width")
    func cut() {
        #expect(Table.cut("abc", to: 5) == "abc  ")
        #expect(Table.cut("abcdef", to: 4) == "abc…")
        #expect(Table.cut("abc", to: 0) == "")
    }

    @Test("COLUMNS sets the terminal width; without a terminal it is 120")
    func terminalWidth() {
        // The test runner's standard output is not a terminal; COLUMNS may or may not be set by the caller.
        let width = Table.terminalWidth()
        if let columns = ProcessInfo.processInfo.environment["COLUMNS"].flatMap(Int.init), columns > 0 {
            #expect(width == columns)
        } else {
            #expect(width == 120)
        }
    }

    @Test("durations on the command line: ms, s, m, h, or bare seconds; anything else is refused")
    func durations() throws {
        #expect(try CLIDuration.parse("500ms", option: "--t") == .milliseconds(500))
        #expect(try CLIDuration.parse("2s", option: "--t") == .seconds(2))
        #expect(try CLIDuration.parse("1.5m", option: "--t") == .seconds(90))
        #expect(try CLIDuration.parse("3", option: "--t") == .seconds(3))
        #expect(try CLIDuration.parse("1h", option: "--t") == .seconds(3600))
        #expect(throws: (any Error).self) { try CLIDuration.parse("soon", option: "--t") }
        #expect(throws: (any Error).self) { try CLIDuration.parse("-1s", option: "--t") }
    }
}
