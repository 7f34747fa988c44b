import Synchronization

/// Events read from an external system, and the position just after the last of them.
public struct SourceBatch: Sendable {
    public var events: [CloudEvent]
    /// Saved once the events are published; `nil` keeps the saved position (the driver tracks it itself).
    public var position: [UInt8]?
    /// Whatever the driver needs to release these events in the external system (stream entry ids).
    public var handles: [String]

    public init(events: [CloudEvent], position: [UInt8]?, handles: [String] = []) {
        self.events = events
        self.position = position
        self.handles = handles
    }
}

/// The external side of a source connector: how to connect, read and release. `SourceConnector` calls it
/// from the connector's own thread, one call at a time, so a driver may block (a client library's calls) and
/// needs no lock of its own.
public protocol SourceDriver: AnyObject, Sendable {
    /// Connects to the external system, resuming after `position` (the one last saved, `nil` at first).
    /// Called again after any failure.
    /// - Throws: any error: the connector is unhealthy with its text and tries again after a backoff.
    func connect(position: [UInt8]?) throws

    /// The next events after those already returned, at most `max`; waits at most about `wait` for the
    /// first one (an empty batch: nothing new).
    /// - Throws: any error: the connector disconnects, is unhealthy and connects again after a backoff.
    func read(max: Int, wait: Duration) throws -> SourceBatch

    /// The batch was published and the node acknowledged it (and its position is saved): release it in the
    /// external system (acknowledge a stream entry). A failure here is retried after reconnecting.
    func published(_ batch: SourceBatch) throws

    /// Closes the connection; the next `connect` starts afresh.
    func disconnect()
}

extension SourceDriver {
    public func published(_ batch: SourceBatch) throws {}
}

/// Runs a source connector: reads batches from a `SourceDriver` on a thread of its own, publishes each into
/// the node and, only after the node's publish completion says `PX_OK`, saves the position after it and
/// releases it in the external system. A refused or failed publish is retried with backoff, never dropped:
/// delivery into the node is at-least-once, and a restart repeats at most the batch that was in flight.
///
/// Metrics (through the host): `connector_events_published`, `connector_batches_published`,
/// `connector_publish_retries`, `connector_read_failures`, `connector_position_save_failures`; gauge
/// `connector_connected`.
public final class SourceConnector: Sendable {
    public let host: Host
    public let settings: ConnectorSettings
    public let driver: any SourceDriver
    public let positions: any PositionStore
    public let health: ConnectorHealth
    let name: String
    private let stopping = ConnectorSignal()
    private let thread = Mutex<ConnectorThread?>(nil)
    private let published = Atomic<UInt64>(0)

    /// - Parameters:
    ///   - name: the instance name, for logs and health.
    ///   - positions: where the position is kept (see `PositionStores.open`).
    public init(
        name: String, host: Host, settings: ConnectorSettings, driver: any SourceDriver, positions: any PositionStore
    ) {
        self.name = name
        self.host = host
        self.settings = settings
        self.driver = driver
        self.positions = positions
        self.health = ConnectorHealth(host: host, name: name)
    }

    /// How many events the node acknowledged since this instance started.
    public var publishedCount: UInt64 { published.load(ordering: .relaxed) }

    /// Starts the connector's thread, which reads the saved position first (on its own thread: a metadata
    /// store's read may wait for the kernel).
    /// - Throws: `PluginError` when the thread cannot start.
    public func start() throws {
        let started = try ConnectorThread(name: name) { [self] in
            guard let position = loadUntilDone() else { return }
            run(from: position)
        }
        thread.withLock { $0 = started }
    }

    /// Stops reading: the batch being published is abandoned unpublished (its position not saved, so it is
    /// read again at the next start) unless it completes first; waits for the thread at most `timeout`.
    /// - Throws: `PluginError` (`PX_ERR_TIMEOUT`) when the thread did not end in time.
    public func stop(timeout: Duration) throws {
        stopping.signal()
        guard let running = thread.withLock({ $0 }) else { return }
        guard running.join(timeout: timeout) else {
            throw PluginError(PX_ERR_TIMEOUT, "\(name): the source thread did not stop within \(timeout)")
        }
    }

