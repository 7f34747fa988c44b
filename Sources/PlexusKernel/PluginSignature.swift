import Crypto
import Foundation

/// An Ed25519 signature over one plugin: the SHA-256 of its manifest file and of its library
/// (docs/operations.md, "Signed plugins").
///
/// The signed statement is three lines of text,
///
///     plexus-plugin-signature 1
///     manifest <sha256 of the manifest file, lowercase hex>
///     library <sha256 of the library file, lowercase hex>
///
/// and a signature file (`<manifest>.sig` beside a manifest, `SIGNATURE` in an archive) is the statement
/// followed by `key <base64 public key>` and `signature <base64 signature of the statement>`.
public struct PluginSignature: Sendable, Equatable {
    public static let header = "plexus-plugin-signature 1"

    public var manifestSHA256: String
    public var librarySHA256: String
    /// The raw 32-byte Ed25519 public key that made it.
    public var publicKey: [UInt8]
    /// The raw 64-byte Ed25519 signature of `statement`.
    public var signature: [UInt8]

    /// The bytes that are signed.
    public var statement: String {
        "\(Self.header)\nmanifest \(manifestSHA256)\nlibrary \(librarySHA256)\n"
    }

    /// The signature file's text.
    public var text: String {
        statement + "key \(Data(publicKey).base64EncodedString())\nsignature \(Data(signature).base64EncodedString())\n"
    }

    /// Signs a manifest and a library, given their SHA-256 digests.
    public static func sign(manifestSHA256: String, librarySHA256: String, with key: SigningKey) throws
        -> PluginSignature
    {
        var result = PluginSignature(
            manifestSHA256: manifestSHA256, librarySHA256: librarySHA256, publicKey: key.publicKey, signature: [])
        let privateKey = try Curve25519.Signing.PrivateKey(rawRepresentation: key.privateKey)
        result.signature = Array(try privateKey.signature(for: Data(result.statement.utf8)))
        return result
    }

    /// SHA-256 of `bytes`, lowercase hex.
    public static func sha256(_ bytes: [UInt8]) -> String {
        SHA256.hash(data: bytes).map { String(format: "%02x", $0) }.joined()
    }

    /// Whether `signature` is the signature of `statement` by `publicKey`.
    public var isValid: Bool {
        guard let key = try? Curve25519.Signing.PublicKey(rawRepresentation: publicKey) else { return false }
        return key.isValidSignature(Data(signature), for: Data(statement.utf8))
    }

    /// Reads a signature file.
    /// - Throws: `KernelError` (`signature-invalid`) naming `subject` and what is wrong.
    public static func parse(_ text: String, subject: String) throws -> PluginSignature {
        func fail(_ message: String) -> KernelError { KernelError(.signatureInvalid, subject: subject, message) }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        guard lines.count >= 5, lines[0] == header else {
            throw fail("is not a plugin signature (expected the first line '\(header)' and five lines in all)")
        }
        func value(_ index: Int, _ name: String) throws -> String {
            let prefix = name + " "
            guard lines[index].hasPrefix(prefix) else { throw fail("line \(index + 1) should start with '\(name) '") }
            return String(lines[index].dropFirst(prefix.count))
        }
        func digest(_ index: Int, _ name: String) throws -> String {
            let hex = try value(index, name)
            guard hex.count == 64, hex.allSatisfy({ $0.isHexDigit && !$0.isUppercase }) else {
                throw fail("the \(name) digest is not 64 lowercase hex digits")
            }
            return hex
        }
        func base64(_ index: Int, _ name: String, bytes: Int) throws -> [UInt8] {
            guard let data = Data(base64Encoded: try value(index, name)), data.count == bytes else {
                throw fail("the \(name) is not \(bytes) bytes of base64")
            }
            return Array(data)
        }
        guard lines.dropFirst(5).allSatisfy(\.isEmpty) else { throw fail("has lines after the signature") }
        return PluginSignature(
            manifestSHA256: try digest(1, "manifest"), librarySHA256: try digest(2, "library"),
            publicKey: try base64(3, "key", bytes: 32), signature: try base64(4, "signature", bytes: 64))
    }
}

/// An Ed25519 key pair for signing plugins, as `plexus plugin keygen` writes it.
public struct SigningKey: Sendable {
    public static let privateHeader = "plexus-ed25519-private-key"
    public static let publicHeader = "plexus-ed25519-public-key"

    public var privateKey: [UInt8]
    public var publicKey: [UInt8]

