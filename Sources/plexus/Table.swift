import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// A plain-text table for the terminal that never breaks: every table the CLI prints goes through it.
///
/// ```swift
/// let table = Table(columns: ["NAME", "STATE", "LAST ERROR"])
/// print(table.render(rows: [["raft-log", "active", ""], ["tcp-protocol", "failed", "bind: address in use\n…"]]))
/// ```
///
/// - Every cell is made single-line (``Table/singleLine(_:)``): a line break shows as ` ⏎ `, a tab or another
///   control character as a space.
/// - Columns are as wide as their widest cell. When the table would be wider than `width` (by default the
///   terminal's, ``Table/terminalWidth()``), the widest columns are narrowed first, and a cut cell ends in `…`.
/// - Every line has every column, padded to the same width, two spaces apart, so columns stay aligned
///   whatever the cells hold. A row with fewer cells than columns gets empty ones; extra cells are dropped.
///
/// Commands that print a table also take `--json`, for scripts: a table is for reading, not for parsing.
struct Table {
    /// The column titles, in order.
    var columns: [String]
    /// The widest a line may be, in characters.
    var width: Int

    /// The narrowest a column is cut to (or its natural width when that is less).
    static let minimumColumnWidth = 4
    /// The characters between two columns.
    static let separator = "  "

    /// A table with these column titles, at most `width` characters wide (default: ``terminalWidth()``).
    init(columns: [String], width: Int? = nil) {
        self.columns = columns
        self.width = width ?? Self.terminalWidth()
    }

    /// The table as lines joined by `\n` (no trailing newline): the header, then one line per row.
    func render(rows: [[String]]) -> String {
        let cells = ([columns] + rows).map { row in
            columns.indices.map { index in index < row.count ? Self.singleLine(row[index]) : "" }
        }
        let natural = columns.indices.map { column in cells.map { $0[column].count }.max() ?? 0 }
        let widths = Self.fit(natural, into: width - Self.separator.count * max(columns.count - 1, 0))
        return cells.map { row in
            row.enumerated().map { index, cell in Self.cut(cell, to: widths[index]) }.joined(separator: Self.separator)
        }.joined(separator: "\n")
    }

    /// Column widths no larger than `natural` whose sum is at most `budget` when that can be done without
    /// narrowing any column below ``minimumColumnWidth``: the widest columns give up space first.
    static func fit(_ natural: [Int], into budget: Int) -> [Int] {
        guard natural.reduce(0, +) > budget else { return natural }
        // The largest cap such that every column cut to it fits; columns narrower than the cap keep their width.
        let floor = Self.minimumColumnWidth
        var cap = natural.max() ?? 0
        while cap > floor, natural.map({ min($0, cap) }).reduce(0, +) > budget { cap -= 1 }
        return natural.map { min($0, max(cap, min($0, floor))) }
    }

    /// `text` padded with spaces, or cut with a trailing `…`, to exactly `width` characters.
    static func cut(_ text: String, to width: Int) -> String {
        if text.count <= width { return text + String(repeating: " ", count: width - text.count) }
        guard width > 0 else { return "" }
        return String(text.prefix(width - 1)) + "…"
    }

    /// `text` on one line: a tab or another control character becomes a space, each line break (`\n`, `\r\n`,
    /// `\r`) ` ⏎ `; a continuation line loses its indentation, and blank lines and trailing spaces are dropped.
    static func singleLine(_ text: String) -> String {
        var lines: [String] = []
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            var plain = String(
                line.map { $0.unicodeScalars.allSatisfy { $0.properties.generalCategory == .control } ? " " : $0 })
            while plain.last == " " { plain.removeLast() }
            if index > 0 {
                plain = String(plain.drop { $0 == " " })
                if plain.isEmpty { continue }
            }
            lines.append(plain)
        }
        return lines.joined(separator: " ⏎ ")
    }

    /// The terminal's width: `COLUMNS` when set, else the width of the terminal standard output is, else 120
    /// (a pipe or a file).
    static func terminalWidth() -> Int {
        if let text = ProcessInfo.processInfo.environment["COLUMNS"], let columns = Int(text), columns > 0 {
            return columns
        }
        var size = winsize()
        if isatty(STDOUT_FILENO) != 0, ioctl(STDOUT_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 0 {
            return Int(size.ws_col)
        }
        return 120
    }
}
