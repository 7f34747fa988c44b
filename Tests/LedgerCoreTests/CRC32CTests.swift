import StorageIO
import Testing

@Suite("CRC-32C")
struct CRC32CTests {
    @Test("the CPU's instruction and the tables agree: the standard check value, every length 0-300, unaligned starts, seeds")
    func hardwareMatchesTables() {
        let check = Array("123456789".utf8)
        #expect(CRC32C.checksum(check) == 0xE306_9283)
        #expect(check.withUnsafeBytes { CRC32C.portable($0) } == 0xE306_9283)
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }
        bytes.withUnsafeBytes { all in
            for length in 0...300 {
                for start in [0, 1, 3, 7] {
                    let slice = UnsafeRawBufferPointer(rebasing: all[start..<(start + length)])
                    let seed = UInt32(truncatingIfNeeded: length &* 2_654_435_761)
                    #expect(CRC32C.checksum(slice, seed: seed) == CRC32C.portable(slice, seed: seed))
                }
            }
            // A running checksum over parts equals the checksum of the whole.
            let whole = CRC32C.checksum(all)
            let parts = CRC32C.checksum(
                UnsafeRawBufferPointer(rebasing: all[1000...]),
                seed: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[..<1000])))
            #expect(parts == whole && whole == CRC32C.portable(all))
        }
        // Which computation ran is reported; on the CI's x86-64 machines it is the instruction.
        #if arch(x86_64)
            #expect(CRC32C.hardware, "an x86-64 CPU without SSE4.2")
        #endif
    }
}
