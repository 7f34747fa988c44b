import ArgumentParser
import Foundation
import PlexusKernel

/// Reading and writing the files of `plexus plugin keygen|pack|sign|verify` (docs/operations.md, "Signed
/// plugins"). Every failure is a `KernelError` naming the file; the commands print it and exit 2.
enum PluginArchiveFile {
    /// Whether `path` is a plugin archive: a ustar archive (`ustar` at byte 257) rather than a manifest.
    static func isArchive(_ path: String) -> Bool {
        guard let handle = FileHandle(forReadingAtPath: path) else { return false }
        defer { try? handle.close() }
        guard let head = try? handle.read(upToCount: 263), head.count == 263 else { return false }
        return Array(head[257..<262]) == Array("ustar".utf8)
    }

    static func read(_ path: String) throws -> [UInt8] {
        do {
            return Array(try Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw KernelError(.io, subject: path, "cannot be read: \(error.localizedDescription)")
        }
    }

    static func write(_ bytes: [UInt8], to path: String, mode: Int = 0o644) throws {
        do {
            try Data(bytes).write(to: URL(fileURLWithPath: path), options: .atomic)
            try FileManager.default.setAttributes([.posixPermissions: mode], ofItemAtPath: path)
        } catch {
            throw KernelError(.io, subject: path, "cannot be written: \(error.localizedDescription)")
        }
    }

    static func privateKey(_ path: String) throws -> SigningKey {
        try SigningKey.parsePrivate(String(decoding: try read(path), as: UTF8.self), subject: path)
    }

    /// The manifest at `path` and its library: beside it, else in `searchPath`.
    static func plugin(manifest path: String, searchPath: [String]) throws -> (Manifest, library: String) {
        let manifest = try ManifestParser.load(path: path)
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        let candidates =
            manifest.library.hasPrefix("/")
            ? [manifest.library]
            : ([directory] + searchPath).map {
                $0 + "/" + manifest.library
            }
        guard let library = candidates.first(where: FileManager.default.isReadableFile(atPath:)) else {
            throw KernelError(
                .libraryNotFound, subject: path, field: "library",
                "'\(manifest.library)' was not found; looked in \(candidates.joined(separator: ", ")) (use --search-path)"
            )
        }
        return (manifest, library)
    }

    /// Runs `body`, printing a `KernelError` and exiting 2 on failure.
    static func run(_ body: () throws -> Void) throws {
        do {
            try body()
        } catch let error as KernelError {
            FileHandle.standardError.write(Data("plexus: \(error.code.rawValue): \(error)\n".utf8))
            throw ExitCode(2)
        }
    }
}

extension PluginCommand {
    struct Keygen: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make an Ed25519 key pair for signing plugins: PREFIX.key (secret, mode 0600) and PREFIX.pub.")
        @Argument(help: "Where to write the keys: PREFIX.key and PREFIX.pub.") var prefix: String
        func run() throws {
            try PluginArchiveFile.run {
                for path in [prefix + ".key", prefix + ".pub"] where FileManager.default.fileExists(atPath: path) {
                    throw KernelError(.io, subject: path, "exists already; keygen never overwrites a key")
                }
                let key = SigningKey.generate()
                try PluginArchiveFile.write(Array(key.privateText.utf8), to: prefix + ".key", mode: 0o600)
                try PluginArchiveFile.write(Array(key.publicText.utf8), to: prefix + ".pub")
                print(
                    "public key (for security.trustedKeys): \(key.publicText.split(separator: " ")[1])", terminator: "")
            }
        }
    }

