import Glibc
import PlexusPluginSDK
import RaftCore

// A libFuzzer target for raft-log's readers of its own files (Plugins/RaftLogStorage): segment headers, the
// scan of a segment's entries (`Segment.scan`, what recovery runs at every start), event bodies
// (`EventCodec.check` and `layOut`, what a read runs), the `state` and `raft` files and the membership
// encoding. Bytes on a disk can be anything after a fault; the readers must report damage, never trap or read
// out of bounds (AddressSanitizer watches the mapped and copied bytes). The first input byte picks the reader:
//
// - 0: the rest is a segment file as it lies on disk;
// - 1: the rest describes entries (kind, body) that the target writes as a well-formed segment, then flips
//   the bit the input's last four bytes name: the scan must keep exactly the entries before the flipped one;
// - 2: an event body, read as the read path reads it (`check`, then `layOut`): one `check` accepts must lay
//   out, and re-encode to the same bytes;
// - 3, 4: the body of a `state` or `raft` file, sealed with a right CRC (and the raw bytes unsealed); a file
//   that decodes must decode again, equal, from its re-encoding;
// - 5: a membership, which must round-trip the same way.

/// Where the target writes segment files (in `TMPDIR`): one per process, rewritten for every input.
let segmentPath = (getenv("TMPDIR").map { String(cString: $0) } ?? P_tmpdir) + "/plexus-fuzz-raft-log-\(getpid()).seg"

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let rest = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    switch data[0] % 6 {
    case 0: _ = scanFile(rest)
    case 1: checkFramed(rest)
    case 2: checkEventBody(rest)
    case 3: checkStreamState(rest)
    case 4: checkRaftState(rest)
    default: checkMembership(rest)
    }
    return 0
}

/// What a scan of a segment file found.
struct Scan {
    var header: SegmentHeader
    var entries: Int
    var damage: Segment.Damage?
}

/// Writes `file` as a segment and scans it as recovery does, checking what the scan reports against the bytes.
/// - Returns: `nil` when the header does not decode.
func scanFile(_ file: [UInt8]) -> Scan? {
    let header: SegmentHeader
    switch file.withUnsafeBytes({ SegmentHeader.decode(UnsafeRawBufferPointer(rebasing: $0.prefix(64))) }) {
    case .failure(let error):
        guard !error.description.isEmpty else { finding("a header error without a reason") }
        return nil
    case .success(let decoded): header = decoded
    }
    // Bytes 36..<60 are reserved (zero when written, covered by the CRC, ignored when read).
    guard header.encoded().prefix(36) == file.prefix(36) else {
        finding("segment header \(header) re-encodes to other bytes")
    }
    unlink(segmentPath)
    let damage: Segment.Damage?
    var segment: Segment
    do {
        let created = try OpenFile(path: segmentPath, create: true)
        try created.write(file, at: 0)
        segment = Segment(file: created, header: header)
        damage = try segment.scan()
    } catch {
        finding("I/O on \(segmentPath) failed: \(error)")
    }
    defer { unlink(segmentPath) }
    let end = damage?.position ?? file.count
    guard end >= LogFormat.segmentHeaderSize, end <= file.count, segment.size == end else {
        finding(
            "a scan of \(file.count) bytes ends at \(end), size \(segment.size), damage \(String(describing: damage))")
    }
    if let damage, damage.reason.isEmpty { finding("damage without a reason") }
    guard segment.nextIndex == header.baseIndex + UInt64(segment.positions.count) else {
        finding("\(segment.positions.count) entries from base \(header.baseIndex) but next index \(segment.nextIndex)")
    }
    // Every entry kept is whole, in order, and re-reads from the bytes as the read path reads it.
    var position = LogFormat.segmentHeaderSize
    for (ordinal, start) in segment.positions.enumerated() {
        guard Int(start) == position else { finding("entry \(ordinal) at \(start), expected at \(position)") }
        let entry = file.withUnsafeBytes { raw -> EntryHeader? in
            EntryHeader.decode(UnsafeRawBufferPointer(rebasing: raw[position...]))
        }
        guard let entry else { finding("a kept entry at \(position) does not decode") }
        let bodyStart = position + LogFormat.entryHeaderSize
        position = bodyStart + Int(entry.bodyLength)
        guard position <= end else { finding("a kept entry ends at \(position), past \(end)") }
        if entry.kind == LogFormat.Kind.event.rawValue { checkEventBody(Array(file[bodyStart..<position])) }
        if entry.kind == LogFormat.Kind.membership.rawValue { checkMembership(Array(file[bodyStart..<position])) }
    }
    guard position == end else { finding("kept entries end at \(position), the scan at \(end)") }
    return Scan(header: header, entries: segment.positions.count, damage: damage)
}

