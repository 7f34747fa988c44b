import Foundation

/// A plugin packed for distribution (`plexus plugin pack`): a POSIX ustar archive — `tar -tf` lists it — of
/// exactly these regular files, in this order:
///
/// - `manifest.yaml`: the plugin's manifest; its `library` is a bare file name;
/// - that library;
/// - `SHA256SUMS`: `<sha256>  manifest.yaml` and `<sha256>  <library>`, as `sha256sum` writes them;
/// - `SIGNATURE` (optional): a `PluginSignature` file over the two digests.
///
/// The reader takes nothing else: no directories, links, paths or other names, no member twice, every header
/// checksum right, padding zero, every digest right. (ustar is written and read here rather than through a library: the
/// subset is a page of code, and a general extractor's features — paths, links, devices — are exactly what
/// an archive from outside must not get.)
public struct PluginArchive: Sendable, Equatable {
    /// The largest archive a node or the CLI reads.
    public static let maxBytes = 512 << 20

    public static let manifestName = "manifest.yaml"
    public static let sumsName = "SHA256SUMS"
    public static let signatureName = "SIGNATURE"

    public var manifest: [UInt8]
    public var libraryName: String
    public var library: [UInt8]
    public var signature: PluginSignature?

    public init(manifest: [UInt8], libraryName: String, library: [UInt8], signature: PluginSignature? = nil) {
        self.manifest = manifest
        self.libraryName = libraryName
        self.library = library
        self.signature = signature
    }

    public var manifestSHA256: String { PluginSignature.sha256(manifest) }
    public var librarySHA256: String { PluginSignature.sha256(library) }

    /// `SHA256SUMS`'s text.
    public var sums: String { "\(manifestSHA256)  \(Self.manifestName)\n\(librarySHA256)  \(libraryName)\n" }

