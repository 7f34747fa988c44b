import Foundation

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one table lookup per byte: the fault tests' own
/// implementation, independent of the plugin's slicing-by-8 one, so that a checker built on it cannot share
/// the plugin's mistakes.
///
/// `checksum(b, seed: checksum(a)) == checksum(a + b)`, which is how raft-log chains its entries.
enum IndependentCRC32C {
    private static let table: [UInt32] = (0..<256).map { byte in
        var crc = UInt32(byte)
        for _ in 0..<8 { crc = crc & 1 == 1 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
        return crc
    }

    /// The CRC-32C of `bytes`, continuing from `seed` (an earlier result, or 0 to start).
    static func checksum<Bytes: Sequence<UInt8>>(_ bytes: Bytes, seed: UInt32 = 0) -> UInt32 {
        var crc = ~seed
        for byte in bytes { crc = (crc >> 8) ^ table[Int((crc ^ UInt32(byte)) & 0xFF)] }
        return ~crc
    }
}

/// One entry of a raft-log segment as the documented format describes it (the plugin README's "Entry"
/// table), with where it was found.
struct SegmentEntry: Sendable {
    /// The entry kinds of the format: 1 carries an event and its stream offset; 2 (a new leader's no-op) and
    /// 3 (a membership) are control entries that take a Raft index but no offset.
    static let eventKind: UInt16 = 1

    var bodyLength: UInt32
    var term: UInt64
    var index: UInt64
    /// The stream offset of an event; for a control entry, the offset the next event takes.
    var offset: UInt64
    var appendTime: UInt64
    var kind: UInt16
    var flags: UInt16
    var bodyCRC: UInt32
    var chain: UInt32
    /// The CloudEvents id decoded from an event's body; nil for a control entry.
    var eventID: String?
    /// The segment file (its name) and the byte at which the entry's header starts.
    var file: String
    var position: Int

    var isEvent: Bool { kind == Self.eventKind }

    /// The header fields replicas must agree on for the same entry (everything the 56-byte header carries
    /// apart from its own CRC, which follows from them).
    var replicatedFields: String {
        "term \(term) index \(index) offset \(offset) appendTime \(appendTime) kind \(kind) flags \(flags) "
            + "bodyLength \(bodyLength) bodyCRC \(bodyCRC) chain \(chain)"
    }
}

/// One node's log of one stream, read from its segment files.
struct ReplicaLog: Sendable {
    /// The last segment's incomplete end, which recovery cuts: an append a crash interrupted.
    struct TornTail: Sendable {
        var file: String
        var position: Int
        var bytes: Int
        var reason: String
    }

    var directory: URL
    var files: [String] = []
    var entries: [SegmentEntry] = []
    var tornTail: TornTail?
    /// Everything that breaks the format or its continuity before the torn tail: corruption.
    var problems: [String] = []

    var firstIndex: UInt64? { entries.first?.index }
    var lastIndex: UInt64 { entries.last?.index ?? 0 }

    /// The entry with Raft index `index`, if the log holds it.
    func entry(at index: UInt64) -> SegmentEntry? {
        guard let first = entries.first?.index, index >= first, index - first < UInt64(entries.count) else {
            return nil
        }
        let entry = entries[Int(index - first)]
        return entry.index == index ? entry : entries.first { $0.index == index }
    }
}

/// Reads raft-log's segment files with its own parser of the documented layout
/// (`Plugins/RaftLogStorage/README.md`, "On-disk layout"): a 64-byte segment header, then entries of a
/// 56-byte header and a body; little-endian integers; CRC-32C; the chained CRC of each entry is the CRC-32C
/// of its header bytes 0..<48 seeded with the previous entry's chained CRC (the segment's base chain for
/// its first entry).
///
/// It checks what the format promises: magics, header and body CRCs, the chain, indexes dense from each
/// segment's base index, event offsets dense from its base offset (a control entry carries the offset the
/// next event takes), terms never decreasing from the segment's base term, segments continuing one another
/// (base index, offset, chain and term) and named by their base index. Damage at the very
/// end of the last segment (a cut header or body, a last entry whose body CRC fails, zeros) is a torn tail,
/// as recovery treats it; anything else is a problem.
enum RaftSegmentReader {
    static let segmentHeaderSize = 64
    static let entryHeaderSize = 56
    static let segmentMagic: [UInt8] = Array("PXRL".utf8)
    static let entryMagic: [UInt8] = Array("PXRE".utf8)