    public static func generate() -> SigningKey {
        let key = Curve25519.Signing.PrivateKey()
        return SigningKey(privateKey: Array(key.rawRepresentation), publicKey: Array(key.publicKey.rawRepresentation))
    }

    /// The private key file's text (keep it secret: mode 0600).
    public var privateText: String { "\(Self.privateHeader) \(Data(privateKey).base64EncodedString())\n" }
    /// The public key file's text; its second word is what `security.trustedKeys` lists.
    public var publicText: String { "\(Self.publicHeader) \(Data(publicKey).base64EncodedString())\n" }

    /// Reads a private key file.
    /// - Throws: `KernelError` (`signature-invalid`) when it is not one.
    public static func parsePrivate(_ text: String, subject: String) throws -> SigningKey {
        let words = text.split(whereSeparator: \.isWhitespace)
        guard words.count == 2, words[0] == privateHeader, let raw = Data(base64Encoded: String(words[1])),
            raw.count == 32, let key = try? Curve25519.Signing.PrivateKey(rawRepresentation: raw)
        else {
            throw KernelError(
                .signatureInvalid, subject: subject,
                "is not a private key file ('\(privateHeader) <32 bytes of base64>'; see plexus plugin keygen)")
        }
        return SigningKey(privateKey: Array(raw), publicKey: Array(key.publicKey.rawRepresentation))
    }

    /// The base64 public key of a public key file (`plexus-ed25519-public-key KEY`) or of a bare key.
    public static func publicKey(fromText text: String) -> [UInt8]? {
        let words = text.split(whereSeparator: \.isWhitespace)
        let encoded = words.count == 2 && words[0] == publicHeader ? words[1] : words.count == 1 ? words[0] : nil
        guard let encoded, let raw = Data(base64Encoded: String(encoded)), raw.count == 32 else { return nil }
        return Array(raw)
    }
}

/// What a node trusts (`security` in the node file): the keys whose signatures it accepts, and whether every
/// plugin must be signed by one of them.
public struct PluginTrust: Sendable, Equatable {
    public var trustedKeys: [[UInt8]] = []
    public var requireSigned = false

    public init(trustedKeys: [[UInt8]] = [], requireSigned: Bool = false) {
        self.trustedKeys = trustedKeys
        self.requireSigned = requireSigned
    }

    /// Checks the signature beside `manifest` (`<manifest>.sig`) against the manifest file's and the library's
    /// digests: the digests of the very bytes the node parsed and maps. A signature file that is present is
    /// always checked (a bad one is never ignored); its key must be trusted when signatures are required.
    /// - Returns: the signature, when there is one.
    /// - Throws: `KernelError` (`signature-missing`, `signature-invalid`, `signature-untrusted`).
    @discardableResult
    public func check(_ manifest: Manifest, librarySHA256: String) throws -> PluginSignature? {
        let path = manifest.path + ".sig"
        guard FileManager.default.fileExists(atPath: path) else {
            guard !requireSigned else {
                throw KernelError(
                    .signatureMissing, subject: manifest.path,
                    "has no signature (\(path)), and this node requires signed plugins (security.requireSigned); sign it with `plexus plugin sign` or install a signed archive"
                )
            }
            return nil
        }
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw KernelError(.signatureInvalid, subject: path, "cannot be read: \(error.localizedDescription)")
        }
        let signature = try PluginSignature.parse(text, subject: path)
        let manifestSHA256 = manifest.fileBytes.map(PluginSignature.sha256) ?? "none (not read from a file)"
        guard signature.manifestSHA256 == manifestSHA256 else {
            throw KernelError(
                .signatureInvalid, subject: path,
                "signs a manifest with sha256 \(signature.manifestSHA256), but \(manifest.path) has \(manifestSHA256); the manifest changed after it was signed"
            )
        }
        guard signature.librarySHA256 == librarySHA256 else {
            throw KernelError(
                .signatureInvalid, subject: path,
                "signs a library with sha256 \(signature.librarySHA256), but the library has \(librarySHA256); the library changed after it was signed"
            )
        }
        guard signature.isValid else {
            throw KernelError(.signatureInvalid, subject: path, "the signature does not verify with its key")
        }
        if requireSigned, !trustedKeys.contains(signature.publicKey) {
            throw KernelError(
                .signatureUntrusted, subject: path,
                "is signed by key \(Data(signature.publicKey).base64EncodedString()), which is not in security.trustedKeys"
            )
        }
        return signature
    }
}
