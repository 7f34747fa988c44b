import Foundation
import Synchronization

/// Runs one workload against one driver and measures it.
///
/// Producers send stamped payloads (``PayloadStamp``) at the workload's rate, or as fast as their window of
/// `maxInFlight` outstanding sends allows; consumers of one group per topic take the end-to-end latency from
/// the stamp. After the warmup and the measured duration producers stop, outstanding publishes and
/// consumers get `drainSeconds` to finish, and everything is closed. Every phase is bounded in time, and the
/// whole run in messages (`maxMessages`).
public struct BenchRunner: Sendable {
    /// The group every consumer joins.
    public static let group = "bench"

    public var workload: Workload
    public var driver: any BenchDriver
    /// The run's name in reports; the driver's name when `nil`.
    public var label: String?
    /// The server, for the report.
    public var server: String
    /// Receives progress lines (one per second while running); `nil` for silence.
    public var progress: (@Sendable (String) -> Void)?

    public init(
        workload: Workload, driver: any BenchDriver, server: String, label: String? = nil,
        progress: (@Sendable (String) -> Void)? = nil
    ) {
        self.workload = workload
        self.driver = driver
        self.server = server
        self.label = label
        self.progress = progress
    }

    /// Runs the workload and reports what it measured.
    ///
    /// - Throws: ``WorkloadError`` for an invalid workload, or what the driver throws while setting up. Errors
    ///   while running are counted in the report, not thrown.
    public func run() async throws -> BenchReport {
        try workload.validate()
        var random = SystemRandomNumberGenerator()
        let runID = String(random.next() as UInt32, radix: 36)
        let topics = (0..<workload.topics).map { "bench_\(runID)_\($0)" }
        let startedAt = ISO8601DateFormatter().string(from: Date())
        do {
            try await driver.setUp(topics: topics)
        } catch {
            await driver.tearDown()
            throw error
        }

        var consumers: [any BenchConsumer] = []
        var producers: [(topic: Int, producer: any BenchProducer)] = []
        let box = RecorderBox()
        do {
            for topic in topics {
                for _ in 0..<workload.consumers {
                    consumers.append(
                        try await driver.makeConsumer(topic: topic, group: Self.group) { payload in
                            box.consumed(payload)
                        })
                }
            }
            for (index, topic) in topics.enumerated() {
                for _ in 0..<workload.producers {
                    producers.append((index, try await driver.makeProducer(topic: topic)))
                }
            }
        } catch {
            for producer in producers { await producer.producer.close() }
            for consumer in consumers { await consumer.close() }
            await driver.tearDown()
            throw error
        }

        let start = MonotonicClock.nanoseconds()
        let warmupEnd = start + UInt64(workload.warmupSeconds * 1e9)
        let end = warmupEnd + UInt64(workload.durationSeconds * 1e9)
        let recorders = Recorders(start: start, window: warmupEnd..<end)
        box.set(recorders)
        progress?(
            "\(driver.name): \(producers.count) producers, \(consumers.count) consumers, "
                + (workload.warmupSeconds > 0 ? "\(workload.warmupSeconds) s warmup, " : "")
                + "\(workload.durationSeconds) s measured")

        let windows = producers.map { _ in SendWindow(limit: workload.maxInFlight) }
        let ticker = Task { await reportProgress(recorders, start: start, until: end) }
        let producerCount = producers.count
        let threads = producers.enumerated().map { index, entry in
            let window = windows[index]
            return ProducerThread(name: "plexus-bench-producer-\(index)") {
                produce(
                    entry.producer, index: index, total: producerCount, window: window, recorders: recorders,
                    start: start, end: end)
            }
        }
        for thread in threads { await thread.wait() }
        ticker.cancel()

        var notes: [String] = []
        let drainDeadline = MonotonicClock.nanoseconds() + UInt64(workload.drainSeconds * 1e9)
        while windows.contains(where: { $0.outstanding > 0 }), MonotonicClock.nanoseconds() < drainDeadline {
            try? await Task.sleep(nanoseconds: 10_000_000)
        }
        let outstanding = windows.reduce(0) { $0 + $1.outstanding }
        if outstanding > 0 {
            notes.append("\(outstanding) publishes not completed \(workload.drainSeconds) s after producers stopped")
        }
        if !consumers.isEmpty {
            while recorders.consumed.total < recorders.published.total, MonotonicClock.nanoseconds() < drainDeadline {
                try? await Task.sleep(nanoseconds: 10_000_000)
            }
            let missing = recorders.published.total - recorders.consumed.total
            if missing > 0 {
                notes.append(
                    "\(missing) published messages not consumed \(workload.drainSeconds) s after producers stopped")
            }
        }

        for producer in producers { await producer.producer.close() }
        for consumer in consumers { await consumer.close() }
        await driver.tearDown()
        let repeated = recorders.repeatedCompletions.withLock { $0 }
        if repeated > 0 { notes.append("the driver completed \(repeated) sends more than once (ignored)") }
        let consumerErrors = consumers.flatMap(\.errors)

        let measured = workload.durationSeconds
        let published = recorders.published.perSecond
        let consumed = recorders.consumed.perSecond
        let series = (0..<max(published.count, consumed.count)).map { second in
            BenchReport.SeriesPoint(
                second: second, published: second < published.count ? published[second] : 0,
                consumed: second < consumed.count ? consumed[second] : 0)
        }
        return BenchReport(
            label: label ?? driver.name, driver: driver.name, semantics: driver.semantics, server: server,
            workload: workload, startedAt: startedAt, machine: Self.machine, measuredSeconds: measured,
            sent: recorders.sent.withLock { $0 }, published: recorders.published.total,
            publishErrors: recorders.published.failures, consumed: recorders.consumed.total,
            consumerErrors: consumerErrors.count, malformed: recorders.malformed.withLock { $0 },
            publishRate: Double(recorders.published.inWindow) / measured,
            consumeRate: Double(recorders.consumed.inWindow) / measured,
            publishLatency: recorders.published.latency, endToEndLatency: recorders.consumed.latency,
            series: series,
            errorSamples: recorders.published.errorSamples + consumerErrors.prefix(EventRecorder.maxErrorSamples),
            notes: notes)
    }

