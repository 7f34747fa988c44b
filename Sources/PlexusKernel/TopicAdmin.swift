import Foundation
import PlexusABI
import PlexusCore
import Synchronization

/// The kernel's side of the topic and consumer-group admin API (docs/operations.md, "Topics and consumer
/// groups"): what it answers, built from the router's open streams, the delivery engine's groups and the
/// storages' ABI 1.3 hooks (stream and offset listing, deletion).
///
/// - Important: Every call blocks its thread while storages answer; the admin server calls them off the event
///   loops.
extension Kernel {
    /// Why an admin request about topics or groups failed, with the HTTP status it maps to.
    public struct TopicAdminError: Error, CustomStringConvertible {
        public enum Kind: Sendable { case badRequest, notFound, conflict, unavailable }
        public var kind: Kind
        public var message: String
        public var description: String { message }

        init(_ kind: Kind, _ message: String) {
            self.kind = kind
            self.message = message
        }

        /// A storage failure, by its status.
        init(storage failure: StorageBinding.Failure) {
            let status = failure.status
            if status == PX_ERR_NOT_FOUND.status {
                kind = .notFound
            } else if status == PX_ERR_FAILED_PRECONDITION.status || status == PX_ERR_ALREADY_EXISTS.status {
                kind = .conflict
            } else if status == PX_ERR_INVALID_ARGUMENT.status || status == PX_ERR_OUT_OF_RANGE.status {
                kind = .badRequest
            } else {
                kind = .unavailable
            }
            message = failure.message
        }
    }

    /// One topic as the admin API reports it.
    public struct TopicInfo: Sendable {
        public var name: String
        public var storage: String
        public var firstOffset: UInt64
        public var nextOffset: UInt64
        public var bytes: UInt64?
        public var publishedTotal: UInt64
        public var publishRate: Double
        public var deliveredRate: Double
        public var retention: TopicRetention
        public var leader: String?
        public var groups: [GroupInfo]
    }

    /// One consumer group on one topic.
    public struct GroupInfo: Sendable {
        public struct Member: Sendable {
            public var id: String
            public var plugin: String
            public var inFlight: Int
        }
        public var topic: String
        public var group: String
        public var members: [Member]
        public var committed: UInt64?
        public var lag: UInt64
        public var inFlight: Int
        public var redeliveries: UInt64
        public var deadLettered: UInt64
    }

    private var router: Router { services.router }

    /// Reads the topics created and retention set through the admin API, and starts sampling rates.
    func startTopicAdmin() {
        do {
            try router.settings.load(directory: config.dataDirectory)
        } catch {
            logger.error(
                "cannot read \(config.dataDirectory)/topics.json (topics created and retention set through the admin API): \(error)"
            )
        }
        router.rates.start(router: router)
    }

    // MARK: Topics

    /// Every topic: the streams each storage lists, and those open now.
    /// - Returns: the topics by name, with the storage holding each, and what storages could not list.
    func topicNames() -> (topics: [String: String], problems: [String]) {
        var topics: [String: String] = [:]
        var problems: [String] = []
        for (name, binding) in router.boundStorages().sorted(by: { $0.key < $1.key }) {
            do throws(StorageBinding.Failure) {
                for stream in try binding.listStreams() where topics[stream] == nil { topics[stream] = name }
            } catch {
                problems.append(error.message)
            }
        }
        for (topic, open) in router.openTopics() where topics[topic] == nil { topics[topic] = open.binding.name }
        return (topics, problems)
    }

