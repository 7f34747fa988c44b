import Testing

@testable import PlexusKernel

@Suite("Semantic versions")
struct SemanticVersionTests {
    @Test("parses MAJOR.MINOR.PATCH with pre-release and build metadata")
    func parsesComponents() throws {
        let plain = try #require(SemanticVersion("1.2.3"))
        #expect(plain.major == 1 && plain.minor == 2 && plain.patch == 3)
        #expect(plain.prerelease.isEmpty && plain.build.isEmpty)

        let full = try #require(SemanticVersion("10.20.30-alpha.1.x-y+build.5.sha-9f"))
        #expect(full.major == 10 && full.minor == 20 && full.patch == 30)
        #expect(full.prerelease == ["alpha", "1", "x-y"])
        #expect(full.build == ["build", "5", "sha-9f"])
        #expect(full.description == "10.20.30-alpha.1.x-y+build.5.sha-9f")

        let zero = try #require(SemanticVersion("0.0.0"))
        #expect(zero == SemanticVersion(0, 0, 0))
    }

    @Test(
        "rejects text that is not SemVer 2.0.0",
        arguments: [
            "", "1", "1.0", "1.0.0.0", "01.0.0", "1.01.0", "1.0.01", "1.0.0-", "1.0.0+", "1.0.0-alpha..1",
            "1.0.0+build..1", "v1.0.0", " 1.0.0", "1.0.0 ", "1.-1.0", "a.b.c", "1.0.0-alpha_1", "1.0.0+build!",
            "99999999999999999999.0.0",
        ])
    func rejectsInvalid(_ text: String) {
        #expect(SemanticVersion(text) == nil, "'\(text)' must not parse")
    }

    @Test("numeric pre-release identifiers with leading zeros are rejected (SemVer 2.0.0 rule 9)")
    func rejectsLeadingZeroInNumericPrerelease() {
        #expect(SemanticVersion("1.0.0-01") == nil)
        #expect(SemanticVersion("1.0.0-alpha.007") == nil)
        // Alphanumeric identifiers may start with 0; a lone 0 is fine.
        #expect(SemanticVersion("1.0.0-0a") != nil)
        #expect(SemanticVersion("1.0.0-0") != nil)
    }

    @Test("precedence follows the SemVer 2.0.0 example chain, pre-releases included")
    func precedenceChain() throws {
        let chain = [
            "0.9.9", "1.0.0-1", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
            "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0-0", "2.0.0", "10.0.0",
        ]
        let versions = try chain.map { try #require(SemanticVersion($0), "\($0) must parse") }
        for i in versions.indices {
            for j in versions.indices {
                #expect((versions[i] < versions[j]) == (i < j), "\(chain[i]) < \(chain[j]) should be \(i < j)")
            }
        }
        #expect(versions.shuffled().sorted() == versions)
    }

    @Test("build metadata takes no part in precedence or equality")
    func buildMetadataIgnored() throws {
        let a = try #require(SemanticVersion("1.0.0+linux"))
        let b = try #require(SemanticVersion("1.0.0+darwin.7"))
        #expect(a == b)
        #expect(!(a < b) && !(b < a))
        #expect(Set([a, b]).count == 1)
        #expect(try #require(SemanticVersion("1.0.0-rc.1+x")) < a)
    }
}

@Suite("Version ranges")
struct VersionRangeTests {
    struct Case: Sendable, CustomTestStringConvertible {
        var range: String
        var inside: [String]
        var outside: [String]
        var testDescription: String { "'\(range)'" }
    }

    @Test(
        "contains exactly the versions it should",
        arguments: [
            Case(
                range: ">=1.0.0 <2.0.0", inside: ["1.0.0", "1.4.2", "1.99.99"],
                outside: ["0.9.9", "2.0.0", "2.0.1", "1.0.0-rc.1"]),
            Case(
                range: "^1.2.3", inside: ["1.2.3", "1.2.4", "1.9.0"],
                outside: ["1.2.2", "2.0.0", "1.2.3-beta", "0.2.3"]),
            Case(range: "^0.2.3", inside: ["0.2.3", "0.2.99"], outside: ["0.2.2", "0.3.0", "1.2.3"]),
            Case(range: "^0.0.3", inside: ["0.0.3"], outside: ["0.0.2", "0.0.4", "0.1.0"]),
            Case(range: "~1.2.3", inside: ["1.2.3", "1.2.9"], outside: ["1.2.2", "1.3.0", "2.2.3"]),
            Case(range: "~0.2.3", inside: ["0.2.3", "0.2.7"], outside: ["0.3.0"]),
            Case(range: "*", inside: ["0.0.0", "1.0.0", "99.1.2", "1.0.0-alpha"], outside: []),
            Case(range: "1.2.3", inside: ["1.2.3", "1.2.3+build.1"], outside: ["1.2.4", "1.2.3-rc.1"]),
            Case(range: "=1.2.3", inside: ["1.2.3"], outside: ["1.2.2"]),
            Case(range: ">1.0.0 <=1.5.0", inside: ["1.0.1", "1.5.0"], outside: ["1.0.0", "1.5.1"]),
            Case(
                range: "^1.0.0 || ^3.1.0", inside: ["1.0.0", "1.7.0", "3.1.0", "3.9.9"],
                outside: ["2.0.0", "3.0.9", "4.0.0"]),
            Case(range: "<1.0.0 || >=2.0.0 <2.1.0", inside: ["0.5.0", "2.0.5"], outside: ["1.0.0", "1.5.0", "2.1.0"]),
            Case(range: "  >=1.0.0   <2.0.0  ", inside: ["1.5.0"], outside: ["2.0.0"]),
        ])
    func membership(_ c: Case) throws {
        let range = try #require(VersionRange(c.range), "'\(c.range)' must parse")
        for text in c.inside {
            let v = try #require(SemanticVersion(text))
            #expect(range.contains(v), "\(text) should be in '\(c.range)'")
        }
        for text in c.outside {
            let v = try #require(SemanticVersion(text))
            #expect(!range.contains(v), "\(text) should not be in '\(c.range)'")
        }
    }

    @Test(
        "rejects malformed ranges",
        arguments: [
            "", "   ", ">=1.0", "^1", "~1.2", "abc", ">= 1.0.0", "1.0.0 ||", "|| 1.0.0", "^01.0.0", "=>1.0.0",
            "1.0.0 - 2.0.0",
        ])
    func rejectsMalformed(_ text: String) {
        #expect(VersionRange(text) == nil, "'\(text)' must not parse")
    }

    @Test("keeps the text it was written as, trimmed, for messages")
    func description() throws {
        #expect(try #require(VersionRange(" ^1.2.0 ")).description == "^1.2.0")
        #expect(try #require(VersionRange(">=1.0.0 <2.0.0 || 3.0.0")).description == ">=1.0.0 <2.0.0 || 3.0.0")
    }
}