    /// One producer's loop, on its own thread: paced by the rate, bounded by its window, the end time and its
    /// share of `maxMessages`.
    private func produce(
        _ producer: any BenchProducer, index: Int, total: Int, window: SendWindow, recorders: Recorders,
        start: UInt64, end: UInt64
    ) {
        let share = (workload.maxMessages + total - 1) / total
        let interval: Double? =
            workload.producerRate > 0 ? Double(total) / Double(workload.producerRate) * 1e9 : nil
        let keys = (0..<workload.keys).map { "key-\($0)" }
        let template = PayloadStamp.padding(size: workload.messageSize)
        var sentCount = 0
        while sentCount < share {
            var now = MonotonicClock.nanoseconds()
            if now >= end { break }
            if let interval {
                // Ahead of schedule by more than 50 µs: sleep until the message is due.
                let due = start + UInt64(Double(sentCount) * interval)
                if due > now + 50_000 {
                    usleep(UInt32(min((min(due, end) - now) / 1000, 1_000_000)))
                    now = MonotonicClock.nanoseconds()
                    if now >= end || now < due { continue }
                }
            }
            guard window.acquire(until: end) else { break }
            let key = keys.isEmpty ? nil : keys[(sentCount &+ index) % keys.count]
            let sentAt = MonotonicClock.nanoseconds()
            recorders.sent.withLock { $0 += 1 }
            let once = OneShot()
            var payload = template
            PayloadStamp.stamp(&payload, nanoseconds: sentAt)
            producer.send(key: key, payload: payload) { error in
                let now = MonotonicClock.nanoseconds()
                // A driver that completes a send twice must not open the window wider or count it twice.
                guard once.claim() else {
                    recorders.repeatedCompletions.withLock { $0 += 1 }
                    return
                }
                if let error {
                    recorders.published.recordFailure("\(error)")
                } else {
                    recorders.published.record(sentAt: sentAt, now: now)
                }
                window.release()
            }
            sentCount += 1
        }
    }

    /// Prints the last second's rates once a second until `end`.
    private func reportProgress(_ recorders: Recorders, start: UInt64, until end: UInt64) async {
        guard let progress else { return }
        var second = 1
        while !Task.isCancelled {
            let due = start + UInt64(second) * 1_000_000_000
            if due > end { return }
            let now = MonotonicClock.nanoseconds()
            if due > now { try? await Task.sleep(nanoseconds: due - now) }
            if Task.isCancelled { return }
            let published = recorders.published.perSecond
            let consumed = recorders.consumed.perSecond
            let index = second - 1
            progress(
                "  t=\(second)s published \(index < published.count ? published[index] : 0)/s, "
                    + "consumed \(index < consumed.count ? consumed[index] : 0)/s")
            second += 1
        }
    }

    /// `2 cores, Linux 6.1.0 (x86_64)`.
    static var machine: String {
        let info = ProcessInfo.processInfo
        var name = utsname()
        uname(&name)
        let machine = withUnsafeBytes(of: &name.machine) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let release = withUnsafeBytes(of: &name.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        let system = withUnsafeBytes(of: &name.sysname) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return "\(info.activeProcessorCount) cores, \(system) \(release) (\(machine))"
    }
}

/// The recorders of one run, shared by producers, consumers and the runner.
final class Recorders: Sendable {
    let published: EventRecorder
    let consumed: EventRecorder
    let sent = Mutex(0)
    let malformed = Mutex(0)
    /// Completions a driver ran more than once for one send; ignored, and reported in the notes.
    let repeatedCompletions = Mutex(0)

    init(start: UInt64, window: Range<UInt64>) {
        published = EventRecorder(start: start, window: window)
        consumed = EventRecorder(start: start, window: window)
    }
}

/// Where consumers, made before the run's clock starts, find the recorders once it does.
final class RecorderBox: Sendable {
    private let recorders = Mutex<Recorders?>(nil)

    func set(_ recorders: Recorders) { self.recorders.withLock { $0 = recorders } }

    /// Records a consumed payload; messages that arrive before the clock starts are not counted.
    func consumed(_ payload: [UInt8]) {
        let now = MonotonicClock.nanoseconds()
        guard let recorders = recorders.withLock({ $0 }) else { return }
        guard let sentAt = PayloadStamp.read(payload) else {
            recorders.malformed.withLock { $0 += 1 }
            return
        }
        recorders.consumed.record(sentAt: sentAt, now: now)
    }
}