    /// Every topic, sorted by name.
    /// - Throws: `.unavailable` when no topic is known and a storage could not list its streams.
    /// - Parameter withLeaders: whether each topic's `leader` is filled in (from the storages' `status`).
    public func listTopics(withLeaders: Bool = true) throws(TopicAdminError) -> (
        topics: [TopicInfo], problems: [String]
    ) {
        let (names, problems) = topicNames()
        if names.isEmpty, !problems.isEmpty {
            throw TopicAdminError(.unavailable, problems.joined(separator: "; "))
        }
        let leaders = withLeaders ? streamLeaders() : [:]
        let live = liveGroupsByTopic()
        var topics: [TopicInfo] = []
        for name in names.keys.sorted() {
            // A topic deleted meanwhile is left out.
            guard let topic = try? describe(name, storage: names[name], leaders: leaders, live: live[name] ?? [])
            else { continue }
            topics.append(topic)
        }
        return (topics, problems)
    }

    /// One topic with its groups.
    public func topic(_ name: String) throws(TopicAdminError) -> TopicInfo {
        let (names, problems) = topicNames()
        guard let storage = names[name] else {
            throw TopicAdminError(
                .notFound,
                "no topic \(TopicName.quoted(name)) on this node"
                    + (problems.isEmpty ? "" : " (\(problems.joined(separator: "; ")))"))
        }
        return try describe(name, storage: storage, leaders: streamLeaders())
    }

    /// The open stream of an existing topic.
    private func open(_ name: String) throws(TopicAdminError) -> Router.OpenTopic {
        do {
            return try router.stream(for: name, create: true)
        } catch let refusal as Router.Refusal {
            throw TopicAdminError(storage: StorageBinding.Failure(status: refusal.status, message: refusal.message))
        } catch {
            throw TopicAdminError(.unavailable, "\(error)")
        }
    }

    /// - Parameter live: the delivery engine's groups of this topic (nil: looked up).
    private func describe(
        _ name: String, storage: String?, leaders: [String: String],
        live: [(DeliveryEngine.GroupKey, ConsumerGroup)]? = nil
    ) throws(TopicAdminError) -> TopicInfo {
        let open = try open(name)
        let extent: StorageBinding.Extent
        do throws(StorageBinding.Failure) {
            extent = try open.binding.extent(open.stream)
        } catch {
            throw TopicAdminError(storage: error)
        }
        let rates = router.rates.rates(of: name)
        let configured = router.config.bindings.first { $0.topic == name }
        var retention = router.settings.retention(for: name) ?? TopicRetention()
        if router.settings.retention(for: name) == nil {
            let bytes = configured?.retentionBytes ?? router.config.defaultRetentionBytes
            let ms = configured?.retentionMs ?? router.config.defaultRetentionMs
            retention = TopicRetention(maxEvents: nil, maxBytes: bytes == 0 ? nil : bytes, maxAgeMs: ms == 0 ? nil : ms)
        }
        return TopicInfo(
            name: name, storage: open.binding.name, firstOffset: extent.first, nextOffset: extent.next,
            bytes: extent.bytes, publishedTotal: open.metrics.published.value, publishRate: rates.publish,
            deliveredRate: rates.delivered, retention: retention, leader: leaders[name],
            groups: groups(
                of: name, open: open, extent: extent,
                live: live ?? router.engine.allGroups().filter { $0.key.topic == name }.map { ($0.key, $0.value) }))
    }

    /// How long a stream's leader, as a storage's `status` reported it, is shown before it is asked again:
    /// a `status` of a storage with 1,000 streams costs about as much as the rest of a topic listing, and a
    /// dashboard lists topics every second, while leaders change at elections.
    static let leaderCacheTime: Duration = .seconds(5)

    /// The leader of each replicated stream (more than one voter), at most `leaderCacheTime` old.
    private func streamLeaders() -> [String: String] {
        let now = ContinuousClock.now
        if let cached = leaderCache.withLock({ $0 }), now - cached.at < Self.leaderCacheTime { return cached.leaders }
        let leaders = askStreamLeaders()
        leaderCache.withLock { $0 = (now, leaders) }
        return leaders
    }

