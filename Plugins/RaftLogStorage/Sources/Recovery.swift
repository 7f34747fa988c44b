import PlexusPluginSDK
import StorageIO

/// Brings a stream's directory back to a consistent log at start: every segment is read and checked, a torn
/// tail (an append cut short by a crash) is cut off, and corruption anywhere before it stops the start unless
/// `repairOnStart: truncate` says to cut the log there.
struct Recovery {
    let name: String
    let directory: String
    let settings: Settings
    /// Says what recovery changed (a warning per cut).
    let report: (String) -> Void

    /// The stream's segments, oldest first (never empty), and its state file.
    /// - Throws: `PluginError` with `PX_ERR_CORRUPTION` naming the file, the byte and how to repair it; or with
    ///   `PX_ERR_IO` when a file cannot be read or written.
    func run() throws -> (segments: [Segment], state: StreamState) {
        let sync = settings.fsync != .never
        var names: [(index: UInt64, name: String)] = []
        for entry in try io("list", { try Files.list(directory) }) {
            if entry.hasSuffix(".tmp") {
                // An unfinished segment creation or state rewrite: never the file of record.
                try io("remove", { try Files.remove(directory + "/" + entry) })
            } else if let index = Segment.baseIndex(fileName: entry) {
                names.append((index, entry))
            }
        }
        names.sort { $0.index < $1.index }
        let state = try loadState()

        var segments: [Segment] = []
        for (number, (baseIndex, fileName)) in names.enumerated() {
            let path = directory + "/" + fileName
            let isLast = number == names.count - 1
            let file = try io("open", { try OpenFile(path: path) })
            let header: SegmentHeader
            do {
                header = try file.withMapping { raw in
                    try SegmentHeader.decode(UnsafeRawBufferPointer(rebasing: raw.prefix(LogFormat.segmentHeaderSize)))
                        .get()
                }
            } catch let error as LogFormatError {
                try corrupt(
                    path: path, position: 0, reason: "its segment header is unreadable: \(error)",
                    lastGood: segments.last, dropFrom: number, of: names)
                break
            }
            var reason: String?
            if header.baseIndex != baseIndex {
                reason = "its header says base index \(header.baseIndex), its name \(baseIndex)"
            } else if let previous = segments.last,
                header.baseIndex != previous.nextIndex || header.baseOffset != previous.endOffset
                    || header.baseChain != previous.lastChain
                    || (header.baseTerm != 0 && header.baseTerm != previous.lastTerm)
            {
                reason =
                    "it does not continue \(Segment.fileName(baseIndex: previous.header.baseIndex)) (expected index "
                    + "\(previous.nextIndex), offset \(previous.endOffset), chain \(previous.lastChain); found "
                    + "\(header.baseIndex), \(header.baseOffset), \(header.baseChain)): a segment is missing or foreign"
            }
            if let reason {
                try corrupt(
                    path: path, position: 0, reason: reason, lastGood: segments.last, dropFrom: number, of: names)
                break
            }
            var segment = Segment(file: file, header: header)
            let damage = try io("read", { try segment.scan() })
            if let damage {
                let fileSize = try io("stat", { try file.size })
                if damage.torn && isLast {
                    // A crash tears only what was not synced, hence never committed here: a torn tail below
                    // the commit hint is damage that cut committed entries.
                    let hint = CommitHint.load(directory: directory)
                    if hint >= segment.nextIndex {
                        try io(
                            "write the recovering marker", { try RecoveringMarker.write(hint, directory: directory) })
                    }
                    try io("truncate", { try cut(segment, at: damage.position, sync: sync) })
                    report(
                        "stream '\(name)': cut a torn tail of \(fileSize - damage.position) bytes at byte "
                            + "\(damage.position) of \(path) (\(damage.reason)); the log ends at offset "
                            + "\(segment.endOffset)")
                } else {
                    try corrupt(
                        path: path, position: damage.position, reason: damage.reason, lastGood: segment,
                        dropFrom: number + 1, of: names, file: file, fileSize: fileSize)
                    segments.append(segment)
                    break
                }
            }
            segments.append(segment)
        }

        if segments.isEmpty {
            let header = SegmentHeader(baseIndex: 1, baseOffset: state.trimmedBefore, baseChain: 0)
            segments.append(try io("create", { try Segment.create(directory: directory, header: header, sync: sync) }))
        }
        // Segments wholly below the trim point went with an interrupted trim: finish it.
        // (Only a segment that ends with an event: a control entry at its end may be uncommitted.)
        while segments.count > 1, segments[0].endOffset <= state.trimmedBefore,
            segments[0].controls.last != segments[0].positions.count - 1
        {
            try io("remove", { try Files.remove(segments[0].file.path) })
            segments.removeFirst()
        }
        return (segments, state)
    }