/// Writes the entries the input describes as a well-formed segment, flips one bit, and checks that the scan
/// keeps exactly the entries before the flipped bit (all of them without a flip).
func checkFramed(_ input: [UInt8]) {
    guard input.count >= 20 else { return }
    func u64(_ at: Int) -> UInt64 { input[at..<(at + 8)].reversed().reduce(0) { $0 << 8 | UInt64($1) } }
    // Bases kept clear of the top of the range, where an index or offset would overflow.
    var header = SegmentHeader(baseIndex: u64(0) >> 2, baseOffset: u64(8) >> 2, baseChain: 0x1234_5678)
    header.baseTerm = UInt64(input[16])
    let flip = input.suffix(4).reduce(0) { $0 << 8 | Int($1) }
    var file = header.encoded()
    var starts: [Int] = []
    var chain = header.baseChain
    var term = header.baseTerm
    var offset = header.baseOffset
    var position = 17
    while position + 2 <= input.count - 4 {
        let kind: LogFormat.Kind = [.event, .noop, .membership][Int(input[position] % 3)]
        if input[position] & 0x80 != 0 { term += 1 }
        let length = min(Int(input[position + 1]), input.count - 4 - position - 2)
        let body = Array(input[(position + 2)..<(position + 2 + length)])
        position += 2 + length
        var entry = EntryHeader(
            bodyLength: UInt32(body.count), term: term, index: header.baseIndex + UInt64(starts.count),
            offset: offset, appendTime: UInt64(starts.count), kind: kind.rawValue,
            bodyCRC: body.withUnsafeBytes { CRC32C.checksum($0) })
        starts.append(file.count)
        var bytes = [UInt8](repeating: 0, count: LogFormat.entryHeaderSize)
        chain = bytes.withUnsafeMutableBytes { entry.write(into: $0, at: 0, previousChain: chain) }
        file += bytes + body
        if kind == .event { offset += 1 }
    }
    let flipped = flip % (file.count * 8 + 1)
    // The last value means no flip.
    if flipped < file.count * 8 { file[flipped / 8] ^= 1 << (flipped % 8) }
    let scan = scanFile(file)
    guard flipped < file.count * 8 else {
        guard let scan, scan.damage == nil, scan.entries == starts.count else {
            finding("a well-formed segment of \(starts.count) entries scans as \(String(describing: scan))")
        }
        return
    }
    let byte = flipped / 8
    guard byte >= LogFormat.segmentHeaderSize else {
        guard scan == nil else { finding("a segment header with bit \(flipped) flipped decodes") }
        return
    }
    let damaged = starts.lastIndex { $0 <= byte }!
    guard let scan, let damage = scan.damage, damage.position == starts[damaged], scan.entries == damaged else {
        finding("bit \(flipped) flipped in entry \(damaged) of \(starts.count) scans as \(String(describing: scan))")
    }
}

/// An event body, read as the read path reads it: `check` first (which must refuse with a reason or count the
/// extensions), then `layOut` of a body `check` accepts, which must succeed with as many extensions and lay out
/// an event that encodes to the same bytes.
func checkEventBody(_ body: [UInt8]) {
    body.withUnsafeBytes { raw in
        let checked: Int
        do {
            checked = try EventCodec.check(raw)
        } catch let error as LogFormatError {
            guard !error.description.isEmpty else { finding("an event body error without a reason") }
            return
        } catch {
            finding("check threw \(error)")
        }
        var event = px_event()
        event.struct_size = UInt32(MemoryLayout<px_event>.size)
        var pairs: UnsafeMutableBufferPointer<px_kv>?
        defer { pairs?.deallocate() }
        do {
            try EventCodec.layOut(raw, into: &event) { count in
                guard count == checked else { finding("layOut saw \(count) extensions, check \(checked)") }
                pairs = .allocate(capacity: count)
                return pairs!
            }
        } catch {
            finding("layOut refuses a body check accepts: \(error)")
        }
        let encoded = withUnsafePointer(to: &event) { EventCodec.encode(EventView($0)) }
        guard encoded == body else { finding("an event body re-encodes to \(encoded), read from \(body)") }
    }
}