    /// The leader of each replicated stream, from a storage's `status` operation where it has one (raft-log's
    /// reports each stream's `leader` and `voters`); a stream with one voter has no leader worth showing.
    private func askStreamLeaders() -> [String: String] {
        struct Status: Decodable {
            struct Stream: Decodable {
                var stream: String
                var leader: String?
                var voters: [String]?
            }
            var streams: [Stream]?
        }
        var leaders: [String: String] = [:]
        for name in router.boundStorages().keys.sorted() {
            guard let manifest = record(name)?.snapshot.manifest,
                manifest.operations.contains(where: { $0.name == "status" }),
                let text = try? callOperation(plugin: name, operation: "status", arguments: []),
                let status = try? JSONDecoder().decode(Status.self, from: Data(text.utf8))
            else { continue }
            for stream in status.streams ?? [] where (stream.voters?.count ?? 0) > 1 {
                if let leader = stream.leader, !leader.isEmpty { leaders[stream.stream] = leader }
            }
        }
        return leaders
    }

    /// Creates a topic in `storage` (the default storage when `nil`) with `retention`.
    /// - Throws: `.conflict` when it exists; `.badRequest` for an unknown storage or a bad name.
    public func createTopic(_ name: String, storage: String?, retention: TopicRetention?) throws(TopicAdminError)
        -> TopicInfo
    {
        if let problem = TopicName.problem(name) { throw TopicAdminError(.badRequest, problem) }
        let storages = router.boundStorages()
        if let storage, storages[storage] == nil {
            throw TopicAdminError(
                .badRequest,
                "no active storage plugin named '\(storage)' on this node (active: "
                    + "\(storages.keys.sorted().joined(separator: ", ")))")
        }
        if let bound = router.config.bindings.first(where: { $0.topic == name }), let storage,
            bound.storage != storage
        {
            throw TopicAdminError(
                .conflict, "topic \(TopicName.quoted(name)) is bound to '\(bound.storage)' by the node file")
        }
        if topicNames().topics[name] != nil {
            throw TopicAdminError(.conflict, "topic \(TopicName.quoted(name)) exists")
        }
        do {
            try router.settings.update(name) { entry in
                var updated = entry ?? TopicSettings.Entry()
                updated.storage = storage ?? router.defaultStorage
                if let retention { updated.retention = retention }
                entry = updated
            }
        } catch {
            throw TopicAdminError(.unavailable, "cannot record topic \(TopicName.quoted(name)): \(error)")
        }
        let open = try open(name)
        if let maxEvents = retention?.maxEvents { try trim(open, toNewest: maxEvents) }
        return try describe(name, storage: open.binding.name, leaders: streamLeaders())
    }

    /// Deletes a topic: its stream, its events and its groups' offsets.
    /// - Throws: `.conflict` while a group of it has a member connected.
    public func deleteTopic(_ name: String) throws(TopicAdminError) {
        guard topicNames().topics[name] != nil else {
            throw TopicAdminError(.notFound, "no topic \(TopicName.quoted(name)) on this node")
        }
        let open = try open(name)
        guard open.binding.vtable.pointee.on_delete_stream != nil else {
            throw TopicAdminError(
                .unavailable,
                "deleting a topic is not supported by storage '\(open.binding.name)' (it has no on_delete_stream, "
                    + "ABI 1.3)")
        }
        func connected(_ group: String) -> TopicAdminError {
            TopicAdminError(
                .conflict,
                "topic \(TopicName.quoted(name)) has a member connected in group '\(group)'; it can be deleted "
                    + "once every subscriber has left")
        }
        let groups = router.engine.allGroups().filter { $0.key.topic == name }
        if let busy = groups.filter({ !$0.value.isEmpty }).map(\.key.group).sorted().first { throw connected(busy) }
        // A member that joins meanwhile keeps its group (and stops the deletion).
        for key in groups.keys where !router.engine.removeIdleGroup(key) { throw connected(key.group) }
        do throws(StorageBinding.Failure) {
            try open.binding.deleteStream(open.stream)
        } catch {
            throw TopicAdminError(storage: error)
        }
        if let forgotten = router.forget(topic: name) { forgotten.binding.closeStream(forgotten.stream) }
        router.rates.forget(name)
        try? router.settings.update(name) { $0 = nil }
    }

