import CStorageIO

/// CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of iSCSI, ext4 and RocksDB: with the
/// CPU's instruction where it has one (x86-64 SSE4.2, the AArch64 CRC extension; about eight times faster),
/// else eight bytes per step with eight 256-entry tables (slicing-by-8). Both give the same values.
///
/// `CRC32C.checksum(bytes)` is the standard value (`"123456789"` → `0xE3069283`); passing an earlier result
/// as `seed` continues a running checksum, so `checksum(b, seed: checksum(a)) == checksum(a + b)`.
public enum CRC32C {
    /// `table[k * 256 + b]`: the CRC of byte `b` followed by `k` zero bytes. Built once, never freed or
    /// written afterwards, so reading it from any thread is safe.
    nonisolated(unsafe) private static let table: UnsafePointer<UInt32> = {
        let table = UnsafeMutablePointer<UInt32>.allocate(capacity: 8 * 256)
        for byte in 0..<256 {
            var crc = UInt32(byte)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1 }
            table[byte] = crc
        }
        for k in 1..<8 {
            for byte in 0..<256 {
                let previous = table[(k - 1) * 256 + byte]
                table[k * 256 + byte] = (previous >> 8) ^ table[Int(previous & 0xFF)]
            }
        }
        return UnsafePointer(table)
    }()

    /// Whether the CPU's instruction is used (checked once).
    public static let hardware = plexus_crc32c_hardware() != 0

    /// The CRC-32C of `bytes`, continuing from `seed` (the result of an earlier call, or 0 to start).
    public static func checksum(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return seed }
        if hardware { return ~plexus_crc32c_update(~seed, base, bytes.count) }
        return portable(bytes, seed: seed)
    }

    /// The table-driven computation (what `checksum` does on a CPU without the instruction).
    public static func portable(_ bytes: UnsafeRawBufferPointer, seed: UInt32 = 0) -> UInt32 {
        guard var p = bytes.baseAddress, !bytes.isEmpty else { return seed }
        let t = table
        var crc = ~seed
        var remaining = bytes.count
        while remaining >= 8 {
            let word = p.loadUnaligned(as: UInt64.self).littleEndian ^ UInt64(crc)
            crc =
                t[7 * 256 + Int(word & 0xFF)] ^ t[6 * 256 + Int((word >> 8) & 0xFF)]
                ^ t[5 * 256 + Int((word >> 16) & 0xFF)] ^ t[4 * 256 + Int((word >> 24) & 0xFF)]
                ^ t[3 * 256 + Int((word >> 32) & 0xFF)] ^ t[2 * 256 + Int((word >> 40) & 0xFF)]
                ^ t[256 + Int((word >> 48) & 0xFF)] ^ t[Int(word >> 56)]
            p += 8
            remaining -= 8
        }
        while remaining > 0 {
            crc = (crc >> 8) ^ t[Int((crc ^ UInt32(p.load(as: UInt8.self))) & 0xFF)]
            p += 1
            remaining -= 1
        }
        return ~crc
    }

    /// The CRC-32C of a byte array, continuing from `seed`.
    public static func checksum(_ bytes: [UInt8], seed: UInt32 = 0) -> UInt32 {
        bytes.withUnsafeBytes { checksum($0, seed: seed) }
    }
}
