import Foundation
import LedgerCore
import PlexusPluginSDK

/// A stream's metadata (JSON under `ledgers/streams/<name>`): its ledgers in order, each with the offset of its
/// entry 0, and the offset below which it was trimmed.
struct StreamMetadata: Codable, Equatable {
    struct LedgerRef: Codable, Equatable {
        var id: UInt64
        /// The stream offset of the ledger's entry 0.
        var firstOffset: UInt64
        /// Its last entry once closed (-1: empty); -1 while open.
        var lastEntry: Int64
        var closed: Bool
        /// The payload bytes of its entries, once closed.
        var bytes: UInt64
        /// Unix time in milliseconds when it was closed (0 while open).
        var closedMilliseconds: UInt64

        /// The offset after its last entry, once closed.
        var endOffset: UInt64 { firstOffset + UInt64(lastEntry + 1) }
    }

    var ledgers: [LedgerRef] = []
    var trimmedBefore: UInt64 = 0

    func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(self)) ?? Data())
    }

    static func decode(_ bytes: [UInt8], key: String) throws -> StreamMetadata {
        do {
            return try JSONDecoder().decode(StreamMetadata.self, from: Data(bytes))
        } catch {
            throw PluginError(PX_ERR_INTERNAL, "ledger-storage: metadata key '\(key)' is not stream metadata: \(error)")
        }
    }
}

/// The metadata store's keys (shared by every plugin of a node: all under `ledgers/`).
enum MetadataKeys {
    static let ledgerPrefix = "ledgers"
    static let streamPrefix = "ledgers/streams/"
    static let offsetPrefix = "ledgers/offsets/"

    static func stream(_ name: String) -> String { streamPrefix + escape(name) }
    static func offsets(_ stream: String) -> String { offsetPrefix + escape(stream) + "/" }
    static func offset(_ stream: String, _ group: String) -> String { offsets(stream) + escape(group) }

    /// A name as one key segment: bytes other than letters, digits, `-`, `_` and `.` as `%XX`.
    static func escape(_ name: String) -> String {
        var out = ""
        for byte in name.utf8 {
            let c = Character(Unicode.Scalar(byte))
            if byte < 0x80 && (c.isLetter || c.isNumber || c == "-" || c == "_" || c == ".") {
                out.append(c)
            } else {
                out +=
                    "%" + String(byte >> 4, radix: 16, uppercase: true) + String(byte & 15, radix: 16, uppercase: true)
            }
        }
        return out
    }

    static func unescape(_ segment: Substring) -> String {
        var bytes: [UInt8] = []
        var index = segment.startIndex
        while index < segment.endIndex {
            if segment[index] == "%", let end = segment.index(index, offsetBy: 3, limitedBy: segment.endIndex),
                let byte = UInt8(segment[segment.index(after: index)..<end], radix: 16)
            {
                bytes.append(byte)
                index = end
            } else {
                bytes.append(contentsOf: String(segment[index]).utf8)
                index = segment.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension LedgerError {
    /// The plugin error a ledger failure reports to the kernel.
    var pluginError: PluginError {
        let status: px_status_code
        switch code {
        case .fenced, .closed, .conflict: status = PX_ERR_FAILED_PRECONDITION
        case .noSuchEntry, .noSuchLedger, .deleted: status = PX_ERR_NOT_FOUND
        case .invalidArgument: status = PX_ERR_INVALID_ARGUMENT
        case .notEnoughBookies, .stopped, .bookieUnavailable: status = PX_ERR_UNAVAILABLE
        case .corrupt: status = PX_ERR_CORRUPTION
        case .io: status = PX_ERR_IO
        }
        return PluginError(status, "ledger-storage: \(message)")
    }
}
