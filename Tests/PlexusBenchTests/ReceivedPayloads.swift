import Synchronization

/// Payloads collected from a consumer callback, which may run on any thread.
final class ReceivedPayloads: Sendable {
    private let payloads = Mutex<[[UInt8]]>([])

    func append(_ payload: [UInt8]) { payloads.withLock { $0.append(payload) } }

    var all: [[UInt8]] { payloads.withLock { $0 } }
}