    /// Reports corruption: throws, or with `repairOnStart: truncate` cuts the log before it (truncating `file`
    /// at `position` and removing the segments from `dropFrom` on) and reports what was cut.
    private func corrupt(
        path: String, position: Int, reason: String, lastGood: Segment?, dropFrom: Int,
        of names: [(index: UInt64, name: String)], file: OpenFile? = nil, fileSize: Int? = nil
    ) throws {
        let later = names.count - dropFrom
        let lastOffset = lastGood.map { $0.endOffset == 0 ? "none" : String($0.endOffset - 1) } ?? "none"
        let extent =
            (fileSize.map { "\($0 - position) bytes of this file" } ?? "this file") + " and \(later) later segment(s)"
        guard settings.repairOnStart == .truncate else {
            throw PluginError(
                PX_ERR_CORRUPTION,
                "raft-log: stream '\(name)' is corrupt at byte \(position) of \(path): \(reason). The entries before "
                    + "it are intact (the last good offset is \(lastOffset)); \(extent) follow it. To repair, cut the "
                    + "log after the last good entry, losing every entry after it: set `repairOnStart: truncate` in "
                    + "the raft-log manifest's config values, start the node once, then set it back to `refuse`.")
        }
        let sync = settings.fsync != .never
        // Before anything is cut: the entries lost may have been acknowledged by this member, so it must
        // not vote until it has them again (`RecoveringMarker`).
        let lost = lostThrough(from: path, at: position, laterNames: names[dropFrom...].map(\.name))
        if lost >= (lastGood?.nextIndex ?? 1) {
            try io("write the recovering marker", { try RecoveringMarker.write(lost, directory: directory) })
        }
        if let file, let lastGood {
            try io("truncate", { try cut(lastGood, at: position, sync: sync, file: file) })
        } else {
            try io("remove", { try Files.remove(path) })
        }
        for (_, name) in names[dropFrom...] { try io("remove", { try Files.remove(directory + "/" + name) }) }
        if sync { try io("sync", { try Files.syncDirectory(directory) }) }
        report(
            "stream '\(name)': repairOnStart truncate: cut the log at byte \(position) of \(path) (\(reason)), "
                + "dropping \(extent); the log now ends after offset \(lastOffset)")
    }

    /// The highest index the log is known to have held past damage at `position` of `path`: the highest of
    /// the commit hint, the index before each later segment's base, and every entry header that still checks
    /// out from `position` on in this file and in the later ones.
    private func lostThrough(from path: String, at position: Int, laterNames: [String]) -> UInt64 {
        var highest = CommitHint.load(directory: directory)
        for name in laterNames {
            if let base = Segment.baseIndex(fileName: name), base > 0 { highest = max(highest, base - 1) }
        }
        for (file, start) in [(path, position)] + laterNames.map({ (directory + "/" + $0, 0) }) {
            guard let open = try? OpenFile(path: file), let size = try? open.size, size > start,
                let bytes = try? open.read(count: size - start, at: start)
            else { continue }
            bytes.withUnsafeBytes { raw in
                var at = 0
                while at + LogFormat.entryHeaderSize <= raw.count {
                    if raw.loadLE(UInt32.self, at: at) == LogFormat.entryMagic,
                        let header = EntryHeader.decode(UnsafeRawBufferPointer(rebasing: raw[at...]))
                    {
                        highest = max(highest, header.index)
                    }
                    at += 1
                }
            }
        }
        return highest
    }

    private func cut(_ segment: Segment, at position: Int, sync: Bool, file: OpenFile? = nil) throws {
        let file = file ?? segment.file
        try file.truncate(to: position)
        if sync { try file.syncData() }
    }

    private func loadState() throws -> StreamState {
        let path = directory + "/" + StreamState.fileName
        guard Files.exists(path) else { return StreamState() }
        let file = try io("open", { try OpenFile(path: path) })
        let bytes = try io("read", { try file.read(count: try file.size, at: 0) })
        do {
            return try StreamState.decode(bytes)
        } catch {
            throw PluginError(
                PX_ERR_CORRUPTION,
                "raft-log: stream '\(name)': its state file \(path) (trim point and committed offsets) is corrupt: "
                    + "\(error). It is only ever replaced whole, so this is damage on disk; remove the file to start "
                    + "with no committed offsets (consumer groups then start from their start position).")
        }
    }

    /// Runs file I/O, turning an `IOFailure` into a `PluginError` naming the stream.
    private func io<R>(_ what: String, _ body: () throws -> R) throws -> R {
        do {
            return try body()
        } catch let failure as IOFailure {
            throw PluginError(PX_ERR_IO, "raft-log: stream '\(name)': recovery cannot \(what): \(failure)")
        }
    }
}
