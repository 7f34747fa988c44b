import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import PlexusBench
import PlexusGRPCServices
import Synchronization

/// `plexus bench` drivers for the gRPC protocol's Plexus service: `grpc-stream` publishes on one
/// `PublishStream` call per producer (one event per request, acknowledged per request once durable),
/// `grpc-unary` makes one `Publish` call per event; consumers of both use one `Subscribe` stream each and ack
/// every delivery.
final class GRPCDriver: BenchDriver {
    let name: String
    let streaming: Bool
    private let host: String
    private let port: Int
    private let clients = Mutex<[(GRPCClient<HTTP2ClientTransport.Posix>, Task<Void, Never>)]>([])

    init(options: DriverOptions, streaming: Bool) {
        name = streaming ? "grpc-stream" : "grpc-unary"
        self.streaming = streaming
        host = options.host
        port = options.port
    }

    var semantics: String {
        streaming
            ? "gRPC PublishStream, one event per request, acked per request once durable"
            : "gRPC unary Publish per event, answered once durable"
    }

    /// A client on a connection of its own (each producer and consumer has one, as on TCP).
    private func client() throws -> PXPlexus.Client<HTTP2ClientTransport.Posix> {
        let client = GRPCClient(
            transport: try .http2NIOPosix(target: .ipv4(address: host, port: port), transportSecurity: .plaintext))
        let task = Task { _ = try? await client.runConnections() }
        clients.withLock { $0.append((client, task)) }
        return PXPlexus.Client(wrapping: client)
    }

    func setUp(topics: [String]) async throws {}

    func makeProducer(topic: String) async throws -> any BenchProducer {
        let plexus = try client()
        return streaming ? StreamProducer(plexus: plexus, topic: topic) : UnaryProducer(plexus: plexus, topic: topic)
    }

    func makeConsumer(topic: String, group: String, onMessage: @escaping @Sendable ([UInt8]) -> Void) async throws
        -> any BenchConsumer
    {
        try await SubscribeConsumer(plexus: client(), topic: topic, group: group, onMessage: onMessage)
    }

    func tearDown() async {
        let all = clients.withLock { clients in
            defer { clients.removeAll() }
            return clients
        }
        for (client, task) in all {
            client.beginGracefulShutdown()
            await task.value
        }
    }

    static func event(_ payload: [UInt8], sequence: UInt64) -> CECloudEvent {
        var event = CECloudEvent()
        event.id = String(sequence)
        event.source = "/bench/grpc"
        event.specVersion = "1.0"
        event.type = "bench"
        event.attributes["datacontenttype"] = .string("application/octet-stream")
        event.binaryData = Data(payload)
        return event
    }
}

/// One `PublishStream` call; completions matched to acks by sequence.
final class StreamProducer: BenchProducer {
    private let requests: AsyncStream<PXPublishRequest>.Continuation
    private let pending = Locked<(next: UInt64, waiting: [UInt64: @Sendable ((any Error)?) -> Void])>((1, [:]))
    private let topic: String
    private let call: Task<Void, Never>

    init(plexus: PXPlexus.Client<HTTP2ClientTransport.Posix>, topic: String) {
        self.topic = topic
        let (stream, continuation) = AsyncStream<PXPublishRequest>.makeStream()
        requests = continuation
        let pending = self.pending
        call = Task {
            do {
                try await plexus.publishStream(
                    requestProducer: { writer in
                        for await request in stream { try await writer.write(request) }
                    },
                    onResponse: { response in
                        for try await ack in response.messages {
                            let done = pending.withLock { $0.waiting.removeValue(forKey: ack.sequence) }
                            done?(ack.code == 0 ? nil : BenchFailure(message: ack.message))
                        }
                    })
            } catch {
                let all = pending.withLock { state in
                    defer { state.waiting.removeAll() }
                    return Array(state.waiting.values)
                }
                for done in all { done(error) }
            }
        }
    }

    func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        let sequence = pending.withLock { state -> UInt64 in
            defer { state.next += 1 }
            state.waiting[state.next] = completion
            return state.next
        }
        var request = PXPublishRequest()
        request.topic = topic
        request.sequence = sequence
        request.events = [GRPCDriver.event(payload, sequence: sequence)]
        requests.yield(request)
    }

    func close() async {
        requests.finish()
        await call.value
    }
}

