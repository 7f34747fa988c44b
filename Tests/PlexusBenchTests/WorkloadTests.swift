import Testing

@testable import PlexusBench

/// The workload parser: defaults, the shipped files, and an error naming the field for each kind of mistake.
@Suite("Workload")
struct WorkloadTests {
    /// The error `parse` throws for `yaml`, or `nil` when it parsed.
    static func error(_ yaml: String) -> WorkloadError? {
        do {
            _ = try Workload.parse(yaml, source: "test.yaml")
            return nil
        } catch let error as WorkloadError {
            return error
        } catch {
            Issue.record("not a WorkloadError: \(error)")
            return nil
        }
    }

    static let minimal = "name: w\nmessageSize: 1024\ndurationSeconds: 2\n"

    @Test("Only name, messageSize and durationSeconds are required; the rest take their defaults")
    func defaults() throws {
        let workload = try Workload.parse(Self.minimal)
        #expect(workload == Workload(name: "w", messageSize: 1024, durationSeconds: 2))
        #expect(workload.topics == 1 && workload.producers == 1 && workload.consumers == 1)
        #expect(workload.producerRate == 0 && workload.keys == 0 && workload.warmupSeconds == 0)
        #expect(workload.maxInFlight == 1000 && !workload.fireAndForget)
    }

    @Test("Every key is read")
    func everyKey() throws {
        let workload = try Workload.parse(
            """
            name: all
            topics: 3
            keys: 16
            messageSize: 100
            producerRate: 5000
            producers: 2
            consumers: 4
            durationSeconds: 1.5
            warmupSeconds: 0.5
            maxInFlight: 64
            fireAndForget: true
            maxMessages: 1000
            drainSeconds: 3
            """)
        #expect(
            workload
                == Workload(
                    name: "all", topics: 3, keys: 16, messageSize: 100, producerRate: 5000, producers: 2, consumers: 4,
                    durationSeconds: 1.5, warmupSeconds: 0.5, maxInFlight: 64, fireAndForget: true, maxMessages: 1000,
                    drainSeconds: 3))
    }

    @Test(
        "A wrong value names its field and what is expected",
        arguments: [
            ("messageSize: 4", "messageSize", "must be 8"),
            ("topics: 0", "topics", "must be 1...1000"),
            ("producerRate: -5", "producerRate", "0 (as fast as possible) or more"),
            ("maxInFlight: 0", "maxInFlight", "must be 1...1000000"),
            ("warmupSeconds: -1", "warmupSeconds", "must be 0...3600"),
            ("keys: -1", "keys", "must be 0"),
            ("producers: many", "producers", "must be an integer"),
            ("fireAndForget: perhaps", "fireAndForget", "must be true or false"),
            ("messagesize: 10", "messagesize", "unknown key"),
        ])
    func badValue(line: String, field: String, expected: String) throws {
        // The minimal workload with `line` replacing the line of the same key, or added.
        let key = line.prefix { $0 != ":" }
        let yaml = Self.minimal.split(separator: "\n").filter { !$0.hasPrefix(key + ":") }.joined(separator: "\n")
        let error = try #require(Self.error(yaml + "\n" + line + "\n"))
        #expect(error.field == field, "\(error)")
        #expect(error.message.contains(expected), "\(error)")
        #expect(error.description.hasPrefix("test.yaml: \(field): "), "\(error)")
    }

    @Test("A missing required key is named")
    func missingKey() throws {
        let error = try #require(Self.error("name: w\nmessageSize: 1024\n"))
        #expect(error.field == "durationSeconds" && error.message.contains("missing"), "\(error)")
    }

    @Test("A document that is not a mapping is rejected")
    func notAMapping() throws {
        #expect(Self.error("- 1\n- 2\n") != nil)
    }

    @Test("An unreadable file names the path")
    func unreadableFile() throws {
        let error = #expect(throws: WorkloadError.self) { try Workload.load(path: "/nonexistent/w.yaml") }
        #expect(error?.source == "/nonexistent/w.yaml")
    }

    @Test("The shipped workloads parse", arguments: ["1kb-1p-1c-max", "1kb-fire-and-forget"])
    func shipped(name: String) throws {
        let root = #filePath.split(separator: "/").dropLast(3).joined(separator: "/")
        let workload = try Workload.load(path: "/\(root)/benchmarks/tcp/workloads/\(name).yaml")
        #expect(workload.name == name)
        #expect(workload.messageSize == 1024 && workload.durationSeconds == 20 && workload.warmupSeconds == 5)
        #expect(workload.fireAndForget == (name == "1kb-fire-and-forget"))
    }
}
