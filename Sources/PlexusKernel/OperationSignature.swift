import Foundation
import PlexusCore

/// An administrative operation a manifest declares: an exported `px_op_*` symbol with a C signature,
/// called by the kernel through libffi (`plexus plugin call NAME OPERATION ARGS…`).
public struct OperationDeclaration: Sendable {
    public var name: String
    public var symbol: String
    public var signature: OperationSignature
    public var description: String
}

/// A C function signature in the manifest's notation: `RETURN (ARG, …)` or `RETURN name(ARG, …)`.
///
/// Types: `void` (return only), `bool`, `int8`…`int64`, `uint8`…`uint64`, `float`, `double`,
/// `string` (a NUL-terminated `const char *` argument), and `instance` (alias `pointer`): the plugin
/// instance's `void *`, supplied by the kernel rather than the caller.
public struct OperationSignature: Sendable, Equatable, CustomStringConvertible {
    public enum CType: String, Sendable, CaseIterable {
        case void, bool, int8, int16, int32, int64, uint8, uint16, uint32, uint64, float, double, string, instance
        /// Return only: a NUL-terminated UTF-8 string allocated with `malloc`, which the kernel frees (ABI 1.1).
        case text
        /// Return only: an `int32_t` that is a `px_status`. `PX_OK` (and `PX_DEGRADED`) is a result; any other
        /// value fails the call with the status's name (`operation-failed`).
        case status
    }

    public struct ParseError: Error { public var message: String }

    public var returnType: CType
    public var parameters: [CType]

    /// The parameters the caller supplies (everything but `instance`).
    public var callerParameters: [CType] { parameters.filter { $0 != .instance } }

    public init(parsing text: String) throws {
        guard let open = text.firstIndex(of: "("), text.hasSuffix(")") else {
            throw ParseError(
                message: "'\(text)' is not a signature; expected RETURN (ARG, ...) such as 'int32 (instance, uint64)'")
        }
        let head = text[..<open].split(separator: " ", omittingEmptySubsequences: true)
        guard (1...2).contains(head.count) else {
            throw ParseError(
                message: "'\(text)': expected a return type, optionally followed by the function's name, before '('")
        }
        returnType = try Self.type(String(head[0]), in: text)
        guard returnType != .instance, returnType != .string else {
            throw ParseError(
                message: "'\(text)': an operation may not return \(returnType.rawValue); return a status or a number")
        }
        let inner = text[text.index(after: open)..<text.index(before: text.endIndex)]
            .trimmingCharacters(in: .whitespaces)
        if inner.isEmpty || inner == "void" {
            parameters = []
        } else {
            parameters = try inner.split(separator: ",", omittingEmptySubsequences: false).map {
                let name = $0.trimmingCharacters(in: .whitespaces)
                guard !name.isEmpty else { throw ParseError(message: "'\(text)': an empty parameter between commas") }
                let type = try Self.type(name, in: text)
                guard type != .void else { throw ParseError(message: "'\(text)': void is not a parameter type") }
                guard type != .text else {
                    throw ParseError(message: "'\(text)': text is a return type only; a string parameter is 'string'")
                }
                guard type != .status else {
                    throw ParseError(
                        message: "'\(text)': status is a return type only; an integer parameter is 'int32'")
                }
                return type
            }
        }
        guard parameters.count <= 16 else { throw ParseError(message: "'\(text)': at most 16 parameters") }
    }

    private static func type(_ name: String, in text: String) throws -> CType {
        if name == "pointer" { return .instance }
        guard let type = CType(rawValue: name) else {
            throw ParseError(
                message:
                    "'\(text)': unknown type '\(name)'; expected one of \(CType.allCases.map(\.rawValue).joined(separator: ", ")), pointer"
            )
        }
        return type
    }

    public var description: String {
        "\(returnType.rawValue) (\(parameters.map(\.rawValue).joined(separator: ", ")))"
    }
}
