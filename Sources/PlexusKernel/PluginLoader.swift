import Crypto
import Foundation
import PlexusABI
import PlexusCore

/// A plugin image that has been verified, mapped and negotiated with.
struct LoadedPlugin: @unchecked Sendable {
    // Safe: the descriptor copy is plain data whose pointers point into the mapped image, which is never
    // unmapped (RTLD_NODELETE, no dlclose).
    var descriptor: px_plugin_descriptor
    /// The content-addressed copy the image was mapped from.
    var mappedPath: String
    var sha256: String
    var handle: UnsafeMutableRawPointer
}

/// Finds, verifies and maps plugin libraries, and negotiates the ABI with them.
///
/// Each library is copied to `<cache>/<sha256>/<file>` before `dlopen`, so that a new version of a file is a
/// new path (dlopen of a known path returns the old image) and an image in use is never overwritten.
/// Images are opened `RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE` and never closed: the Swift runtime keeps
/// pointers into a Swift image, so unmapping one crashes the next type lookup.
struct PluginLoader: Sendable {
    var searchPath: [String]
    var cacheDirectory: String
    var requireSHA256: Bool
    /// Which plugin signatures are accepted, and whether one is required (`security` in the node file).
    var trust = PluginTrust()

    /// The library file a manifest names: its own directory first, then the search path.
    func locate(_ manifest: Manifest) throws -> String {
        let manifestDirectory = URL(fileURLWithPath: manifest.path).deletingLastPathComponent().path
        if manifest.library.hasPrefix("/") {
            if FileManager.default.isReadableFile(atPath: manifest.library) { return manifest.library }
            throw KernelError(
                .libraryNotFound, subject: manifest.path, field: "library",
                "'\(manifest.library)' does not exist or is not readable")
        }
        let candidates = ([manifestDirectory] + searchPath).map { $0 + "/" + manifest.library }
        if let found = candidates.first(where: FileManager.default.isReadableFile(atPath:)) {
            return URL(fileURLWithPath: found).standardizedFileURL.path
        }
        throw KernelError(
            .libraryNotFound, subject: manifest.path, field: "library",
            "'\(manifest.library)' was not found; looked in \(([manifestDirectory] + searchPath).joined(separator: ", ")) (build the plugin, or add its directory to plugins.searchPath)"
        )
    }