    /// The connector's loop, on its own thread.
    private func run(from saved: [UInt8]?) {
        var position = saved
        var connected = false
        var failures = 0
        defer { if connected { driver.disconnect() } }
        while !stopping.isSet {
            if !connected {
                do {
                    try driver.connect(position: position)
                    connected = true
                } catch {
                    health.unhealthy("cannot connect: \(error)")
                    failures += 1
                    pause(failures)
                    continue
                }
            }
            let batch: SourceBatch
            do {
                batch = try driver.read(max: settings.batchSize, wait: .milliseconds(200))
                health.healthy()
                failures = 0
            } catch {
                host.count("connector_read_failures")
                health.unhealthy("read failed: \(error)")
                driver.disconnect()
                connected = false
                failures += 1
                pause(failures)
                continue
            }
            if batch.events.isEmpty && batch.handles.isEmpty { continue }
            if !batch.events.isEmpty {
                guard publishUntilAcknowledged(batch.events) else { return }
            }
            if let next = batch.position {
                guard saveUntilDone(next) else { return }
                position = next
            }
            do {
                try driver.published(batch)
            } catch {
                // Published and saved: reconnecting reads the unreleased entries again, and the driver
                // releases those at or before the saved position without publishing them twice.
                health.unhealthy("cannot release published events: \(error)")
                driver.disconnect()
                connected = false
            }
        }
    }

    /// Publishes `events` until the node acknowledges them; `false` when stopping first.
    private func publishUntilAcknowledged(_ events: [CloudEvent]) -> Bool {
        var attempt = 0
        while !stopping.isSet {
            let outcome = ConnectorOutcome<Result<UInt64, PluginError>>()
            do {
                try host.publish(topic: settings.topic, events) { outcome.complete($0) }
                while !outcome.done.wait(timeout: .milliseconds(100)) {
                    if stopping.isSet { return false }
                }
            } catch let error as PluginError {
                outcome.complete(.failure(error))
            } catch {
                outcome.complete(.failure(PluginError(PX_ERR_INTERNAL, "\(error)")))
            }
            switch outcome.value {
            case .success?:
                published.add(UInt64(events.count), ordering: .relaxed)
                host.count("connector_events_published", by: UInt64(events.count))
                host.count("connector_batches_published")
                return true
            case .failure(let error)?:
                attempt += 1
                host.count("connector_publish_retries")
                let transient = [PX_ERR_UNAVAILABLE.status, PX_ERR_RESOURCE_EXHAUSTED.status, PX_ERR_TIMEOUT.status]
                if attempt == 1 || !transient.contains(error.status) {
                    host.log(
                        transient.contains(error.status) ? .info : .error,
                        "\(name): publish of \(events.count) events to \(settings.topic) refused, retrying: \(error)")
                }
                pause(attempt)
            case nil:
                return false
            }
        }
        return false
    }

    /// Reads the saved position, retrying with backoff; `nil` when stopping first, `.some(nil)` when none was
    /// saved yet.
    private func loadUntilDone() -> [UInt8]?? {
        var attempt = 0
        while !stopping.isSet {
            do {
                return .some(try positions.load())
            } catch {
                attempt += 1
                health.unhealthy("cannot read the position from \(positions.location): \(error)")
                pause(attempt)
            }
        }
        return nil
    }

    /// Saves the position until it is durable; `false` when stopping first.
    private func saveUntilDone(_ position: [UInt8]) -> Bool {
        var attempt = 0
        while !stopping.isSet {
            do {
                try positions.save(position)
                return true
            } catch {
                attempt += 1
                host.count("connector_position_save_failures")
                health.unhealthy("cannot save the position to \(positions.location): \(error)")
                pause(attempt)
            }
        }
        return false
    }

    /// Waits the backoff of the `attempt`th failure (50 ms doubling up to `reconnectMaxMs`), or until stopped.
    private func pause(_ attempt: Int) {
        let ms = min(settings.reconnectMaxMs, 50 << min(attempt - 1, 16))
        stopping.wait(timeout: .milliseconds(ms))
    }
}
