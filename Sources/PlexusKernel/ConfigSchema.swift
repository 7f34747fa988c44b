import Foundation
import PlexusCore

/// A configuration value: what YAML and JSON can both say.
public enum ConfigValue: Sendable, Equatable, CustomStringConvertible {
    case null
    case bool(Bool)
    case int(Int)
    case double(Double)
    case string(String)
    case array([ConfigValue])
    case object([(String, ConfigValue)])

    public static func == (lhs: ConfigValue, rhs: ConfigValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case let (.bool(a), .bool(b)): return a == b
        case let (.int(a), .int(b)): return a == b
        case let (.double(a), .double(b)): return a == b
        case let (.string(a), .string(b)): return a == b
        case let (.array(a), .array(b)): return a == b
        case let (.object(a), .object(b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }

    /// The value of `key` in an object.
    public subscript(key: String) -> ConfigValue? {
        guard case .object(let pairs) = self else { return nil }
        return pairs.first { $0.0 == key }?.1
    }

    /// Compact JSON text.
    public var json: String {
        switch self {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .double(let d): return d.isFinite ? String(d) : "null"
        case .string(let s): return Self.quote(s)
        case .array(let items): return "[" + items.map(\.json).joined(separator: ",") + "]"
        case .object(let pairs):
            return "{" + pairs.map { Self.quote($0.0) + ":" + $0.1.json }.joined(separator: ",") + "}"
        }
    }

    /// The text a C plugin sees for a top-level key: scalars as themselves, lists and objects as JSON.
    public var text: String {
        switch self {
        case .string(let s): return s
        case .null: return ""
        default: return json
        }
    }

    public var description: String { json }

    /// JSON string literal for `s`.
    public static func quote(_ s: String) -> String { CloudEventJSON.quote(s) }
}

/// The configuration a plugin declares: one entry per key, with a type, a default and a description
/// (Fluent Bit's `config_map`). Values are validated against it before the plugin is created.
public struct ConfigSchema: Sendable {
    public enum ValueType: String, Sendable, CaseIterable {
        case string, integer, number, boolean, list, object
    }

    public struct Key: Sendable {
        public var name: String
        public var type: ValueType
        public var description: String
        public var defaultValue: ConfigValue?
        public var required: Bool
        public var minimum: Double?
        public var maximum: Double?
        public var allowed: [String]?
    }

    public var keys: [Key]

    public init(keys: [Key] = []) { self.keys = keys }

    /// Checks `values` against the schema and fills in defaults.
    /// - Throws: `KernelError` with code `.configInvalid`, naming the key and what was expected.
    public func validate(_ values: ConfigValue, subject: String, field: String) throws -> ConfigValue {
        guard case .object(let given) = values else {
            throw KernelError(.configInvalid, subject: subject, field: field, "expected a mapping of settings")
        }
        for (key, _) in given where !keys.contains(where: { $0.name == key }) {
            let known = keys.map(\.name).sorted().joined(separator: ", ")
            throw KernelError(
                .configInvalid, subject: subject, field: "\(field).\(key)",
                "is not declared in the plugin's config schema; declared keys: \(known.isEmpty ? "none" : known)")
        }
        var result: [(String, ConfigValue)] = []
        for key in keys {
            let path = "\(field).\(key.name)"
            guard let value = given.first(where: { $0.0 == key.name })?.1 ?? key.defaultValue else {
                if key.required {
                    throw KernelError(
                        .configInvalid, subject: subject, field: path,
                        "is required by the plugin's config schema (\(key.type.rawValue): \(key.description))")
                }
                continue
            }
            result.append((key.name, try check(value, against: key, subject: subject, path: path)))
        }
        return .object(result)
    }

    /// Checks one value against one key's type and bounds; `path` names it in the error.
    func check(_ value: ConfigValue, against key: Key, subject: String, path: String) throws -> ConfigValue {
        func wrong(_ expected: String) -> KernelError {
            KernelError(.configInvalid, subject: subject, field: path, "expected \(expected), found \(value.json)")
        }
        var number: Double?
        let checked: ConfigValue
        switch (key.type, value) {
        case (.string, .string):
            checked = value
        case (.integer, .int(let i)):
            number = Double(i)
            checked = value
        case (.number, .int(let i)):
            number = Double(i)
            checked = .double(Double(i))
        case (.number, .double(let d)):
            number = d
            checked = value
        case (.boolean, .bool), (.list, .array), (.object, .object):
            checked = value
        default:
            throw wrong(article(key.type))
        }
        if let number, let minimum = key.minimum, number < minimum {
            throw wrong("a value of at least \(Self.format(minimum))")
        }
        if let number, let maximum = key.maximum, number > maximum {
            throw wrong("a value of at most \(Self.format(maximum))")
        }
        if let allowed = key.allowed, case .string(let s) = value, !allowed.contains(s) {
            throw wrong("one of \(allowed.joined(separator: ", "))")
        }
        return checked
    }

    private func article(_ type: ValueType) -> String {
        switch type {
        case .string: return "a string"
        case .integer: return "an integer"
        case .number: return "a number"
        case .boolean: return "true or false"
        case .list: return "a list"
        case .object: return "a mapping"
        }
    }

    static func format(_ d: Double) -> String {
        d == d.rounded() && abs(d) < 1e15 ? String(Int(d)) : String(d)
    }
}