/// One unary `Publish` call per event, at most `maxCalls` at a time on the connection (HTTP/2 servers limit
/// the concurrent streams of a connection; grpc-swift's default is 100): sends beyond it wait in a queue, so
/// the harness's window of unacknowledged publishes stays what it is for the other drivers.
final class UnaryProducer: BenchProducer {
    static let maxCalls = 100
    private let plexus: PXPlexus.Client<HTTP2ClientTransport.Posix>
    private let topic: String
    private let state = Locked<(next: UInt64, active: Int, queue: [(PXPublishRequest, Completion)])>((1, 0, []))
    typealias Completion = @Sendable ((any Error)?) -> Void

    init(plexus: PXPlexus.Client<HTTP2ClientTransport.Posix>, topic: String) {
        self.plexus = plexus
        self.topic = topic
    }

    func send(key: String?, payload: [UInt8], completion: @escaping @Sendable ((any Error)?) -> Void) {
        let topic = self.topic
        let start = state.withLock { state -> PXPublishRequest? in
            var request = PXPublishRequest()
            request.topic = topic
            request.sequence = state.next
            request.events = [GRPCDriver.event(payload, sequence: state.next)]
            state.next += 1
            guard state.active < Self.maxCalls else {
                state.queue.append((request, completion))
                return nil
            }
            state.active += 1
            return request
        }
        if let start { call(start, completion) }
    }

    private func call(_ request: PXPublishRequest, _ completion: @escaping Completion) {
        let plexus = self.plexus
        Task {
            do {
                let ack = try await plexus.publish(request)
                completion(ack.code == 0 ? nil : BenchFailure(message: ack.message))
            } catch {
                completion(error)
            }
            let next = self.state.withLock { state -> (PXPublishRequest, Completion)? in
                guard !state.queue.isEmpty else {
                    state.active -= 1
                    return nil
                }
                return state.queue.removeFirst()
            }
            if let (request, completion) = next { self.call(request, completion) }
        }
    }

    func close() async {}
}

/// One `Subscribe` stream; every delivery is handed on and acknowledged.
final class SubscribeConsumer: BenchConsumer {
    private let acks: AsyncStream<UInt64>.Continuation
    private let call: Task<Void, Never>
    private let failures = Locked<[String]>([])
    /// Set by `close`: the call's cancellation is not an error.
    private let closing = Locked<Bool>(false)

    init(
        plexus: PXPlexus.Client<HTTP2ClientTransport.Posix>, topic: String, group: String,
        onMessage: @escaping @Sendable ([UInt8]) -> Void
    ) async throws {
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        acks = continuation
        let (subscribed, subscribedContinuation) = AsyncStream<Void>.makeStream()
        let failures = self.failures
        let closing = self.closing
        call = Task {
            do {
                try await plexus.subscribe(
                    requestProducer: { writer in
                        var subscription = PXSubscription()
                        subscription.topic = topic
                        subscription.group = group
                        subscription.credits = 1000
                        var first = PXSubscribeRequest()
                        first.subscription = subscription
                        try await writer.write(first)
                        for await id in stream {
                            var ack = PXSubscribeRequest()
                            ack.ack = PXAck.with { $0.deliveryIds = [id] }
                            try await writer.write(ack)
                        }
                    },
                    onResponse: { response in
                        for try await message in response.messages {
                            switch message.kind {
                            case .subscribed: subscribedContinuation.yield()
                            case .delivery(let delivery):
                                if case .binaryData(let data)? = delivery.event.data { onMessage([UInt8](data)) }
                                continuation.yield(delivery.deliveryID)
                            case nil: break
                            }
                        }
                    })
            } catch {
                if !closing.withLock({ $0 }) { failures.withLock { $0.append("\(error)") } }
            }
            subscribedContinuation.finish()
        }
        for await _ in subscribed { break }
    }

    var errors: [String] { failures.withLock { $0 } }

    func close() async {
        closing.withLock { $0 = true }
        acks.finish()
        call.cancel()
        await call.value
    }
}

/// A value under a lock, shareable by reference with the tasks of a call.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R>(_ body: (inout sending Value) -> sending R) -> R { mutex.withLock(body) }
}

struct BenchFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}
