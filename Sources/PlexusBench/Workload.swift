import Foundation
import Yams

/// What one benchmark run does: how many topics, producers and consumers, how big and how fast.
///
/// Read from YAML (``Workload/load(path:)``); every key but `name`, `messageSize` and `durationSeconds` has a
/// default. Unknown keys are rejected so that a typo does not silently run the default.
///
/// ```yaml
/// name: 1kb-1p-1c-max
/// topics: 1
/// messageSize: 1024
/// producerRate: 0        # 0: as fast as maxInFlight allows
/// producers: 1
/// consumers: 1
/// durationSeconds: 20
/// warmupSeconds: 5
/// maxInFlight: 1000
/// ```
public struct Workload: Codable, Sendable, Equatable {
    /// A short name, used in reports and plots.
    public var name: String
    /// The number of topics (streams, subjects); each gets its own producers and consumers.
    public var topics: Int
    /// The number of distinct partition keys cycled through by producers; 0 sends messages without a key.
    public var keys: Int
    /// The payload size in bytes, including the 8-byte send stamp.
    public var messageSize: Int
    /// The total publish rate over all producers, in messages per second; 0 publishes as fast as the
    /// `maxInFlight` window allows.
    public var producerRate: Int
    /// Producers per topic, each with its own connection.
    public var producers: Int
    /// Consumers per topic, all members of one group, so that each message is consumed once; 0 consumes nothing.
    public var consumers: Int
    /// How long the measured phase lasts, after the warmup.
    public var durationSeconds: Double
    /// How long producers and consumers run before measuring starts; nothing sent in it is recorded.
    public var warmupSeconds: Double
    /// Unacknowledged publishes a producer may have outstanding before it waits.
    public var maxInFlight: Int
    /// Whether a publish completes once written to the socket rather than once the server acknowledged it.
    public var fireAndForget: Bool
    /// An upper bound on messages sent in the whole run (warmup included), over all producers.
    public var maxMessages: Int
    /// How long, after producers stop, consumers may take to receive what was acknowledged.
    public var drainSeconds: Double

