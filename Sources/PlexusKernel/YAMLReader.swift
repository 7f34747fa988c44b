import PlexusCore
import Yams

/// Typed access to a YAML document that reports errors with the file, the field's dotted path and the line.
struct YAMLReader {
    let subject: String
    let code: KernelError.Code

    /// Parses `text` into a top-level mapping.
    func document(_ text: String) throws -> YAMLField {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw KernelError(code, subject: subject, "is not valid YAML: \(error)")
        }
        guard let node, node.mapping != nil else {
            throw KernelError(code, subject: subject, "expected a YAML mapping at the top level")
        }
        return YAMLField(reader: self, node: node, path: "")
    }

    func fail(_ path: String, _ node: Node?, _ message: String) -> KernelError {
        let line = node?.mark.map { " (line \($0.line))" } ?? ""
        return KernelError(code, subject: subject, field: path.isEmpty ? nil : path, message + line)
    }
}

/// One node of a YAML document, with the path it was reached by.
struct YAMLField {
    let reader: YAMLReader
    let node: Node
    let path: String

    private func childPath(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func fail(_ message: String) -> KernelError { reader.fail(path, node, message) }

    /// The keys of this mapping, in document order.
    var keys: [String] { node.mapping?.keys.compactMap(\.string) ?? [] }

    /// The child at `key`, or `nil` when absent (an explicit YAML null counts as absent).
    func optional(_ key: String) -> YAMLField? {
        guard let child = node.mapping?[key] else { return nil }
        if case .scalar = child, child.null != nil { return nil }
        return YAMLField(reader: reader, node: child, path: childPath(key))
    }

    /// The child at `key`; an error naming the field when absent.
    func required(_ key: String, _ expected: String) throws -> YAMLField {
        guard let child = optional(key) else {
            throw reader.fail(childPath(key), node, "is missing; expected \(expected)")
        }
        return child
    }

    /// Refuses keys other than `allowed`, so that a misspelt key is an error, not silently ignored.
    func onlyKeys(_ allowed: Set<String>) throws {
        for key in keys where !allowed.contains(key) {
            throw reader.fail(
                childPath(key), node.mapping?[key],
                "is not a known field; expected one of \(allowed.sorted().joined(separator: ", "))")
        }
    }

    func string(_ expected: String = "a string") throws -> String {
        guard let scalar = node.scalar else { throw fail("expected \(expected)") }
        return scalar.string
    }

    func int(_ expected: String = "an integer") throws -> Int {
        guard node.scalar != nil, let value = node.int else { throw fail("expected \(expected)") }
        return value
    }

    func bool() throws -> Bool {
        guard node.scalar != nil, let value = node.bool else { throw fail("expected true or false") }
        return value
    }

    /// The items of a sequence.
    func items(_ expected: String) throws -> [YAMLField] {
        guard let sequence = node.sequence else { throw fail("expected a list of \(expected)") }
        return sequence.enumerated().map { YAMLField(reader: reader, node: $1, path: "\(path)[\($0)]") }
    }

    /// The entries of a mapping, in document order.
    func entries(_ expected: String) throws -> [(key: String, value: YAMLField)] {
        guard let mapping = node.mapping else { throw fail("expected a mapping of \(expected)") }
        return try mapping.map { key, value in
            guard let name = key.string else { throw reader.fail(path, key, "expected text keys") }
            return (name, YAMLField(reader: reader, node: value, path: childPath(name)))
        }
    }

    /// Converts the node to a configuration value.
    func configValue() throws -> ConfigValue {
        switch node {
        case .scalar(let scalar):
            if scalar.style == .plain {
                if node.null != nil { return .null }
                if let b = node.bool { return .bool(b) }
                if let i = node.int { return .int(i) }
                if let d = node.float { return .double(d) }
            }
            return .string(scalar.string)
        case .sequence(let sequence):
            return .array(try items("values").prefix(sequence.count).map { try $0.configValue() })
        case .mapping:
            return .object(try entries("values").map { ($0.key, try $0.value.configValue()) })
        case .alias:
            throw fail("YAML aliases are not supported here")
        }
    }
}