    /// SHA-256 of a file, lowercase hex.
    static func sha256(ofFile path: String) throws -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw KernelError(.io, subject: path, "cannot be opened for reading")
        }
        defer { try? handle.close() }
        var hasher = SHA256()
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { hasher.update(data: chunk) }
        return hasher.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Checks the library against the manifest's pin (and the node's pinning policy) and the plugin's signature
    /// (and the node's signing policy); returns its hash.
    func verify(_ manifest: Manifest, library: String) throws -> String {
        let digest = try Self.sha256(ofFile: library)
        if let pinned = manifest.sha256 {
            guard pinned == digest else {
                throw KernelError(
                    .checksumMismatch, subject: manifest.path, field: "sha256",
                    "library \(library) has sha256 \(digest), but the manifest pins \(pinned); the file changed after the manifest was written (re-pin with `plexus plugin inspect`)"
                )
            }
        } else if requireSHA256 {
            throw KernelError(
                .manifestInvalid, subject: manifest.path, field: "sha256",
                "is missing, and this node requires every library to be pinned (plugins.requireSha256); its sha256 is \(digest)"
            )
        }
        if manifest.toolchain != nil, Toolchain.current.hasSuffix("+") {
            throw KernelError(
                .toolchainMismatch, subject: manifest.path, field: "toolchain",
                "this kernel was built with a Swift toolchain newer than it can name (\(Toolchain.current)), so it cannot check that a Swift plugin matches it; extend Toolchain.current"
            )
        }
        if let toolchain = manifest.toolchain, !Toolchain.same(toolchain, Toolchain.current) {
            throw KernelError(
                .toolchainMismatch, subject: manifest.path, field: "toolchain",
                "the plugin was built with \(toolchain) but this kernel with \(Toolchain.current); Swift's ABI is not stable on Linux, so rebuild the plugin with \(Toolchain.current)"
            )
        }
        // The digest checked is the one `cache` holds the mapped copy to, so the bytes signed are the bytes
        // mapped.
        try trust.check(manifest, librarySHA256: digest)
        return digest
    }

    /// Copies the library to its content-addressed path (once) and returns that path.
    func cache(_ library: String, sha256: String, subject: String) throws -> String {
        let directory = cacheDirectory + "/" + sha256
        let target = directory + "/" + URL(fileURLWithPath: library).lastPathComponent
        let fm = FileManager.default
        if fm.fileExists(atPath: target), (try? Self.sha256(ofFile: target)) == sha256 { return target }
        do {
            try fm.createDirectory(atPath: directory, withIntermediateDirectories: true)
            let temporary = target + ".tmp-\(getpid())"
            try? fm.removeItem(atPath: temporary)
            try fm.copyItem(atPath: library, toPath: temporary)
            let copied = try Self.sha256(ofFile: temporary)
            guard copied == sha256 else {
                try? fm.removeItem(atPath: temporary)
                throw KernelError(
                    .checksumMismatch, subject: subject, field: "library",
                    "\(library) changed while it was being verified (sha256 \(sha256), then \(copied)); deploy the file atomically (write elsewhere, then rename)"
                )
            }
            guard rename(temporary, target) == 0 else {
                throw KernelError(
                    .io, subject: subject, "cannot move \(temporary) to \(target): \(String(cString: strerror(errno)))")
            }
        } catch let error as KernelError {
            throw error
        } catch {
            throw KernelError(
                .io, subject: subject,
                "cannot copy \(library) to the plugin cache \(directory): \(error.localizedDescription)")
        }
        return target
    }

    /// Maps the image, resolves its entry symbol and negotiates the ABI.
    ///
    /// The entry runs under `deadline`: it must do nothing but fill in its descriptor.
    func load(_ manifest: Manifest, path: String, sha256: String, deadline: Duration) throws -> LoadedPlugin {
        let (handle, descriptor) = try Self.open(
            path, subject: manifest.path, library: manifest.library, entryName: manifest.name, deadline: deadline)
        try Self.check(descriptor, against: manifest)
        return LoadedPlugin(descriptor: descriptor, mappedPath: path, sha256: sha256, handle: handle)
    }

    /// Maps an image, calls its entry under `deadline` and copies the descriptor it returns (refusing one
    /// larger than this kernel knows). Checks nothing against a manifest.
    /// - Parameters:
    ///   - subject: what errors are about (the manifest's path, or the library's).
    ///   - library: the library as the user named it, for messages.
    ///   - api: the host table the entry negotiates with (a plugin-host child offers its own).
    static func open(
        _ path: String, subject: String, library: String, entryName: String, deadline: Duration,
        api: UnsafePointer<px_host_api> = HostServices.api
    ) throws -> (UnsafeMutableRawPointer, px_plugin_descriptor) {
        try ELFImage.check(path, subject: subject)
        dlerror()
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE) else {
            let reason = dlerror().map { String(cString: $0) } ?? "unknown reason"
            throw KernelError(.loadFailed, subject: subject, field: "library", "dlopen failed: \(reason)")
        }
        dlerror()
        guard let symbol = dlsym(handle, PX_PLUGIN_ENTRY_SYMBOL) else {
            let reason = dlerror().map { String(cString: $0) } ?? ""
            throw KernelError(
                .entryMissing, subject: subject, field: "library",
                "\(library) does not export the entry symbol \(PX_PLUGIN_ENTRY_SYMBOL) (\(reason)); is it a Plexus plugin built against plexus.h?"
            )
        }
        let entry = unsafeBitCast(symbol, to: px_plugin_entry_fn.self)
        let table = Unchecked(api)
        let call = Deadline.run(deadline, name: "plexus.entry.\(entryName)") { () -> EntryResult in
            ErrorBuffer.with { err in
                var descriptor: UnsafePointer<px_plugin_descriptor>?
                let status = entry(table.value, &descriptor, err)
                return EntryResult(status: status, descriptor: descriptor, message: ErrorBuffer.text(err))
            }
        }
        guard case .finished(let result) = call else {
            throw KernelError(
                .deadlineExceeded, subject: subject,
                "the entry \(PX_PLUGIN_ENTRY_SYMBOL) did not return within \(deadline)")
        }
        guard result.status == PX_OK.status else {
            let code: KernelError.Code =
                result.status == PX_ERR_VERSION_MISMATCH.status ? .abiMismatch : .descriptorInvalid
            throw KernelError(
                code, subject: subject,
                "the plugin refused to load (\(StatusText.name(result.status))): \(result.message.isEmpty ? "no reason given" : result.message)"
            )
        }
        guard let raw = result.descriptor else {
            throw KernelError(.descriptorInvalid, subject: subject, "the entry returned PX_OK but no descriptor")
        }
        return (handle, try copyDescriptor(raw, subject: subject))
    }

    private struct EntryResult: @unchecked Sendable {
        // Safe: the descriptor points at static data in a never-unmapped image.
        var status: px_status
        var descriptor: UnsafePointer<px_plugin_descriptor>?
        var message: String
    }

    /// Copies a descriptor of any size the kernel accepts: larger than the kernel knows is refused, smaller
    /// (an older minor) leaves the missing trailing fields zero. Its vtables are copied the same way into
    /// full-size tables, so the kernel never reads past the end of an older plugin's table.
    static func copyDescriptor(_ raw: UnsafePointer<px_plugin_descriptor>, subject: String) throws
        -> px_plugin_descriptor
    {
        let size = UnsafeRawPointer(raw).load(as: UInt32.self)
        if let problem = ABIStruct.sizeProblem(
            size, of: "px_plugin_descriptor", known: MemoryLayout<px_plugin_descriptor>.size,
            what: "the plugin's descriptor")
        {
            throw KernelError(
                Int(size) > MemoryLayout<px_plugin_descriptor>.size ? .abiMismatch : .descriptorInvalid,
                subject: subject, problem)
        }
        var copy = ABIStruct.copy(UnsafeRawPointer(raw), size: Int(size), zero: px_plugin_descriptor())
        copy.storage = ABIStruct.tableCopy(copy.storage, zero: px_storage_vtable())
        copy.registry = ABIStruct.tableCopy(copy.registry, zero: px_registry_vtable())
        return copy
    }

    /// Checks what the plugin says about itself against the kernel's ABI and the manifest.
    static func check(_ d: px_plugin_descriptor, against manifest: Manifest) throws {
        let subject = manifest.path
        let hostMajor = UInt16(PX_ABI_VERSION_MAJOR)
        let hostMinor = UInt16(PX_ABI_VERSION_MINOR)
        guard d.abi_major == hostMajor else {
            throw KernelError(
                .abiMismatch, subject: subject,
                "the plugin was built against ABI \(d.abi_major).\(d.abi_minor); this kernel speaks ABI \(hostMajor).\(hostMinor) and the major versions must match"
            )
        }
        guard d.abi_minor <= hostMinor else {
            throw KernelError(
                .abiMismatch, subject: subject,
                "the plugin was built against ABI \(d.abi_major).\(d.abi_minor), newer than this kernel's \(hostMajor).\(hostMinor); upgrade the kernel or rebuild the plugin against ABI \(hostMajor).\(hostMinor)"
            )
        }
        guard Int(d.abi_major) == manifest.abiMajor, Int(d.abi_minor) == manifest.abiMinor else {
            throw KernelError(
                .descriptorInvalid, subject: subject, field: "abi",
                "the manifest says ABI \(manifest.abiMajor).\(manifest.abiMinor) but the library was built against \(d.abi_major).\(d.abi_minor)"
            )
        }
        let name = d.name.map { String(cString: $0) } ?? ""
        guard name == manifest.name else {
            throw KernelError(
                .descriptorInvalid, subject: subject, field: "name",
                "the manifest says '\(manifest.name)' but the library calls itself '\(name)'")
        }
        let version = d.version.map { String(cString: $0) } ?? ""
        guard SemanticVersion(version) == manifest.version else {
            throw KernelError(
                .descriptorInvalid, subject: subject, field: "version",
                "the manifest says \(manifest.version) but the library is version '\(version)'")
        }
        let kinds = Manifest.Kind.kinds(in: d.kinds)
        guard kinds == manifest.kinds, d.kinds & ~Manifest.Kind.allCases.reduce(0, { $0 | $1.bit }) == 0 else {
            throw KernelError(
                .descriptorInvalid, subject: subject, field: "kind",
                "the manifest says \(manifest.kinds.map(\.rawValue)) but the library declares \(kinds.map(\.rawValue)) (bits 0x\(String(d.kinds, radix: 16)))"
            )
        }
        let toolchain = d.toolchain.map { String(cString: $0) }
        if let toolchain, !toolchain.isEmpty {
            guard Toolchain.same(toolchain, Toolchain.current) else {
                throw KernelError(
                    .toolchainMismatch, subject: subject,
                    "the library was built with \(toolchain) but this kernel with \(Toolchain.current); rebuild the plugin with the kernel's toolchain"
                )
            }
            guard let declared = manifest.toolchain, Toolchain.same(declared, toolchain) else {
                throw KernelError(
                    .toolchainMismatch, subject: subject, field: "toolchain",
                    "the library is a Swift plugin built with \(toolchain); the manifest must declare toolchain: \(toolchain)"
                )
            }
        }
        guard d.on_create != nil, d.on_start != nil, d.on_stop != nil, d.on_destroy != nil else {
            throw KernelError(
                .descriptorInvalid, subject: subject,
                "the descriptor lacks a lifecycle hook (on_create, on_start, on_stop and on_destroy are required)")
        }
        // Vtables were copied into full-size tables (`copyDescriptor`); their own size must be one the kernel
        // accepts: from the first published size up to the size this kernel knows.
        func checkTable(_ kind: Manifest.Kind, _ size: UInt32?, type: String, known: Int) throws {
            switch (kinds.contains(kind), size) {
            case (true, nil):
                throw KernelError(
                    .descriptorInvalid, subject: subject,
                    "a \(kind.rawValue) plugin must provide a \(kind.rawValue) vtable")
            case (false, .some):
                throw KernelError(
                    .descriptorInvalid, subject: subject,
                    "the descriptor has a \(kind.rawValue) vtable but does not declare the \(kind.rawValue) kind")
            case (true, let size?):
                if let problem = ABIStruct.sizeProblem(
                    size, of: type, known: known, what: "the \(kind.rawValue) vtable")
                {
                    throw KernelError(.descriptorInvalid, subject: subject, problem)
                }
            default:
                break
            }
        }
        try checkTable(
            .storage, d.storage?.pointee.struct_size, type: "px_storage_vtable",
            known: MemoryLayout<px_storage_vtable>.size)
        try checkTable(
            .registry, d.registry?.pointee.struct_size, type: "px_registry_vtable",
            known: MemoryLayout<px_registry_vtable>.size)
    }
}

