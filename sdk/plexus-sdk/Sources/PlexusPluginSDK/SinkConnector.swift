import Synchronization

/// The external side of a sink connector. `SinkConnector` calls it from its worker threads (`concurrency`
/// of them; one call at a time per worker), so a driver may block; with `concurrency` above 1 a driver
/// keeps one connection per worker (`worker` is 0..<concurrency).
public protocol SinkDriver: AnyObject, Sendable {
    /// Connects worker `worker` to the external system; called again after any failure.
    /// - Throws: any error: the batch is nacked for retry and the connector is unhealthy with its text.
    func connect(worker: Int) throws

    /// Writes `batch` in order and returns once the external system has every event of it (by its own
    /// durability rules). Events may have been written before (a redelivery): an idempotent driver ignores
    /// them, others write them again (at-least-once).
    /// - Throws: any error: nothing of the batch counts as written; every event is nacked for retry.
    func write(worker: Int, _ batch: [Delivery]) throws

    /// Closes worker `worker`'s connection; the next `connect` starts afresh.
    func disconnect(worker: Int)
}

/// Runs a sink connector: subscribes to `topic` with the delivery contract of its settings (retry, backoff,
/// dead-letter topic, max in flight), hands each delivery to its own queue without blocking the kernel's
/// thread, and has `concurrency` workers write batches (up to `batchSize` events, or what came within
/// `batchMaxWaitMs` of the first) to the external system. Every event of a batch is acknowledged only after
/// the write returned; a failed write nacks them all for retry, so the kernel's retry and dead-letter rules
/// apply.
///
/// Metrics (through the host): `connector_events_written`, `connector_batches_written`,
/// `connector_write_failures`, `connector_events_nacked`; gauges `connector_connected`, `connector_queued`.
public final class SinkConnector: Sendable {
    public let host: Host
    public let settings: ConnectorSettings
    public let driver: any SinkDriver
    public let health: ConnectorHealth
    let name: String
    private let queue = ConnectorQueue<Delivery>()
    private let stopping = ConnectorSignal()
    private let workers = Mutex<[ConnectorThread]>([])
    private let subscription = Mutex<Subscription?>(nil)
    private let written = Atomic<UInt64>(0)

    public init(name: String, host: Host, settings: ConnectorSettings, driver: any SinkDriver) {
        self.name = name
        self.host = host
        self.settings = settings
        self.driver = driver
        self.health = ConnectorHealth(host: host, name: name)
    }

    /// How many events this instance wrote and acknowledged.
    public var writtenCount: UInt64 { written.load(ordering: .relaxed) }

    /// Starts the workers, then subscribes.
    /// - Throws: `PluginError` when a thread cannot start or the kernel refuses the subscription (nothing
    ///   is left running then).
    public func start() throws {
        do {
            for worker in 0..<settings.concurrency {
                let thread = try ConnectorThread(name: name) { [self] in work(worker) }
                workers.withLock { $0.append(thread) }
            }
            let made = try host.subscribe(topic: settings.topic, options: settings.subscriptionOptions) {
                [self] delivery in
                let copy = Delivery(copying: delivery)
                if !queue.push(copy) {
                    host.nack(deliveryID: copy.deliveryID, reason: "\(name) is stopping")
                }
            }
            subscription.withLock { $0 = made }
        } catch {
            try? stop(timeout: .seconds(5))
            throw error
        }
    }

    /// Stops taking deliveries (new ones are nacked for retry), lets the workers finish the batch they are
    /// writing, nacks what is still queued, waits for the workers at most `timeout`, then unsubscribes.
    /// - Throws: `PluginError` (`PX_ERR_TIMEOUT`) when a worker did not finish in time.
    public func stop(timeout: Duration) throws {
        let (seconds, attoseconds) = timeout.components
        let deadline =
            ConnectorClock.nowMs() + UInt64(max(0, seconds)) * 1000
            + UInt64(max(0, attoseconds) / 1_000_000_000_000_000)
        stopping.signal()
        let queued = queue.close()
        for delivery in queued {
            host.nack(deliveryID: delivery.deliveryID, reason: "\(name) is stopping")
        }
        if !queued.isEmpty { host.count("connector_events_nacked", by: UInt64(queued.count)) }
        var late = false
        for worker in workers.withLock({ $0 }) {
            let left = deadline > ConnectorClock.nowMs() ? deadline - ConnectorClock.nowMs() : 0
            if !worker.join(timeout: .milliseconds(Int(left))) { late = true }
        }
        workers.withLock { $0.removeAll() }
        if let made = subscription.withLock({ $0 }) { host.unsubscribe(made) }
        if late { throw PluginError(PX_ERR_TIMEOUT, "\(name): a write did not finish within \(timeout)") }
    }

    /// One worker's loop, on its own thread.
    private func work(_ worker: Int) {
        var connected = false
        var failures = 0
        defer { if connected { driver.disconnect(worker: worker) } }
        while !stopping.isSet {
            let batch = queue.take(
                max: settings.batchSize, idle: .milliseconds(200), fill: .milliseconds(settings.batchMaxWaitMs))
            host.gauge("connector_queued", Double(queue.count))
            if batch.isEmpty {
                // Idle: connect now, so that health says whether the external system is reachable.
                if !connected {
                    do {
                        try driver.connect(worker: worker)
                        connected = true
                        health.healthy()
                    } catch {
                        health.unhealthy("cannot connect: \(error)")
                        failures += 1
                        stopping.wait(timeout: .milliseconds(min(settings.reconnectMaxMs, 50 << min(failures - 1, 16))))
                    }
                }
                continue
            }
            do {
                if !connected {
                    try driver.connect(worker: worker)
                    connected = true
                }
                try driver.write(worker: worker, batch)
            } catch {
                failures += 1
                host.count("connector_write_failures")
                health.unhealthy("cannot write \(batch.count) events: \(error)")
                for delivery in batch {
                    host.nack(deliveryID: delivery.deliveryID, reason: "\(name): write failed: \(error)")
                }
                host.count("connector_events_nacked", by: UInt64(batch.count))
                if connected {
                    driver.disconnect(worker: worker)
                    connected = false
                }
                // The kernel's backoff spaces the redeliveries; this pause spaces the reconnections.
                stopping.wait(timeout: .milliseconds(min(settings.reconnectMaxMs, 50 << min(failures - 1, 16))))
                continue
            }
            failures = 0
            health.healthy()
            for delivery in batch { host.ack(deliveryID: delivery.deliveryID) }
            written.add(UInt64(batch.count), ordering: .relaxed)
            host.count("connector_events_written", by: UInt64(batch.count))
            host.count("connector_batches_written")
        }
    }
}
