/// A system under test, as the benchmark runner sees it: it prepares topics, makes producers and consumers,
/// and cleans up.
///
/// A driver speaks its system's own wire protocol. The runner calls ``setUp(topics:)`` once, then makes every
/// consumer, then every producer, and calls ``tearDown()`` last, after closing them all.
public protocol BenchDriver: Sendable {
    /// Short name used on the command line and in reports: "nats", "jetstream", "redis", "plexus".
    var name: String { get }
    /// Creates what the workload needs (streams, consumer groups) on the server; called once before producers/consumers.
    func setUp(topics: [String]) async throws
    /// Opens a producer that publishes to `topic`.
    func makeProducer(topic: String) async throws -> any BenchProducer
    /// Starts consuming `topic` as a member of `group`; `onMessage` gets each payload (called on any thread, must not block) and the driver acknowledges it.
    func makeConsumer(topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void) async throws
        -> any BenchConsumer
    /// Removes what ``setUp(topics:)`` created, where the system allows it, and closes the driver's own connections.
    func tearDown() async
    /// One line on what a completed publish and a consumed message mean for this driver (acknowledgement,
    /// durability, ack policy), printed in reports beside the figures.
    var semantics: String { get }
}

extension BenchDriver {
    public var semantics: String { "" }
}

/// Publishes messages to one topic.
public protocol BenchProducer: Sendable {
    /// Sends one message. `completion` runs once the server acknowledged it (durable per the system's settings), or when it was written for fire-and-forget; with an error if it failed. Any thread.
    ///
    /// - Important: `completion` runs exactly once per send and must not block. `key` is `nil` when the
    ///   workload has no keys.
    func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void)
    /// Closes the producer; sends still outstanding complete with an error.
    func close() async
}

/// Receives the messages of one topic for one group member.
public protocol BenchConsumer: Sendable {
    /// Stops consuming and closes the consumer's connections.
    func close() async
    /// Errors the consumer met while running (a lost connection, a failed acknowledgement), oldest first;
    /// empty when there were none. Read after ``close()``.
    var errors: [String] { get }
}

extension BenchConsumer {
    public var errors: [String] { [] }
}