    /// Sets a topic's retention, persists it, and applies it now: the storage gets the byte and age limits
    /// (the stream is opened again with them), and the kernel trims to `maxEvents`.
    public func setRetention(_ name: String, _ retention: TopicRetention) throws(TopicAdminError) -> TopicInfo {
        guard let storage = topicNames().topics[name] else {
            throw TopicAdminError(.notFound, "no topic \(TopicName.quoted(name)) on this node")
        }
        do {
            try router.settings.update(name) { entry in
                var updated = entry ?? TopicSettings.Entry()
                updated.retention = retention
                entry = updated
            }
        } catch {
            throw TopicAdminError(.unavailable, "cannot record the retention of \(TopicName.quoted(name)): \(error)")
        }
        let open = try open(name)
        // Opening an open stream again hands the storage the new options (memory-storage and raft-log replace
        // them); the second handle is the same stream, closed again at once.
        let reopened = Mutex<Result<StorageBinding.Stream, StorageBinding.Failure>?>(nil)
        let done = DispatchSemaphore(value: 0)
        open.binding.openStream(
            name, retentionBytes: retention.maxBytes ?? 0, retentionMs: retention.maxAgeMs ?? 0
        ) { result in
            reopened.withLock { $0 = result }
            done.signal()
        }
        _ = done.wait(timeout: .now() + StorageBinding.adminDeadline)
        switch reopened.withLock({ $0 }) {
        case .success(let stream)?:
            // A storage that answers with the handle the kernel holds keeps one handle per name: closing it
            // would close the kernel's. One that made a new handle gets it back.
            if stream.pointer != open.stream.pointer { open.binding.closeStream(stream) }
        case .failure(let failure)?:
            throw TopicAdminError(storage: failure)
        case nil:
            throw TopicAdminError(.unavailable, "storage '\(open.binding.name)' did not reopen the topic in time")
        }
        if let maxEvents = retention.maxEvents { try trim(open, toNewest: maxEvents) }
        return try describe(name, storage: storage, leaders: streamLeaders())
    }

    /// Trims a topic to its newest `count` events.
    private func trim(_ open: Router.OpenTopic, toNewest count: UInt64) throws(TopicAdminError) {
        do throws(StorageBinding.Failure) {
            let extent = try open.binding.extent(open.stream)
            if extent.next - extent.first > count { try open.binding.trimNow(open.stream, before: extent.next - count) }
        } catch {
            throw TopicAdminError(storage: error)
        }
    }

    // MARK: Groups

    /// The groups of a topic: those the delivery engine runs (with or without members) and those the storage
    /// holds an offset for, sorted by name.
    /// The delivery engine's groups, by topic: taken once per listing, not once per topic.
    private func liveGroupsByTopic() -> [String: [(DeliveryEngine.GroupKey, ConsumerGroup)]] {
        Dictionary(grouping: router.engine.allGroups().map { ($0.key, $0.value) }, by: { $0.0.topic })
    }

    private func groups(
        of topic: String, open: Router.OpenTopic, extent: StorageBinding.Extent,
        live: [(DeliveryEngine.GroupKey, ConsumerGroup)],
        stored known: [String: UInt64]? = nil
    ) -> [GroupInfo] {
        let stored = known ?? (try? open.binding.listOffsets(open.stream)) ?? [:]
        var groups: [String: GroupInfo] = [:]
        for (group, offset) in stored {
            groups[group] = GroupInfo(
                topic: topic, group: group, members: [], committed: offset,
                lag: Self.lag(committed: offset, extent), inFlight: 0, redeliveries: 0, deadLettered: 0)
        }
        for (key, group) in live {
            let snapshot = group.adminSnapshot()
            let committed = snapshot.committed ?? stored[key.group]
            groups[key.group] = GroupInfo(
                topic: topic, group: key.group,
                members: snapshot.members.map { .init(id: String($0.id), plugin: $0.plugin, inFlight: $0.inFlight) },
                committed: committed, lag: Self.lag(committed: committed, extent), inFlight: snapshot.inFlight,
                redeliveries: group.metrics.redeliveries.value, deadLettered: group.metrics.deadLettered.value)
        }
        return groups.values.sorted { $0.group < $1.group }
    }

