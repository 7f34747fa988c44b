import RaftCore

/// One segment file of a stream's log, as the log knows it: where it starts, how far it holds whole
/// entries, and the position of each entry in it (a dense index, rebuilt from the file at every start).
struct Segment: Sendable {
    /// File names: the base index as 20 decimal digits, then this suffix.
    static let suffix = ".seg"

    let file: OpenFile
    let header: SegmentHeader
    /// The bytes of the file that hold its header and whole, visible entries.
    var size: Int
    /// The byte position of each entry, by index minus `header.baseIndex`.
    var positions: [UInt32] = []
    /// The ordinals (index minus `header.baseIndex`) of the control entries, ascending: they take no offset.
    var controls: [Int] = []
    /// The Raft index the next entry gets.
    var nextIndex: UInt64
    /// The chained CRC of the last entry (`header.baseChain` while empty).
    var lastChain: UInt32
    var lastTerm: UInt64
    /// The append time of the newest entry (0 while empty): retention by age drops the segment after it.
    var newestAppendTime: UInt64 = 0
    /// Filled by `scan` only (the Raft group tracks them afterwards): where each term starts, and the
    /// membership entries with their index.
    var scannedTerms: [LogMeta.Run] = []
    var scannedMemberships: [(index: UInt64, body: [UInt8])] = []

    /// A segment with no entries yet.
    init(file: OpenFile, header: SegmentHeader) {
        self.file = file
        self.header = header
        self.size = LogFormat.segmentHeaderSize
        self.nextIndex = header.baseIndex
        self.lastChain = header.baseChain
        self.lastTerm = header.baseTerm
    }

    /// The offset after its last event.
    var endOffset: UInt64 { header.baseOffset + UInt64(positions.count - controls.count) }

    var isEmpty: Bool { positions.isEmpty }

    /// The index of its last entry (`baseIndex - 1` while empty).
    var lastIndex: UInt64 { nextIndex - 1 }

    /// The ordinal of the entry holding event `offset` (which the segment must hold).
    func ordinal(ofOffset offset: UInt64) -> Int {
        var ordinal = Int(offset - header.baseOffset)
        for control in controls {
            if control <= ordinal { ordinal += 1 } else { break }
        }
        return ordinal
    }

    /// The offset the next event takes after the entry at `ordinal`.
    func offset(after ordinal: Int) -> UInt64 {
        var controlsBefore = 0
        for control in controls {
            if control <= ordinal { controlsBefore += 1 } else { break }
        }
        return header.baseOffset + UInt64(ordinal + 1 - controlsBefore)
    }

    static func fileName(baseIndex: UInt64) -> String {
        let digits = String(baseIndex)
        return String(repeating: "0", count: max(0, 20 - digits.count)) + digits + suffix
    }

    /// The base index a segment file name stands for; `nil` for other names.
    static func baseIndex(fileName: String) -> UInt64? {
        guard fileName.hasSuffix(suffix) else { return nil }
        let digits = fileName.dropLast(suffix.count)
        guard digits.count == 20, digits.allSatisfy(\.isASCII) else { return nil }
        return UInt64(digits)
    }

    /// Creates a segment file holding only `header`: written to a temporary name, synced when `sync`, then
    /// renamed into place (and the directory synced), so a segment file never exists without its header.
    static func create(directory: String, header: SegmentHeader, sync: Bool) throws -> Segment {
        let path = directory + "/" + fileName(baseIndex: header.baseIndex)
        let temporary = path + ".tmp"
        try Files.remove(temporary)
        let file = try OpenFile(path: temporary, create: true)
        try file.write(header.encoded(), at: 0)
        if sync { try file.syncData() }
        try Files.rename(temporary, path)
        if sync { try Files.syncDirectory(directory) }
        return Segment(file: try OpenFile(path: path), header: header)
    }

    /// Where a scan stopped before the end of the file.
    struct Damage: Error {
        /// The byte where the first bad entry starts.
        var position: Int
        /// Whether everything from `position` on is an unfinished write: a partial last entry, or zeros.
        var torn: Bool
        var reason: String
    }

    /// Reads every entry after the header, checking each one's header CRC, body CRC, chained CRC, index and
    /// offset; fills `positions` and the tail fields with the whole entries found.
    /// - Returns: where and why the scan stopped before the end of the file; `nil` when every byte was good.
    mutating func scan() throws -> Damage? {
        try file.withMapping { raw in
            var position = LogFormat.segmentHeaderSize
            var chain = header.baseChain
            var offset = header.baseOffset
            defer {
                size = min(position, raw.count)
                lastChain = chain
            }
            while position < raw.count {
                let remaining = raw.count - position
                let rest = UnsafeRawBufferPointer(rebasing: raw[position...])
                func damage(_ reason: String, entryEnd: Int? = nil) -> Damage {
                    let zeros = rest.allSatisfy { $0 == 0 }
                    let reachesEnd = entryEnd.map { $0 >= raw.count } ?? false
                    return Damage(position: position, torn: zeros || reachesEnd, reason: reason)
                }
                guard remaining >= LogFormat.entryHeaderSize else {
                    return Damage(
                        position: position, torn: true,
                        reason: "a partial entry header (\(remaining) of \(LogFormat.entryHeaderSize) bytes)")
                }
                guard let entry = EntryHeader.decode(rest) else {
                    return damage("an entry header with a wrong magic or CRC")
                }
                let end = position + LogFormat.entryHeaderSize + Int(entry.bodyLength)
                guard end <= raw.count else {
                    return Damage(
                        position: position, torn: true,
                        reason: "a partial entry (\(remaining) of \(end - position) bytes)")
                }
                let body = UnsafeRawBufferPointer(rebasing: raw[(position + LogFormat.entryHeaderSize)..<end])
                guard CRC32C.checksum(body) == entry.bodyCRC else {
                    return damage("an entry body whose CRC is wrong", entryEnd: end)
                }
                guard entry.chain == EntryHeader.expectedChain(rest, previousChain: chain) else {
                    return damage("an entry whose chained CRC does not follow the entry before it")
                }
                guard entry.index == nextIndex else {
                    return damage("an entry with index \(entry.index) where \(nextIndex) was expected")
                }
                guard entry.term >= lastTerm else {
                    return damage("an entry with term \(entry.term) after term \(lastTerm)")
                }
                guard let kind = LogFormat.Kind(rawValue: entry.kind), entry.offset == offset else {
                    return damage(
                        "an entry of kind \(entry.kind) at offset \(entry.offset) where \(offset) was expected")
                }
                if kind != .event { controls.append(positions.count) }
                if kind == .membership { scannedMemberships.append((entry.index, Array(body))) }
                if scannedTerms.last?.term != entry.term {
                    scannedTerms.append(LogMeta.Run(start: entry.index, term: entry.term))
                }
                positions.append(UInt32(position))
                chain = entry.chain
                nextIndex += 1
                if kind == .event { offset += 1 }
                lastTerm = entry.term
                newestAppendTime = max(newestAppendTime, entry.appendTime)
                position = end
            }
            return nil
        }
    }
}
