/// A stream's directory name: its name with every byte outside `A-Z a-z 0-9 - _ .` (and a leading `.`)
/// written as `%XX`, so any name maps to one directory and back.
enum StreamName {
    /// The longest directory name most Linux file systems accept.
    static let maxDirectoryBytes = 255

    static func escape(_ name: String) -> String {
        var out = ""
        for (index, byte) in name.utf8.enumerated() {
            let kept =
                (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || (byte >= 0x30 && byte <= 0x39)
                || byte == 0x2D || byte == 0x5F || (byte == 0x2E && index > 0)
            if kept {
                out.unicodeScalars.append(Unicode.Scalar(byte))
            } else {
                let hex = Array("0123456789ABCDEF".utf8)
                out += "%"
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte >> 4)]))
                out.unicodeScalars.append(Unicode.Scalar(hex[Int(byte & 0xF)]))
            }
        }
        return out
    }

    /// The name a directory stands for; `nil` when it is not an escaped name.
    static func unescape(_ directory: String) -> String? {
        var bytes: [UInt8] = []
        var iterator = directory.utf8.makeIterator()
        while let byte = iterator.next() {
            if byte == 0x25 {
                guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else {
                    return nil
                }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
        }
        let name = String(decoding: bytes, as: UTF8.self)
        return escape(name) == directory ? name : nil
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: return byte - 0x30
        case 0x41...0x46: return byte - 0x41 + 10
        default: return nil
        }
    }
}