    struct Pack: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pack a manifest and its library into a plugin archive (a tar), signed with --key.")
        @Argument(help: "The manifest file.") var manifest: String
        @Option(name: .long, help: "The archive to write (default NAME-VERSION.pxp).") var out: String?
        @Option(name: .long, help: "A private key from `plexus plugin keygen`: sign the archive.") var key: String?
        @Option(name: .long, help: "A directory searched for the manifest's library (repeatable).")
        var searchPath: [String] = []
        func run() throws {
            try PluginArchiveFile.run {
                let (manifest, library) = try PluginArchiveFile.plugin(manifest: self.manifest, searchPath: searchPath)
                let libraryName = URL(fileURLWithPath: manifest.library).lastPathComponent
                guard libraryName == manifest.library else {
                    throw KernelError(
                        .manifestInvalid, subject: self.manifest, field: "library",
                        "is a path ('\(manifest.library)'); a packed manifest names its library by file name only")
                }
                var archive = PluginArchive(
                    manifest: manifest.fileBytes ?? [], libraryName: libraryName,
                    library: try PluginArchiveFile.read(library))
                if let key {
                    archive.signature = try PluginSignature.sign(
                        manifestSHA256: archive.manifestSHA256, librarySHA256: archive.librarySHA256,
                        with: try PluginArchiveFile.privateKey(key))
                }
                let path = out ?? "\(manifest.name)-\(manifest.version).pxp"
                try PluginArchiveFile.write(archive.encoded(), to: path)
                print(
                    "\(path): \(manifest.name) \(manifest.version), \(archive.signature == nil ? "unsigned" : "signed")"
                )
            }
        }
    }

    struct Sign: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract:
                "Sign a plugin archive (rewritten with its SIGNATURE), or a manifest and its library (MANIFEST.sig).")
        @Argument(help: "A plugin archive, or a manifest file.") var target: String
        @Option(name: .long, help: "A private key from `plexus plugin keygen`.") var key: String
        @Option(name: .long, help: "A directory searched for a manifest's library (repeatable).")
        var searchPath: [String] = []
        func run() throws {
            try PluginArchiveFile.run {
                let signingKey = try PluginArchiveFile.privateKey(key)
                if PluginArchiveFile.isArchive(target) {
                    var archive = try PluginArchive.decode(try PluginArchiveFile.read(target), subject: target)
                    archive.signature = try PluginSignature.sign(
                        manifestSHA256: archive.manifestSHA256, librarySHA256: archive.librarySHA256, with: signingKey)
                    try PluginArchiveFile.write(archive.encoded(), to: target)
                    print("\(target): signed")
                } else {
                    let (manifest, library) = try PluginArchiveFile.plugin(manifest: target, searchPath: searchPath)
                    let signature = try PluginSignature.sign(
                        manifestSHA256: PluginSignature.sha256(manifest.fileBytes ?? []),
                        librarySHA256: PluginSignature.sha256(try PluginArchiveFile.read(library)), with: signingKey)
                    try PluginArchiveFile.write(Array(signature.text.utf8), to: target + ".sig")
                    print("\(target).sig: signs \(target) and \(library)")
                }
            }
        }
    }

    struct Verify: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Check a plugin archive: its layout, sums and signature; with --trusted-key, who signed it.")
        @Argument(help: "A plugin archive.") var archive: String
        @Option(name: .long, help: "A public key file (or a base64 key) to trust (repeatable).")
        var trustedKey: [String] = []
        func run() throws {
            try PluginArchiveFile.run {
                let decoded = try PluginArchive.decode(try PluginArchiveFile.read(archive), subject: archive)
                var trusted: [[UInt8]] = []
                for key in trustedKey {
                    let text =
                        FileManager.default.fileExists(atPath: key)
                        ? String(decoding: try PluginArchiveFile.read(key), as: UTF8.self) : key
                    guard let raw = SigningKey.publicKey(fromText: text) else {
                        throw KernelError(.signatureInvalid, subject: key, "is not an Ed25519 public key")
                    }
                    trusted.append(raw)
                }
                guard let signature = decoded.signature else {
                    if !trusted.isEmpty {
                        throw KernelError(.signatureMissing, subject: archive, "is not signed")
                    }
                    print("\(archive): sums ok, unsigned")
                    return
                }
                let signer = Data(signature.publicKey).base64EncodedString()
                if !trusted.isEmpty, !trusted.contains(signature.publicKey) {
                    throw KernelError(
                        .signatureUntrusted, subject: archive, "is signed by \(signer), not a trusted key")
                }
                print("\(archive): sums ok, signed by \(signer)\(trusted.isEmpty ? "" : " (trusted)")")
            }
        }
    }
}
