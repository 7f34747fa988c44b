import Foundation

/// A Semantic Versioning 2.0.0 version: `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`.
public struct SemanticVersion: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var major: Int
    public var minor: Int
    public var patch: Int
    public var prerelease: [String]
    public var build: [String]

    public init(_ major: Int, _ minor: Int, _ patch: Int, prerelease: [String] = [], build: [String] = []) {
        self.major = major
        self.minor = minor
        self.patch = patch
        self.prerelease = prerelease
        self.build = build
    }

    /// Parses a version; `nil` when the text is not SemVer.
    public init?(_ text: String) {
        var rest = Substring(text)
        var build: [String] = []
        if let plus = rest.firstIndex(of: "+") {
            build = rest[rest.index(after: plus)...].split(separator: ".", omittingEmptySubsequences: false).map(
                String.init)
            rest = rest[..<plus]
            guard build.allSatisfy({ !$0.isEmpty && $0.allSatisfy(Self.isIdentifierCharacter) }) else { return nil }
        }
        var prerelease: [String] = []
        if let dash = rest.firstIndex(of: "-") {
            prerelease = rest[rest.index(after: dash)...].split(separator: ".", omittingEmptySubsequences: false)
                .map(String.init)
            rest = rest[..<dash]
            guard prerelease.allSatisfy({ !$0.isEmpty && $0.allSatisfy(Self.isIdentifierCharacter) }) else {
                return nil
            }
            // A numeric identifier has no leading zeros (SemVer 2.0.0, rule 9).
            guard !prerelease.contains(where: { $0.count > 1 && $0.first == "0" && $0.allSatisfy(\.isASCIIDigit) })
            else {
                return nil
            }
        }
        let parts = rest.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var numbers: [Int] = []
        for part in parts {
            guard !part.isEmpty, part.allSatisfy(\.isASCIIDigit), part == "0" || part.first != "0",
                let value = Int(part)
            else { return nil }
            numbers.append(value)
        }
        self.init(numbers[0], numbers[1], numbers[2], prerelease: prerelease, build: build)
    }

    private static func isIdentifierCharacter(_ c: Character) -> Bool {
        c.isASCII && (c.isLetter || c.isNumber || c == "-")
    }

    public var description: String {
        var text = "\(major).\(minor).\(patch)"
        if !prerelease.isEmpty { text += "-" + prerelease.joined(separator: ".") }
        if !build.isEmpty { text += "+" + build.joined(separator: ".") }
        return text
    }

    public static func < (lhs: SemanticVersion, rhs: SemanticVersion) -> Bool {
        if lhs.major != rhs.major { return lhs.major < rhs.major }
        if lhs.minor != rhs.minor { return lhs.minor < rhs.minor }
        if lhs.patch != rhs.patch { return lhs.patch < rhs.patch }
        // A version with a pre-release has lower precedence than the same version without one.
        switch (lhs.prerelease.isEmpty, rhs.prerelease.isEmpty) {
        case (true, true), (true, false): return false
        case (false, true): return true
        case (false, false): break
        }
        for (a, b) in zip(lhs.prerelease, rhs.prerelease) where a != b {
            switch (Int(a), Int(b)) {
            case let (x?, y?): return x < y
            case (.some, nil): return true
            case (nil, .some): return false
            case (nil, nil): return a < b
            }
        }
        return lhs.prerelease.count < rhs.prerelease.count
    }

    /// Build metadata does not take part in precedence or equality.
    public static func == (lhs: SemanticVersion, rhs: SemanticVersion) -> Bool {
        lhs.major == rhs.major && lhs.minor == rhs.minor && lhs.patch == rhs.patch && lhs.prerelease == rhs.prerelease
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(major)
        hasher.combine(minor)
        hasher.combine(patch)
        hasher.combine(prerelease)
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

/// A set of versions: space-separated comparators that must all hold (`>=1.2.0 <2.0.0`), alternatives
/// separated by `||`, plus the shorthands `^1.2.3`, `~1.2.3`, `1.2.3` (exactly) and `*` (any).
public struct VersionRange: Sendable, CustomStringConvertible, Equatable {
    enum Comparator: Equatable, Sendable {
        case less(SemanticVersion), lessOrEqual(SemanticVersion)
        case greater(SemanticVersion), greaterOrEqual(SemanticVersion)
        case equal(SemanticVersion)

        func matches(_ v: SemanticVersion) -> Bool {
            switch self {
            case .less(let b): return v < b
            case .lessOrEqual(let b): return v <= b
            case .greater(let b): return v > b
            case .greaterOrEqual(let b): return v >= b
            case .equal(let b): return v == b
            }
        }
    }

    let alternatives: [[Comparator]]
    public let description: String

    /// Parses a range; `nil` when the text is not a valid range.
    public init?(_ text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        var alternatives: [[Comparator]] = []
        for alternative in trimmed.components(separatedBy: "||") {
            var comparators: [Comparator] = []
            let tokens = alternative.split(separator: " ", omittingEmptySubsequences: true)
            guard !tokens.isEmpty else { return nil }
            for token in tokens {
                guard let parsed = Self.parse(String(token)) else { return nil }
                comparators += parsed
            }
            alternatives.append(comparators)
        }
        self.alternatives = alternatives
        self.description = trimmed
    }

    private static func parse(_ token: String) -> [Comparator]? {
        if token == "*" { return [] }
        for (prefix, make) in [
            (">=", Comparator.greaterOrEqual), ("<=", Comparator.lessOrEqual), (">", Comparator.greater),
            ("<", Comparator.less), ("=", Comparator.equal),
        ] as [(String, (SemanticVersion) -> Comparator)] where token.hasPrefix(prefix) {
            guard let v = SemanticVersion(String(token.dropFirst(prefix.count))) else { return nil }
            return [make(v)]
        }
        if token.hasPrefix("^") {
            guard let v = SemanticVersion(String(token.dropFirst())) else { return nil }
            let upper: SemanticVersion
            if v.major > 0 {
                guard v.major < Int.max else { return nil }
                upper = SemanticVersion(v.major + 1, 0, 0)
            } else if v.minor > 0 {
                guard v.minor < Int.max else { return nil }
                upper = SemanticVersion(0, v.minor + 1, 0)
            } else {
                guard v.patch < Int.max else { return nil }
                upper = SemanticVersion(0, 0, v.patch + 1)
            }
            return [.greaterOrEqual(v), .less(upper)]
        }
        if token.hasPrefix("~") {
            guard let v = SemanticVersion(String(token.dropFirst())), v.minor < Int.max else { return nil }
            return [.greaterOrEqual(v), .less(SemanticVersion(v.major, v.minor + 1, 0))]
        }
        guard let v = SemanticVersion(token) else { return nil }
        return [.equal(v)]
    }

    /// Whether `version` lies in the range.
    public func contains(_ version: SemanticVersion) -> Bool {
        alternatives.contains { $0.allSatisfy { $0.matches(version) } }
    }

    public static func == (lhs: VersionRange, rhs: VersionRange) -> Bool { lhs.description == rhs.description }
}
