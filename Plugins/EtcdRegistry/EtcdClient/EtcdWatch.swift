import Foundation
import GRPCCore
import Synchronization

/// What a watch hands its handler: changes in revision order, never two calls at once.
public struct EtcdWatchUpdate: Sendable, Equatable {
    /// The changes, in revision order (several may share a revision: one transaction).
    public var events: [EtcdEvent]
    /// Every change up to this revision under the prefix has been delivered.
    public var revision: Int64
    /// True when the changes were computed by listing the prefix after etcd compacted the history the
    /// watch needed (deletes then carry the listing's revision).
    public var resynced: Bool
}

/// A watch of every key under a prefix that survives lost connections and failovers: it resumes from the
/// revision after the last one delivered, so no change is missed or repeated; when etcd has compacted that
/// history, it lists the prefix and delivers the differences from what it delivered before.
///
/// - Important: The handler runs on the watch's own task, one update at a time, and must not block.
public final class EtcdWatch: Sendable {
    public let prefix: [UInt8]

    struct State {
        /// The next revision to ask for.
        var next: Int64
        /// The keys delivered as present, with their mod revision.
        var known: [[UInt8]: Int64]
        var reconnects = 0
        var resyncs = 0
    }

    private let connection: EtcdConnection
    private let state: Mutex<State>
    private let handler: @Sendable (EtcdWatchUpdate) -> Void
    private let task = Mutex<Task<Void, Never>?>(nil)

    init(
        connection: EtcdConnection, prefix: [UInt8], next: Int64, known: [EtcdKeyValue],
        handler: @escaping @Sendable (EtcdWatchUpdate) -> Void
    ) {
        self.connection = connection
        self.prefix = prefix
        self.handler = handler
        state = Mutex(State(next: next, known: Dictionary(known.map { ($0.key, $0.modRevision) }) { $1 }))
    }

    func start() {
        let work = Task(executorPreference: EtcdExecutor.shared) { await self.run() }
        task.withLock { $0 = work }
    }

    /// Ends the watch; when it returns the handler is not running and will not run again (unless called from
    /// the handler itself, which must not).
    public func cancel() async {
        guard let work = task.withLock({ $0 }) else { return }
        work.cancel()
        await work.value
    }

    /// How many times the watch stream was opened again after it broke.
    public var reconnects: Int { state.withLock { $0.reconnects } }
    /// How many times the watch listed the prefix after a compaction.
    public var resyncs: Int { state.withLock { $0.resyncs } }
    /// The next revision the watch will deliver.
    public var nextRevision: Int64 { state.withLock { $0.next } }

    private func run() async {
        var delay = Duration.milliseconds(50)
        while !Task.isCancelled, !connection.isClosed {
            let (index, member) = connection.current()
            let outcome: Outcome
            do {
                outcome = try await stream(on: member.client, index: index)
            } catch {
                if Task.isCancelled { return }
                let failure = EtcdError.from(error, operation: "Watch", endpoint: member.endpoint.description)
                outcome = failure.code == .compacted ? .compacted : .broken(failure)
            }
            if Task.isCancelled { return }
            switch outcome {
            case .compacted:
                do {
                    try await resync()
                    delay = .milliseconds(50)
                } catch {
                    connection.failover(from: index)
                }
            case .broken:
                connection.failover(from: index)
            }
            state.withLock { $0.reconnects += 1 }
            try? await Task.sleep(for: delay)
            delay = min(delay * 2, .seconds(1))
        }
    }

    enum Outcome {
        case compacted
        case broken(EtcdError?)
    }

    /// One watch stream from the next revision; returns why it ended.
    private func stream(on client: EtcdConnection.Client, index: Int) async throws -> Outcome {
        var create = Etcdserverpb_WatchCreateRequest()
        create.key = Data(prefix)
        create.rangeEnd = Data(etcdPrefixEnd(prefix))
        create.startRevision = state.withLock { $0.next }
        var watchRequest = Etcdserverpb_WatchRequest()
        watchRequest.createRequest = create
        let request = watchRequest
        let metadata = try await connection.metadata(index)
        let end = StreamEnd()
        return try await Etcdserverpb_Watch.Client(wrapping: client).watch(
            metadata: metadata,
            requestProducer: { writer in
                try await writer.write(request)
                // etcd ends the watch when the client half-closes: keep the request side open until cancelled.
                while !Task.isCancelled, !end.isSet { try? await Task.sleep(for: .milliseconds(100)) }
            },
            onResponse: { response in
                defer { end.set() }
                for try await reply in response.messages {
                    if reply.compactRevision > 0 { return .compacted }
                    if reply.canceled {
                        return .broken(EtcdError(.unavailable, operation: "Watch", reply.cancelReason))
                    }
                    if !reply.events.isEmpty { self.deliver(reply.events) }
                }
                return .broken(nil)
            })
    }

