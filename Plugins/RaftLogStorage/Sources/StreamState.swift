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
        var bytes: [UInt8] = []
        func put<T: FixedWidthInteger>(_ value: T) { withUnsafeBytes(of: value.littleEndian) { bytes += $0 } }
        put(Self.magic)
        put(UInt16(1))
        put(UInt16(0))
        put(trimmedBefore)
        put(UInt32(committed.count))
        for (group, offset) in committed.sorted(by: { $0.key < $1.key }) {
            put(UInt32(group.utf8.count))
            bytes += group.utf8
            put(offset)
        }
        put(CRC32C.checksum(bytes))
        return bytes
    }

    /// Decodes a state file.
    /// - Throws: `LogFormatError` saying what is wrong.
    static func decode(_ bytes: [UInt8]) throws -> StreamState {
        try bytes.withUnsafeBytes { raw in
            guard raw.count >= 24 else { throw LogFormatError("the state file is cut short (\(raw.count) bytes)") }
            let body = UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 4)])
            guard raw.loadLE(UInt32.self, at: raw.count - 4) == CRC32C.checksum(body) else {
                throw LogFormatError("the state file's CRC is wrong")
            }
            guard raw.loadLE(UInt32.self, at: 0) == magic, raw.loadLE(UInt16.self, at: 4) == 1 else {
                throw LogFormatError("not a version 1 state file")
            }
            var state = StreamState(trimmedBefore: raw.loadLE(UInt64.self, at: 8))
            let count = Int(raw.loadLE(UInt32.self, at: 16))
            var position = 20
            for _ in 0..<count {
                guard position + 4 <= body.count else { throw LogFormatError("the state file ends early") }
                let length = Int(raw.loadLE(UInt32.self, at: position))
                position += 4
                guard position + length + 8 <= body.count else { throw LogFormatError("the state file ends early") }
                let group = String(
                    decoding: UnsafeRawBufferPointer(rebasing: raw[position..<(position + length)]), as: UTF8.self)
                position += length
                state.committed[group] = raw.loadLE(UInt64.self, at: position)
                position += 8
            }
            guard position == body.count else { throw LogFormatError("the state file has trailing bytes") }
            return state
        }
    }
}