    /// A workload with the defaults of every optional key.
    public init(
        name: String, topics: Int = 1, keys: Int = 0, messageSize: Int, producerRate: Int = 0, producers: Int = 1,
        consumers: Int = 1, durationSeconds: Double, warmupSeconds: Double = 0, maxInFlight: Int = 1000,
        fireAndForget: Bool = false, maxMessages: Int = 20_000_000, drainSeconds: Double = 30
    ) {
        self.name = name
        self.topics = topics
        self.keys = keys
        self.messageSize = messageSize
        self.producerRate = producerRate
        self.producers = producers
        self.consumers = consumers
        self.durationSeconds = durationSeconds
        self.warmupSeconds = warmupSeconds
        self.maxInFlight = maxInFlight
        self.fireAndForget = fireAndForget
        self.maxMessages = maxMessages
        self.drainSeconds = drainSeconds
    }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case name, topics, keys, messageSize, producerRate, producers, consumers, durationSeconds, warmupSeconds
        case maxInFlight, fireAndForget, maxMessages, drainSeconds
    }

    /// Any key of a YAML mapping, so that unknown keys can be reported.
    private struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    public init(from decoder: any Decoder) throws {
        let known = Set(CodingKeys.allCases.map(\.rawValue))
        let unknown = try decoder.container(keyedBy: AnyKey.self).allKeys.map(\.stringValue).filter {
            !known.contains($0)
        }
        if let first = unknown.sorted().first {
            let keys = CodingKeys.allCases.map(\.rawValue).joined(separator: ", ")
            throw WorkloadError(field: first, "unknown key; the keys are \(keys)")
        }
        let c = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try c.decode(String.self, forKey: .name),
            messageSize: try c.decode(Int.self, forKey: .messageSize),
            durationSeconds: try c.decode(Double.self, forKey: .durationSeconds))
        topics = try c.decodeIfPresent(Int.self, forKey: .topics) ?? topics
        keys = try c.decodeIfPresent(Int.self, forKey: .keys) ?? keys
        producerRate = try c.decodeIfPresent(Int.self, forKey: .producerRate) ?? producerRate
        producers = try c.decodeIfPresent(Int.self, forKey: .producers) ?? producers
        consumers = try c.decodeIfPresent(Int.self, forKey: .consumers) ?? consumers
        warmupSeconds = try c.decodeIfPresent(Double.self, forKey: .warmupSeconds) ?? warmupSeconds
        maxInFlight = try c.decodeIfPresent(Int.self, forKey: .maxInFlight) ?? maxInFlight
        fireAndForget = try c.decodeIfPresent(Bool.self, forKey: .fireAndForget) ?? fireAndForget
        maxMessages = try c.decodeIfPresent(Int.self, forKey: .maxMessages) ?? maxMessages
        drainSeconds = try c.decodeIfPresent(Double.self, forKey: .drainSeconds) ?? drainSeconds
        try validate()
    }

    /// Checks every value against its allowed range.
    ///
    /// - Throws: ``WorkloadError`` naming the first field out of range and the range it must be in.
    public func validate() throws {
        func check(_ ok: Bool, _ field: CodingKeys, _ value: Any, _ expected: String) throws {
            guard ok else { throw WorkloadError(field: field.rawValue, "is \(value); \(expected)") }
        }
        try check(!name.isEmpty, .name, "empty", "give the workload a name")
        try check((1...1000).contains(topics), .topics, topics, "must be 1...1000")
        try check((0...1_000_000).contains(keys), .keys, keys, "must be 0 (no keys)...1000000")
        try check(
            (PayloadStamp.size...(16 << 20)).contains(messageSize), .messageSize, messageSize,
            "must be \(PayloadStamp.size) (the send stamp) to 16 MiB")
        try check(producerRate >= 0, .producerRate, producerRate, "must be 0 (as fast as possible) or more")
        try check((1...1000).contains(producers), .producers, producers, "must be 1...1000 per topic")
        try check((0...1000).contains(consumers), .consumers, consumers, "must be 0...1000 per topic")
        try check(
            durationSeconds > 0 && durationSeconds <= 3600, .durationSeconds, durationSeconds,
            "must be more than 0 and at most 3600")
        try check(
            warmupSeconds >= 0 && warmupSeconds <= 3600, .warmupSeconds, warmupSeconds, "must be 0...3600")
        try check((1...1_000_000).contains(maxInFlight), .maxInFlight, maxInFlight, "must be 1...1000000")
        try check(maxMessages >= 1, .maxMessages, maxMessages, "must be at least 1")
        try check(drainSeconds >= 0 && drainSeconds <= 600, .drainSeconds, drainSeconds, "must be 0...600")
    }

    /// Parses a workload from YAML text.
    ///
    /// - Parameters:
    ///   - yaml: The document.
    ///   - source: The file name to put in errors.
    /// - Throws: ``WorkloadError`` naming the field at fault.
    public static func parse(_ yaml: String, source: String = "workload") throws -> Workload {
        do {
            return try YAMLDecoder().decode(Workload.self, from: yaml)
        } catch var error as WorkloadError {
            error.source = source
            throw error
        } catch let error as DecodingError {
            // Yams wraps what `init(from:)` throws in `dataCorrupted`.
            if case .dataCorrupted(let context) = error, var underlying = context.underlyingError as? WorkloadError {
                underlying.source = source
                throw underlying
            }
            throw Self.describe(error, source: source)
        } catch {
            throw WorkloadError(source: source, field: nil, "not a YAML mapping of workload keys: \(error)")
        }
    }

    /// Reads and parses the workload file at `path`.
    ///
    /// - Throws: ``WorkloadError`` when the file cannot be read or a field is wrong.
    public static func load(path: String) throws -> Workload {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw WorkloadError(source: path, field: nil, "cannot read the file: \(error.localizedDescription)")
        }
        return try parse(text, source: path)
    }

    /// A ``WorkloadError`` for a decoding failure, naming the field and the expected type.
    private static func describe(_ error: DecodingError, source: String) -> WorkloadError {
        func field(_ path: [any CodingKey]) -> String? {
            path.isEmpty ? nil : path.map(\.stringValue).joined(separator: ".")
        }
        switch error {
        case .keyNotFound(let key, let context):
            let path = field(context.codingPath + [key]) ?? key.stringValue
            return WorkloadError(source: source, field: path, "is missing; it is required")
        case .typeMismatch(let type, let context), .valueNotFound(let type, let context):
            return WorkloadError(
                source: source, field: field(context.codingPath), "must be \(Self.typeName(type))")
        case .dataCorrupted(let context):
            let cause = context.underlyingError.map { ": \($0)" } ?? ""
            return WorkloadError(source: source, field: field(context.codingPath), context.debugDescription + cause)
        @unknown default:
            return WorkloadError(source: source, field: nil, "\(error)")
        }
    }

    private static func typeName(_ type: Any.Type) -> String {
        switch type {
        case is Int.Type: return "an integer"
        case is Double.Type: return "a number"
        case is Bool.Type: return "true or false"
        case is String.Type: return "a string"
        default: return "a mapping of workload keys"
        }
    }
}
