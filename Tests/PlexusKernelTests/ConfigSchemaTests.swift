import Testing

@testable import PlexusKernel

@Suite("Config schema")
struct ConfigSchemaTests {
    /// A manifest declaring `schema` (YAML under `config.schema`) and giving `values` (under `config.values`).
    static func manifest(schema: String, values: String? = nil) -> String {
        var text = ManifestSamples.minimal + "\nconfig:\n  schema:\n"
        text += schema.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n")
        if let values {
            text += "\n  values:\n" + values.split(separator: "\n").map { "    " + $0 }.joined(separator: "\n")
        }
        return text
    }

    static let schema = """
        interval_ms: {type: integer, default: 1000, minimum: 1, maximum: 60000, description: Milliseconds between ticks.}
        topic: {type: string, required: true, description: Where to publish.}
        mode: {type: string, default: fast, enum: [fast, safe], description: How.}
        ratio: {type: number, description: A ratio.}
        verbose: {type: boolean, description: Log more.}
        tags: {type: list, description: Tags.}
        labels: {type: object, description: Labels.}
        """

    @Test("valid values are kept, defaults fill in, in schema order")
    func validValues() throws {
        let m = try ManifestSamples.parse(
            Self.manifest(
                schema: Self.schema,
                values: "labels: {zone: a}\ntopic: beats\nratio: 0.5\nverbose: true\ntags: [x, y]"))
        #expect(
            m.config
                == .object([
                    ("interval_ms", .int(1000)), ("topic", .string("beats")), ("mode", .string("fast")),
                    ("ratio", .double(0.5)), ("verbose", .bool(true)), ("tags", .array([.string("x"), .string("y")])),
                    ("labels", .object([("zone", .string("a"))])),
                ]))
        #expect(
            m.config.json
                == #"{"interval_ms":1000,"topic":"beats","mode":"fast","ratio":0.5,"verbose":true,"tags":["x","y"],"labels":{"zone":"a"}}"#
        )
        #expect(m.configSchema.keys.first { $0.name == "interval_ms" }?.defaultValue == .int(1000))
    }

    @Test("a quoted number is a string, and an integer is accepted where a number is declared")
    func scalarTyping() throws {
        let m = try ManifestSamples.parse(
            Self.manifest(schema: Self.schema, values: "topic: \"42\"\nratio: 3"))
        #expect(m.config["topic"] == .string("42"))
        #expect(m.config["ratio"] == .double(3))
    }

    struct Violation: Sendable, CustomTestStringConvertible {
        var label: String
        var values: String
        var field: String
        var phrases: [String]
        var testDescription: String { label }
    }

    @Test(
        "a value that violates the schema is refused, naming the key and what was expected",
        arguments: [
            Violation(
                label: "wrong type", values: "topic: t\ninterval_ms: fast", field: "config.values.interval_ms",
                phrases: ["expected an integer, found \"fast\""]),
            Violation(
                label: "fraction for an integer", values: "topic: t\ninterval_ms: 1.5",
                field: "config.values.interval_ms",
                phrases: ["expected an integer, found 1.5"]),
            Violation(
                label: "below minimum", values: "topic: t\ninterval_ms: 0", field: "config.values.interval_ms",
                phrases: ["expected a value of at least 1, found 0"]),
            Violation(
                label: "above maximum", values: "topic: t\ninterval_ms: 60001", field: "config.values.interval_ms",
                phrases: ["expected a value of at most 60000, found 60001"]),
            Violation(
                label: "not in enum", values: "topic: t\nmode: reckless", field: "config.values.mode",
                phrases: ["expected one of fast, safe", "reckless"]),
            Violation(
                label: "number for a string", values: "topic: 7", field: "config.values.topic",
                phrases: ["expected a string, found 7"]),
            Violation(
                label: "string for a boolean", values: "topic: t\nverbose: maybe", field: "config.values.verbose",
                phrases: ["expected true or false"]),
            Violation(
                label: "scalar for a list", values: "topic: t\ntags: x", field: "config.values.tags",
                phrases: ["expected a list"]),
            Violation(
                label: "list for an object", values: "topic: t\nlabels: [a]", field: "config.values.labels",
                phrases: ["expected a mapping"]),
            Violation(
                label: "undeclared key", values: "topic: t\nintervall_ms: 5", field: "config.values.intervall_ms",
                phrases: [
                    "is not declared in the plugin's config schema",
                    "interval_ms, labels, mode, ratio, tags, topic, verbose",
                ]),
            Violation(
                label: "missing required key", values: "interval_ms: 5", field: "config.values.topic",
                phrases: ["is required by the plugin's config schema", "string: Where to publish."]),
        ])
    func violation(_ c: Violation) throws {
        let error = try #require(throws: KernelError.self) {
            try ManifestSamples.parse(Self.manifest(schema: Self.schema, values: c.values))
        }
        #expect(error.code == .configInvalid)
        #expect(error.subject == ManifestSamples.path)
        #expect(error.field == c.field)
        #expect(error.description.hasPrefix("\(ManifestSamples.path): \(c.field): "))
        for phrase in c.phrases {
            #expect(error.description.contains(phrase), "'\(error.description)' should contain '\(phrase)'")
        }
    }

    @Test("a required key with no values section at all is refused")
    func requiredWithoutValues() throws {
        let error = try #require(throws: KernelError.self) {
            try ManifestSamples.parse(Self.manifest(schema: "topic: {type: string, required: true, description: T.}"))
        }
        #expect(error.code == .configInvalid)
        #expect(error.field == "config.values.topic")
    }

    @Test("values without any schema are refused: every key must be declared")
    func valuesWithoutSchema() throws {
        let error = try #require(throws: KernelError.self) {
            try ManifestSamples.parse(ManifestSamples.minimal(appending: "config:\n  values:\n    anything: 1"))
        }
        #expect(error.code == .configInvalid)
        #expect(error.field == "config.values.anything")
        #expect(error.message.contains("declared keys: none"))
    }

    @Test("values that are not a mapping are refused")
    func valuesNotAMapping() throws {
        let error = try #require(throws: KernelError.self) {
            try ManifestSamples.parse(ManifestSamples.minimal(appending: "config:\n  values: [1, 2]"))
        }
        #expect(error.code == .configInvalid)
        #expect(error.field == "config.values")
        #expect(error.message.contains("expected a mapping of settings"))
    }

    @Test("a default must satisfy its own key's schema; the error names the default")
    func defaultViolatesSchema() throws {
        let belowMinimum = try #require(throws: KernelError.self) {
            try ManifestSamples.parse(
                Self.manifest(schema: "interval_ms: {type: integer, default: 0, minimum: 1, description: Ms.}"))
        }
        #expect(belowMinimum.code == .configInvalid)
        #expect(belowMinimum.subject == ManifestSamples.path)
        #expect(belowMinimum.message.contains("at least 1"))
        #expect(belowMinimum.field == "config.schema.interval_ms.default")

        let wrongType = try #require(throws: KernelError.self) {
            try ManifestSamples.parse(Self.manifest(schema: "topic: {type: string, default: [a], description: T.}"))
        }
        #expect(wrongType.code == .configInvalid)
        #expect(wrongType.message.contains("expected a string"))
        #expect(wrongType.field == "config.schema.topic.default")
    }

    @Test("validation works on its own, outside a manifest")
    func directValidation() throws {
        let schema = ConfigSchema(keys: [
            .init(
                name: "n", type: .number, description: "N.", defaultValue: .double(1.5), required: false, minimum: nil,
                maximum: 2, allowed: nil)
        ])
        #expect(try schema.validate(.object([]), subject: "s", field: "f") == .object([("n", .double(1.5))]))
        #expect(
            try schema.validate(.object([("n", .int(2))]), subject: "s", field: "f") == .object([("n", .double(2))]))
        let error = try #require(throws: KernelError.self) {
            try schema.validate(.object([("n", .double(2.5))]), subject: "s", field: "f")
        }
        #expect(error.description == "s: f.n: expected a value of at most 2, found 2.5")
    }

    @Test("JSON text escapes what it must")
    func jsonEscaping() {
        let value = ConfigValue.object([
            ("q\"k", .string("line\nbreak\t\\ \u{1}")), ("n", .null), ("inf", .double(.infinity)),
        ])
        #expect(value.json == #"{"q\"k":"line\nbreak\t\\ \u0001","n":null,"inf":null}"#)
        #expect(ConfigValue.string("plain").text == "plain")
        #expect(ConfigValue.array([.int(1)]).text == "[1]")
    }
}