    /// `<data directory>/plugins/raft-log/streams/<escaped stream>`: where a node started with `--data-dir
    /// data` keeps a stream.
    static func streamDirectory(data: URL, stream: String) -> URL {
        data.appendingPathComponent("plugins/raft-log/streams").appendingPathComponent(escape(stream))
    }

    /// A stream's directory name: every byte outside `A-Z a-z 0-9 - _ .` (and a leading `.`) as `%XX`.
    static func escape(_ stream: String) -> String {
        var result = ""
        for (i, byte) in stream.utf8.enumerated() {
            let plain =
                (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2D || byte == 0x5F || (byte == 0x2E && i > 0)
            result += plain ? String(UnicodeScalar(byte)) : String(format: "%%%02X", byte)
        }
        return result
    }

    /// The segment files of a stream directory, in log order (their names are 20-digit base indexes).
    static func segmentFiles(in directory: URL) throws -> [URL] {
        try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".seg") }.sorted()
            .map { directory.appendingPathComponent($0) }
    }

    /// Reads and checks every segment of a stream directory.
    static func read(directory: URL) throws -> ReplicaLog {
        var log = ReplicaLog(directory: directory)
        let files = try segmentFiles(in: directory)
        log.files = files.map(\.lastPathComponent)
        var previous: (index: UInt64, nextOffset: UInt64, chain: UInt32)?
        for (number, file) in files.enumerated() {
            let bytes = [UInt8](try Data(contentsOf: file))
            let name = file.lastPathComponent
            let isLast = number == files.count - 1
            guard let header = segmentHeader(bytes, name: name, into: &log) else { return log }
            if let previous {
                // A base term of 0 comes from a segment written before replication.
                let lastTerm = log.entries.last?.term ?? header.baseTerm
                if header.baseIndex != previous.index + 1 || header.baseOffset != previous.nextOffset
                    || header.baseChain != previous.chain || (header.baseTerm != 0 && header.baseTerm != lastTerm)
                {
                    log.problems.append(
                        "\(name) does not continue the segment before it: base index \(header.baseIndex), offset "
                            + "\(header.baseOffset), chain \(header.baseChain), term \(header.baseTerm); expected "
                            + "\(previous.index + 1), \(previous.nextOffset), \(previous.chain), \(lastTerm)")
                    return log
                }
            }
            if name != String(format: "%020llu.seg", header.baseIndex) {
                log.problems.append("\(name) is not named by its base index \(header.baseIndex)")
            }
            var state = (
                index: header.baseIndex - 1, nextOffset: header.baseOffset, chain: header.baseChain,
                term: header.baseTerm
            )
            guard entries(bytes, name: name, isLast: isLast, state: &state, into: &log) else { return log }
            previous = (state.index, state.nextOffset, state.chain)
        }
        return log
    }

    private static func segmentHeader(_ bytes: [UInt8], name: String, into log: inout ReplicaLog) -> (
        baseIndex: UInt64, baseOffset: UInt64, baseChain: UInt32, baseTerm: UInt64
    )? {
        guard bytes.count >= segmentHeaderSize else {
            log.problems.append("\(name) is \(bytes.count) bytes, shorter than a segment header")
            return nil
        }
        var failures: [String] = []
        if Array(bytes[0..<4]) != segmentMagic { failures.append("no PXRL magic") }
        if u16(bytes, 4) != 1 { failures.append("format version \(u16(bytes, 4))") }
        if u16(bytes, 6) != UInt16(segmentHeaderSize) { failures.append("header size \(u16(bytes, 6))") }
        if bytes[36..<60].contains(where: { $0 != 0 }) { failures.append("reserved bytes 36..<60 are not zero") }
        if u32(bytes, 60) != IndependentCRC32C.checksum(bytes[0..<60]) { failures.append("header CRC is wrong") }
        guard failures.isEmpty else {
            log.problems.append("\(name): bad segment header: \(failures.joined(separator: ", "))")
            return nil
        }
        return (u64(bytes, 8), u64(bytes, 16), u32(bytes, 24), u64(bytes, 28))
    }