    private static func lag(committed: UInt64?, _ extent: StorageBinding.Extent) -> UInt64 {
        let from = committed ?? extent.first
        return extent.next > from ? extent.next - from : 0
    }

    /// Every group of every topic, sorted by topic, then group.
    public func listGroups() throws(TopicAdminError) -> [GroupInfo] {
        let (names, problems) = topicNames()
        if names.isEmpty, !problems.isEmpty {
            throw TopicAdminError(.unavailable, problems.joined(separator: "; "))
        }
        let live = liveGroupsByTopic()
        var groups: [GroupInfo] = []
        for name in names.keys.sorted() {
            // Only a topic with a group (live, or an offset stored) is described: a listing of 1,000 topics
            // with a few groups costs the few, not the 1,000.
            guard let open = try? open(name) else { continue }
            let stored = (try? open.binding.listOffsets(open.stream)) ?? [:]
            let members = live[name] ?? []
            if stored.isEmpty && members.isEmpty { continue }
            guard let extent = try? open.binding.extent(open.stream) else { continue }
            groups += self.groups(of: name, open: open, extent: extent, live: members, stored: stored)
        }
        return groups
    }

    /// One group.
    public func group(topic: String, group: String) throws(TopicAdminError) -> GroupInfo {
        let info = try self.topic(topic)
        guard let found = info.groups.first(where: { $0.group == group }) else {
            throw TopicAdminError(
                .notFound, "topic \(TopicName.quoted(topic)) has no consumer group '\(group)' (no member, no offset)")
        }
        return found
    }

    /// Moves a group's committed offset while no member is connected.
    /// - Parameter to: `earliest`, `latest`, an offset, or an RFC 3339 time (the first event stored then or
    ///   later).
    public func resetGroup(topic: String, group: String, to target: String) throws(TopicAdminError) -> GroupInfo {
        let current = try self.group(topic: topic, group: group)
        guard current.members.isEmpty else {
            throw TopicAdminError(
                .conflict,
                "group '\(group)' of topic \(TopicName.quoted(topic)) has \(current.members.count) member(s) "
                    + "connected; reset it once they have left")
        }
        let open = try open(topic)
        let extent: StorageBinding.Extent
        do throws(StorageBinding.Failure) {
            extent = try open.binding.extent(open.stream)
        } catch {
            throw TopicAdminError(storage: error)
        }
        let offset: UInt64
        switch target {
        case "earliest": offset = extent.first
        case "latest": offset = extent.next
        default:
            if let number = UInt64(target) {
                guard number >= extent.first && number <= extent.next else {
                    throw TopicAdminError(
                        .badRequest,
                        "offset \(number) is outside topic \(TopicName.quoted(topic))'s \(extent.first)...\(extent.next)"
                    )
                }
                offset = number
            } else if let time = Self.parseTime(target) {
                offset = try firstOffset(open, extent, atOrAfter: time)
            } else {
                throw TopicAdminError(
                    .badRequest, "'\(target)' is not earliest, latest, an offset or an RFC 3339 time")
            }
        }
        guard router.engine.removeIdleGroup(.init(topic: topic, group: group)) else {
            throw TopicAdminError(
                .conflict, "group '\(group)' of topic \(TopicName.quoted(topic)) has a member connected")
        }
        do throws(StorageBinding.Failure) {
            try open.binding.commitOffsetNow(open.stream, group: group, offset: offset)
        } catch {
            throw TopicAdminError(storage: error)
        }
        return try self.group(topic: topic, group: group)
    }

