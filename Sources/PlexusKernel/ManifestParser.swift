import Foundation
import PlexusCore

/// Reads manifest files into `Manifest` values, with an error naming the file, the field and what was
/// expected for anything wrong.
public enum ManifestParser {
    static let topLevelKeys: Set<String> = [
        "manifest", "name", "version", "description", "kind", "library", "sha256", "abi", "toolchain", "requires",
        "provides", "config", "isolation", "operations", "deadlines", "enabled", "restart",
    ]

    /// Reads and parses the manifest at `path`.
    /// - Parameter values: configuration values that replace the manifest's own `config.values` before they
    ///   are checked against its schema (the conformance kit's `--config`): a manifest whose required keys have
    ///   no shipped values loads when `values` gives them.
    public static func load(path: String, values: ConfigValue? = nil) throws -> Manifest {
        let bytes: Data
        do {
            bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        } catch {
            throw KernelError(.manifestUnreadable, subject: path, "cannot be read: \(error.localizedDescription)")
        }
        guard let text = String(data: bytes, encoding: .utf8) else {
            throw KernelError(.manifestUnreadable, subject: path, "cannot be read: it is not UTF-8 text")
        }
        var manifest = try parse(text, path: path, values: values)
        manifest.fileBytes = Array(bytes)
        return manifest
    }

