import GRPCCore
import Synchronization

/// Keeps leases alive over one `LeaseKeepAlive` stream: each lease is renewed every third of its TTL; when the
/// stream breaks it is opened again on the next endpoint. A lease etcd answers with a TTL of 0 (expired,
/// revoked, unknown) is dropped and reported to `onLost`.
///
/// - Important: `onLost` runs on the keeper's task and must not block.
public final class EtcdLeaseKeeper: Sendable {
    struct Lease {
        var ttlSeconds: Int64
        /// When the next renewal is due.
        var due: ContinuousClock.Instant
    }

    private let connection: EtcdConnection
    private let leases = Mutex<[Int64: Lease]>([:])
    private let onLost: @Sendable (Int64) -> Void
    private let task = Mutex<Task<Void, Never>?>(nil)
    private let renewals = Atomic<Int>(0)

    public init(client: EtcdClient, onLost: @escaping @Sendable (Int64) -> Void) {
        connection = client.connection
        self.onLost = onLost
    }

    /// Starts renewing; call once.
    public func start() {
        let work = Task(executorPreference: EtcdExecutor.shared) { await self.run() }
        task.withLock { $0 = work }
    }

    /// Stops renewing every lease (they then expire by their TTL).
    public func stop() async {
        guard let work = task.withLock({ $0 }) else { return }
        work.cancel()
        await work.value
    }

    /// Renews `id` from now on, every third of `ttlSeconds`.
    public func keep(_ id: Int64, ttlSeconds: Int64) {
        leases.withLock { $0[id] = Lease(ttlSeconds: max(1, ttlSeconds), due: .now + Self.period(ttlSeconds)) }
    }

    /// Stops renewing `id`.
    public func release(_ id: Int64) {
        _ = leases.withLock { $0.removeValue(forKey: id) }
    }

    /// How many renewals etcd acknowledged.
    public var acknowledged: Int { renewals.load(ordering: .relaxed) }

    static func period(_ ttlSeconds: Int64) -> Duration { .milliseconds(max(1, ttlSeconds) * 1000 / 3) }

    private func run() async {
        while !Task.isCancelled, !connection.isClosed {
            let (index, member) = connection.current()
            do {
                let metadata = try await connection.metadata(index)
                let end = StreamEnd()
                try await Etcdserverpb_Lease.Client(wrapping: member.client).leaseKeepAlive(
                    metadata: metadata,
                    requestProducer: { writer in
                        // Everything is due on a new stream: the old one may have lost renewals.
                        self.leases.withLock { leases in
                            for id in leases.keys { leases[id]?.due = .now }
                        }
                        while !Task.isCancelled, !end.isSet {
                            let now = ContinuousClock.now
                            let due = self.leases.withLock { leases -> [Int64] in
                                var due: [Int64] = []
                                for (id, lease) in leases where lease.due <= now {
                                    due.append(id)
                                    leases[id]?.due = now + Self.period(lease.ttlSeconds)
                                }
                                return due
                            }
                            for id in due {
                                var request = Etcdserverpb_LeaseKeepAliveRequest()
                                request.id = id
                                try await writer.write(request)
                            }
                            try await Task.sleep(for: .milliseconds(100))
                        }
                    },
                    onResponse: { response in
                        defer { end.set() }
                        for try await reply in response.messages {
                            if reply.ttl > 0 {
                                self.renewals.add(1, ordering: .relaxed)
                            } else if self.leases.withLock({ $0.removeValue(forKey: reply.id) }) != nil {
                                self.onLost(reply.id)
                            }
                        }
                    })
            } catch {}
            if Task.isCancelled { return }
            connection.failover(from: index)
            try? await Task.sleep(for: .milliseconds(100))
        }
    }
}
