import Foundation
import Testing

@testable import PlexusKernel

/// The plugin archive format and signatures, without a node.
@Suite("Plugin archives and signatures")
struct PluginArchiveTests {
    static let manifest = Array("manifest: 1\nname: x\nversion: 1.0.0\nkind: connector\nlibrary: libx.so\n".utf8)
    static let library = (0..<3000).map { UInt8(truncatingIfNeeded: $0 &* 7) }

    static func expectCode(_ code: KernelError.Code, _ bytes: [UInt8], _ context: String) {
        do {
            _ = try PluginArchive.decode(bytes, subject: "a.pxp")
            Issue.record("\(context): accepted")
        } catch let error as KernelError {
            #expect(error.code == code, "\(context): \(error)")
        } catch {
            Issue.record("\(context): \(error)")
        }
    }

    @Test func signedAndUnsignedArchivesRoundTrip() throws {
        let key = SigningKey.generate()
        var archive = PluginArchive(manifest: Self.manifest, libraryName: "libx.so", library: Self.library)
        #expect(try PluginArchive.decode(archive.encoded(), subject: "a") == archive)
        archive.signature = try PluginSignature.sign(
            manifestSHA256: archive.manifestSHA256, librarySHA256: archive.librarySHA256, with: key)
        let decoded = try PluginArchive.decode(archive.encoded(), subject: "a")
        #expect(decoded == archive)
        #expect(decoded.signature?.publicKey == key.publicKey)
        #expect(decoded.signature?.isValid == true)
        #expect(try PluginSignature.parse(archive.signature!.text, subject: "s") == archive.signature)
        #expect(try SigningKey.parsePrivate(key.privateText, subject: "k").publicKey == key.publicKey)
        #expect(SigningKey.publicKey(fromText: key.publicText) == key.publicKey)
    }

    @Test func damagedArchivesAreRefusedNamingWhy() throws {
        let key = SigningKey.generate()
        var archive = PluginArchive(manifest: Self.manifest, libraryName: "libx.so", library: Self.library)
        archive.signature = try PluginSignature.sign(
            manifestSHA256: archive.manifestSHA256, librarySHA256: archive.librarySHA256, with: key)
        let good = archive.encoded()

        Self.expectCode(.archiveInvalid, Array(good.prefix(700)), "truncated")
        Self.expectCode(.archiveInvalid, Array(good.dropLast(1024)), "without the closing blocks")
        var flipped = good
        flipped[512 + 10] ^= 1  // a manifest byte: SHA256SUMS no longer matches
        Self.expectCode(.archiveInvalid, flipped, "a changed manifest")
        var padded = good
        padded[512 + 500] = 1  // after the manifest, in its block's padding
        Self.expectCode(.archiveInvalid, padded, "bytes hidden in padding")
        var header = good
        header[10] ^= 1  // the first header's name: its checksum no longer matches
        Self.expectCode(.archiveInvalid, header, "a damaged header")

        var other = archive
        other.library[0] ^= 1  // sums recomputed by encoded(); the signature still signs the old library
        Self.expectCode(.signatureInvalid, other.encoded(), "a library changed after signing")
        var forged = archive
        forged.signature?.signature[0] ^= 1
        Self.expectCode(.signatureInvalid, forged.encoded(), "a forged signature")

        for name in ["../libx.so", "dir/libx.so", "", "SIGNATURE"] {
            let renamed = PluginArchive(manifest: Self.manifest, libraryName: name, library: Self.library)
            Self.expectCode(.archiveInvalid, renamed.encoded(), "library named '\(name)'")
        }
        // A symbolic link where the library belongs: type '2' with the checksum made right.
        var link = PluginArchive(manifest: Self.manifest, libraryName: "libx.so", library: []).encoded()
        let second = 512 + 512
        link[second + 156] = UInt8(ascii: "2")
        var sum = 0
        for i in 0..<512 { sum += (148..<156).contains(i) ? 0x20 : Int(link[second + i]) }
        for (i, byte) in (String(sum, radix: 8).leftPadded(to: 6) + "\0 ").utf8.enumerated() {
            link[second + 148 + i] = byte
        }
        Self.expectCode(.archiveInvalid, link, "a symbolic link")
    }

    @Test func signatureFilesAreReadStrictly() throws {
        let key = SigningKey.generate()
        let signature = try PluginSignature.sign(
            manifestSHA256: String(repeating: "a", count: 64), librarySHA256: String(repeating: "b", count: 64),
            with: key)
        for (broken, why) in [
            (signature.text.replacingOccurrences(of: "plexus-plugin-signature 1", with: "x"), "header"),
            (signature.text.replacingOccurrences(of: String(repeating: "a", count: 64), with: "A"), "digest"),
            (signature.text + "more\n", "trailing line"),
            (String(signature.text.prefix(40)), "truncated"),
        ] {
            #expect(throws: KernelError.self, "\(why)") { try PluginSignature.parse(broken, subject: "s") }
        }
    }

    @Test func theNodeFileSecuritySectionIsValidated() throws {
        let key = Data(SigningKey.generate().publicKey).base64EncodedString()
        let config = try NodeConfig.parse(
            "security: {requireSigned: true, trustedKeys: [\(key)]}\n", path: "n.yaml", baseDirectory: "/")
        #expect(config.requireSigned)
        #expect(config.trustedKeys.count == 1)
        for text in [
            "security: {requireSigned: true}\n", "security: {trustedKeys: [notakey]}\n", "security: {other: 1}\n",
        ] {
            #expect(throws: KernelError.self, "\(text)") {
                try NodeConfig.parse(text, path: "n.yaml", baseDirectory: "/")
            }
        }
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
