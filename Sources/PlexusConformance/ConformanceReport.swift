import Foundation

/// The outcome of one rule.
public struct RuleResult: Sendable, Codable, Equatable {
    /// The rule's name, e.g. `storage.append.dense-offsets`.
    public var rule: String
    public var passed: Bool
    /// Why it failed: what was expected and what was observed. `nil` when it passed, or, for a rule that
    /// passed without being checked because the plugin lacks the optional hooks it needs, `not supported: …`.
    public var reason: String?
    /// How long the rule took, in milliseconds.
    public var milliseconds: Int
    /// The rule does not apply to this plugin (a sink's rule for a source): `passed` is true and `reason`
    /// says why it does not apply. Never set for a rule that ran.
    public var notApplicable: Bool

    public init(rule: String, passed: Bool, reason: String?, milliseconds: Int, notApplicable: Bool = false) {
        self.rule = rule
        self.passed = passed
        self.reason = reason
        self.milliseconds = milliseconds
        self.notApplicable = notApplicable
    }

    /// Whether the rule passed only because the plugin lacks the optional hooks it checks.
    public var notSupported: Bool { passed && (reason?.hasPrefix("not supported") ?? false) }

    /// A rule that does not apply, with the reason.
    public static func notApplicable(_ rule: String, _ reason: String) -> RuleResult {
        RuleResult(rule: rule, passed: true, reason: reason, milliseconds: 0, notApplicable: true)
    }

    private enum CodingKeys: String, CodingKey { case rule, passed, reason, milliseconds, notApplicable }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        rule = try c.decode(String.self, forKey: .rule)
        passed = try c.decode(Bool.self, forKey: .passed)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        milliseconds = try c.decode(Int.self, forKey: .milliseconds)
        notApplicable = try c.decodeIfPresent(Bool.self, forKey: .notApplicable) ?? false
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rule, forKey: .rule)
        try c.encode(passed, forKey: .passed)
        try c.encodeIfPresent(reason, forKey: .reason)
        try c.encode(milliseconds, forKey: .milliseconds)
        if notApplicable { try c.encode(true, forKey: .notApplicable) }
    }

    /// `PASS rule`, `N/A rule: why not`, `SKIP rule: not supported: reason` or `FAIL rule: reason`.
    public var line: String {
        if notApplicable { return "N/A  \(rule): \(reason ?? "no reason recorded")" }
        if notSupported { return "SKIP \(rule): \(reason ?? "")" }
        return passed ? "PASS \(rule)" : "FAIL \(rule): \(reason ?? "no reason recorded")"
    }
}

/// What a suite found about one plugin.
public struct ConformanceReport: Sendable, Codable, Equatable {
    /// The kind the suite checked: `storage` or `registry`.
    public var kind: String
    /// The plugin's name and version, as its descriptor says.
    public var plugin: String
    public var version: String
    /// The library the suite ran against, as given.
    public var library: String
    /// For storage plugins: `NONE`, `LOCAL` or `REPLICATED`.
    public var durability: String?
    /// One entry per rule, in the order they ran.
    public var results: [RuleResult]

    public var passed: Int { results.filter { $0.passed && !$0.notApplicable }.count }
    public var failed: Int { results.filter { !$0.passed }.count }
    public var notApplicable: Int { results.filter(\.notApplicable).count }
    /// The names of the rules that did not apply, in order.
    public var notApplicableRules: [String] { results.filter(\.notApplicable).map(\.rule) }
    /// The names of the rules that failed, in order.
    public var failedRules: [String] { results.filter { !$0.passed }.map(\.rule) }

    /// `N passed, M failed`, and `, K not applicable` when some rules did not apply.
    public var summary: String {
        "\(passed) passed, \(failed) failed" + (notApplicable > 0 ? ", \(notApplicable) not applicable" : "")
    }

    private enum CodingKeys: String, CodingKey {
        case kind, plugin, version, library, durability, results, passed, failed
    }

    public init(
        kind: String, plugin: String, version: String, library: String, durability: String?, results: [RuleResult]
    ) {
        self.kind = kind
        self.plugin = plugin
        self.version = version
        self.library = library
        self.durability = durability
        self.results = results
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        kind = try c.decode(String.self, forKey: .kind)
        plugin = try c.decode(String.self, forKey: .plugin)
        version = try c.decode(String.self, forKey: .version)
        library = try c.decode(String.self, forKey: .library)
        durability = try c.decodeIfPresent(String.self, forKey: .durability)
        results = try c.decode([RuleResult].self, forKey: .results)
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(kind, forKey: .kind)
        try c.encode(plugin, forKey: .plugin)
        try c.encode(version, forKey: .version)
        try c.encode(library, forKey: .library)
        try c.encodeIfPresent(durability, forKey: .durability)
        try c.encode(results, forKey: .results)
        try c.encode(passed, forKey: .passed)
        try c.encode(failed, forKey: .failed)
    }

    /// The report as text: a heading, one line per rule, then the summary.
    public var text: String {
        let heading =
            "\(kind) conformance of \(plugin) \(version)\(durability.map { " (durability \($0))" } ?? "") from \(library)"
        return ([heading] + results.map(\.line) + [summary]).joined(separator: "\n")
    }

    /// The report as pretty-printed JSON with sorted keys.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self)
    }
}
