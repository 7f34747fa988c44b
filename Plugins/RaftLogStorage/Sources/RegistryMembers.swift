import Dispatch
import Foundation
import PlexusPluginSDK
import RaftCore
import StorageIO
import Synchronization

/// The first members of a cluster taken from the node's registry (`members: registry`) instead of a `peers`
/// list. Each member registers itself as an instance of the `raft-log` service (id its `nodeId`, address its
/// `listen`, a TTL lease the kernel renews), then looks the service up until `expectMembers` instances are
/// there; those, ordered by id, are the voters of every stream it creates. Every node of the first start sees
/// the same instances (the registry is one consistent store), so each computes the same membership without a
/// list in any manifest.
///
/// The membership found is written to `<data directory>/members` (`id=host:port,…`, replaced atomically and
/// synced) before it is used: a restart takes it from there and does not wait for the others, as a restart
/// with `peers` does. Changes after the first start are Raft membership entries (`add-member`,
/// `remove-member`), as with `peers`: the registry only replaces the list.
struct RegistryMembers {
    /// The registry service each member registers under.
    static let service = "raft-log"
    /// How long a dead member stays listed.
    static let ttlMs: UInt64 = 10_000

    let host: PlexusPluginSDK.Host
    let settings: Settings
    let dataDirectory: String
    /// How long start waits for `expectMembers` members (the manifest gives start 60 s).
    var wait: Duration = .seconds(45)

    var file: String { dataDirectory + "/members" }

    /// The voters of new streams: from the `members` file, else from the registry (then written there).
    /// - Throws: `PluginError` when the registry cannot be reached, the members do not show up in time, or
    ///   the file is damaged.
    func resolve() throws -> Membership {
        try register()
        if Files.exists(file) {
            guard let data = FileManager.default.contents(atPath: file),
                let text = String(data: data, encoding: .utf8)
            else { throw PluginError(PX_ERR_IO, "raft-log: cannot read \(file)") }
            let membership = try Settings.membership(
                peers: text.trimmingCharacters(in: .whitespacesAndNewlines), nodeId: settings.nodeId)
            host.log(.info, "raft-log: members from \(file): \(Self.describe(membership))")
            return membership
        }
        let deadline = ContinuousClock.now + wait
        var found: [ServiceInstance] = []
        var lastProblem = ""
        while ContinuousClock.now < deadline {
            switch lookup() {
            case .success(let instances):
                found = instances
                if found.count >= settings.expectMembers { break }
            case .failure(let error):
                lastProblem = ": \(error.message)"
            }
            if found.count >= settings.expectMembers { break }
            Thread.sleep(forTimeInterval: 0.1)
        }
        guard found.count >= settings.expectMembers else {
            throw PluginError(
                PX_ERR_UNAVAILABLE,
                "raft-log: members: registry found \(found.count) of \(settings.expectMembers) expected members "
                    + "(\(found.map(\.instanceID).sorted().joined(separator: ", "))) of service '\(Self.service)' within "
                    + "\(wait)\(lastProblem); start the other nodes, or set expectMembers to the cluster's size")
        }
        // The first expectMembers by id: every node of the first start computes the same list.
        let chosen = found.sorted { $0.instanceID < $1.instanceID }.prefix(settings.expectMembers)
        var members: [Membership.Member] = []
        for instance in chosen {
            guard Settings.isAddress(instance.address), !instance.instanceID.contains(","),
                !instance.instanceID.contains("=")
            else {
                throw PluginError.invalidArgument(
                    "raft-log: the registry lists member '\(instance.instanceID)' at '\(instance.address)', not an id "
                        + "and a host:port")
            }
            members.append(.init(id: instance.instanceID, address: instance.address))
        }
        guard members.contains(where: { $0.id == settings.nodeId }) else {
            throw PluginError(
                PX_ERR_FAILED_PRECONDITION,
                "raft-log: the registry already lists \(found.count) members and this node ('\(settings.nodeId)') is "
                    + "not among the first \(settings.expectMembers) by id: add it to the running cluster with "
                    + "add-learner and add-member, then write its members file")
        }
        let membership = Membership(members: members)
        let text = members.map { "\($0.id)=\($0.address)" }.joined(separator: ",") + "\n"
        do {
            try Files.replace(file, with: Array(text.utf8), directory: dataDirectory, sync: settings.fsync != .never)
        } catch {
            throw PluginError(PX_ERR_IO, "raft-log: cannot write \(file): \(error)")
        }
        host.log(.info, "raft-log: members from the registry: \(Self.describe(membership))")
        return membership
    }

    static func describe(_ membership: Membership) -> String {
        membership.members.map { "\($0.id)=\($0.address)" }.joined(separator: ",")
    }

    /// Registers this member; the kernel renews its lease while the node runs.
    private func register() throws {
        let instance = ServiceInstance(
            service: Self.service, instanceID: settings.nodeId, address: settings.listen, ttlMilliseconds: Self.ttlMs)
        let result: Result<Void, PluginError> = try waitFor { done in
            try host.registryRegister(instance, completion: done)
        }
        if case .failure(let error) = result {
            throw PluginError(
                status: error.status, "raft-log: cannot register with the node's registry: \(error.message)")
        }
    }

    private func lookup() -> Result<[ServiceInstance], PluginError> {
        do {
            return try waitFor { done in try host.registryLookup(service: Self.service, completion: done) }
        } catch let error as PluginError {
            return .failure(error)
        } catch {
            return .failure(PluginError(PX_ERR_INTERNAL, "\(error)"))
        }
    }

    /// Runs an asynchronous registry call and waits (up to 10 s) for its completion.
    private func waitFor<T: Sendable>(
        _ call: (@escaping @Sendable (Result<T, PluginError>) -> Void) throws -> Void
    ) throws -> Result<T, PluginError> {
        let semaphore = DispatchSemaphore(value: 0)
        let slot = ResultSlot<T>()
        try call { result in
            slot.set(result)
            semaphore.signal()
        }
        guard semaphore.wait(timeout: .now() + 10) == .success, let result = slot.get() else {
            return .failure(PluginError(PX_ERR_TIMEOUT, "the registry did not answer within 10 s"))
        }
        return result
    }
}

/// One completion's result, handed from the registry's thread to the waiting one.
final class ResultSlot<T: Sendable>: Sendable {
    private let value = Mutex<Result<T, PluginError>?>(nil)
    func set(_ result: Result<T, PluginError>) { value.withLock { $0 = result } }
    func get() -> Result<T, PluginError>? { value.withLock { $0 } }
}