    /// Parses manifest text; `path` names it in errors; `values`, when given, replace `config.values`.
    public static func parse(_ text: String, path: String, values given: ConfigValue? = nil) throws -> Manifest {
        let root = try YAMLReader(subject: path, code: .manifestInvalid).document(text)
        try root.onlyKeys(topLevelKeys)

        let format = try root.required("manifest", "the manifest format version (\(Manifest.formatVersion))")
        let formatVersion = try format.int("the manifest format version, an integer")
        guard formatVersion == Manifest.formatVersion else {
            throw format.fail(
                "unknown manifest format version \(formatVersion); this kernel reads version \(Manifest.formatVersion)")
        }

        let nameField = try root.required("name", "the plugin's name")
        let name = try nameField.string()
        guard Self.isValidName(name) else {
            throw nameField.fail(
                "'\(name)' is not a valid plugin name; expected lowercase letters, digits and '-', starting with a letter, at most 64 characters"
            )
        }

        let versionField = try root.required("version", "a SemVer version such as 1.0.0")
        let versionText = try versionField.string()
        guard let version = SemanticVersion(versionText) else {
            throw versionField.fail(
                "'\(versionText)' is not a SemVer version; expected MAJOR.MINOR.PATCH such as 1.0.0")
        }

        let kinds = try parseKinds(
            try root.required(
                "kind", "one of \(Manifest.Kind.allCases.map(\.rawValue).joined(separator: ", ")) or a list of them"))

        let libraryField = try root.required("library", "the plugin's shared library file, e.g. libName.so")
        let library = try libraryField.string()
        guard !library.isEmpty else { throw libraryField.fail("must not be empty") }

        var sha256: String?
        if let field = root.optional("sha256") {
            let text = try field.string().lowercased()
            guard text.count == 64, text.allSatisfy(\.isHexDigit) else {
                throw field.fail("expected 64 hexadecimal digits (the library's SHA-256)")
            }
            sha256 = text
        }

        let abi = try root.required("abi", "the ABI version the plugin was built against, {major: 1, minor: 4}")
        try abi.onlyKeys(["major", "minor"])
        let abiMajor = try abi.required("major", "an integer").int()
        let abiMinor = try abi.required("minor", "an integer").int()
        guard (0...0xFFFF).contains(abiMajor), (0...0xFFFF).contains(abiMinor) else {
            throw abi.fail("major and minor must be between 0 and 65535")
        }

        var toolchain: String?
        if let field = root.optional("toolchain") {
            let text = try field.string()
            guard text.hasPrefix("swift-"), SemanticVersion(Toolchain.normalized(String(text.dropFirst(6)))) != nil
            else {
                throw field.fail(
                    "'\(text)' is not a toolchain; expected swift-MAJOR.MINOR[.PATCH] such as \(Toolchain.current)")
            }
            toolchain = text
        }

        let requires = try root.optional("requires")?.items("requirements").map(parseRequirement) ?? []
        let provides = try root.optional("provides")?.items("capabilities").map(parseProvision) ?? []

        var schema = ConfigSchema()
        var config = ConfigValue.object([])
        var configValues = ConfigValue.object([])
        if let configField = root.optional("config") {
            try configField.onlyKeys(["schema", "values"])
            if let schemaField = configField.optional("schema") {
                schema = ConfigSchema(keys: try schemaField.entries("config keys").map(parseSchemaKey))
            }
            let values = try given ?? configField.optional("values")?.configValue() ?? .object([])
            configValues = values
            config = try schema.validate(values, subject: path, field: "config.values")
        } else {
            config = try schema.validate(given ?? config, subject: path, field: "config.values")
        }

        var isolation = Manifest.Isolation.inProcess
        if let field = root.optional("isolation") {
            let text = try field.string()
            guard let value = Manifest.Isolation(rawValue: text) else {
                throw field.fail("unknown isolation '\(text)'; expected in-process or process")
            }
            if value == .process, kinds.contains(.registry) {
                throw field.fail(
                    "isolation 'process' does not proxy the registry kind (its vtable and watches); run a registry in-process"
                )
            }
            isolation = value
        }

        let operations = try root.optional("operations")?.items("operations").map(parseOperation) ?? []
        var seen = Set<String>()
        for (index, op) in operations.enumerated() where !seen.insert(op.name).inserted {
            throw KernelError(
                .manifestInvalid, subject: path, field: "operations[\(index)].name", "duplicate operation '\(op.name)'")
        }

        var startTimeout = Duration.seconds(10)
        var stopTimeout = Duration.seconds(10)
        if let deadlines = root.optional("deadlines") {
            try deadlines.onlyKeys(["start_ms", "stop_ms"])
            if let field = deadlines.optional("start_ms") { startTimeout = try milliseconds(field) }
            if let field = deadlines.optional("stop_ms") { stopTimeout = try milliseconds(field) }
        }

        var restart = Manifest.RestartPolicy()
        if let field = root.optional("restart") {
            guard isolation == .process else {
                throw field.fail("restart applies to isolation: process only (an in-process plugin is not restarted)")
            }
            try field.onlyKeys(["maxFailures", "windowSeconds", "backoffMs", "maxBackoffMs"])
            func bounded(_ key: String, _ range: ClosedRange<Int>) throws -> Int? {
                guard let value = field.optional(key) else { return nil }
                let number = try value.int("an integer")
                guard range.contains(number) else {
                    throw value.fail("expected between \(range.lowerBound) and \(range.upperBound)")
                }
                return number
            }
            if let value = try bounded("maxFailures", 1...1000) { restart.maxFailures = value }
            if let value = try bounded("windowSeconds", 1...86400) { restart.windowSeconds = Int64(value) }
            if let value = try bounded("backoffMs", 1...3_600_000) { restart.backoffMs = Int64(value) }
            if let value = try bounded("maxBackoffMs", 1...3_600_000) { restart.maxBackoffMs = Int64(value) }
        }

        var manifest = Manifest(
            path: path, name: name, version: version,
            description: try root.optional("description")?.string() ?? "",
            kinds: kinds, library: library, sha256: sha256, abiMajor: abiMajor, abiMinor: abiMinor,
            toolchain: toolchain, requires: requires, provides: provides, configSchema: schema, config: config,
            isolation: isolation, operations: operations, startTimeout: startTimeout, stopTimeout: stopTimeout,
            enabled: try root.optional("enabled")?.bool() ?? true)
        manifest.configValues = configValues
        manifest.restart = restart
        return manifest
    }

    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.first, first.isASCII, first.isLowercase, name.count <= 64 else { return false }
        return name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "-") }
    }

    private static func milliseconds(_ field: YAMLField) throws -> Duration {
        let ms = try field.int("a number of milliseconds")
        guard ms >= 1 && ms <= 3_600_000 else { throw field.fail("expected between 1 and 3600000 milliseconds") }
        return .milliseconds(ms)
    }

    private static func parseKinds(_ field: YAMLField) throws -> [Manifest.Kind] {
        let texts: [(String, YAMLField)]
        if field.node.sequence != nil {
            texts = try field.items("kinds").map { (try $0.string(), $0) }
        } else {
            texts = [(try field.string(), field)]
        }
        guard !texts.isEmpty else { throw field.fail("expected at least one kind") }
        return try texts.map { text, at in
            guard let kind = Manifest.Kind(rawValue: text) else {
                throw at.fail(
                    "unknown kind '\(text)'; expected one of \(Manifest.Kind.allCases.map(\.rawValue).joined(separator: ", "))"
                )
            }
            return kind
        }.sorted()
    }

    private static func parseRequirement(_ field: YAMLField) throws -> Manifest.Requirement {
        try field.onlyKeys(["capability", "version", "optional"])
        let capability = try field.required("capability", "a capability name").string()
        let rangeField = field.optional("version")
        let rangeText = try rangeField?.string() ?? "*"
        guard let range = VersionRange(rangeText) else {
            throw (rangeField ?? field).fail(
                "'\(rangeText)' is not a version range; expected e.g. >=1.0.0 <2.0.0, ^1.2.0, ~1.2.0, 1.2.3 or *")
        }
        return .init(capability: capability, range: range, optional: try field.optional("optional")?.bool() ?? false)
    }

    private static func parseProvision(_ field: YAMLField) throws -> Manifest.Provision {
        try field.onlyKeys(["capability", "version"])
        let capability = try field.required("capability", "a capability name").string()
        let versionField = try field.required("version", "a SemVer version")
        let text = try versionField.string()
        guard let version = SemanticVersion(text) else {
            throw versionField.fail("'\(text)' is not a SemVer version; expected MAJOR.MINOR.PATCH")
        }
        return .init(capability: capability, version: version)
    }

    private static func parseSchemaKey(_ entry: (key: String, value: YAMLField)) throws -> ConfigSchema.Key {
        let field = entry.value
        try field.onlyKeys(["type", "description", "default", "required", "minimum", "maximum", "enum"])
        let typeField = try field.required(
            "type", "one of \(ConfigSchema.ValueType.allCases.map(\.rawValue).joined(separator: ", "))")
        let typeText = try typeField.string()
        guard let type = ConfigSchema.ValueType(rawValue: typeText) else {
            throw typeField.fail(
                "unknown type '\(typeText)'; expected one of \(ConfigSchema.ValueType.allCases.map(\.rawValue).joined(separator: ", "))"
            )
        }
        let description = try field.required("description", "a sentence saying what the key does").string()
        func number(_ key: String) throws -> Double? {
            guard let f = field.optional(key) else { return nil }
            guard let d = f.node.float else { throw f.fail("expected a number") }
            return d
        }
        var key = ConfigSchema.Key(
            name: entry.key, type: type, description: description, defaultValue: nil,
            required: try field.optional("required")?.bool() ?? false,
            minimum: try number("minimum"), maximum: try number("maximum"),
            allowed: try field.optional("enum")?.items("allowed values").map { try $0.string() })
        if let defaultField = field.optional("default") {
            // The default must itself satisfy the key's type and bounds.
            key.defaultValue = try ConfigSchema(keys: [key]).check(
                try defaultField.configValue(), against: key, subject: field.reader.subject, path: defaultField.path)
        }
        return key
    }

    private static func parseOperation(_ field: YAMLField) throws -> OperationDeclaration {
        try field.onlyKeys(["name", "symbol", "signature", "description"])
        let name = try field.required("name", "the operation's name").string()
        guard isValidName(name) else {
            throw field.fail("operation name '\(name)' must be lowercase letters, digits and '-'")
        }
        let symbolField = try field.required("symbol", "the exported C symbol, px_op_…")
        let symbol = try symbolField.string()
        guard symbol.hasPrefix("px_op_"), symbol.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
        else {
            throw symbolField.fail(
                "'\(symbol)' must be a C identifier starting with px_op_ (only px_op_* symbols are exported from plugin images)"
            )
        }
        let signatureField = try field.required("signature", "a C signature such as 'int32 (instance, uint64)'")
        let signature: OperationSignature
        do {
            signature = try OperationSignature(parsing: try signatureField.string())
        } catch let error as OperationSignature.ParseError {
            throw signatureField.fail(error.message)
        }
        return OperationDeclaration(
            name: name, symbol: symbol, signature: signature,
            description: try field.optional("description")?.string() ?? "")
    }
}