    /// Reads the entries after the segment header; false when a problem ends the log.
    private static func entries(
        _ bytes: [UInt8], name: String, isLast: Bool,
        state: inout (index: UInt64, nextOffset: UInt64, chain: UInt32, term: UInt64), into log: inout ReplicaLog
    ) -> Bool {
        var position = segmentHeaderSize
        func damage(_ reason: String, tornIfLast: Bool) -> Bool {
            if isLast && tornIfLast {
                log.tornTail = .init(file: name, position: position, bytes: bytes.count - position, reason: reason)
            } else {
                log.problems.append(
                    "\(name) byte \(position) (after index \(state.index)): \(reason); \(bytes.count - position) "
                        + "bytes follow")
            }
            return false
        }
        while position < bytes.count {
            let remaining = bytes.count - position
            if bytes[position...].allSatisfy({ $0 == 0 }) {
                return damage("\(remaining) zero bytes", tornIfLast: true)
            }
            guard remaining >= entryHeaderSize else {
                return damage("an entry header cut short (\(remaining) of 56 bytes)", tornIfLast: true)
            }
            let header = bytes[position..<(position + entryHeaderSize)]
            guard Array(header.prefix(4)) == entryMagic else { return damage("no PXRE magic", tornIfLast: false) }
            guard u32(bytes, position + 52) == IndependentCRC32C.checksum(header.prefix(52)) else {
                return damage("the entry header CRC is wrong", tornIfLast: false)
            }
            let bodyLength = Int(u32(bytes, position + 4))
            let end = position + entryHeaderSize + bodyLength
            guard end <= bytes.count else {
                return damage(
                    "an entry body cut short (\(remaining - entryHeaderSize) of \(bodyLength) bytes)",
                    tornIfLast: true)
            }
            let body = bytes[(position + entryHeaderSize)..<end]
            guard u32(bytes, position + 44) == IndependentCRC32C.checksum(body) else {
                return damage("the entry body CRC is wrong", tornIfLast: end == bytes.count)
            }
            let entry = SegmentEntry(
                bodyLength: UInt32(bodyLength), term: u64(bytes, position + 8), index: u64(bytes, position + 16),
                offset: u64(bytes, position + 24), appendTime: u64(bytes, position + 32),
                kind: u16(bytes, position + 40), flags: u16(bytes, position + 42), bodyCRC: u32(bytes, position + 44),
                chain: u32(bytes, position + 48), eventID: nil, file: name, position: position)
            let expectedChain = IndependentCRC32C.checksum(header.prefix(48), seed: state.chain)
            guard entry.chain == expectedChain else {
                return damage("the chained CRC is \(entry.chain), expected \(expectedChain)", tornIfLast: false)
            }
            guard entry.index == state.index + 1 else {
                return damage("index \(entry.index) does not follow \(state.index)", tornIfLast: false)
            }
            guard entry.term >= state.term else {
                return damage("term \(entry.term) after term \(state.term)", tornIfLast: false)
            }
            guard entry.flags == 0 else { return damage("flags \(entry.flags), expected 0", tornIfLast: false) }
            var decoded = entry
            switch entry.kind {
            case SegmentEntry.eventKind:
                guard entry.offset == state.nextOffset else {
                    return damage("event offset \(entry.offset), expected \(state.nextOffset)", tornIfLast: false)
                }
                guard let id = eventID(body) else {
                    return damage("an event body that does not decode", tornIfLast: false)
                }
                decoded.eventID = id
                state.nextOffset += 1
            case 2, 3:
                // A control entry takes no offset; its offset field is the one the next event takes.
                guard entry.offset == state.nextOffset else {
                    return damage(
                        "control entry (kind \(entry.kind)) offset \(entry.offset), expected \(state.nextOffset)",
                        tornIfLast: false)
                }
            default:
                return damage("unknown entry kind \(entry.kind)", tornIfLast: false)
            }
            log.entries.append(decoded)
            state.index = entry.index
            state.chain = entry.chain
            state.term = entry.term
            position = end
        }
        return true
    }

    /// The `id` attribute of an event body: `u8` codec version 1, `u8` optional-attribute bits, then `id` as a
    /// `u32` length and UTF-8.
    static func eventID(_ body: ArraySlice<UInt8>) -> String? {
        let start = body.startIndex
        guard body.count >= 6, body[start] == 1 else { return nil }
        let length = Int(u32(Array(body[(start + 2)..<(start + 6)]), 0))
        guard body.count >= 6 + length else { return nil }
        return String(validating: body[(start + 6)..<(start + 6 + length)], as: UTF8.self)
    }

    /// Little-endian integers at a byte position.
    static func u16(_ bytes: [UInt8], _ at: Int) -> UInt16 { UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8 }
    static func u32(_ bytes: [UInt8], _ at: Int) -> UInt32 {
        (0..<4).reduce(UInt32(0)) { $0 | UInt32(bytes[at + $1]) << (8 * UInt32($1)) }
    }
    static func u64(_ bytes: [UInt8], _ at: Int) -> UInt64 {
        (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[at + $1]) << (8 * UInt64($1)) }
    }
}