    /// Hands a response's events to the handler and advances the next revision past them.
    private func deliver(_ events: [Mvccpb_Event]) {
        var out: [EtcdEvent] = []
        out.reserveCapacity(events.count)
        let revision = state.withLock { s -> Int64 in
            for event in events {
                let kv = EtcdClient.keyValue(event.kv)
                // Already delivered (a response repeated across a reconnect): skipped.
                guard kv.modRevision >= s.next else { continue }
                switch event.type {
                case .delete:
                    s.known[kv.key] = nil
                    out.append(.delete(EtcdKeyValue(key: kv.key, value: [], modRevision: kv.modRevision)))
                default:
                    s.known[kv.key] = kv.modRevision
                    out.append(.put(kv))
                }
            }
            if let last = out.last { s.next = last.revision + 1 }
            return s.next - 1
        }
        if !out.isEmpty { handler(EtcdWatchUpdate(events: out, revision: revision, resynced: false)) }
    }

    /// Lists the prefix and delivers what changed since the last delivered revision.
    private func resync() async throws {
        let (listed, revision) = try await EtcdClient.list(connection, prefix: prefix)
        var out: [EtcdEvent] = []
        state.withLock { s in
            var present: Set<[UInt8]> = []
            for kv in listed {
                present.insert(kv.key)
                if s.known[kv.key] != kv.modRevision {
                    s.known[kv.key] = kv.modRevision
                    out.append(.put(kv))
                }
            }
            for key in s.known.keys.sorted(by: { $0.lexicographicallyPrecedes($1) }) where !present.contains(key) {
                s.known[key] = nil
                out.append(.delete(EtcdKeyValue(key: key, value: [], modRevision: revision)))
            }
            s.next = revision + 1
            s.resyncs += 1
        }
        handler(EtcdWatchUpdate(events: out, revision: revision, resynced: true))
    }
}

extension EtcdClient {
    /// Watches every key under `prefix`.
    ///
    /// - Parameters:
    ///   - revision: 0: lists the prefix now and watches every change after the listing; n > 0: every change
    ///     with revision >= n (the keys as of n - 1 are read first, so a later resync knows what was there).
    ///   - handler: called with each batch of changes, in order, never concurrently; must not block.
    /// - Returns: the keys as of the listing (empty when `revision` > 0), the listing's revision, and the watch.
    /// - Throws: `EtcdError` (`.compacted`) when history before `revision` is no longer kept.
    public func watch(
        prefix: [UInt8], from revision: Int64 = 0, handler: @escaping @Sendable (EtcdWatchUpdate) -> Void
    ) async throws -> (initial: [EtcdKeyValue], revision: Int64, watch: EtcdWatch) {
        let (read, at) = try await Self.list(connection, prefix: prefix, revision: revision > 1 ? revision - 1 : 0)
        let listed = revision == 1 ? [] : read  // nothing existed before the first revision
        let next = revision > 0 ? revision : at + 1
        let watch = EtcdWatch(connection: connection, prefix: prefix, next: next, known: listed, handler: handler)
        watch.start()
        return (revision > 0 ? [] : listed, at, watch)
    }

    static func list(
        _ connection: EtcdConnection, prefix: [UInt8], revision: Int64 = 0, pageSize: Int64 = 500
    ) async throws -> (
        [EtcdKeyValue], Int64
    ) {
        var all: [EtcdKeyValue] = []
        var request = Etcdserverpb_RangeRequest()
        request.key = Data(prefix)
        request.rangeEnd = Data(etcdPrefixEnd(prefix))
        request.limit = pageSize
        request.revision = revision
        var at = revision
        while true {
            let page = request
            let response = try await connection.unary("Range prefix \(show(prefix))") { client, metadata, options in
                try await Etcdserverpb_KV.Client(wrapping: client).range(page, metadata: metadata, options: options)
            }
            if at == 0 { at = response.header.revision }
            all += response.kvs.map(keyValue)
            guard response.more, let last = response.kvs.last else { break }
            request.key = Data(last.key + [0])
            request.revision = at
        }
        return (all, at)
    }
}
