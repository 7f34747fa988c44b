import Foundation

/// A lock held for a while through the metadata store, so that one node at a time does a cluster-wide chore
/// (autorecovery): the key holds JSON `{"owner": …, "expiresMilliseconds": …}` and is taken or renewed only by
/// compare-and-swap on the version read, so two nodes never both succeed for one version.
///
/// A holder renews before its lease ends; another node takes the key once the lease expired (its holder died or
/// stopped). Expiry is judged by the taker's clock: the nodes' clocks must agree to well within the lease
/// (NTP). A chore that runs past its lease may overlap the next holder's: it must stay safe (autorecovery
/// changes metadata only by compare-and-swap).
public struct MetadataLease: Sendable {
    struct Holder: Codable, Equatable {
        var owner: String
        var expiresMilliseconds: UInt64
    }

    public let store: any MetadataStore
    public let key: String
    public let owner: String
    public let durationMilliseconds: UInt64

    public init(store: any MetadataStore, key: String, owner: String, durationMilliseconds: UInt64) {
        self.store = store
        self.key = key
        self.owner = owner
        self.durationMilliseconds = durationMilliseconds
    }

    /// Takes the lease or renews it; `false` when another owner holds an unexpired one (or won the race).
    public func acquire(now: UInt64 = MetadataKey.nowMilliseconds()) throws(LedgerError) -> Bool {
        let current = try store.wait { store.get(key, completion: $0) }
        if let current, let holder = try? JSONDecoder().decode(Holder.self, from: Data(current.value)),
            holder.owner != owner, holder.expiresMilliseconds > now
        {
            return false
        }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let bytes = Array(
            (try? encoder.encode(Holder(owner: owner, expiresMilliseconds: now + durationMilliseconds))) ?? Data())
        do {
            _ = try store.wait {
                store.put(key, bytes, expected: current.map { .exactly($0.version) } ?? .absent, completion: $0)
            }
            return true
        } catch  where error.code == .conflict {
            return false
        }
    }

    /// Gives the lease up if this owner holds it (a clean stop), so another node need not wait for its expiry.
    public func release() throws(LedgerError) {
        guard let current = try store.wait({ store.get(key, completion: $0) }),
            let holder = try? JSONDecoder().decode(Holder.self, from: Data(current.value)), holder.owner == owner
        else { return }
        do {
            try store.wait { store.delete(key, expected: .exactly(current.version), completion: $0) }
        } catch  where error.code == .conflict {
            // Taken meanwhile (it had expired): not ours any more.
        }
    }
}
