/// What the consensus needs to know of a log without its bodies: where it starts (the snapshot point), where
/// it ends, and the term of every index, kept as runs (a term changes rarely).
public struct LogMeta: Sendable, Equatable {
    /// The last index the snapshot covers: entries up to it are gone (or were never here). 0 for a log that
    /// starts at index 1.
    public private(set) var snapshotIndex: UInt64
    public private(set) var snapshotTerm: UInt64
    /// `(first index, term)` for the entries after the snapshot, ascending by index and by term.
    public private(set) var runs: [Run]
    public private(set) var lastIndex: UInt64

    public struct Run: Sendable, Equatable {
        public var start: UInt64
        public var term: UInt64
        public init(start: UInt64, term: UInt64) {
            self.start = start
            self.term = term
        }
    }

    public init(snapshotIndex: UInt64 = 0, snapshotTerm: UInt64 = 0) {
        self.snapshotIndex = snapshotIndex
        self.snapshotTerm = snapshotTerm
        self.runs = []
        self.lastIndex = snapshotIndex
    }

    /// The first index still in the log.
    public var firstIndex: UInt64 { snapshotIndex + 1 }

    public var lastTerm: UInt64 { runs.last?.term ?? snapshotTerm }

    /// The term of the entry at `index`; `nil` when the log does not hold it (before the snapshot or past the
    /// end). The snapshot point itself answers with its term.
    public func term(at index: UInt64) -> UInt64? {
        if index == snapshotIndex { return snapshotTerm }
        guard index > snapshotIndex, index <= lastIndex else { return nil }
        var low = 0
        var high = runs.count - 1
        while low < high {
            let middle = (low + high + 1) / 2
            if runs[middle].start <= index { low = middle } else { high = middle - 1 }
        }
        return runs[low].term
    }

    /// Adds the entry after the last one.
    public mutating func append(term: UInt64) { append(term: term, count: 1) }

    /// The last index at or below `index` whose term is at most `term` (the snapshot point at the lowest).
    public func lastIndex(atOrBelow index: UInt64, termAtMost term: UInt64) -> UInt64 {
        var candidate = min(index, lastIndex)
        for run in runs.reversed() {
            guard candidate >= run.start else { continue }
            if run.term <= term { return candidate }
            candidate = run.start - 1
        }
        return max(candidate, snapshotIndex)
    }

    /// Adds `count` entries of `term` after the last one.
    public mutating func append(term: UInt64, count: UInt64) {
        guard count > 0 else { return }
        if runs.last?.term != term { runs.append(Run(start: lastIndex + 1, term: term)) }
        lastIndex += count
    }

    /// Removes the entries from `index` on.
    public mutating func truncate(from index: UInt64) {
        guard index <= lastIndex else { return }
        precondition(index > snapshotIndex, "raft: cannot truncate into the snapshot")
        lastIndex = index - 1
        while let last = runs.last, last.start > lastIndex { runs.removeLast() }
    }

    /// Forgets every entry: the log now starts after `index`.
    public mutating func reset(snapshotIndex index: UInt64, term: UInt64) {
        self = LogMeta(snapshotIndex: index, snapshotTerm: term)
    }

    /// Forgets the entries up to `index` (retention): they are in the snapshot now.
    public mutating func compact(through index: UInt64) {
        guard index > snapshotIndex, index <= lastIndex, let term = term(at: index) else { return }
        snapshotIndex = index
        snapshotTerm = term
        runs.removeAll { $0.start <= index && $0.term < term }
        if let first = runs.first, first.start <= index {
            runs[0].start = index + 1
            if runs[0].start > lastIndex { runs.removeFirst() }
        }
    }

    /// Whether a log ending at `(index, term)` is at least as up to date as this one (Raft §5.4.1).
    public func isUpToDate(lastIndex index: UInt64, lastTerm term: UInt64) -> Bool {
        term > lastTerm || (term == lastTerm && index >= lastIndex)
    }
}

extension Membership {
    /// `u32 count`, then per member `u32` id length, id, `u32` address length, address, `u8` learner.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        func put(_ value: UInt32) { withUnsafeBytes(of: value.littleEndian) { bytes.append(contentsOf: $0) } }
        func put(_ text: String) {
            put(UInt32(text.utf8.count))
            bytes.append(contentsOf: text.utf8)
        }
        put(UInt32(members.count))
        for member in members {
            put(member.id)
            put(member.address)
            bytes.append(member.learner ? 1 : 0)
        }
        return bytes
    }

    /// Decodes `encoded()`; `nil` for anything else.
    public init?(decoding bytes: [UInt8]) {
        var position = 0
        func u32() -> UInt32? {
            guard position + 4 <= bytes.count else { return nil }
            defer { position += 4 }
            return UInt32(bytes[position]) | UInt32(bytes[position + 1]) << 8 | UInt32(bytes[position + 2]) << 16
                | UInt32(bytes[position + 3]) << 24
        }
        func text() -> String? {
            guard let length = u32().map(Int.init), position + length <= bytes.count else { return nil }
            defer { position += length }
            return String(validating: bytes[position..<(position + length)], as: UTF8.self)
        }
        guard let count = u32(), count <= 1024 else { return nil }
        var members: [Member] = []
        for _ in 0..<count {
            guard let id = text(), let address = text(), position < bytes.count else { return nil }
            let learner = bytes[position] != 0
            position += 1
            members.append(Member(id: id, address: address, learner: learner))
        }
        guard position == bytes.count else { return nil }
        self.init(members: members)
    }
}