/// A `state` file body, sealed (and the input unsealed): one that decodes re-encodes to a file that decodes equal.
func checkStreamState(_ body: [UInt8]) {
    _ = try? StreamState.decode(body)
    let state: StreamState
    do {
        state = try StreamState.decode(SealedRecord.seal(magic: StreamState.magic, body))
    } catch is LogFormatError {
        return
    } catch {
        finding("StreamState.decode threw \(error)")
    }
    guard (try? StreamState.decode(state.encoded())) == state else { finding("\(state) does not round-trip") }
}

/// A `raft` file body, checked as `checkStreamState` checks a state file.
func checkRaftState(_ body: [UInt8]) {
    _ = try? RaftState.decode(body)
    let state: RaftState
    do {
        state = try RaftState.decode(SealedRecord.seal(magic: RaftState.magic, body))
    } catch is LogFormatError {
        return
    } catch {
        finding("RaftState.decode threw \(error)")
    }
    guard (try? RaftState.decode(state.encoded())) == state else { finding("\(state) does not round-trip") }
}

func checkMembership(_ bytes: [UInt8]) {
    guard let membership = Membership(decoding: bytes) else { return }
    guard Membership(decoding: membership.encoded()) == membership else {
        finding("\(membership) does not round-trip")
    }
}

@_cdecl("LLVMFuzzerInitialize")
public func initialize(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>
) -> CInt {
    let event = CloudEvent(
        id: "1", source: "/s", type: "t", datacontenttype: "text/plain", subject: "x", time: "2026-01-02T03:04:05Z",
        extensions: [("a", "b")], data: Array("hello".utf8))
    let body = event.withCEvent { EventCodec.encode(EventView($0)) }
    let members = Membership(members: [.init(id: "n1", address: "127.0.0.1:1"), .init(id: "n2", address: "h:2")])
    // A framed segment: an event, a no-op in a new term, a membership; no flip (the last four bytes).
    var framed: [UInt8] = [1] + [UInt8](repeating: 0, count: 16) + [1]
    framed += [0, UInt8(body.count)] + body + [0x81, 0] + [2, UInt8(members.encoded().count)] + members.encoded()
    framed += [0xFF, 0xFF, 0xFF, 0xFF]
    // The same segment as a file, written as the plugin writes it.
    var file = SegmentHeader(baseIndex: 1, baseOffset: 0, baseChain: 0).encoded()
    var chain: UInt32 = 0
    for (index, (kind, entryBody)) in [(LogFormat.Kind.event, body), (.membership, members.encoded())].enumerated() {
        var entry = EntryHeader(
            bodyLength: UInt32(entryBody.count), term: 1, index: UInt64(1 + index), offset: 0, appendTime: 7,
            kind: kind.rawValue, bodyCRC: entryBody.withUnsafeBytes { CRC32C.checksum($0) })
        var bytes = [UInt8](repeating: 0, count: LogFormat.entryHeaderSize)
        chain = bytes.withUnsafeMutableBytes { entry.write(into: $0, at: 0, previousChain: chain) }
        file += bytes + entryBody
    }
    let state = StreamState(trimmedBefore: 3, committed: ["g": 2, "h": 9]).encoded()
    let raft = RaftState(term: 4, votedFor: "n1", membershipIndex: 2, membership: members).encoded()
    writeSeeds([
        ("segment", [0] + file), ("framed", framed), ("event", [2] + body),
        ("state", [3] + state.dropFirst(8).dropLast(4)), ("raft", [4] + raft.dropFirst(8).dropLast(4)),
        ("membership", [5] + members.encoded()),
    ])
    return 0
}