    /// Forgets a group: its offset in the storage and its state in the delivery engine.
    public func deleteGroup(topic: String, group: String) throws(TopicAdminError) {
        let current = try self.group(topic: topic, group: group)
        guard current.members.isEmpty else {
            throw TopicAdminError(
                .conflict,
                "group '\(group)' of topic \(TopicName.quoted(topic)) has \(current.members.count) member(s) "
                    + "connected; delete it once they have left")
        }
        let open = try open(topic)
        guard router.engine.removeIdleGroup(.init(topic: topic, group: group)) else {
            throw TopicAdminError(
                .conflict, "group '\(group)' of topic \(TopicName.quoted(topic)) has a member connected")
        }
        do throws(StorageBinding.Failure) {
            try open.binding.deleteOffset(open.stream, group: group)
        } catch {
            throw TopicAdminError(storage: error)
        }
    }

    /// RFC 3339 text as Unix nanoseconds.
    static func parseTime(_ text: String) -> UInt64? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let date =
            formatter.date(from: text)
            ?? {
                formatter.formatOptions = [.withInternetDateTime]
                return formatter.date(from: text)
            }()
        guard let date, date.timeIntervalSince1970 >= 0 else { return nil }
        return UInt64(date.timeIntervalSince1970 * 1e9)
    }

    /// The first offset whose event was stored at `time` or later (the end when none was), by binary search
    /// over single-record reads (append times only grow).
    private func firstOffset(_ open: Router.OpenTopic, _ extent: StorageBinding.Extent, atOrAfter time: UInt64)
        throws(TopicAdminError) -> UInt64
    {
        var low = extent.first
        var high = extent.next
        while low < high {
            let middle = low + (high - low) / 2
            let stored = try appendTime(open, at: middle)
            if stored >= time { high = middle } else { low = middle + 1 }
        }
        return low
    }

    private func appendTime(_ open: Router.OpenTopic, at offset: UInt64) throws(TopicAdminError) -> UInt64 {
        let slot = Mutex<Result<UInt64, StorageBinding.Failure>?>(nil)
        let done = DispatchSemaphore(value: 0)
        open.binding.read(open.stream, from: offset, maxRecords: 1, maxBytes: 1 << 20) { result in
            slot.withLock { value in
                value = result.flatMap { batch in
                    guard batch.count > 0 else {
                        return .failure(.init(status: PX_ERR_OUT_OF_RANGE.status, message: "no record at \(offset)"))
                    }
                    return .success(batch.record(at: 0).pointee.append_time_ns)
                }
            }
            done.signal()
        }
        guard done.wait(timeout: .now() + StorageBinding.adminDeadline) == .success,
            let result = slot.withLock({ $0 })
        else {
            throw TopicAdminError(.unavailable, "storage '\(open.binding.name)' did not answer a read in time")
        }
        do throws(StorageBinding.Failure) {
            return try result.get()
        } catch {
            throw TopicAdminError(storage: error)
        }
    }
}

extension ConsumerGroup {
    /// What the admin API shows of a group now.
    struct AdminSnapshot {
        var members: [(id: UInt64, plugin: String, inFlight: Int)]
        /// The offset the group has done everything below (what it commits); `nil` before it started.
        var committed: UInt64?
        var inFlight: Int
    }

    func adminSnapshot() -> AdminSnapshot {
        state.withLock { s in
            AdminSnapshot(
                members: s.members.values.sorted { $0.id < $1.id }.map {
                    (id: $0.id, plugin: $0.ownerName, inFlight: $0.inFlight)
                },
                committed: s.initialized ? s.committed : nil, inFlight: s.inFlight.count)
        }
    }
}
