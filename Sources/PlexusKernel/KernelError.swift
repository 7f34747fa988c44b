/// An error the kernel reports to an operator: what failed, where, and what was expected.
///
/// Every error names its subject (a manifest file, a plugin, a library) and, where it applies, the field
/// and what the kernel expected there, so that a reader knows what to fix without reading code.
public struct KernelError: Error, CustomStringConvertible, Sendable, Equatable {
    /// What kind of failure this is; stable, for tests and tools.
    public enum Code: String, Sendable {
        case manifestInvalid = "manifest-invalid"
        case manifestUnreadable = "manifest-unreadable"
        case nodeConfigInvalid = "node-config-invalid"
        case configInvalid = "config-invalid"
        case libraryNotFound = "library-not-found"
        case checksumMismatch = "checksum-mismatch"
        case toolchainMismatch = "toolchain-mismatch"
        case dependencyMissing = "dependency-missing"
        case dependencyCycle = "dependency-cycle"
        case dependencyFailed = "dependency-failed"
        case duplicatePlugin = "duplicate-plugin"
        case loadFailed = "load-failed"
        case entryMissing = "entry-missing"
        case abiMismatch = "abi-mismatch"
        case descriptorInvalid = "descriptor-invalid"
        case hookFailed = "hook-failed"
        case deadlineExceeded = "deadline-exceeded"
        case operationInvalid = "operation-invalid"
        /// An operation ran and returned a `px_status` other than `PX_OK` (signature return type `status`).
        case operationFailed = "operation-failed"
        case notFound = "not-found"
        case invalidState = "invalid-state"
        case io = "io"
        /// `security.requireSigned` is on and a plugin has no signature.
        case signatureMissing = "signature-missing"
        /// A signature file or archive that is malformed, does not verify, or signs other bytes.
        case signatureInvalid = "signature-invalid"
        /// A valid signature by a key that is not in `security.trustedKeys`.
        case signatureUntrusted = "signature-untrusted"
        /// A plugin archive that is not one (`plexus plugin pack`).
        case archiveInvalid = "archive-invalid"
    }

    public var code: Code
    /// The file, plugin or object the error is about (a manifest path, a plugin name).
    public var subject: String
    /// The field within the subject, as a dotted path (`config.values.interval_ms`), if any.
    public var field: String?
    /// What went wrong and what was expected.
    public var message: String

    public init(_ code: Code, subject: String, field: String? = nil, _ message: String) {
        self.code = code
        self.subject = subject
        self.field = field
        self.message = message
    }

    public var description: String {
        if let field {
            return "\(subject): \(field): \(message)"
        }
        return "\(subject): \(message)"
    }
}
