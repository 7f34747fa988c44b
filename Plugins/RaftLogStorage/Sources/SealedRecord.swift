import RaftCore

/// The frame of raft-log's small state files (`state`, `raft`, `commit`), each replaced whole by
/// `Files.replace`:
///
/// ```
/// u32 magic   u16 version (1)   u16 zero   body   u32 CRC-32C of everything before it
/// ```
enum SealedRecord {
    static func seal(magic: UInt32, _ body: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(body.count + 12)
        withUnsafeBytes(of: magic.littleEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt16(1).littleEndian) { bytes += $0 }
        withUnsafeBytes(of: UInt16(0).littleEndian) { bytes += $0 }
        bytes += body
        withUnsafeBytes(of: CRC32C.checksum(bytes).littleEndian) { bytes += $0 }
        return bytes
    }

    /// The body of a sealed record.
    /// - Throws: `LogFormatError` saying what is wrong with `what` (say, "the state file").
    static func open(_ bytes: [UInt8], magic: UInt32, what: String) throws -> [UInt8] {
        try bytes.withUnsafeBytes { raw in
            guard raw.count >= 12 else { throw LogFormatError("\(what) is cut short (\(raw.count) bytes)") }
            let sealed = UnsafeRawBufferPointer(rebasing: raw[0..<(raw.count - 4)])
            guard raw.loadLE(UInt32.self, at: raw.count - 4) == CRC32C.checksum(sealed) else {
                throw LogFormatError("\(what)'s CRC is wrong")
            }
            guard raw.loadLE(UInt32.self, at: 0) == magic, raw.loadLE(UInt16.self, at: 4) == 1 else {
                throw LogFormatError("\(what) is not of version 1 (or not this kind of file)")
            }
            return Array(raw[8..<(raw.count - 4)])
        }
    }
}
