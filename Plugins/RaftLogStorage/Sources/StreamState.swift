import RaftCore

/// What a stream keeps beside its segments, in its `state` file: the offset it was trimmed before and the
/// consumer groups' committed offsets. Rewritten whole and atomically (`Files.replace`) on every change.
///
/// ```
/// u32 magic "PXRS"   u16 version (1)   u16 zero   u64 trimmed-before offset   u32 group count
/// each group: u32 name length, UTF-8 name, u64 committed offset
/// u32 CRC-32C of everything before it
/// ```
struct StreamState: Equatable {
    static let magic: UInt32 = 0x5352_5850
    static let fileName = "state"

    /// Events below this offset are discarded, even when their segment still exists.
    var trimmedBefore: UInt64 = 0
    var committed: [String: UInt64] = [:]

    func encoded() -> [UInt8] {
        var body: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { body += $0 } }
        put(trimmedBefore)
        put(UInt32(committed.count))
        for (group, offset) in committed.sorted(by: { $0.key < $1.key }) {
            put(UInt32(group.utf8.count))
            body += group.utf8
            put(offset)
        }
        return SealedRecord.seal(magic: Self.magic, body)
    }

    /// Decodes a state file.
    /// - Throws: `LogFormatError` saying what is wrong.
    static func decode(_ bytes: [UInt8]) throws -> StreamState {
        let body = try SealedRecord.open(bytes, magic: magic, what: "the state file")
        return try body.withUnsafeBytes { raw in
            guard raw.count >= 12 else { throw LogFormatError("the state file is cut short") }
            var state = StreamState(trimmedBefore: raw.loadLE(UInt64.self, at: 0))
            let count = Int(raw.loadLE(UInt32.self, at: 8))
            var position = 12
            for _ in 0..<count {
                guard position + 4 <= raw.count else { throw LogFormatError("the state file ends early") }
                let length = Int(raw.loadLE(UInt32.self, at: position))
                position += 4
                guard position + length + 8 <= raw.count else { throw LogFormatError("the state file ends early") }
                let group = String(
                    decoding: UnsafeRawBufferPointer(rebasing: raw[position..<(position + length)]), as: UTF8.self)
                position += length
                state.committed[group] = raw.loadLE(UInt64.self, at: position)
                position += 8
            }
            guard position == raw.count else { throw LogFormatError("the state file has trailing bytes") }
            return state
        }
    }
}
