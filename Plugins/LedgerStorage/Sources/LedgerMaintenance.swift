import Dispatch
import Foundation
import LedgerCore
import PlexusPluginSDK
import Synchronization

/// This instance's periodic metadata chores, on a thread of their own (they wait for the metadata store and
/// for bookies, which a kernel timer must not); only when the metadata is in the registry's store (`shared`):
///
/// - **Bookie membership**: every `bookieHeartbeatMs` this node's bookie writes its key
///   `ledgers/bookies/<id>` (`BookieMembership`) with its address; it counts as available while its heartbeat
///   is at most three heartbeats old.
/// - **Autorecovery**: every `autorecoveryIntervalMs` (0: never) the node that holds the lease
///   `ledgers/autorecovery/lock` (taken or renewed by compare-and-swap, for three intervals) runs
///   `AutoRecovery` with the available bookies (and its own) as the live set and the registered bookies whose
///   heartbeat went stale as the lost ones, and logs what it did.
final class LedgerMaintenance: Sendable {
    static let lockKey = MetadataKeys.ledgerPrefix + "/autorecovery/lock"

    let host: PlexusPluginSDK.Host
    let context: StorageContext
    /// Where other nodes reach this node's bookie (empty: in-process only).
    let bookieAddress: String
    let membership: BookieMembership
    let lease: MetadataLease
    private let stopping = DispatchSemaphore(value: 0)
    private let ended = DispatchSemaphore(value: 0)
    private let running = Mutex(false)

    init(host: PlexusPluginSDK.Host, context: StorageContext, bookieAddress: String = "") {
        self.host = host
        self.context = context
        self.bookieAddress = bookieAddress
        let settings = context.settings
        membership = BookieMembership(
            store: context.store, prefix: MetadataKeys.ledgerPrefix,
            staleAfterMilliseconds: UInt64(max(settings.bookieHeartbeatMs, 1000) * 3))
        lease = MetadataLease(
            store: context.store, key: Self.lockKey, owner: context.bookie.id,
            durationMilliseconds: UInt64(max(settings.autorecoveryIntervalMs, 1000) * 3))
    }

    /// Whether the chores run: only with the registry's metadata store, which every bookie's node shares (with
    /// the node's own file, no other bookie could ever be seen alive).
    var shared: Bool { context.store is KeyValueMetadataStore }

    /// Writes the first heartbeat and starts the thread (when a chore is on).
    func start() {
        let settings = context.settings
        guard shared, settings.bookieHeartbeatMs > 0 || settings.autorecoveryIntervalMs > 0 else { return }
        if settings.bookieHeartbeatMs > 0 { heartbeat() }
        running.withLock { $0 = true }
        let thread = Thread { [self] in
            var nextHeartbeat = ContinuousClock.now + .milliseconds(settings.bookieHeartbeatMs)
            var nextRecovery = ContinuousClock.now + .milliseconds(settings.autorecoveryIntervalMs)
            while true {
                var due: [ContinuousClock.Instant] = []
                if settings.bookieHeartbeatMs > 0 { due.append(nextHeartbeat) }
                if settings.autorecoveryIntervalMs > 0 { due.append(nextRecovery) }
                let wait = max(Duration.zero, due.min()! - ContinuousClock.now)
                let milliseconds = Int(
                    wait.components.seconds * 1000 + wait.components.attoseconds / 1_000_000_000_000_000)
                if stopping.wait(timeout: .now() + .milliseconds(milliseconds)) == .success { break }
                let now = ContinuousClock.now
                if settings.bookieHeartbeatMs > 0 && now >= nextHeartbeat {
                    heartbeat()
                    nextHeartbeat = now + .milliseconds(settings.bookieHeartbeatMs)
                }
                if settings.autorecoveryIntervalMs > 0 && now >= nextRecovery {
                    _ = recoverOnce()
                    nextRecovery = ContinuousClock.now + .milliseconds(settings.autorecoveryIntervalMs)
                }
            }
            ended.signal()
        }
        thread.name = "ledger-maintenance"
        thread.start()
    }

    /// Ends the thread (a run in progress stops before its next ledger) and gives the autorecovery lease up.
    func stop() {
        let wasRunning = running.withLock { running in
            defer { running = false }
            return running
        }
        guard wasRunning else { return }
        stopping.signal()
        ended.wait()
        if context.settings.autorecoveryIntervalMs > 0 { try? lease.release() }
    }

    func heartbeat() {
        do throws(LedgerError) {
            try membership.heartbeat(id: context.bookie.id, address: bookieAddress)
        } catch {
            host.log(.warning, "ledger-storage: cannot write bookie \(context.bookie.id)'s heartbeat: \(error.message)")
        }
    }

    /// One autorecovery run if this node holds (or takes) the lease; `nil` when another node holds it or the
    /// run could not start.
    @discardableResult
    func recoverOnce() -> AutoRecovery.Report? {
        do throws(LedgerError) {
            guard try lease.acquire() else { return nil }
            // Lost: registered once, heartbeat stale. A bookie never registered is not taken for lost.
            let now = MetadataKey.nowMilliseconds()
            let members = try membership.members()
            var live = Set(
                members.filter { $0.heartbeatMilliseconds + membership.staleAfterMilliseconds >= now }.map(\.id))
            live.insert(context.bookie.id)
            let lost = Set(members.map(\.id)).subtracting(live)
            var recovery = AutoRecovery(ledgers: context.ledgers)
            recovery.isCancelled = { [self] in !running.withLock { $0 } }
            let report = try recovery.run(live: live, lost: lost)
            for done in report.replicated { host.log(.notice, "ledger-storage: autorecovery: \(done)") }
            for problem in report.problems { host.log(.warning, "ledger-storage: autorecovery: \(problem)") }
            return report
        } catch {
            host.log(.warning, "ledger-storage: autorecovery could not run: \(error.message)")
            return nil
        }
    }
}
