import PlexusClient
import PlexusCore

/// The record every write carries: `size` bytes of a fixed pattern, the same for Plexus and etcd.
public func benchPayload(size: Int) -> [UInt8] {
    (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
}

/// Plexus over its TCP protocol: one `PlexusClient` connection, each write an acknowledged publish of one
/// CloudEvent with the payload as data, pipelined, **one event per `PUBLISH` frame** (the client's coalescing
/// of concurrent publishes into one frame is off unless `coalesce` is asked for), as etcd gets one put per
/// request.
public struct PlexusWriteTarget: WriteTarget {
    public let client: PlexusClient
    public let topic: String
    public let payload: [UInt8]
    public var name: String { "plexus" }

    public init(client: PlexusClient, topic: String, payload: [UInt8]) {
        self.client = client
        self.topic = topic
        self.payload = payload
    }

    /// Connects to `host:port` without reconnecting (a lost connection fails the level instead of hiding).
    ///
    /// - Parameter coalesce: `true` lets the client pack concurrent publishes into one frame (batched, not
    ///   like for like with etcd); `false`, the default, sends one event per frame.
    /// - Throws: `PlexusClientError` when the node cannot be reached.
    public static func connect(
        host: String, port: Int, name: String, reconnect: Bool = false, coalesce: Bool = false
    ) async throws -> PlexusClient {
        var config = ClientConfiguration(
            host: host, port: port, name: name, connectTimeout: .seconds(10), reconnect: reconnect)
        config.requestTimeout = .seconds(10)
        if !coalesce { config.maxBatchEvents = 1 }
        return try await PlexusClient.connect(config)
    }

    public func write(sequence: UInt64) async throws {
        _ = try await client.publish(
            topic: topic, CloudEvent(id: String(sequence), source: "/bench/raft", type: "bench", data: payload))
    }
}

/// etcd through its gRPC KV API: one HTTP/2 connection, each write a `KV/Put` of the payload under a key of
/// its own (`prefix` + sequence number).
public struct EtcdWriteTarget: WriteTarget {
    public let client: EtcdClient
    public let prefix: String
    public let payload: [UInt8]
    public var name: String { "etcd" }

    public init(client: EtcdClient, prefix: String, payload: [UInt8]) {
        self.client = client
        self.prefix = prefix
        self.payload = payload
    }

    public func write(sequence: UInt64) async throws {
        let response = try await client.put(key: Array("\(prefix)\(sequence)".utf8), value: payload)
        guard response.header.revision > 0 else {
            throw HarnessError("etcd acknowledged a put without a revision: \(response)")
        }
    }
}