/// A `px_error` with the kernel's standard capacity.
enum ErrorBuffer {
    static func with<R>(_ body: (UnsafeMutablePointer<px_error>) -> R) -> R {
        let storage = UnsafeMutablePointer<CChar>.allocate(capacity: Int(PX_ERROR_CAPACITY))
        storage.initialize(repeating: 0, count: Int(PX_ERROR_CAPACITY))
        defer { storage.deallocate() }
        var err = px_error(
            struct_size: UInt32(MemoryLayout<px_error>.size), reserved: 0, message: storage,
            capacity: Int(PX_ERROR_CAPACITY))
        return withUnsafeMutablePointer(to: &err) { body($0) }
    }

    /// The text a plugin wrote, read within the buffer even if the plugin left no terminating NUL.
    static func text(_ err: UnsafeMutablePointer<px_error>) -> String {
        guard let message = err.pointee.message, err.pointee.capacity > 0 else { return "" }
        message[err.pointee.capacity - 1] = 0
        return String(cString: message)
    }
}

/// Names for `px_status` values.
public enum StatusText {
    public static func name(_ status: px_status) -> String {
        let names = [
            "PX_OK", "PX_ERR_INVALID_ARGUMENT", "PX_ERR_NOT_FOUND", "PX_ERR_ALREADY_EXISTS", "PX_ERR_UNSUPPORTED",
            "PX_ERR_VERSION_MISMATCH", "PX_ERR_TIMEOUT", "PX_ERR_UNAVAILABLE", "PX_ERR_RESOURCE_EXHAUSTED",
            "PX_ERR_OUT_OF_RANGE", "PX_ERR_FAILED_PRECONDITION", "PX_ERR_IO", "PX_ERR_CORRUPTION", "PX_ERR_CANCELLED",
            "PX_ERR_PERMISSION_DENIED", "PX_ERR_INTERNAL", "PX_DEGRADED",
        ]
        return (0..<names.count).contains(Int(status)) ? names[Int(status)] : "status \(status)"
    }
}