    /// Whether `name` can be a library member: a plain file name, no path.
    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name != "." && name != ".." && !name.contains("/") && name.utf8.count <= 99
            && !name.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
            && ![manifestName, sumsName, signatureName].contains(name)
    }

    // MARK: Writing

    /// The archive's bytes.
    public func encoded() -> [UInt8] {
        var out: [UInt8] = []
        Self.append(Self.manifestName, manifest, to: &out)
        Self.append(libraryName, library, to: &out)
        Self.append(Self.sumsName, Array(sums.utf8), to: &out)
        if let signature { Self.append(Self.signatureName, Array(signature.text.utf8), to: &out) }
        out += [UInt8](repeating: 0, count: 1024)
        return out
    }

    private static func append(_ name: String, _ content: [UInt8], to out: inout [UInt8]) {
        var header = [UInt8](repeating: 0, count: 512)
        func put(_ text: String, at offset: Int) {
            for (i, byte) in text.utf8.enumerated() { header[offset + i] = byte }
        }
        func octal(_ value: Int, width: Int) -> String {
            let digits = String(value, radix: 8)
            return String(repeating: "0", count: width - 1 - digits.count) + digits
        }
        put(name, at: 0)
        put(octal(0o644, width: 8), at: 100)
        put(octal(0, width: 8), at: 108)
        put(octal(0, width: 8), at: 116)
        put(octal(content.count, width: 12), at: 124)
        put(octal(0, width: 12), at: 136)
        header[156] = UInt8(ascii: "0")
        put("ustar", at: 257)
        put("00", at: 263)
        for i in 148..<156 { header[i] = UInt8(ascii: " ") }
        let sum = header.reduce(0) { $0 + Int($1) }
        put(octal(sum, width: 7), at: 148)
        header[155] = UInt8(ascii: " ")
        out += header
        out += content
        out += [UInt8](repeating: 0, count: (512 - content.count % 512) % 512)
    }

    // MARK: Reading

    /// Reads an archive and checks it: its layout, its sums, and — when it has one — that its signature signs
    /// these two digests and verifies with its key. Whether that key is trusted is the node's decision.
    /// - Throws: `KernelError` (`archive-invalid` or `signature-invalid`) naming `subject`.
    public static func decode(_ bytes: [UInt8], subject: String) throws -> PluginArchive {
        func fail(_ message: String) -> KernelError { KernelError(.archiveInvalid, subject: subject, message) }
        guard bytes.count <= maxBytes else { throw fail("is larger than \(maxBytes) bytes") }
        var members: [(name: String, content: [UInt8])] = []
        var offset = 0
        while true {
            guard offset + 512 <= bytes.count else {
                throw fail("ends at byte \(bytes.count) without the two zero blocks that close a tar archive")
            }
            let header = bytes[offset..<offset + 512]
            if header.allSatisfy({ $0 == 0 }) { break }
            let member = try readHeader(header, at: offset, fail: fail)
            let start = offset + 512
            guard member.size <= bytes.count - start else {
                throw fail("member '\(member.name)' at byte \(offset) announces \(member.size) bytes, past the end")
            }
            members.append((member.name, Array(bytes[start..<start + member.size])))
            offset = start + (member.size + 511) / 512 * 512
            guard offset <= bytes.count, bytes[start + member.size..<offset].allSatisfy({ $0 == 0 }) else {
                throw fail("member '\(member.name)' is not followed by zero padding to its 512-byte block")
            }
        }
        let names = members.map(\.name)
        guard names.count == 3 || names.count == 4, names[0] == manifestName, isPlainName(names[1]),
            names[2] == sumsName, names.count == 3 || names[3] == signatureName
        else {
            throw fail(
                "holds \(names.map { "'\($0)'" }.joined(separator: ", ")); expected \(manifestName), the library, \(sumsName) and optionally \(signatureName), in that order"
            )
        }
        var archive = PluginArchive(manifest: members[0].content, libraryName: names[1], library: members[1].content)
        guard String(decoding: members[2].content, as: UTF8.self) == archive.sums,
            members[2].content.count == archive.sums.utf8.count
        else {
            throw fail(
                "\(sumsName) does not match the files: expected\n\(archive.sums)got\n\(String(decoding: members[2].content, as: UTF8.self))"
            )
        }
        if names.count == 4 {
            guard let text = String(validating: members[3].content, as: UTF8.self) else {
                throw KernelError(.signatureInvalid, subject: subject + "!" + signatureName, "is not UTF-8 text")
            }
            let signature = try PluginSignature.parse(text, subject: subject + "!" + signatureName)
            guard signature.manifestSHA256 == archive.manifestSHA256,
                signature.librarySHA256 == archive.librarySHA256
            else {
                throw KernelError(
                    .signatureInvalid, subject: subject + "!" + signatureName,
                    "signs other files than the archive holds (manifest \(signature.manifestSHA256), library \(signature.librarySHA256))"
                )
            }
            guard signature.isValid else {
                throw KernelError(
                    .signatureInvalid, subject: subject + "!" + signatureName,
                    "the signature does not verify with its key")
            }
            archive.signature = signature
        }
        return archive
    }

    private static func readHeader(
        _ header: ArraySlice<UInt8>, at offset: Int, fail: (String) -> KernelError
    ) throws -> (name: String, size: Int) {
        let base = header.startIndex
        func field(_ start: Int, _ length: Int) -> ArraySlice<UInt8> {
            let slice = header[base + start..<base + start + length]
            return slice.prefix { $0 != 0 }
        }
        func octal(_ start: Int, _ length: Int, _ what: String) throws -> Int {
            let text = String(decoding: field(start, length), as: UTF8.self).trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty, text.count <= 11, let value = Int(text, radix: 8), value >= 0 else {
                throw fail("the header at byte \(offset) has no valid octal \(what)")
            }
            return value
        }
        var sum = 0
        for (i, byte) in header.enumerated() { sum += (148..<156).contains(i) ? 0x20 : Int(byte) }
        guard try octal(148, 8, "checksum") == sum else { throw fail("the header at byte \(offset) is damaged") }
        guard let name = String(validating: field(0, 100), as: UTF8.self), field(345, 155).isEmpty else {
            throw fail("the member at byte \(offset) has a name that is not a plain UTF-8 file name")
        }
        let type = header[base + 156]
        guard type == UInt8(ascii: "0") || type == 0 else {
            throw fail("member '\(name)' is not a regular file (type '\(Character(UnicodeScalar(type)))')")
        }
        return (name, try octal(124, 12, "size"))
    }
}
