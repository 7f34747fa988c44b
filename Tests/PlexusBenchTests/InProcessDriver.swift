import PlexusBench
import Synchronization

/// A driver without a server: a send completes at once and is handed to one consumer of its topic, in turn.
///
/// For testing the runner alone: pacing, bounds, counts, the warmup, a driver that misbehaves.
final class InProcessDriver: BenchDriver {
    let name = "in-process"
    /// Run every completion twice, as a buggy driver might.
    let completeTwice: Bool
    private let consumers = Mutex<[String: [@Sendable ([UInt8]) -> Void]]>([:])
    private let next = Mutex(0)

    init(completeTwice: Bool = false) {
        self.completeTwice = completeTwice
    }

    func setUp(topics: [String]) async throws {}

    func makeProducer(topic: String) async throws -> any BenchProducer {
        Producer(driver: self, topic: topic)
    }

    func makeConsumer(
        topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) async throws -> any BenchConsumer {
        consumers.withLock { $0[topic, default: []].append(onMessage) }
        return Consumer()
    }

    func tearDown() async {}

    fileprivate func deliver(_ payload: [UInt8], topic: String) {
        let members = consumers.withLock { $0[topic] ?? [] }
        guard !members.isEmpty else { return }
        let index = next.withLock { next in
            next += 1
            return next
        }
        members[index % members.count](payload)
    }

    private struct Producer: BenchProducer {
        let driver: InProcessDriver
        let topic: String

        func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
            driver.deliver(payload, topic: topic)
            completion(nil)
            if driver.completeTwice { completion(nil) }
        }

        func close() async {}
    }

    private struct Consumer: BenchConsumer {
        func close() async {}
    }
}
