import Foundation
import PlexusCore

/// Config values a node file sets for its plugins (`plugins.config.<plugin>: {key: value}`), so that shipped
/// manifests stay unedited on every node: a node changes one port without copying a whole manifest.
///
/// A node value replaces the manifest's value of the same key (a whole value: a list or an object is not
/// merged element by element), and is validated against the plugin's config schema exactly like a manifest
/// value; an error names the node file and the field. String values may name environment variables —
/// `${NAME}`, or `${NAME:-default}` when it may be unset — so that secrets need not be written into the file;
/// `$${` is a literal `${`. A value that is a single reference and nothing else (`port: "${PORT}"`) takes
/// the type of the text it is replaced with: a number, `true`/`false`, or a string.
public struct ConfigOverrides: Sendable {
    /// Plugin name → its values, in the node file's order.
    public var values: [(plugin: String, values: [(String, ConfigValue)])] = []
    /// The node file, for messages.
    public var subject: String = "the node file"

    public init() {}

    /// The values for `plugin`, if the node file sets any.
    public func values(for plugin: String) -> [(String, ConfigValue)]? {
        values.first { $0.plugin == plugin }?.values
    }

    /// The manifest with this node's values for it applied and validated; unchanged when it sets none.
    /// - Throws: `KernelError(.configInvalid)` naming the node file's field when a value is not declared by the
    ///   plugin's schema or does not satisfy it.
    public func applied(to manifest: Manifest) throws -> Manifest {
        guard let overrides = values(for: manifest.name), !overrides.isEmpty else { return manifest }
        let schema = manifest.configSchema
        let field = "plugins.config.\(manifest.name)"
        for (name, value) in overrides {
            guard let key = schema.keys.first(where: { $0.name == name }) else {
                let known = schema.keys.map(\.name).sorted().joined(separator: ", ")
                throw KernelError(
                    .configInvalid, subject: subject, field: "\(field).\(name)",
                    "is not declared in \(manifest.name)'s config schema (\(manifest.path)); declared keys: \(known.isEmpty ? "none" : known)"
                )
            }
            _ = try schema.check(value, against: key, subject: subject, path: "\(field).\(name)")
        }
        guard case .object(var merged) = manifest.configValues else { return manifest }
        for (name, value) in overrides {
            if let index = merged.firstIndex(where: { $0.0 == name }) {
                merged[index].1 = value
            } else {
                merged.append((name, value))
            }
        }
        var result = manifest
        result.configValues = .object(merged)
        result.config = try schema.validate(.object(merged), subject: subject, field: field)
        result.configOverridden = overrides.map(\.0)
        return result
    }

    /// Replaces `${NAME}` and `${NAME:-default}` in every string of `value` from `environment`.
    /// - Throws: `KernelError(.nodeConfigInvalid)` naming `field` for an unset variable without a default, or an
    ///   unterminated `${`.
    static func substitutingEnvironment(
        _ value: ConfigValue, environment: [String: String], subject: String, field: String
    ) throws -> ConfigValue {
        switch value {
        case .string(let text):
            let substituted = try substitute(text, environment: environment, subject: subject, field: field)
            // A value that is one reference and nothing else takes the type its text has, as a plain YAML
            // scalar would: `port: "${PORT}"` is a number when PORT is.
            guard substituted != text, text.hasPrefix("${"), text.hasSuffix("}"),
                text.dropFirst(2).firstIndex(of: "$") == nil
            else { return .string(substituted) }
            if let number = Int(substituted) { return .int(number) }
            if substituted == "true" || substituted == "false" { return .bool(substituted == "true") }
            if let number = Double(substituted), number.isFinite { return .double(number) }
            return .string(substituted)
        case .array(let items):
            return .array(
                try items.enumerated().map {
                    try substitutingEnvironment(
                        $0.element, environment: environment, subject: subject, field: "\(field)[\($0.offset)]")
                })
        case .object(let pairs):
            return .object(
                try pairs.map {
                    (
                        $0.0,
                        try substitutingEnvironment(
                            $0.1, environment: environment, subject: subject, field: "\(field).\($0.0)")
                    )
                })
        default:
            return value
        }
    }

    static func substitute(_ text: String, environment: [String: String], subject: String, field: String) throws
        -> String
    {
        guard text.contains("${") else { return text }
        var result = ""
        var rest = Substring(text)
        while let start = rest.range(of: "${") {
            if rest[..<start.lowerBound].hasSuffix("$") {
                result += rest[..<rest.index(before: start.lowerBound)] + "${"
                rest = rest[start.upperBound...]
                continue
            }
            result += rest[..<start.lowerBound]
            guard let end = rest[start.upperBound...].firstIndex(of: "}") else {
                throw KernelError(
                    .nodeConfigInvalid, subject: subject, field: field,
                    "'${' without a closing '}'; write ${NAME} or ${NAME:-default}, or $${ for a literal ${")
            }
            let reference = rest[start.upperBound..<end]
            let (name, fallback): (Substring, Substring?) =
                if let separator = reference.range(of: ":-") {
                    (reference[..<separator.lowerBound], reference[separator.upperBound...])
                } else {
                    (reference, nil)
                }
            guard let first = name.first, first == "_" || first.isLetter,
                name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
            else {
                throw KernelError(
                    .nodeConfigInvalid, subject: subject, field: field,
                    "'${\(reference)}' does not name an environment variable (letters, digits and _)")
            }
            if let value = environment[String(name)] {
                result += value
            } else if let fallback {
                result += fallback
            } else {
                throw KernelError(
                    .nodeConfigInvalid, subject: subject, field: field,
                    "environment variable \(name) is not set (write ${\(name):-default} to give a default)")
            }
            rest = rest[rest.index(after: end)...]
        }
        return result + rest
    }
}
